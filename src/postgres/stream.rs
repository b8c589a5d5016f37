//! The streaming half of a PostgreSQL source's session: pgoutput messages in, change records out
//! in chunks with at most one append in flight, and the server told only what is durable. The
//! invariants are in `source.rs`'s module docs.

use super::config::TableBinding;
use super::conn::{format_lsn, parse_lsn, PgError, Replication, ReplicationStream};
use super::fast::FastPlan;
use super::pgoutput::{self, Message, OldKind, Relation, Tuple};
use super::source::{missing_columns, Source, SourceError};
use super::types;
use crate::record::{Change, DeadLetter, FieldError, Op};
use crate::runtime::engine::Appended;
use crate::runtime::ingest::AppendError;
use crate::runtime::ingest::ChangeBatch;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// A chunk of changes is appended once it holds this many bytes (or at the next chance).
const CHUNK_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Standby status updates go out at least this often.
const STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// The room reserved up front for a record's JSON is at most this (larger ones grow as needed).
const PAYLOAD_HINT_BYTES_MAX: usize = 64 * 1024;

/// Slack over the last record's size when reserving room for the next one (rows of a table differ
/// a little in size; growing the buffer would copy it).
const PAYLOAD_HINT_SLACK_BYTES: usize = 64;

type Pending = JoinHandle<Result<Appended, AppendError>>;

/// Changes waiting to be appended, and what their durability confirms.
#[derive(Default)]
struct Chunk {
    /// The changes, and the position of the last change seen (logged or not).
    batch: ChangeBatch,
    /// End LSN of the last commit wholly in this chunk (or in earlier ones).
    commit_end: Option<u64>,
}

struct Inflight {
    pending: Pending,
    commit_end: Option<u64>,
}

/// A relation as last announced, with the table that binds it (if any) and the mapped columns it
/// lacks, worked out once per Relation message rather than per row.
struct Bound {
    relation: Relation,
    table: Option<Arc<TableBinding>>,
    missing: Vec<FieldError>,
    /// How to write its upserts directly, when they need no mapping or validator (see [`super::fast`]).
    fast: Option<FastPlan>,
}

/// A relation and the table binding it.
type BoundTable = (Arc<Bound>, Arc<TableBinding>);

/// `<commit LSN>:<ordinal>` of a streamed change, parsed for comparison.
fn parse_position(position: &str) -> Option<(u64, u64)> {
    let (lsn, ordinal) = position.split_once(':')?;
    Some((parse_lsn(lsn).ok()?, ordinal.parse().ok()?))
}

