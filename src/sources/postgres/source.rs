//! The PostgreSQL source's session: publication and slot, the initial snapshot, and the stream.
//!
//! Invariants:
//! - The server is told a position (`confirmed_flush_lsn`) only when every change up to that commit is
//!   durable in the log: the flush position sent is the end LSN of the last commit whose records'
//!   append has completed, or, when nothing is pending, the position of a keepalive.
//! - At most one append of this source is in flight; the next chunk accumulates meanwhile. So when an
//!   append fails, nothing after it was logged, and the next session resumes exactly after the last
//!   logged change.
//! - Every change carries its position `<commit LSN>:<ordinal>`; after a restart the server resends
//!   from the slot's confirmed position and changes at or before the last logged position are
//!   dropped, so the log never holds a streamed change twice. A later change whose row went to the
//!   DLQ is dropped by its exact position (never by a threshold: changes before it may not have been
//!   logged), so a row is not dead-lettered twice either.
//! - An interrupted initial snapshot is redone from scratch with a new slot (the exported snapshot
//!   dies with its connection); snapshot rows are upserts, and the keys this source logged before
//!   (an interrupted attempt's rows) that the new copy does not hold are deleted after it, so targets
//!   end the same (a row deleted between the attempts does not stay behind).

use super::conn::{
    format_lsn, parse_dsn, parse_lsn, quote_ident, PgError, Replication, ReplicationConn, ReplicationStream,
};
use super::fast::FastPlan;
use super::pgoutput::{self, Message, OldKind, Relation, Tuple};
use super::{snapshot, types};
use crate::config::{PostgresSource, SnapshotMode, TableBinding};
use crate::pipeline::remix_in::{remix_in_owned, Origin, Rejected};
use crate::pipeline::AppendError;
use crate::record::{self, Change, DeadLetter, Decoded, FieldError, Op, KIND_CHANGE, KIND_DEAD_LETTER};
use crate::sources::SourceContext;
use remix_storage::{AppendRecord, Appended, Log};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A chunk of changes is appended once it holds this many bytes (or at the next chance).
const CHUNK_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Snapshot rows per append.
const SNAPSHOT_CHUNK_ROWS: usize = 2000;
/// Standby status updates go out at least this often.
const STATUS_INTERVAL: Duration = Duration::from_secs(10);
const RETRY_BASE_MS: u64 = 500;
const RETRY_MAX_MS: u64 = 30_000;
/// The room reserved up front for a record's JSON is at most this (larger ones grow as needed).
const PAYLOAD_HINT_BYTES_MAX: usize = 64 * 1024;
/// Slack over the last record's size when reserving room for the next one (rows of a table differ
/// a little in size; growing the buffer would copy it).
const PAYLOAD_HINT_SLACK_BYTES: usize = 64;
const SNAPSHOT_PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// What the node shows of a source.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceStatus {
    pub state: String,
    pub confirmed_lsn: String,
    pub last_error: Option<String>,
    pub snapshot_rows: u64,
    /// The table the snapshot is copying and the planner's estimate of its rows (progress, ETA).
    pub snapshot_table: String,
    pub snapshot_rows_estimate: u64,
}

/// Persisted per-source state (`<data_dir>/sources/<name>.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceState {
    #[serde(default)]
    snapshot_done: bool,
}

fn state_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("sources").join(format!("{name}.json"))
}

impl SourceState {
    fn load(data_dir: &Path, name: &str) -> anyhow::Result<SourceState> {
        match std::fs::read(state_path(data_dir, name)) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SourceState::default()),
            Err(e) => Err(e.into()),
        }
    }
    fn store(&self, data_dir: &Path, name: &str) -> anyhow::Result<()> {
        let path = state_path(data_dir, name);
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        crate::targets::state::write_durably(&path, &serde_json::to_vec_pretty(self)?)
    }
}

#[derive(Debug, Clone)]
pub struct SourceHandle {
    pub name: String,
    pub status: Arc<Mutex<SourceStatus>>,
}

