//! The `redis_streams` target: every change is an entry `XADD <stream> [MAXLEN ~ N] <offset>-0
//! key <key> value <value> remix-op <op> remix-offset <offset> remix-target <name> remix-model
//! <model>` (see [`crate::runtime::delivery::message`]; a tombstone has no `value`, a truncate no
//! `key`), one stream per model (and source) from the `stream` template. A batch goes out as one
//! pipeline: every entry in flight at once, one round trip.
//!
//! **Exactly once.** The entry id is the log offset, and Redis refuses an id that is not greater than
//! the stream's last one ("equal or smaller than the target stream top item"). After a crash the
//! worker re-delivers from its cursor; whatever the stream already holds is refused by Redis itself
//! and counts as delivered. To keep the refusals off the wire, the target reads each stream's last
//! id once (`XINFO STREAM`) and skips the items at or below it; a refusal that still happens counts as
//! delivered too. The first read of a stream also checks that its last entry is this target's
//! (`remix-target`): a stream that another producer writes with larger ids would make the target
//! skip everything, so it is refused (a permanent error) instead.
//!
//! The guarantee holds as far as Redis keeps what it acknowledged: `appendonly yes` with
//! `appendfsync always` (`remix doctor` checks it); with `everysec` a Redis crash can lose up to a
//! second of acknowledged entries, which are not sent again.
//!
//! **Rewind** rewrites the streams from the rewind point: the entries after it are deleted (`XDEL`),
//! the stream's last id set back to the point (`XSETID`), consumer groups past it set back too
//! (`XGROUP SETID`), and the entries are delivered again under their offsets. The stream then
//! equals the log again.

use super::config;
use crate::connector::StartError;
use crate::error_chain;
use crate::runtime::delivery::message::{
    message, op_name, MessageFormat, Template, HEADER_MODEL, HEADER_OFFSET, HEADER_OP, HEADER_TARGET,
};
use crate::runtime::delivery::{Batch, Capabilities, Guarantee, Target, TargetError};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError, RedisResult, Value};
use std::collections::HashMap;
use std::time::Duration;

/// The most entries one pipeline carries.
pub const BATCH_RECORDS_MAX: usize = 10_000;
/// How long connecting may take.
const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How long a pipeline's replies may take.
const RESPONSE_TIMEOUT_MS: u64 = 30_000;
/// Entries deleted per `XDEL` during a rewind.
const REWIND_CHUNK: usize = 1_000;
/// What Redis says when an `XADD` id is not above the stream's last id.
const NOT_ABOVE_TOP: &str = "equal or smaller than the target stream top item";
/// The entry fields besides the headers.
pub const FIELD_KEY: &str = "key";
pub const FIELD_VALUE: &str = "value";

/// Appends changes to Redis Streams; see the module docs.
#[derive(Debug)]
pub struct RedisStreamsTarget {
    name: String,
    client: redis::Client,
    connection: Option<MultiplexedConnection>,
    stream: Template,
    maxlen: Option<u64>,
    format: MessageFormat,
    models: Vec<String>,
    /// The last id (its milliseconds part) of each stream read since `open` or the last error.
    tops: HashMap<String, u64>,
}

impl RedisStreamsTarget {
    pub fn new(config: &config::RedisStreamsTarget) -> Result<RedisStreamsTarget, StartError> {
        let name = config.common.name.clone();
        let client = redis::Client::open(config.url.as_str()).map_err(|e| StartError {
            kind: "redis_streams target",
            name: name.clone(),
            message: format!("url: {e}"),
        })?;
        Ok(RedisStreamsTarget {
            name,
            client,
            connection: None,
            stream: config.stream.clone(),
            maxlen: config.maxlen,
            format: config.format.clone(),
            models: config.models.keys().cloned().collect(),
            tops: HashMap::new(),
        })
    }

