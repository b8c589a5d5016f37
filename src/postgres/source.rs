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

use super::config::{PostgresSource, SnapshotMode, TableBinding};
use super::conn::{format_lsn, parse_dsn, quote_ident, ReplicationConn};
use super::pgoutput::Relation;
use super::snapshot;
use super::stream::Streamer;
use crate::connector::SourceStatus;
use crate::record::{Change, DeadLetter, FieldError, Op};
use crate::runtime::ingest::remix_in::{remix_in_owned, Origin, Rejected};
use crate::runtime::ingest::resnapshot::LoggedKeys;
use crate::runtime::ingest::{ChangeBatch, Ingest};
use crate::runtime::state::{StateKey, StateStore};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Snapshot rows per append.
const SNAPSHOT_CHUNK_ROWS: usize = 2000;
const RETRY_BASE_MS: u64 = 500;
const RETRY_MAX_MS: u64 = 30_000;
const SNAPSHOT_PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// Why a session of the source ended (it reconnects with backoff after any of them).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Sql(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Replication(#[from] super::conn::PgError),
    #[error(transparent)]
    Connect(#[from] super::tls::ConnectError),
    #[error(transparent)]
    Append(#[from] crate::runtime::ingest::AppendError),
    #[error(transparent)]
    Log(#[from] crate::runtime::engine::EngineError),
    #[error(transparent)]
    State(#[from] crate::runtime::state::StateError),
    /// The server sent something this source cannot follow.
    #[error("{0}")]
    Protocol(String),
    /// A value in a row that the type conversion refused (names the column and the text).
    #[error(transparent)]
    Value(#[from] super::types::TextError),
    /// The source's progress file does not parse.
    #[error("progress of source {source_name}: {message}")]
    Progress { source_name: String, message: String },
}

/// Persisted per-source state (`<data_dir>/sources/<name>.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceState {
    #[serde(default)]
    snapshot_done: bool,
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

/// Starts the source; it reconnects with backoff until shutdown.
pub fn spawn(
    config: PostgresSource,
    ingest: Ingest,
    shutdown: watch::Receiver<bool>,
) -> (Arc<Mutex<SourceStatus>>, JoinHandle<()>) {
    let status = Arc::new(Mutex::new(SourceStatus { state: "starting".into(), ..Default::default() }));
    let source = Source { config, ingest, shutdown, status: Arc::clone(&status), progressed: false };
    (status, tokio::spawn(source.run()))
}

pub(super) struct Source {
    pub(super) config: PostgresSource,
    pub(super) ingest: Ingest,
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) status: Arc<Mutex<SourceStatus>>,
    /// The last session confirmed a position: it was healthy, so the backoff starts over.
    pub(super) progressed: bool,
}

impl Source {
    pub(super) fn name(&self) -> &str {
        &self.config.name
    }

    pub(super) fn set_status(&self, f: impl FnOnce(&mut SourceStatus)) {
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

    /// One connection's worth of work; `Ok` only on shutdown.
    async fn session(&mut self) -> Result<(), SourceError> {
        let (client, connection) = super::tls::connect(&self.config.dsn).await?;
        let connection = tokio::spawn(connection);
        let result = self.session_with(&client).await;
        drop(client);
        connection.abort();
        result
    }

    async fn session_with(&mut self, client: &tokio_postgres::Client) -> Result<(), SourceError> {
        ensure_publication(client, &self.config).await?;
        let slot_exists = client
            .query_opt("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", &[&self.config.slot])
            .await?
            .is_some();
        let mut state = SourceState::load(self.ingest.state().as_ref(), self.name()).await?;
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
            state.store(self.ingest.state().as_ref(), self.name()).await?;
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
    async fn snapshot(&mut self, snapshot_name: &str, lsn: u64) -> Result<(), SourceError> {
        self.set_status(|s| s.state = "snapshot".into());
        let (client, connection) = super::tls::connect(&self.config.dsn).await?;
        let connection = tokio::spawn(connection);
        snapshot::begin(&client, snapshot_name).await?;
        let mut logged_keys = LoggedKeys::load(&self.ingest, self.name()).await?;
        let started = Instant::now();
        let mut total_rows = 0;
        for table in self.config.tables.clone() {
            let relation = snapshot::table_relation(&client, &table.schema, &table.table).await?;
            if relation.columns.is_empty() {
                let (schema, name) = (&table.schema, &table.table);
                return Err(SourceError::Protocol(format!(
                    "table {schema}.{name} does not exist or has no columns"
                )));
            }
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
        let prefix = format!("snapshot:{}", format_lsn(lsn));
        logged_keys.delete_gone(&self.ingest, self.name(), &prefix, SNAPSHOT_CHUNK_ROWS).await?;
        client.batch_execute("COMMIT").await?;
        connection.abort();
        tracing::info!(source = %self.name(), "initial snapshot done: {total_rows} rows in {:.1} s", started.elapsed().as_secs_f64());
        Ok(())
    }

    /// The change a row makes, or its dead letter.
    pub(super) fn remix(
        &self,
        table: &TableBinding,
        row: Value,
        op: Op,
        unchanged: &[String],
        position: String,
    ) -> Result<Change, Box<DeadLetter>> {
        let model = self.ingest.model(&table.binding.model);
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

    pub(super) async fn dead_letter(&self, letter: Box<DeadLetter>) -> Result<(), SourceError> {
        let letter = *letter;
        tracing::warn!(source = %self.name(), position = %letter.position, "row sent to the DLQ: {:?}", letter.errors);
        self.ingest.dead_letters().append(vec![letter]).await?;
        Ok(())
    }
}

/// Appends snapshot rows in chunks and reports progress.
struct SnapshotCopier<'a> {
    source: &'a Source,
    table: &'a TableBinding,
    lsn: u64,
    estimate: u64,
    rows: u64,
    records: ChangeBatch,
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
            records: ChangeBatch::new(),
            last_progress: now,
            started: now,
            logged_keys,
        }
    }

    async fn row(&mut self, row: serde_json::Map<String, Value>) -> Result<(), SourceError> {
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
                self.records.push(&change)
            }
            Err(letter) => self.source.dead_letter(letter).await?,
        }
        if self.records.len() >= SNAPSHOT_CHUNK_ROWS {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SourceError> {
        if !self.records.is_empty() {
            let batch = std::mem::take(&mut self.records);
            self.source.ingest.append(self.source.name(), batch).await?;
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
async fn ensure_publication(
    client: &tokio_postgres::Client,
    config: &PostgresSource,
) -> Result<(), SourceError> {
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
pub(super) fn missing_columns(table: &TableBinding, relation: &Relation) -> Vec<FieldError> {
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