/// Starts the source; it reconnects with backoff until shutdown.
pub fn spawn(
    config: PostgresSource,
    context: SourceContext,
    data_dir: PathBuf,
    shutdown: watch::Receiver<bool>,
) -> (SourceHandle, JoinHandle<()>) {
    let status = Arc::new(Mutex::new(SourceStatus { state: "starting".into(), ..Default::default() }));
    let handle = SourceHandle { name: config.name.clone(), status: Arc::clone(&status) };
    let source = Source { config, context, data_dir, shutdown, status, progressed: false };
    (handle, tokio::spawn(source.run()))
}

struct Source {
    config: PostgresSource,
    context: SourceContext,
    data_dir: PathBuf,
    shutdown: watch::Receiver<bool>,
    status: Arc<Mutex<SourceStatus>>,
    /// The last session confirmed a position: it was healthy, so the backoff starts over.
    progressed: bool,
}

type Pending = JoinHandle<Result<Appended, AppendError>>;

/// Changes waiting to be appended, and what their durability confirms.
#[derive(Default)]
struct Chunk {
    records: Vec<AppendRecord>,
    bytes: usize,
    /// End LSN of the last commit wholly in this chunk (or in earlier ones).
    commit_end: Option<u64>,
    last_position: Option<String>,
}

struct Inflight {
    /// How many records the append holds.
    records: u64,
    pending: Pending,
    commit_end: Option<u64>,
    last_position: Option<String>,
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
            self.progressed = false;
            let result = self.session().await;
            if *self.shutdown.borrow() {
                return;
            }
            let error = match result {
                Ok(()) => return,
                Err(e) => e,
            };
            if self.progressed {
                attempt = 0;
            }
            let delay = (RETRY_BASE_MS << attempt.min(6)).min(RETRY_MAX_MS);
            attempt += 1;
            tracing::error!(source = %self.name(), "{error:#}; reconnecting in {delay} ms");
            self.set_status(|s| {
                s.state = "retrying".into();
                s.last_error = Some(format!("{error:#}"));
            });
            metrics::counter!("remix_source_errors_total", "source" => self.name().to_owned()).increment(1);
            tokio::select! {
                _ = self.shutdown.changed() => return,
                () = tokio::time::sleep(Duration::from_millis(delay)) => {}
            }
        }
    }

    /// One connection's worth of work; `Ok` only on shutdown.
    async fn session(&mut self) -> anyhow::Result<()> {
        let (client, connection) = super::tls::connect(&self.config.dsn).await?;
        let connection = tokio::spawn(connection);
        let result = self.session_with(&client).await;
        drop(client);
        connection.abort();
        result
    }

    async fn session_with(&mut self, client: &tokio_postgres::Client) -> anyhow::Result<()> {
        ensure_publication(client, &self.config).await?;
        let slot_exists = client
            .query_opt("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", &[&self.config.slot])
            .await?
            .is_some();
        let mut state = SourceState::load(&self.data_dir, self.name())?;
        let wants_snapshot = self.config.snapshot == SnapshotMode::Initial && !state.snapshot_done;
        let info = parse_dsn(&self.config.dsn)?;
        let mut repl = ReplicationConn::connect(&info).await?;
        let mut start_lsn = 0;
        if !slot_exists || wants_snapshot {
            if slot_exists {
                tracing::warn!(source = %self.name(), "the initial snapshot was interrupted; redoing it with a new slot \
                    (rows are upserts, so targets end the same)");
                client.execute("SELECT pg_drop_replication_slot($1)", &[&self.config.slot]).await?;
            }
            let (lsn, snapshot_name) = repl.create_slot(&self.config.slot, wants_snapshot).await?;
            tracing::info!(source = %self.name(), slot = %self.config.slot, "created replication slot at {}", format_lsn(lsn));
            if let (true, Some(snapshot_name)) = (wants_snapshot, snapshot_name) {
                self.snapshot(&snapshot_name, lsn).await?;
            }
            state.snapshot_done = true;
            state.store(&self.data_dir, self.name())?;
            start_lsn = lsn;
        }
        let stream = repl.start_replication(&self.config.slot, start_lsn, &self.config.publication).await?;
        self.set_status(|s| {
            s.state = "streaming".into();
            s.last_error = None;
        });
        Streamer::new(self, stream).run().await
    }

    /// Copies every table inside the exported snapshot and logs the rows as upserts.
    async fn snapshot(&mut self, snapshot_name: &str, lsn: u64) -> anyhow::Result<()> {
        self.set_status(|s| s.state = "snapshot".into());
        let (client, connection) = super::tls::connect(&self.config.dsn).await?;
        let connection = tokio::spawn(connection);
        snapshot::begin(&client, snapshot_name).await?;
        let mut logged_keys = self.logged_keys().await?;
        let started = Instant::now();
        let mut total_rows = 0;
        for table in self.config.tables.clone() {
            let relation = snapshot::table_relation(&client, &table.schema, &table.table).await?;
            anyhow::ensure!(
                !relation.columns.is_empty(),
                "table {}.{} does not exist or has no columns",
                table.schema,
                table.table
            );
            let estimate = snapshot::estimated_rows(&client, &table.schema, &table.table).await;
            tracing::info!(source = %self.name(), "snapshot of {}.{}: about {estimate} rows", table.schema, table.table);
            self.set_status(|s| {
                (s.snapshot_table, s.snapshot_rows_estimate, s.snapshot_rows) =
                    (format!("{}.{}", table.schema, table.table), estimate, 0);
            });
            let mut copy = snapshot::TableCopy::start(&client, relation).await?;
            let mut copier = SnapshotCopier::new(self, &table, lsn, estimate, &mut logged_keys);
            while let Some(rows) = copy.next_rows().await? {
                for row in rows {
                    copier.row(row).await?;
                }
            }
            copier.flush().await?;
            let rows = copier.rows;
            total_rows += rows;
            tracing::info!(source = %self.name(), "snapshot of {}.{}: {rows} rows copied", table.schema, table.table);
        }
        self.delete_gone(logged_keys, lsn).await?;
        client.batch_execute("COMMIT").await?;
        connection.abort();
        tracing::info!(source = %self.name(), "initial snapshot done: {total_rows} rows in {:.1} s", started.elapsed().as_secs_f64());
        Ok(())
    }

    /// The keys whose objects this source's changes in the log leave at the targets (none when it
    /// logged nothing): after an interrupted snapshot, the rows its attempts copied.
    async fn logged_keys(&self) -> anyhow::Result<LoggedKeys> {
        if self.context.indexes.last_position(self.name()).is_none() {
            return Ok(LoggedKeys::default());
        }
        let log = Arc::clone(self.context.appender.log());
        let name = self.name().to_owned();
        tokio::task::spawn_blocking(move || LoggedKeys::scan(&log, &name)).await?
    }

    /// Deletes the logged keys the new snapshot did not hold: rows an interrupted attempt copied that
    /// were deleted before this snapshot's consistent point.
    async fn delete_gone(&self, gone: LoggedKeys, lsn: u64) -> anyhow::Result<()> {
        let mut records = Vec::new();
        let mut n = 0u64;
        for (model, keys) in gone.0 {
            for key in keys {
                let change = Change {
                    source: self.name().to_owned(),
                    position: format!("snapshot:{}:gone:{model}:{n}", format_lsn(lsn)),
                    model: model.clone(),
                    op: Op::Delete,
                    key: serde_json::from_str(&key)?,
                    data: None,
                    unchanged: Vec::new(),
                    idempotency_key: None,
                };
                n += 1;
                records.push(AppendRecord { kind: KIND_CHANGE, payload: serde_json::to_vec(&change)? });
                if records.len() >= SNAPSHOT_CHUNK_ROWS {
                    self.context.appender.append(std::mem::take(&mut records)).await?;
                }
            }
        }
        if !records.is_empty() {
            self.context.appender.append(records).await?;
        }
        if n > 0 {
            tracing::info!(source = %self.name(), "snapshot: {n} rows an interrupted snapshot had copied are gone; deleted");
        }
        Ok(())
    }

    /// The change a row makes, or its dead letter.
    fn remix(
        &self,
        table: &TableBinding,
        row: Value,
        op: Op,
        unchanged: &[String],
        position: String,
    ) -> Result<Change, Box<DeadLetter>> {
        let model = self.context.config.model(&table.binding.model).expect("config checked the model");
        let origin = Origin { source: self.name(), position: position.clone(), idempotency_key: None };
        remix_in_owned(&table.binding, model, row, op, unchanged, origin).map_err(|rejected| {
            let Rejected { errors, input } = *rejected;
            Box::new(DeadLetter {
                source: self.name().to_owned(),
                position,
                model: table.binding.model.clone(),
                route: format!("{}.{}", table.schema, table.table),
                errors,
                input,
                op: Some(op),
            })
        })
    }

    async fn dead_letter(&self, letter: Box<DeadLetter>) -> anyhow::Result<()> {
        let letter = *letter;
        let payload = serde_json::to_vec(&letter)?;
        let appended =
            self.context.dlq.append(vec![AppendRecord { kind: KIND_DEAD_LETTER, payload }]).await?;
        tracing::warn!(source = %self.name(), position = %letter.position, "row sent to the DLQ: {:?}", letter.errors);
        let entry =
            crate::pipeline::DlqEntry { id: appended.first_offset, time_ms: appended.timestamp_ms, letter };
        self.context.indexes.add_dead_letter(entry);
        Ok(())
    }
}

