//! The dead-letter queue's operations: list, show, retry (remix in and validation run again, e.g.
//! after a schema fix), drop. Dead letters live in the log (kind `KIND_DEAD_LETTER`); resolving one
//! appends a `KIND_DEAD_LETTER_RESOLVED` record, so the DLQ survives restarts like everything else.
//!
//! A retry never puts an older state after a newer one (per-key order): when the log holds a change
//! of the same model and key after the dead letter (after its offset for a target's, after its time
//! for a source's), or a truncate of the model, the retry answers `superseded` and logs nothing.

use super::indexes::{Claim, DlqEntry, IdempotencyKey, Indexes, Landed};
use super::ingest::Appender;
use super::remix_in::{remix_in, Origin, RemixOutcome};
use crate::config::{Config, SourceConfig};
use crate::record::{
    self, Change, DeadLetterResolved, Decoded, FieldError, Op, KIND_CHANGE, KIND_DEAD_LETTER_RESOLVED,
};
use remix_storage::AppendRecord;
use serde::Serialize;

/// The outcome of a retry.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Retried {
    /// The object is valid now and was logged at `offset`.
    Logged { id: u64, offset: u64 },
    /// Still invalid: the entry stays in the DLQ.
    Invalid { id: u64, errors: Vec<FieldError> },
    /// A newer change of the same key (or a truncate of its model) is in the log, at `newer_offset`:
    /// logging the dead letter now would put the older state back. The entry stays in the DLQ (drop
    /// it, or rewind the targets that need it).
    Superseded { id: u64, newer_offset: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("no open dead letter with id {0}")]
    NotFound(u64),
    #[error("{0}")]
    Other(String),
}

/// The dead letter's JSON form for `remix dlq list --json`: `{id, time, source, position, model,
/// errors, input}`.
pub fn entry_json(entry: &DlqEntry) -> serde_json::Value {
    serde_json::json!({
        "id": entry.id, "time": crate::time::format_ms(entry.time_ms), "source": entry.letter.source,
        "position": entry.letter.position, "model": entry.letter.model, "route": entry.letter.route,
        "errors": entry.letter.errors, "input": entry.letter.input,
    })
}

/// The main log's and the dead-letter log's appenders.
#[derive(Debug, Clone)]
pub struct Logs {
    pub main: Appender,
    pub dlq: Appender,
}

pub async fn retry(config: &Config, logs: &Logs, indexes: &Indexes, id: u64) -> Result<Retried, DlqError> {
    let entry = indexes.dead_letter(id).ok_or(DlqError::NotFound(id))?;
    let mut change = match rebuild_change(config, &logs.main, &entry).await? {
        Ok(change) => change,
        Err(errors) => return Ok(Retried::Invalid { id, errors }),
    };
    let since = match entry.letter.route.starts_with("target:") {
        true => Since::Offset(letter_offset(&entry)?),
        false => Since::Time(entry.time_ms),
    };
    if let Some(newer_offset) = newer_change(logs.main.log(), &change, since).await? {
        return Ok(Retried::Superseded { id, newer_offset });
    }
    let key = format!("dlq:{id}");
    let scoped = IdempotencyKey::new(&change.source, &change.model, &key);
    let offset = match indexes.claim(&scoped).await {
        Claim::Done(landed) => landed.first_offset,
        Claim::Proceed => {
            change.idempotency_key = Some(key.clone());
            let payload = serde_json::to_vec(&change).expect("serializable");
            match logs.main.append(vec![AppendRecord { kind: KIND_CHANGE, payload }]).await {
                Ok(appended) => {
                    let landed =
                        Landed { first_offset: appended.first_offset, last_offset: appended.last_offset };
                    indexes.finish(&scoped, Some(landed));
                    appended.first_offset
                }
                Err(e) => {
                    indexes.finish(&scoped, None);
                    return Err(DlqError::Other(e.to_string()));
                }
            }
        }
    };
    resolve(logs, indexes, DeadLetterResolved { id, how: "retried".into(), offset: Some(offset) }).await?;
    Ok(Retried::Logged { id, offset })
}

pub async fn drop_entry(logs: &Logs, indexes: &Indexes, id: u64) -> Result<(), DlqError> {
    indexes.dead_letter(id).ok_or(DlqError::NotFound(id))?;
    resolve(logs, indexes, DeadLetterResolved { id, how: "dropped".into(), offset: None }).await
}

async fn resolve(logs: &Logs, indexes: &Indexes, resolved: DeadLetterResolved) -> Result<(), DlqError> {
    let payload = serde_json::to_vec(&resolved).expect("serializable");
    logs.dlq
        .append(vec![AppendRecord { kind: KIND_DEAD_LETTER_RESOLVED, payload }])
        .await
        .map_err(|e| DlqError::Other(e.to_string()))?;
    indexes.resolve(resolved.id);
    Ok(())
}