    async fn connection(&mut self) -> Result<MultiplexedConnection, TargetError> {
        if let Some(connection) = &self.connection {
            return Ok(connection.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(CONNECT_TIMEOUT_MS)))
            .set_response_timeout(Some(Duration::from_millis(RESPONSE_TIMEOUT_MS)));
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| classify(None, "cannot connect to Redis", e))?;
        self.connection = Some(connection.clone());
        Ok(connection)
    }

    /// Forgets the connection and what was read through it, after an error.
    fn reset(&mut self) {
        self.connection = None;
        self.tops.clear();
    }

    /// Reads the last id of the streams not read yet, checking that their last entry is ours.
    async fn read_tops(
        &mut self,
        connection: &mut MultiplexedConnection,
        streams: &[&str],
    ) -> Result<(), TargetError> {
        let unknown: Vec<&str> = {
            let mut seen: Vec<&str> =
                streams.iter().copied().filter(|s| !self.tops.contains_key(*s)).collect();
            seen.sort_unstable();
            seen.dedup();
            seen
        };
        if unknown.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for stream in &unknown {
            pipe.cmd("XINFO").arg("STREAM").arg(*stream);
        }
        let replies: Vec<RedisResult<Value>> = pipe
            .ignore_errors()
            .query_async(connection)
            .await
            .map_err(|e| classify(None, "XINFO STREAM", e))?;
        for (stream, reply) in unknown.into_iter().zip(replies) {
            let top = match reply {
                Ok(info) => self.check_stream(stream, info)?,
                Err(e) if e.detail().is_some_and(|d| d.contains("no such key")) => 0,
                Err(e) => return Err(classify(None, &format!("XINFO STREAM {stream}"), e)),
            };
            self.tops.insert(stream.to_owned(), top);
        }
        Ok(())
    }

    /// The last id's milliseconds of a stream, after checking that its last entry is this target's.
    fn check_stream(&self, stream: &str, info: Value) -> Result<u64, TargetError> {
        let info: HashMap<String, Value> = redis::from_redis_value(info)
            .map_err(|e| TargetError::transient(format!("XINFO STREAM {stream}: {e}")))?;
        let last_id =
            info.get("last-generated-id").and_then(|v| redis::from_redis_value_ref::<String>(v).ok());
        let top = last_id.as_deref().and_then(id_ms).unwrap_or(0);
        let owner = match info.get("last-entry") {
            None | Some(Value::Nil) => None,
            Some(entry) => Some(
                redis::from_redis_value_ref::<(String, HashMap<String, String>)>(entry)
                    .ok()
                    .and_then(|(_, fields)| fields.get(HEADER_TARGET).cloned())
                    .unwrap_or_default(),
            ),
        };
        match owner {
            Some(owner) if owner != self.name => Err(TargetError::permanent(
                None,
                format!(
                    "the stream {stream} holds entries this target did not write (its last entry's \
                     {HEADER_TARGET} is '{owner}', its last id {}): give each target a stream of its own",
                    last_id.unwrap_or_default()
                ),
            )),
            _ => Ok(top),
        }
    }

    /// The streams of the configured models that exist (found with `SCAN` when the template names
    /// the source).
    async fn streams(&self, connection: &mut MultiplexedConnection) -> Result<Vec<String>, TargetError> {
        let mut streams = Vec::new();
        for model in &self.models {
            if !self.stream.uses_source() {
                streams.push(self.stream.render(model, ""));
                continue;
            }
            let pattern = glob_escape(self.stream.text())
                .replace("{model}", &glob_escape(model))
                .replace("{source}", "*");
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .arg("TYPE")
                    .arg("stream")
                    .query_async(connection)
                    .await
                    .map_err(|e| classify(None, "SCAN", e))?;
                streams.extend(keys);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        streams.sort_unstable();
        streams.dedup();
        Ok(streams)
    }

    /// Deletes a stream's entries after `offset` and sets its last id and consumer groups back.
    async fn rewind_stream(
        &self,
        connection: &mut MultiplexedConnection,
        stream: &str,
        offset: u64,
    ) -> Result<(), TargetError> {
        let info: RedisResult<Value> =
            redis::cmd("XINFO").arg("STREAM").arg(stream).query_async(connection).await;
        let top = match info {
            Ok(info) => self.check_stream(stream, info)?,
            Err(e) if e.detail().is_some_and(|d| d.contains("no such key")) => return Ok(()),
            Err(e) => return Err(classify(None, &format!("XINFO STREAM {stream}"), e)),
        };
        let from = format!("{}-0", offset + 1);
        loop {
            let entries: Vec<(String, HashMap<String, Value>)> = redis::cmd("XRANGE")
                .arg(stream)
                .arg(&from)
                .arg("+")
                .arg("COUNT")
                .arg(REWIND_CHUNK)
                .query_async(connection)
                .await
                .map_err(|e| classify(None, &format!("XRANGE {stream}"), e))?;
            if entries.is_empty() {
                break;
            }
            let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
            let _: u64 = redis::cmd("XDEL")
                .arg(stream)
                .arg(&ids)
                .query_async(connection)
                .await
                .map_err(|e| classify(None, &format!("XDEL {stream}"), e))?;
        }
        if top > offset {
            let _: () = redis::cmd("XSETID")
                .arg(stream)
                .arg(format!("{offset}-0"))
                .query_async(connection)
                .await
                .map_err(|e| classify(None, &format!("XSETID {stream}"), e))?;
        }
        let groups: Vec<HashMap<String, Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query_async(connection)
            .await
            .map_err(|e| classify(None, &format!("XINFO GROUPS {stream}"), e))?;
        for group in groups {
            let name = group.get("name").and_then(|v| redis::from_redis_value_ref::<String>(v).ok());
            let last =
                group.get("last-delivered-id").and_then(|v| redis::from_redis_value_ref::<String>(v).ok());
            let (Some(name), Some(last)) = (name, last) else { continue };
            if id_ms(&last).is_some_and(|ms| ms > offset) {
                let _: () = redis::cmd("XGROUP")
                    .arg("SETID")
                    .arg(stream)
                    .arg(&name)
                    .arg(format!("{offset}-0"))
                    .query_async(connection)
                    .await
                    .map_err(|e| classify(None, &format!("XGROUP SETID {stream} {name}"), e))?;
            }
        }
        Ok(())
    }

    async fn send(&mut self, batch: &Batch) -> Result<(), TargetError> {
        let mut connection = self.connection().await?;
        let streams: Vec<String> =
            batch.items.iter().map(|item| self.stream.render(&item.model, &item.source)).collect();
        let names: Vec<&str> = streams.iter().map(String::as_str).collect();
        self.read_tops(&mut connection, &names).await?;
        let mut pipe = redis::pipe();
        let mut sent = Vec::with_capacity(batch.items.len());
        for (index, (item, stream)) in batch.items.iter().zip(&streams).enumerate() {
            if item.offset <= self.tops[stream] {
                continue;
            }
            let message = message(&self.format, item);
            let command = pipe.cmd("XADD").arg(stream);
            if let Some(maxlen) = self.maxlen {
                command.arg("MAXLEN").arg("~").arg(maxlen);
            }
            command.arg(format!("{}-0", item.offset));
            if let Some(key) = &message.key {
                command.arg(FIELD_KEY).arg(key);
            }
            if let Some(value) = &message.value {
                command.arg(FIELD_VALUE).arg(value);
            }
            command
                .arg(HEADER_OP)
                .arg(op_name(item.op))
                .arg(HEADER_OFFSET)
                .arg(item.offset)
                .arg(HEADER_TARGET)
                .arg(&self.name)
                .arg(HEADER_MODEL)
                .arg(&item.model);
            sent.push(index);
        }
        if sent.is_empty() {
            return Ok(());
        }
        let replies: Vec<RedisResult<Value>> =
            pipe.ignore_errors().query_async(&mut connection).await.map_err(|e| classify(None, "XADD", e))?;
        for (index, reply) in sent.iter().zip(replies) {
            match reply {
                Ok(_) => {}
                Err(e) if e.detail().is_some_and(|d| d.contains(NOT_ABOVE_TOP)) => {}
                Err(e) => {
                    let stream = &streams[*index];
                    return Err(classify(Some(*index), &format!("XADD {stream}"), e));
                }
            }
        }
        for (item, stream) in batch.items.iter().zip(&streams) {
            let top = self.tops.get_mut(stream).expect("read above");
            *top = (*top).max(item.offset);
        }
        Ok(())
    }
}