/// Keys (as JSON text) by model that a source's changes in the log leave at the targets.
#[derive(Debug, Default)]
struct LoggedKeys(HashMap<String, std::collections::HashSet<String>>);

impl LoggedKeys {
    fn scan(log: &Log, source: &str) -> anyhow::Result<LoggedKeys> {
        let mut keys = LoggedKeys::default();
        for entry in log.reader(log.first_offset())? {
            let entry = entry?;
            let Decoded::Change(change) = record::decode(entry.kind, &entry.payload) else { continue };
            if change.source != source {
                continue;
            }
            let model = keys.0.entry(change.model).or_default();
            match change.op {
                Op::Upsert => model.insert(change.key.to_string()),
                Op::Delete => model.remove(&change.key.to_string()),
                Op::Truncate => {
                    model.clear();
                    true
                }
            };
        }
        Ok(keys)
    }

    /// The new snapshot holds this change's object.
    fn copied(&mut self, change: &Change) {
        if let Some(model) = self.0.get_mut(&change.model) {
            model.remove(&change.key.to_string());
        }
    }
}

/// Appends snapshot rows in chunks and reports progress.
struct SnapshotCopier<'a> {
    source: &'a Source,
    table: &'a TableBinding,
    lsn: u64,
    estimate: u64,
    rows: u64,
    records: Vec<AppendRecord>,
    last_progress: Instant,
    started: Instant,
    /// What earlier attempts logged; the keys this copy holds are taken out.
    logged_keys: &'a mut LoggedKeys,
}