/// The change a dead letter becomes now: a source's input is remixed and validated again with the
/// current configuration; a target's dead letter re-sends the original change (to every target).
async fn rebuild_change(
    config: &Config,
    appender: &Appender,
    entry: &DlqEntry,
) -> Result<Result<Change, Vec<FieldError>>, DlqError> {
    let letter = &entry.letter;
    if letter.route.starts_with("target:") {
        let offset = letter_offset(entry)?;
        let log = appender.log().clone();
        let record = tokio::task::spawn_blocking(move || log.reader(offset).and_then(|mut r| r.try_next()))
            .await
            .map_err(|e| DlqError::Other(e.to_string()))?
            .map_err(|e| DlqError::Other(e.to_string()))?;
        return match record.map(|r| record::decode(r.kind, &r.payload)) {
            Some(Decoded::Change(change)) => Ok(Ok(change)),
            _ => Err(DlqError::Other(format!("the change at offset {offset} is no longer in the log"))),
        };
    }
    let source = config
        .source(&letter.source)
        .ok_or_else(|| DlqError::Other(format!("source '{}' is no longer configured", letter.source)))?;
    let binding = match source {
        SourceConfig::Webhook(s) => s.routes.get(&letter.route),
        SourceConfig::Stripe(s) => s.objects.get(&letter.route),
        SourceConfig::Postgres(s) => {
            s.tables.iter().find(|t| format!("{}.{}", t.schema, t.table) == letter.route).map(|t| &t.binding)
        }
    }
    .ok_or_else(|| {
        DlqError::Other(format!("source '{}' has no route '{}' any more", letter.source, letter.route))
    })?;
    let model = config
        .model(&binding.model)
        .ok_or_else(|| DlqError::Other(format!("model '{}' is gone", binding.model)))?;
    let origin = Origin { source: &letter.source, position: letter.position.clone(), idempotency_key: None };
    Ok(match remix_in(binding, model, &letter.input, letter.op.unwrap_or(Op::Upsert), origin) {
        RemixOutcome::Valid(change) => Ok(change),
        RemixOutcome::Invalid(errors) => Err(errors),
    })
}

/// The log offset of the change a target dead-lettered.
fn letter_offset(entry: &DlqEntry) -> Result<u64, DlqError> {
    entry.letter.input.get("offset").and_then(|o| o.as_u64()).ok_or_else(|| {
        DlqError::Other(format!("dead letter {} of {} has no offset", entry.id, entry.letter.route))
    })
}

/// Where the changes that could supersede a dead letter begin.
#[derive(Debug, Clone, Copy)]
enum Since {
    /// After this offset: a target's dead letter is the change at that offset.
    Offset(u64),
    /// Appended at or after this time: a source's dead letter was never in the main log.
    Time(u64),
}

/// What [`newer_change`] reads of each change record.
#[derive(Debug, serde::Deserialize)]
struct KeyOf {
    model: String,
    op: Op,
    key: serde_json::Value,
}

/// The first change after `since` with `change`'s model and key (any op), or truncating its model.
async fn newer_change(
    log: &std::sync::Arc<remix_storage::Log>,
    change: &Change,
    since: Since,
) -> Result<Option<u64>, DlqError> {
    let (log, model, key) = (log.clone(), change.model.clone(), change.key.clone());
    let scan = move || -> Result<Option<u64>, remix_storage::Error> {
        let from = match since {
            Since::Offset(offset) => offset + 1,
            // Segments that ended before the time hold nothing newer.
            Since::Time(time_ms) => {
                let segments = log.stat().segments;
                let newer = segments.iter().find(|s| s.records > 0 && s.last_timestamp_ms >= time_ms);
                newer.map_or(log.durable_offset() + 1, |s| s.base_offset)
            }
        };
        for record in log.reader(from.max(log.first_offset()))? {
            let record = record?;
            if record.kind != KIND_CHANGE {
                continue;
            }
            if let Since::Time(time_ms) = since {
                if record.timestamp_ms < time_ms {
                    continue;
                }
            }
            let Ok(other) = serde_json::from_slice::<KeyOf>(&record.payload) else { continue };
            if other.model == model && (other.op == Op::Truncate || other.key == key) {
                return Ok(Some(record.offset));
            }
        }
        Ok(None)
    };
    tokio::task::spawn_blocking(scan)
        .await
        .map_err(|e| DlqError::Other(e.to_string()))?
        .map_err(|e| DlqError::Other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use remix_storage::{Log, LogOptions, OsFs};
    use std::sync::Arc;

    fn change(op: Op, id: u64) -> Change {
        Change {
            source: "hooks".into(),
            position: format!("req:{id}"),
            model: "customer".into(),
            op,
            key: if op == Op::Truncate { serde_json::Value::Null } else { serde_json::json!({ "id": id }) },
            data: None,
            unchanged: Vec::new(),
            idempotency_key: None,
        }
    }

    fn append(log: &Log, changes: &[Change]) -> u64 {
        let records = changes
            .iter()
            .map(|c| AppendRecord { kind: KIND_CHANGE, payload: serde_json::to_vec(c).unwrap() })
            .collect();
        log.append_blocking(records).unwrap().first_offset
    }

    #[tokio::test]
    async fn a_change_is_superseded_by_a_newer_one_of_its_key_or_a_truncate_of_its_model() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(Arc::new(OsFs), dir.path(), LogOptions::default()).unwrap());
        append(&log, &[change(Op::Upsert, 1), change(Op::Upsert, 2)]);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let time_ms = crate::time::now_ms();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let newer = append(&log, &[change(Op::Delete, 1), change(Op::Upsert, 3)]);
        assert_eq!(
            newer_change(&log, &change(Op::Upsert, 1), Since::Time(time_ms)).await.unwrap(),
            Some(newer),
            "a delete of the key after the time"
        );
        assert_eq!(
            newer_change(&log, &change(Op::Upsert, 2), Since::Time(time_ms)).await.unwrap(),
            None,
            "key 2 changed only before the time"
        );
        assert_eq!(newer_change(&log, &change(Op::Upsert, 2), Since::Offset(0)).await.unwrap(), Some(2));
        assert_eq!(newer_change(&log, &change(Op::Upsert, 2), Since::Offset(2)).await.unwrap(), None);
        let truncate = append(&log, &[change(Op::Truncate, 0)]);
        assert_eq!(
            newer_change(&log, &change(Op::Upsert, 2), Since::Time(time_ms)).await.unwrap(),
            Some(truncate),
            "a truncate of the model"
        );
    }
}
