//! The `mysql` source: a consistent initial snapshot, then the row-based binary log.
//!
//! Invariants:
//! - The snapshot runs in `START TRANSACTION WITH CONSISTENT SNAPSHOT`, and the binary log position
//!   it is consistent with (MariaDB's `binlog_snapshot_file`/`binlog_snapshot_position`) is where
//!   streaming starts, so the copy and the stream neither miss nor repeat a change. An interrupted
//!   snapshot is redone: its rows are upserts, and the keys earlier attempts logged that the new copy
//!   does not hold (rows deleted between the attempts) are deleted after it
//!   ([`LoggedKeys`](crate::runtime::ingest::resnapshot::LoggedKeys)), so targets end the same.
//! - Every streamed change carries its position `<binlog file>:<transaction start>:<ordinal>` (20 and
//!   10 digits, so positions of one server compare as text); a transaction's commit logs the
//!   position `<file>:<commit end>:0` with its last chunk. At restart streaming resumes at the
//!   transaction start of the last logged position and the changes at or before it are dropped, so
//!   the log never holds a streamed change twice. Rows that went to the DLQ are dropped by their
//!   exact position.
//! - Changes are appended in transaction order, a chunk at a time, at most one append in flight:
//!   the next chunk accumulates meanwhile (the stream waits once it holds [`CHUNK_BYTES_MAX`]). A
//!   chunk may end inside a transaction (positions carry ordinals). When the session ends, the
//!   append in flight is awaited, so the next session resumes after what it logged.
//! - Column types come from `information_schema` (reread after DDL and whenever a table map's
//!   column count differs): a mapped column that no longer exists sends the row to the DLQ with the
//!   column's name.
//! - The server sends a heartbeat every `heartbeat_ms` while it has nothing else to send; after
//!   [`SILENT_HEARTBEATS_MAX`] such periods without any event the connection counts as lost and the
//!   source reconnects.
//! - Positions are binary log file and offset on MariaDB and MySQL alike; the MariaDB GTID of each
//!   transaction is not used for resuming (a failover to another server needs a new snapshot).

use super::config::{MySource, SnapshotMode, TableBinding};
use super::conn::{self, quote};
use super::types::{self, ColumnType, Kind};
use crate::connector::SourceStatus;
use crate::record::{Change, DeadLetter, FieldError, Op};
use crate::runtime::ingest::remix_in::{remix_in_owned, Origin, Rejected};
use crate::runtime::ingest::resnapshot::LoggedKeys;
use crate::runtime::ingest::{ChangeBatch, Ingest};
use crate::runtime::state::{StateKey, StateStore};
use futures_util::StreamExt;
use mysql_async::binlog::events::{EventData, RowsEventData, TableMapEvent};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Value as Sql};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Snapshot rows per append.
const CHUNK_ROWS: usize = 2000;
/// While an append is in flight, streamed changes accumulate; the stream waits for it once they hold
/// this many bytes.
const CHUNK_BYTES_MAX: usize = 4 * 1024 * 1024;
const RETRY_BASE_MS: u64 = 500;
const RETRY_MAX_MS: u64 = 30_000;
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
/// Heartbeat periods of silence (no event, no heartbeat) after which the connection counts as lost
/// and the source reconnects: a connection that died without a FIN or RST would otherwise be waited
/// on for ever.
const SILENT_HEARTBEATS_MAX: u64 = 4;

type Pending = JoinHandle<Result<crate::runtime::engine::Appended, crate::runtime::ingest::AppendError>>;

/// What the stream loop waits for: the append in flight, or the next event.
enum Next {
    Landed(
        Result<
            Result<crate::runtime::engine::Appended, crate::runtime::ingest::AppendError>,
            tokio::task::JoinError,
        >,
    ),
    Event(Option<Result<mysql_async::binlog::events::Event, mysql_async::Error>>),
}