impl<'a> SnapshotCopier<'a> {
    fn new(
        source: &'a Source,
        table: &'a TableBinding,
        lsn: u64,
        estimate: u64,
        logged_keys: &'a mut LoggedKeys,
    ) -> Self {
        let now = Instant::now();
        SnapshotCopier {
            source,
            table,
            lsn,
            estimate,
            rows: 0,
            records: Vec::new(),
            last_progress: now,
            started: now,
            logged_keys,
        }
    }

    async fn row(&mut self, row: serde_json::Map<String, Value>) -> anyhow::Result<()> {
        let position = format!(
            "snapshot:{}:{}.{}:{}",
            format_lsn(self.lsn),
            self.table.schema,
            self.table.table,
            self.rows
        );
        self.rows += 1;
        match self.source.remix(self.table, Value::Object(row), Op::Upsert, &[], position) {
            Ok(change) => {
                self.logged_keys.copied(&change);
                self.records.push(AppendRecord { kind: KIND_CHANGE, payload: serde_json::to_vec(&change)? })
            }
            Err(letter) => self.source.dead_letter(letter).await?,
        }
        if self.records.len() >= SNAPSHOT_CHUNK_ROWS {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.records.is_empty() {
            let records = std::mem::take(&mut self.records);
            let count = records.len() as u64;
            self.source.context.appender.append(records).await?;
            self.source.context.logged.add(self.source.name(), count);
        }
        let name = self.source.name().to_owned();
        let rows = self.rows;
        self.source.set_status(|s| s.snapshot_rows = rows);
        metrics::gauge!("remix_snapshot_rows", "source" => name.clone()).set(rows as f64);
        if self.last_progress.elapsed() >= SNAPSHOT_PROGRESS_INTERVAL {
            self.last_progress = Instant::now();
            let rate = rows as f64 / self.started.elapsed().as_secs_f64().max(0.001);
            let eta = self.estimate.saturating_sub(rows) as f64 / rate.max(1.0);
            tracing::info!(source = %name, "snapshot of {}.{}: {rows} of ~{} rows, {rate:.0} rows/s, ETA {eta:.0} s",
                self.table.schema, self.table.table, self.estimate);
        }
        Ok(())
    }
}

/// Publication: created for the configured tables when missing; missing tables are added.
async fn ensure_publication(client: &tokio_postgres::Client, config: &PostgresSource) -> anyhow::Result<()> {
    let tables: Vec<String> = config
        .tables
        .iter()
        .map(|t| format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.table)))
        .collect();
    let exists = client
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&config.publication])
        .await?
        .is_some();
    if !exists {
        let sql = format!(
            "CREATE PUBLICATION {} FOR TABLE {}",
            quote_ident(&config.publication),
            tables.join(", ")
        );
        client.batch_execute(&sql).await?;
        tracing::info!(publication = %config.publication, "created publication");
        return Ok(());
    }
    for table in &config.tables {
        let member = client
            .query_opt(
                "SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
                &[&config.publication, &table.schema, &table.table],
            )
            .await?
            .is_some();
        if !member {
            let sql = format!(
                "ALTER PUBLICATION {} ADD TABLE {}.{}",
                quote_ident(&config.publication),
                quote_ident(&table.schema),
                quote_ident(&table.table)
            );
            client.batch_execute(&sql).await?;
        }
    }
    Ok(())
}