/// The milliseconds part of a stream id (`1234-0`).
fn id_ms(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

/// `text` with the characters `SCAN MATCH` treats specially escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A Redis error as a target error: connection trouble and the server's passing states (loading,
/// out of memory, read-only replica, busy script) are transient; anything else is permanent.
fn classify(item: Option<usize>, what: &str, e: RedisError) -> TargetError {
    let message = format!("redis: {what}: {}", error_chain(&e));
    let passing =
        ["LOADING", "OOM", "READONLY", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS"];
    let transient = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.code().is_some_and(|code| passing.contains(&code))
        || e.code().is_none();
    if transient {
        TargetError::transient(message).caused_by(e)
    } else {
        TargetError::permanent(item, message).caused_by(e)
    }
}

impl Target for RedisStreamsTarget {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            collapse: false,
            guarantee: Guarantee::OffsetNamed,
            batch_records_max: BATCH_RECORDS_MAX,
            batch_records_default: BATCH_RECORDS_MAX,
        }
    }

    async fn open(&mut self, cursor: u64) -> Result<u64, TargetError> {
        self.tops.clear();
        Ok(cursor)
    }

    async fn apply(&mut self, batch: &Batch) -> Result<(), TargetError> {
        let result = self.send(batch).await;
        if let Err(e) = &result {
            if e.is_transient() {
                self.reset();
            } else {
                self.tops.clear();
            }
        }
        result
    }

    async fn rewind(&mut self, offset: u64) -> Result<u64, TargetError> {
        self.tops.clear();
        let mut connection = self.connection().await?;
        let result = async {
            for stream in self.streams(&mut connection).await? {
                self.rewind_stream(&mut connection, &stream, offset).await?;
            }
            Ok(offset)
        }
        .await;
        if result.is_err() {
            self.reset();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_patterns() {
        assert_eq!(id_ms("1234-0"), Some(1234));
        assert_eq!(id_ms("0-0"), Some(0));
        assert_eq!(glob_escape("a*b[c]"), "a\\*b\\[c\\]");
    }
}