/// Why a session of the source ended (it reconnects with backoff after any of them).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{}", conn::describe(.0))]
    Sql(#[from] mysql_async::Error),
    #[error(transparent)]
    Url(#[from] conn::UrlError),
    #[error(transparent)]
    Append(#[from] crate::runtime::ingest::AppendError),
    #[error(transparent)]
    State(#[from] crate::runtime::state::StateError),
    #[error(transparent)]
    Log(#[from] crate::runtime::engine::EngineError),
    #[error("binary log: {0}")]
    Binlog(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(String),
    #[error(
        "no event and no heartbeat from the server in {silence_ms} ms (heartbeat_ms: {heartbeat_ms}): the \
         connection counts as lost"
    )]
    Silent { silence_ms: u64, heartbeat_ms: u64 },
    #[error("progress of source {source_name}: {message}")]
    Progress { source_name: String, message: String },
}

/// Persisted per-source state: where streaming starts when the log holds no streamed change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceState {
    #[serde(default)]
    snapshot_done: bool,
    #[serde(default)]
    file: String,
    #[serde(default)]
    pos: u64,
}

impl SourceState {
    async fn load(store: &dyn StateStore, name: &str) -> Result<SourceState, SourceError> {
        match store.load(&StateKey::SourceProgress(name.to_owned())).await? {
            None => Ok(SourceState::default()),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| SourceError::Progress { source_name: name.to_owned(), message: e.to_string() }),
        }
    }

    async fn store(&self, store: &dyn StateStore, name: &str) -> Result<(), SourceError> {
        let bytes = serde_json::to_vec_pretty(self).expect("serializable");
        Ok(store.store(&StateKey::SourceProgress(name.to_owned()), bytes).await?)
    }
}

/// A streamed change's position.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub file: String,
    pub pos: u64,
    pub ordinal: u64,
}

impl Position {
    pub fn parse(text: &str) -> Option<Position> {
        let mut parts = text.rsplitn(3, ':');
        let ordinal = parts.next()?.parse().ok()?;
        let pos = parts.next()?.parse().ok()?;
        let file = parts.next()?;
        (!file.is_empty() && !file.starts_with("snapshot")).then(|| Position {
            file: file.to_owned(),
            pos,
            ordinal,
        })
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{:020}:{:010}", self.file, self.pos, self.ordinal)
    }
}

/// Starts the source; it reconnects with backoff until shutdown.
pub fn spawn(
    config: MySource,
    ingest: Ingest,
    shutdown: watch::Receiver<bool>,
) -> (Arc<Mutex<SourceStatus>>, JoinHandle<()>) {
    let status = Arc::new(Mutex::new(SourceStatus { state: "starting".into(), ..Default::default() }));
    let source = Source { config, ingest, shutdown, status: Arc::clone(&status), columns: HashMap::new() };
    (status, tokio::spawn(source.run()))
}

struct Source {
    config: MySource,
    ingest: Ingest,
    shutdown: watch::Receiver<bool>,
    status: Arc<Mutex<SourceStatus>>,
    /// Column types by `(database, table)`.
    columns: HashMap<(String, String), Arc<Vec<ColumnType>>>,
}