/// Errors for the mapped columns the relation no longer has (dropped or renamed): without them a row
/// would reach the targets with those fields missing, silently.
fn missing_columns(table: &TableBinding, relation: &Relation) -> Vec<FieldError> {
    table
        .binding
        .mapping
        .source_paths()
        .filter(|(_, path)| !relation.columns.iter().any(|c| c.name == path.root()))
        .map(|(field, path)| FieldError {
            path: format!("/{field}"),
            message: format!(
                "column \"{}\" is not in table {}.{} (dropped or renamed?); field \"{field}\" of model {} is \
                 mapped from it",
                path.root(),
                relation.namespace,
                relation.name,
                table.binding.model
            ),
        })
        .collect()
}

/// A relation as last announced, with the table that binds it (if any) and the mapped columns it
/// lacks, worked out once per Relation message rather than per row.
struct Bound {
    relation: Relation,
    table: Option<Arc<TableBinding>>,
    missing: Vec<FieldError>,
    /// How to write its upserts directly, when they need no mapping or validator (see [`fast`]).
    fast: Option<FastPlan>,
}

/// `<commit LSN>:<ordinal>` of a streamed change, parsed for comparison.
fn parse_position(position: &str) -> Option<(u64, u64)> {
    let (lsn, ordinal) = position.split_once(':')?;
    Some((parse_lsn(lsn).ok()?, ordinal.parse().ok()?))
}

/// The streaming half of a session.
struct Streamer<'a> {
    source: &'a mut Source,
    stream: ReplicationStream,
    tables: HashMap<String, Arc<TableBinding>>,
    relations: HashMap<u32, Arc<Bound>>,
    /// Custom types (domains) announced by Type messages whose base is a built-in type.
    domains: HashMap<u32, u32>,
    /// Changes at or before this position are already in the log.
    skip_through: Option<(u64, u64)>,
    /// Later changes that already went to the DLQ (a crash came before the server was told).
    dead_lettered: HashSet<String>,
    /// The current transaction: its commit LSN and the next ordinal.
    txn: Option<(u64, u64)>,
    /// `<commit LSN>:` of the current transaction, the start of its positions.
    txn_prefix: String,
    chunk: Chunk,
    inflight: Option<Inflight>,
    confirmed: u64,
    server_end: u64,
    /// Room to reserve for the next record's JSON (the last one's size and some slack).
    payload_bytes_hint: usize,
    last_status: Instant,
}