/// The streaming half of a session.
pub(super) struct Streamer<'a> {
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
    pub(super) fn new(source: &'a mut Source, stream: ReplicationStream) -> Self {
        let tables = source
            .config
            .tables
            .iter()
            .map(|t| (format!("{}.{}", t.schema, t.table), Arc::new(t.clone())))
            .collect();
        let skip_through = source.ingest.last_position(source.name()).as_deref().and_then(parse_position);
        let dead_lettered = source
            .ingest
            .indexes()
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

    pub(super) async fn run(mut self) -> Result<(), SourceError> {
        let Err(error) = self.stream().await else { return self.finish().await };
        self.source.progressed = self.confirmed > 0;
        // The append in flight still lands, and records its last position when it does, so that
        // the next session drops those changes when the server sends them again (they were not
        // confirmed); wait for it, so the next session starts from there.
        if let Some(inflight) = self.inflight.take() {
            let _ = inflight.pending.await;
        }
        Err(error)
    }

    /// Streams until shutdown (`Ok`) or an error.
    async fn stream(&mut self) -> Result<(), SourceError> {
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
    async fn finish(mut self) -> Result<(), SourceError> {
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
        self.source.set_status(|s| s.confirmed_position = confirmed);
        self.stream.send_status(self.confirmed, false).await
    }

    /// Collects a finished append, starts the next one; with `drain`, waits until nothing is pending.
    async fn settle(&mut self, drain: bool) -> Result<(), SourceError> {
        loop {
            if let Some(inflight) = &self.inflight {
                let must_wait = drain || self.chunk.batch.bytes() >= CHUNK_BYTES_MAX;
                if !inflight.pending.is_finished() && !must_wait {
                    return Ok(());
                }
                let inflight = self.inflight.take().expect("checked");
                inflight
                    .pending
                    .await
                    .map_err(|e| SourceError::Protocol(format!("the append task failed: {e}")))??;
                if let Some(end) = inflight.commit_end {
                    self.confirmed = self.confirmed.max(end);
                }
            }
            let chunk = std::mem::take(&mut self.chunk);
            if chunk.batch.is_empty() {
                if let Some(end) = chunk.commit_end {
                    self.confirmed = self.confirmed.max(end);
                }
                if let Some(position) = chunk.batch.last_position() {
                    self.source.ingest.passed(self.source.name(), position.to_owned());
                }
                return Ok(());
            }
            let (ingest, name) = (self.source.ingest.clone(), self.source.name().to_owned());
            let batch = chunk.batch;
            self.inflight = Some(Inflight {
                pending: tokio::spawn(async move { ingest.append(&name, batch).await }),
                commit_end: chunk.commit_end,
            });
            if !drain {
                return Ok(());
            }
        }
    }

    /// Handles one replication message; returns whether the server asked for a reply.
    async fn handle(&mut self, message: Replication) -> Result<bool, SourceError> {
        match message {
            Replication::Keepalive { wal_end, reply_requested, .. } => {
                self.server_end = self.server_end.max(wal_end);
                let idle = self.txn.is_none() && self.inflight.is_none() && self.chunk.batch.is_empty();
                if idle && self.chunk.commit_end.is_none() {
                    self.confirmed = self.confirmed.max(wal_end);
                }
                Ok(reply_requested)
            }
            Replication::XLogData { wal_end, data, .. } => {
                self.server_end = self.server_end.max(wal_end);
                let message =
                    pgoutput::decode(&data).map_err(|e| SourceError::Protocol(format!("pgoutput: {e}")))?;
                self.apply(message).await?;
                Ok(false)
            }
        }
    }

    async fn apply(&mut self, message: Message) -> Result<(), SourceError> {
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
                    let model = self.source.ingest.config.model(&table.binding.model)?;
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
    fn next_position(&mut self) -> Result<(String, bool), SourceError> {
        let (lsn, ordinal) = self
            .txn
            .as_mut()
            .ok_or_else(|| SourceError::Protocol("a change outside a transaction".into()))?;
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
    fn binding(&self, relation: u32) -> Result<Option<BoundTable>, SourceError> {
        let bound = self
            .relations
            .get(&relation)
            .ok_or_else(|| SourceError::Protocol(format!("change for unknown relation {relation}")))?;
        Ok(bound.table.clone().map(|table| (Arc::clone(bound), table)))
    }

    async fn row(
        &mut self,
        relation: u32,
        old: Option<(OldKind, Tuple)>,
        new: Option<Tuple>,
        op: Op,
    ) -> Result<(), SourceError> {
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
            Some((_, tuple)) => Some(types::tuple_to_object(relation, tuple)?.0),
            None => None,
        };
        match (op, new) {
            (Op::Upsert, Some(tuple)) => {
                let (row, unchanged) = types::tuple_to_object(relation, &tuple)?;
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
                let row =
                    old_row.ok_or_else(|| SourceError::Protocol("a delete without its old key".into()))?;
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

    async fn truncate(&mut self, relations: &[u32]) -> Result<(), SourceError> {
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
    ) -> Result<(), SourceError> {
        for change in changes {
            match change {
                Ok(change) => {
                    let mut payload = Vec::with_capacity(self.payload_bytes_hint);
                    serde_json::to_writer(&mut payload, &change).expect("a change serializes");
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
        self.chunk.batch.push_encoded(payload);
    }

    /// Ends the records of the change at `position`, appending the chunk once it is large enough.
    async fn end_row(&mut self, position: String) -> Result<(), SourceError> {
        self.chunk.batch.set_last_position(position);
        if self.chunk.batch.bytes() >= CHUNK_BYTES_MAX {
            self.settle(false).await?;
        }
        Ok(())
    }
}