impl Source {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn set_status(&self, f: impl FnOnce(&mut SourceStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    async fn run(mut self) {
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let result = self.session().await;
            if *self.shutdown.borrow() {
                return;
            }
            let error = match result {
                Ok(()) => return,
                Err(e) => e,
            };
            if started.elapsed() > Duration::from_secs(60) {
                attempt = 0;
            }
            let delay = (RETRY_BASE_MS << attempt.min(6)).min(RETRY_MAX_MS);
            attempt += 1;
            tracing::error!(source = %self.name(), "{}; reconnecting in {delay} ms", crate::error_chain(&error));
            self.set_status(|s| {
                s.state = "retrying".into();
                s.last_error = Some(crate::error_chain(&error));
            });
            metrics::counter!("remix_source_errors_total", "source" => self.name().to_owned()).increment(1);
            tokio::select! {
                _ = self.shutdown.changed() => return,
                () = tokio::time::sleep(Duration::from_millis(delay)) => {}
            }
        }
    }

    async fn session(&mut self) -> Result<(), SourceError> {
        let url = conn::parse_url(&self.config.url)?;
        let mut state = SourceState::load(self.ingest.state().as_ref(), self.name()).await?;
        let wants_snapshot = self.config.snapshot == SnapshotMode::Initial && !state.snapshot_done;
        if wants_snapshot {
            let (file, pos) = self.snapshot(&url.opts).await?;
            state = SourceState { snapshot_done: true, file, pos };
            state.store(self.ingest.state().as_ref(), self.name()).await?;
        } else if state.file.is_empty() {
            let mut c = conn::connect(&url.opts).await?;
            let row: Option<mysql_async::Row> = c.query_first("SHOW MASTER STATUS").await?;
            let row = row.ok_or_else(|| {
                SourceError::Protocol("the binary log is off (SHOW MASTER STATUS is empty)".into())
            })?;
            let file: String = row.get(0).unwrap_or_default();
            let pos: u64 = row.get(1).unwrap_or(4);
            state = SourceState { snapshot_done: state.snapshot_done, file, pos };
            state.store(self.ingest.state().as_ref(), self.name()).await?;
        }
        let last = self.ingest.last_position(self.name()).as_deref().and_then(Position::parse);
        let (file, pos) = match &last {
            Some(p) => (p.file.clone(), p.pos),
            None => (state.file.clone(), state.pos),
        };
        self.stream(&url.opts, file, pos, last).await
    }

    /// Reads the column types of a table.
    async fn load_columns(
        c: &mut mysql_async::Conn,
        db: &str,
        table: &str,
    ) -> Result<Vec<ColumnType>, SourceError> {
        type Row = (String, String, String, Option<u64>, Option<String>);
        let rows: Vec<Row> = c
            .exec(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, DATETIME_PRECISION, CHARACTER_SET_NAME \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (db, table),
            )
            .await?;
        let checks: Vec<String> = c
            .exec(
                "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = ? \
                 AND TABLE_NAME = ?",
                (db, table),
            )
            .await
            .unwrap_or_default();
        Ok(rows
            .into_iter()
            .map(|(name, data_type, column_type, precision, charset)| {
                let json_check = format!("json_valid({})", quote(&name));
                let json = checks.iter().any(|c| c.replace(' ', "").eq_ignore_ascii_case(&json_check));
                let kind = Kind::of(
                    &data_type.to_ascii_lowercase(),
                    &column_type.to_ascii_lowercase(),
                    precision,
                    charset.as_deref(),
                    json,
                );
                ColumnType { name, kind }
            })
            .collect())
    }

    /// Copies every table in a consistent snapshot; returns the binary log position it is consistent with.
    async fn snapshot(&mut self, opts: &mysql_async::Opts) -> Result<(String, u64), SourceError> {
        self.set_status(|s| s.state = "snapshot".into());
        let mut c = conn::connect(opts).await?;
        c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ").await?;
        c.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY").await?;
        let status: Vec<(String, String)> = c.query("SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
        let get =
            |name: &str| status.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
        let (Some(file), Some(pos)) = (get("binlog_snapshot_file"), get("binlog_snapshot_position")) else {
            return Err(SourceError::Protocol(
                "the server reports no binlog_snapshot_file (MariaDB with the binary log on is needed for a \
                 consistent snapshot)"
                    .into(),
            ));
        };
        let pos: u64 =
            pos.parse().map_err(|_| SourceError::Protocol(format!("binlog_snapshot_position {pos:?}")))?;
        if file.is_empty() {
            return Err(SourceError::Protocol("the binary log is off".into()));
        }
        let mut logged_keys = LoggedKeys::load(&self.ingest, self.name()).await?;
        if !logged_keys.is_empty() {
            tracing::warn!(source = %self.name(), "the initial snapshot was interrupted; redoing it ({} rows \
                copied before are overwritten, or deleted if they are gone)", logged_keys.len());
        }
        let started = Instant::now();
        let mut total = 0u64;
        for table in self.config.tables.clone() {
            let columns = Self::load_columns(&mut c, &table.database, &table.table).await?;
            if columns.is_empty() {
                return Err(SourceError::Protocol(format!(
                    "table {}.{} does not exist or has no columns",
                    table.database, table.table
                )));
            }
            let estimate: Option<u64> = c
                .exec_first(
                    "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                    (&table.database, &table.table),
                )
                .await?;
            let estimate = estimate.unwrap_or(0);
            let name = format!("{}.{}", table.database, table.table);
            self.set_status(|s| {
                (s.snapshot_table, s.snapshot_rows_estimate, s.snapshot_rows) = (name.clone(), estimate, 0)
            });
            tracing::info!(source = %self.name(), "snapshot of {name}: about {estimate} rows");
            let list: Vec<String> = columns.iter().map(|c| quote(&c.name)).collect();
            let sql =
                format!("SELECT {} FROM {}.{}", list.join(", "), quote(&table.database), quote(&table.table));
            let mut result = c.query_iter(sql).await?;
            let mut stream = result
                .stream::<mysql_async::Row>()
                .await?
                .ok_or_else(|| SourceError::Protocol(format!("SELECT from {name} returned no result set")))?;
            let (mut batch, mut rows, mut last_progress) = (ChangeBatch::new(), 0u64, Instant::now());
            while let Some(row) = stream.next().await {
                let row = row?;
                let mut object = Map::new();
                for (i, column) in columns.iter().enumerate() {
                    let value = row.as_ref(i).cloned().unwrap_or(Sql::NULL);
                    let json = types::from_text(&column.kind, &value)
                        .map_err(|e| SourceError::Protocol(format!("{name}.{}: {e}", column.name)))?;
                    object.insert(column.name.clone(), json);
                }
                let position = format!("snapshot:{file}:{pos}:{name}:{rows}");
                rows += 1;
                match self.remix(&table, Value::Object(object), Op::Upsert, position) {
                    Ok(change) => {
                        logged_keys.copied(&change);
                        batch.push(&change)
                    }
                    Err(letter) => self.dead_letter(letter).await?,
                }
                if batch.len() >= CHUNK_ROWS {
                    self.ingest.append(self.name(), std::mem::take(&mut batch)).await?;
                    self.set_status(|s| s.snapshot_rows = rows);
                    metrics::gauge!("remix_snapshot_rows", "source" => self.name().to_owned())
                        .set(rows as f64);
                    if last_progress.elapsed() >= PROGRESS_INTERVAL {
                        last_progress = Instant::now();
                        let rate = rows as f64 / started.elapsed().as_secs_f64().max(0.001);
                        let eta = estimate.saturating_sub(rows) as f64 / rate.max(1.0);
                        tracing::info!(source = %self.name(), "snapshot of {name}: {rows} of ~{estimate} rows, {rate:.0} rows/s, ETA {eta:.0} s");
                    }
                }
            }
            drop(stream);
            drop(result);
            if !batch.is_empty() {
                self.ingest.append(self.name(), batch).await?;
            }
            self.set_status(|s| s.snapshot_rows = rows);
            metrics::gauge!("remix_snapshot_rows", "source" => self.name().to_owned()).set(rows as f64);
            total += rows;
            tracing::info!(source = %self.name(), "snapshot of {name}: {rows} rows copied");
        }
        let prefix = format!("snapshot:{file}:{pos}");
        logged_keys.delete_gone(&self.ingest, self.name(), &prefix, CHUNK_ROWS).await?;
        c.query_drop("COMMIT").await?;
        tracing::info!(source = %self.name(), "initial snapshot done: {total} rows in {:.1} s at {file}:{pos}", started.elapsed().as_secs_f64());
        Ok((file, pos))
    }

    fn remix(
        &self,
        table: &TableBinding,
        row: Value,
        op: Op,
        position: String,
    ) -> Result<Change, Box<DeadLetter>> {
        let model = self.ingest.model(&table.binding.model);
        let origin = Origin { source: self.name(), position: position.clone(), idempotency_key: None };
        remix_in_owned(&table.binding, model, row, op, &[], origin).map_err(|rejected| {
            let Rejected { errors, input } = *rejected;
            Box::new(DeadLetter {
                source: self.name().to_owned(),
                position,
                model: table.binding.model.clone(),
                route: format!("{}.{}", table.database, table.table),
                errors,
                input,
                op: Some(op),
            })
        })
    }

    async fn dead_letter(&self, letter: Box<DeadLetter>) -> Result<(), SourceError> {
        let letter = *letter;
        tracing::warn!(source = %self.name(), position = %letter.position, "row sent to the DLQ: {:?}", letter.errors);
        self.ingest.dead_letters().append(vec![letter]).await?;
        Ok(())
    }

    async fn columns_of(
        &mut self,
        c: &mut mysql_async::Conn,
        db: &str,
        table: &str,
        count: usize,
    ) -> Result<Arc<Vec<ColumnType>>, SourceError> {
        let key = (db.to_owned(), table.to_owned());
        if let Some(found) = self.columns.get(&key).filter(|cols| cols.len() == count) {
            return Ok(Arc::clone(found));
        }
        let loaded = Arc::new(Self::load_columns(c, db, table).await?);
        self.columns.insert(key, Arc::clone(&loaded));
        Ok(loaded)
    }

    /// Streams the binary log from `file`:`pos`, dropping what `skip_through` says the log has.
    async fn stream(
        &mut self,
        opts: &mysql_async::Opts,
        mut file: String,
        pos: u64,
        skip_through: Option<Position>,
    ) -> Result<(), SourceError> {
        let mut meta = conn::connect(opts).await?;
        let mut dump = conn::connect(opts).await?;
        // The server's dump thread reads this user variable (nanoseconds), as from a replica.
        let heartbeat_ms = self.config.heartbeat_ms;
        dump.query_drop(format!("SET @master_heartbeat_period = {}", heartbeat_ms * 1_000_000)).await?;
        let silence_ms = heartbeat_ms * SILENT_HEARTBEATS_MAX;
        let request =
            BinlogStreamRequest::new(self.config.server_id).with_filename(file.as_bytes()).with_pos(pos);
        let mut stream = dump.get_binlog_stream(request).await?;
        let dead_lettered: HashSet<String> = self
            .ingest
            .indexes()
            .dead_letter_positions(self.name())
            .into_iter()
            .filter(|p| Position::parse(p).is_some_and(|at| skip_through.as_ref().is_none_or(|t| at > *t)))
            .collect();
        self.set_status(|s| {
            s.state = "streaming".into();
            s.last_error = None;
        });
        tracing::info!(source = %self.name(), "streaming the binary log from {file}:{pos}");
        let bindings: HashMap<(String, String), TableBinding> =
            self.config.tables.iter().map(|t| ((t.database.clone(), t.table.clone()), t.clone())).collect();
        let mut maps: HashMap<u64, TableMapEvent<'static>> = HashMap::new();
        let mut batch = ChangeBatch::new();
        let mut inflight: Option<Pending> = None;
        let (mut trx_start, mut ordinal, mut in_trx, mut seen_format) = (pos, 0u64, false, false);
        let mut shutdown = self.shutdown.clone();
        let result: Result<(), SourceError> = async { loop {
            let next = tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                landed = async { inflight.as_mut().expect("in flight").await }, if inflight.is_some() => {
                    Next::Landed(landed)
                }
                event = tokio::time::timeout(Duration::from_millis(silence_ms), stream.next()) => {
                    Next::Event(event.map_err(|_| SourceError::Silent { silence_ms, heartbeat_ms })?)
                }
            };
            let event = match next {
                Next::Landed(landed) => {
                    inflight = None;
                    landed.map_err(|e| SourceError::Protocol(format!("the append task failed: {e}")))??;
                    self.settle(&mut batch, &mut inflight, false).await?;
                    continue;
                }
                Next::Event(event) => event,
            };
            let Some(event) = event else {
                return Err(SourceError::Protocol("the server ended the binary log stream".into()));
            };
            let event = event?;
            let header = event.header();
            let end = u64::from(header.log_pos());
            let start = end.saturating_sub(u64::from(header.event_size()));
            let Some(data) = event.read_data()? else {
                // An event type this client does not know (MariaDB's GTID, annotations): a GTID starts
                // a transaction.
                if end > 0 && !in_trx {
                    (trx_start, ordinal, in_trx) = (start, 0, true);
                }
                continue;
            };
            match data {
                EventData::RotateEvent(rotate) => {
                    // The first event (a fake rotate to the file asked for) comes before the format
                    // description, so its name still carries the 4-byte checksum.
                    let raw = rotate.name_raw();
                    let raw = if seen_format { raw } else { &raw[..raw.len().saturating_sub(4)] };
                    file = binlog_name(raw);
                    trx_start = rotate.position();
                    in_trx = false;
                }
                EventData::FormatDescriptionEvent(_) => seen_format = true,
                EventData::QueryEvent(query) => {
                    let sql = query.query().trim().to_ascii_uppercase();
                    if sql == "BEGIN" || sql.starts_with("XA START") {
                        if !in_trx {
                            (trx_start, ordinal, in_trx) = (start, 0, true);
                        }
                    } else if sql == "COMMIT" {
                        self.commit(&mut batch, &mut inflight, &file, end).await?;
                        in_trx = false;
                    } else {
                        // DDL (implicitly committed): column types are read again.
                        self.columns.clear();
                        in_trx = false;
                        self.commit(&mut batch, &mut inflight, &file, end).await?;
                    }
                }
                EventData::XidEvent(_) => {
                    self.commit(&mut batch, &mut inflight, &file, end).await?;
                    in_trx = false;
                }
                EventData::TableMapEvent(map) => {
                    if !in_trx {
                        (trx_start, ordinal, in_trx) = (start, 0, true);
                    }
                    maps.insert(map.table_id(), map.into_owned());
                }
                EventData::RowsEvent(rows) => {
                    let Some(map) = maps.get(&rows.table_id()) else {
                        return Err(SourceError::Protocol(format!(
                            "rows of unknown table id {}",
                            rows.table_id()
                        )));
                    };
                    let key = (map.database_name().into_owned(), map.table_name().into_owned());
                    let Some(binding) = bindings.get(&key) else { continue };
                    let columns =
                        self.columns_of(&mut meta, &key.0, &key.1, map.columns_count() as usize).await?;
                    let op = match &rows {
                        RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => Op::Delete,
                        _ => Op::Upsert,
                    };
                    let mut images = Vec::new();
                    for row in rows.rows(map) {
                        let (before, after) = row?;
                        let decode = |image: Option<mysql_async::binlog::row::BinlogRow>| -> Result<Option<Map<String, Value>>, SourceError> {
                            let Some(image) = image else { return Ok(None) };
                            let mut object = Map::new();
                            for (i, value) in image.unwrap().into_iter().enumerate() {
                                let Some(column) = columns.get(i) else { continue };
                                let value = Sql::try_from(value).map_err(|e| SourceError::Protocol(e.to_string()))?;
                                let json = types::from_binary(&column.kind, value).map_err(|e| {
                                    SourceError::Protocol(format!("{}.{}.{}: {e}", key.0, key.1, column.name))
                                })?;
                                object.insert(column.name.clone(), json);
                            }
                            Ok(Some(object))
                        };
                        images.push((decode(before)?, decode(after)?));
                    }
                    for (before, after) in images {
                        let (row, op) = match (op, before, after) {
                            (Op::Delete, Some(before), _) => (before, Op::Delete),
                            (_, before, Some(after)) => {
                                if let Some(before) = before.filter(|b| self.key_changed(binding, b, &after))
                                {
                                    ordinal += 1;
                                    let at = Position { file: file.clone(), pos: trx_start, ordinal };
                                    self.row(
                                        &mut batch,
                                        binding,
                                        &columns,
                                        before,
                                        Op::Delete,
                                        at,
                                        &skip_through,
                                        &dead_lettered,
                                    )
                                    .await?;
                                }
                                (after, Op::Upsert)
                            }
                            _ => continue,
                        };
                        ordinal += 1;
                        let at = Position { file: file.clone(), pos: trx_start, ordinal };
                        self.row(&mut batch, binding, &columns, row, op, at, &skip_through, &dead_lettered)
                            .await?;
                    }
                    self.settle(&mut batch, &mut inflight, false).await?;
                }
                _ => {}
            }
        } }
        .await;
        // The append in flight lands (and records its last position) before the next session reads
        // where to resume; changes not yet appended are read again then.
        if let Some(pending) = inflight.take() {
            let _ = pending.await;
        }
        result
    }

    /// Collects a finished append and starts the next one (at most one in flight; the next chunk
    /// accumulates meanwhile, and is waited for only once it holds [`CHUNK_BYTES_MAX`]); with
    /// `drain`, waits until nothing is pending. A chunk with no changes but a position (transactions
    /// that touched no bound table) records that position once everything before it is durable.
    async fn settle(
        &self,
        batch: &mut ChangeBatch,
        inflight: &mut Option<Pending>,
        drain: bool,
    ) -> Result<(), SourceError> {
        loop {
            if let Some(pending) = inflight {
                let must_wait = drain || batch.bytes() >= CHUNK_BYTES_MAX;
                if !pending.is_finished() && !must_wait {
                    return Ok(());
                }
                let pending = inflight.take().expect("checked");
                pending
                    .await
                    .map_err(|e| SourceError::Protocol(format!("the append task failed: {e}")))??;
            }
            let next = std::mem::take(batch);
            if next.is_empty() {
                if let Some(position) = next.last_position() {
                    self.ingest.passed(self.name(), position.to_owned());
                }
                return Ok(());
            }
            let (ingest, name) = (self.ingest.clone(), self.name().to_owned());
            *inflight = Some(tokio::spawn(async move { ingest.append(&name, next).await }));
            if !drain {
                return Ok(());
            }
        }
    }

    /// Whether an update changed the model key (then the old key is deleted first).
    fn key_changed(
        &self,
        binding: &TableBinding,
        before: &Map<String, Value>,
        after: &Map<String, Value>,
    ) -> bool {
        // The common case, decided without remixing: every column a key field is mapped from (or,
        // unmapped, its own column) is unchanged, so the key is (a field's value depends only on its
        // column, a cast and a constant default).
        let model = self.ingest.model(&binding.binding.model);
        let unchanged = model.key_fields().iter().all(|field| {
            let column = binding
                .binding
                .mapping
                .source_paths()
                .find(|(name, _)| name == field)
                .map_or(field.as_str(), |(_, path)| path.root());
            before.get(column) == after.get(column)
        });
        if unchanged {
            return false;
        }
        let key = |row: &Map<String, Value>| {
            self.remix(binding, Value::Object(row.clone()), Op::Delete, String::new()).ok().map(|c| c.key)
        };
        let old = key(before);
        old.is_some() && old != key(after)
    }

    #[allow(clippy::too_many_arguments)]
    async fn row(
        &self,
        batch: &mut ChangeBatch,
        binding: &TableBinding,
        columns: &[ColumnType],
        row: Map<String, Value>,
        op: Op,
        at: Position,
        skip_through: &Option<Position>,
        dead_lettered: &HashSet<String>,
    ) -> Result<(), SourceError> {
        if skip_through.as_ref().is_some_and(|t| at <= *t) {
            return Ok(());
        }
        let position = at.to_string();
        if dead_lettered.contains(&position) {
            return Ok(());
        }
        let missing: Vec<FieldError> = binding
            .binding
            .mapping
            .source_paths()
            .filter(|(_, path)| !columns.iter().any(|c| c.name == path.root()))
            .map(|(field, path)| FieldError {
                path: format!("/{field}"),
                message: format!(
                    "column `{}` is not in table {}.{} (dropped or renamed?); field \"{field}\" of model {} is mapped from it",
                    path.root(),
                    binding.database,
                    binding.table,
                    binding.binding.model
                ),
            })
            .collect();
        if !missing.is_empty() {
            let letter = DeadLetter {
                source: self.name().to_owned(),
                position,
                model: binding.binding.model.clone(),
                route: format!("{}.{}", binding.database, binding.table),
                errors: missing,
                input: Value::Object(row),
                op: Some(op),
            };
            return self.dead_letter(Box::new(letter)).await;
        }
        match self.remix(binding, Value::Object(row), op, position) {
            Ok(change) => batch.push(&change),
            Err(letter) => self.dead_letter(letter).await?,
        }
        Ok(())
    }

    /// A transaction (or DDL) ended at `file`:`end`: the chunk holding its last changes carries that
    /// position.
    async fn commit(
        &self,
        batch: &mut ChangeBatch,
        inflight: &mut Option<Pending>,
        file: &str,
        end: u64,
    ) -> Result<(), SourceError> {
        batch.set_last_position(Position { file: file.to_owned(), pos: end, ordinal: 0 }.to_string());
        self.settle(batch, inflight, false).await
    }
}

/// A binary log file name from a rotate event: `<base>.<6 digits>`, without the checksum bytes a
/// fake rotate may carry.
fn binlog_name(raw: &[u8]) -> String {
    let text: String = raw.iter().take_while(|b| b.is_ascii_graphic()).map(|&b| char::from(b)).collect();
    match text.rfind('.') {
        Some(dot)
            if text.len() >= dot + 7 && text.as_bytes()[dot + 1..dot + 7].iter().all(u8::is_ascii_digit) =>
        {
            text[..dot + 7].to_owned()
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binlog_names_lose_checksum_bytes() {
        assert_eq!(binlog_name(b"binlog.000001"), "binlog.000001");
        assert_eq!(binlog_name(b"binlog.0000016rb\xff"), "binlog.000001");
        assert_eq!(binlog_name(b"mysql-bin.000012\x00\x01"), "mysql-bin.000012");
    }

    #[test]
    fn positions_round_trip_and_order() {
        let p = Position { file: "binlog.000002".into(), pos: 330, ordinal: 7 };
        assert_eq!(p.to_string(), "binlog.000002:00000000000000000330:0000000007");
        assert_eq!(Position::parse(&p.to_string()), Some(p.clone()));
        assert!(Position::parse("snapshot:binlog.000001:4:db.t:9").is_none());
        let later = Position { file: "binlog.000002".into(), pos: 1000, ordinal: 0 };
        assert!(p < later);
        assert!(p.to_string() < later.to_string());
    }
}