impl<'a> Streamer<'a> {
    fn new(source: &'a mut Source, stream: ReplicationStream) -> Self {
        let tables = source
            .config
            .tables
            .iter()
            .map(|t| (format!("{}.{}", t.schema, t.table), Arc::new(t.clone())))
            .collect();
        let skip_through =
            source.context.indexes.last_position(source.name()).as_deref().and_then(parse_position);
        let dead_lettered = source
            .context
            .indexes
            .dead_letter_positions(source.name())
            .into_iter()
            .filter(|p| parse_position(p).is_some_and(|at| skip_through.is_none_or(|through| at > through)))
            .collect();
        Streamer {
            source,
            stream,
            tables,
            relations: HashMap::new(),
            domains: HashMap::new(),
            skip_through,
            dead_lettered,
            txn: None,
            txn_prefix: String::new(),
            chunk: Chunk::default(),
            inflight: None,
            confirmed: 0,
            server_end: 0,
            payload_bytes_hint: 256,
            last_status: Instant::now(),
        }
    }

    async fn run(mut self) -> anyhow::Result<()> {
        let Err(error) = self.stream().await else { return self.finish().await };
        self.source.progressed = self.confirmed > 0;
        // The append in flight still lands: note its last position, so that the next session drops
        // those changes when the server sends them again (they were not confirmed).
        if let Some(inflight) = self.inflight.take() {
            if let (Ok(Ok(_)), Some(position)) = (inflight.pending.await, inflight.last_position) {
                self.source.context.indexes.set_last_position(self.source.name(), position);
            }
        }
        Err(error)
    }

    /// Streams until shutdown (`Ok`) or an error.
    async fn stream(&mut self) -> anyhow::Result<()> {
        let mut shutdown = self.source.shutdown.clone();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            let mut reply = false;
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                message = self.stream.recv() => reply = self.handle(message?).await?,
                _ = tick.tick() => {}
            }
            self.settle(false).await?;
            if reply || self.last_status.elapsed() >= STATUS_INTERVAL {
                self.send_status().await?;
            }
        }
    }

    /// On shutdown: wait for the append in flight, tell the server what is durable, close.
    async fn finish(mut self) -> anyhow::Result<()> {
        self.settle(true).await?;
        self.send_status().await?;
        let _ = self.stream.close().await;
        Ok(())
    }

    async fn send_status(&mut self) -> Result<(), PgError> {
        self.last_status = Instant::now();
        let name = self.source.name().to_owned();
        metrics::gauge!("remix_source_lag_bytes", "source" => name)
            .set(self.server_end.saturating_sub(self.confirmed) as f64);
        let confirmed = format_lsn(self.confirmed);
        self.source.set_status(|s| s.confirmed_lsn = confirmed);
        self.stream.send_status(self.confirmed, false).await
    }

    /// Collects a finished append, starts the next one; with `drain`, waits until nothing is pending.
    async fn settle(&mut self, drain: bool) -> anyhow::Result<()> {
        loop {
            if let Some(inflight) = &self.inflight {
                let must_wait = drain || self.chunk.bytes >= CHUNK_BYTES_MAX;
                if !inflight.pending.is_finished() && !must_wait {
                    return Ok(());
                }
                let inflight = self.inflight.take().expect("checked");
                inflight.pending.await??;
                self.source.context.logged.add(self.source.name(), inflight.records);
                if let Some(position) = inflight.last_position {
                    self.source.context.indexes.set_last_position(self.source.name(), position);
                }
                if let Some(end) = inflight.commit_end {
                    self.confirmed = self.confirmed.max(end);
                }
            }
            let chunk = std::mem::take(&mut self.chunk);
            if chunk.records.is_empty() {
                if let Some(end) = chunk.commit_end {
                    self.confirmed = self.confirmed.max(end);
                }
                if let Some(position) = chunk.last_position {
                    self.source.context.indexes.set_last_position(self.source.name(), position);
                }
                return Ok(());
            }
            let appender = self.source.context.appender.clone();
            let records = chunk.records;
            self.inflight = Some(Inflight {
                records: records.len() as u64,
                pending: tokio::spawn(async move { appender.append(records).await }),
                commit_end: chunk.commit_end,
                last_position: chunk.last_position,
            });
            if !drain {
                return Ok(());
            }
        }
    }

    /// Handles one replication message; returns whether the server asked for a reply.
    async fn handle(&mut self, message: Replication) -> anyhow::Result<bool> {
        match message {
            Replication::Keepalive { wal_end, reply_requested, .. } => {
                self.server_end = self.server_end.max(wal_end);
                let idle = self.txn.is_none() && self.inflight.is_none() && self.chunk.records.is_empty();
                if idle && self.chunk.commit_end.is_none() {
                    self.confirmed = self.confirmed.max(wal_end);
                }
                Ok(reply_requested)
            }
            Replication::XLogData { wal_end, data, .. } => {
                self.server_end = self.server_end.max(wal_end);
                let message = pgoutput::decode(&data).map_err(|e| anyhow::anyhow!("pgoutput: {e}"))?;
                self.apply(message).await?;
                Ok(false)
            }
        }
    }

    async fn apply(&mut self, message: Message) -> anyhow::Result<()> {
        match message {
            Message::Begin { final_lsn, .. } => {
                self.txn = Some((final_lsn, 0));
                self.txn_prefix = format!("{}:", format_lsn(final_lsn));
            }
            Message::Commit { end_lsn, commit_time_us, .. } => {
                self.txn = None;
                self.chunk.commit_end = Some(end_lsn);
                let age_us = (crate::time::now_ms() as i64 * 1000) - pgoutput::pg_to_unix_us(commit_time_us);
                let name = self.source.name().to_owned();
                metrics::gauge!("remix_source_lag_seconds", "source" => name).set(age_us.max(0) as f64 / 1e6);
            }
            Message::Relation(mut relation) => {
                for column in &mut relation.columns {
                    if let Some(&base) = self.domains.get(&column.type_oid) {
                        column.type_oid = base;
                    }
                }
                let table = self.tables.get(&format!("{}.{}", relation.namespace, relation.name)).cloned();
                let missing = table.as_ref().map(|t| missing_columns(t, &relation)).unwrap_or_default();
                let fast = table.as_ref().filter(|_| missing.is_empty()).and_then(|table| {
                    let model = self.source.context.config.model(&table.binding.model)?;
                    FastPlan::new(&relation, &table.binding, model)
                });
                if fast.is_some() {
                    tracing::debug!(source = %self.source.name(), relation = %relation.name, "rows written directly");
                }
                self.relations.insert(relation.id, Arc::new(Bound { relation, table, missing, fast }));
            }
            Message::Type { oid, namespace, name } => {
                if let Some(base) = types::builtin_type_oid(&namespace, &name) {
                    self.domains.insert(oid, base);
                }
            }
            Message::Insert { relation, new } => self.row(relation, None, Some(new), Op::Upsert).await?,
            Message::Update { relation, old, new } => self.row(relation, old, Some(new), Op::Upsert).await?,
            Message::Delete { relation, old } => self.row(relation, Some(old), None, Op::Delete).await?,
            Message::Truncate { relations, .. } => self.truncate(&relations).await?,
            Message::Origin { .. } | Message::Message { .. } => {}
        }
        Ok(())
    }

    /// The next position in the current transaction, and whether the log already has it.
    fn next_position(&mut self) -> anyhow::Result<(String, bool)> {
        let (lsn, ordinal) =
            self.txn.as_mut().ok_or_else(|| anyhow::anyhow!("a change outside a transaction"))?;
        let position = (*lsn, *ordinal);
        *ordinal += 1;
        let logged = self.skip_through.is_some_and(|through| position <= through);
        let mut text = String::with_capacity(self.txn_prefix.len() + 8);
        text.push_str(&self.txn_prefix);
        write!(text, "{}", position.1).expect("writing to a String");
        let logged = logged || (!self.dead_lettered.is_empty() && self.dead_lettered.remove(&text));
        Ok((text, logged))
    }

    /// The relation and its table, `None` for a relation no table of this source binds.
    fn binding(&self, relation: u32) -> anyhow::Result<Option<(Arc<Bound>, Arc<TableBinding>)>> {
        let bound = self
            .relations
            .get(&relation)
            .ok_or_else(|| anyhow::anyhow!("change for unknown relation {relation}"))?;
        Ok(bound.table.clone().map(|table| (Arc::clone(bound), table)))
    }

    async fn row(
        &mut self,
        relation: u32,
        old: Option<(OldKind, Tuple)>,
        new: Option<Tuple>,
        op: Op,
    ) -> anyhow::Result<()> {
        let (position, logged) = self.next_position()?;
        let Some((bound, table)) = self.binding(relation)? else { return Ok(()) };
        if logged {
            return Ok(());
        }
        if let (Some(fast), Op::Upsert, Some(tuple)) = (&bound.fast, op, &new) {
            if !matches!(old, Some((OldKind::Key, _))) {
                let mut payload = Vec::with_capacity(self.payload_bytes_hint);
                if fast.write_upsert(tuple, self.source.name(), &position, &mut payload) {
                    self.add_payload(payload);
                    return self.end_row(position).await;
                }
            }
        }
        let relation = &bound.relation;
        let mut changes = Vec::new();
        let old_row = match &old {
            Some((_, tuple)) => Some(types::tuple_to_object(relation, tuple).map_err(anyhow::Error::msg)?.0),
            None => None,
        };
        match (op, new) {
            (Op::Upsert, Some(tuple)) => {
                let (row, unchanged) =
                    types::tuple_to_object(relation, &tuple).map_err(anyhow::Error::msg)?;
                if let (Some((OldKind::Key, _)), Some(old_row)) = (&old, old_row) {
                    // The key changed: the old key goes first.
                    changes.push(self.source.remix(
                        &table,
                        Value::Object(old_row),
                        Op::Delete,
                        &[],
                        position.clone(),
                    ));
                }
                changes.push(if bound.missing.is_empty() {
                    self.source.remix(&table, Value::Object(row), Op::Upsert, &unchanged, position.clone())
                } else {
                    Err(Box::new(DeadLetter {
                        source: self.source.name().to_owned(),
                        position: position.clone(),
                        model: table.binding.model.clone(),
                        route: format!("{}.{}", table.schema, table.table),
                        errors: bound.missing.clone(),
                        input: Value::Object(row),
                        op: Some(Op::Upsert),
                    }))
                });
            }
            _ => {
                let row = old_row.ok_or_else(|| anyhow::anyhow!("a delete without its old key"))?;
                changes.push(self.source.remix(
                    &table,
                    Value::Object(row),
                    Op::Delete,
                    &[],
                    position.clone(),
                ));
            }
        }
        self.push(changes, position).await
    }

    async fn truncate(&mut self, relations: &[u32]) -> anyhow::Result<()> {
        for &relation in relations {
            let (position, logged) = self.next_position()?;
            let Some((_, table)) = self.binding(relation)? else { continue };
            if logged {
                continue;
            }
            let change = Change {
                source: self.source.name().to_owned(),
                position: position.clone(),
                model: table.binding.model.clone(),
                op: Op::Truncate,
                key: Value::Null,
                data: None,
                unchanged: Vec::new(),
                idempotency_key: None,
            };
            self.push(vec![Ok(change)], position).await?;
        }
        Ok(())
    }

    async fn push(
        &mut self,
        changes: Vec<Result<Change, Box<DeadLetter>>>,
        position: String,
    ) -> anyhow::Result<()> {
        for change in changes {
            match change {
                Ok(change) => {
                    let mut payload = Vec::with_capacity(self.payload_bytes_hint);
                    serde_json::to_writer(&mut payload, &change)?;
                    self.add_payload(payload);
                }
                Err(letter) => self.source.dead_letter(letter).await?,
            }
        }
        self.end_row(position).await
    }

    /// Adds a change record to the chunk.
    fn add_payload(&mut self, payload: Vec<u8>) {
        self.payload_bytes_hint = (payload.len() + PAYLOAD_HINT_SLACK_BYTES).min(PAYLOAD_HINT_BYTES_MAX);
        self.chunk.bytes += payload.len();
        self.chunk.records.push(AppendRecord { kind: KIND_CHANGE, payload });
    }

    /// Ends the records of the change at `position`, appending the chunk once it is large enough.
    async fn end_row(&mut self, position: String) -> anyhow::Result<()> {
        self.chunk.last_position = Some(position);
        if self.chunk.bytes >= CHUNK_BYTES_MAX {
            self.settle(false).await?;
        }
        Ok(())
    }
}
