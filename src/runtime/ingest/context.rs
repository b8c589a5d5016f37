//! The ingest handle: the one way a source reaches the log. A source turns its input into changes
//! (remix in and validation), appends them as a [`ChangeBatch`] and acknowledges its sender only once
//! the append is durable; what it cannot log goes to the dead-letter queue ([`DeadLetters`]).
//!
//! What the indexes learn from an append (the source's last position, where its idempotency keys
//! landed, how many records it logged) is recorded when the append becomes durable, in the log's
//! order, by the append itself: no source updates the indexes by hand, and a request dropped
//! halfway leaves them as consistent as the log.

use super::appender::{AppendError, Appender};
use super::budget::MemoryBudget;
use super::indexes::{Claim, ClaimGuard, DlqEntry, IdempotencyKey, Indexes, Landed, Mark};
use crate::config::Config;
use crate::models::Model;
use crate::record::{
    Change, DeadLetter, DeadLetterResolved, KIND_CHANGE, KIND_DEAD_LETTER, KIND_DEAD_LETTER_RESOLVED,
};
use crate::runtime::engine::{AppendRecord, Appended, EngineError, Record};
use crate::runtime::state::StateStore;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What every source gets from the node: bound to the node's logs, indexes and state.
#[derive(Debug, Clone)]
pub struct Ingest {
    pub config: Arc<Config>,
    main: Appender,
    dead_letters: DeadLetters,
    indexes: Arc<Indexes>,
    logged: Arc<Logged>,
    state: Arc<dyn StateStore>,
    memory: MemoryBudget,
}

impl Ingest {
    pub fn new(
        config: Arc<Config>,
        main: Appender,
        dead_letters: DeadLetters,
        logged: Arc<Logged>,
        state: Arc<dyn StateStore>,
    ) -> Ingest {
        let indexes = Arc::clone(&dead_letters.indexes);
        let memory = MemoryBudget::new(config.ingest.memory_bytes_max, config.ingest.wait);
        Ingest { config, main, dead_letters, indexes, logged, state, memory }
    }

    /// The memory budget of requests in flight (`ingest.memory_bytes_max`), shared by every source
    /// that receives requests.
    pub fn memory(&self) -> &MemoryBudget {
        &self.memory
    }

    /// A model of the configuration (the config checked every binding's model exists).
    pub fn model(&self, name: &str) -> &Arc<Model> {
        self.config.model(name).expect("the configuration checked the model")
    }

    /// Where sources keep their progress.
    pub fn state(&self) -> &Arc<dyn StateStore> {
        &self.state
    }

    pub fn dead_letters(&self) -> &DeadLetters {
        &self.dead_letters
    }

    /// Change records logged per source since the start.
    pub fn logged(&self) -> &Logged {
        &self.logged
    }

    /// The indexes (open dead letters, idempotency keys, last positions).
    pub fn indexes(&self) -> &Arc<Indexes> {
        &self.indexes
    }

    /// The main log, for the runtime's own scans (DLQ retries).
    pub(crate) fn engine(&self) -> &Arc<dyn crate::runtime::engine::LogEngine> {
        self.main.engine()
    }

    /// Refuses new appends from now on (graceful shutdown); appends already admitted complete.
    pub fn close(&self) {
        self.main.close();
        self.dead_letters.appender.close();
    }

    /// Claims an idempotency key (waits while another request with it is in flight).
    pub async fn claim(&self, key: &IdempotencyKey) -> Claim {
        self.indexes.claim(key).await
    }

    /// The position of the last change `source` logged, if any.
    pub fn last_position(&self, source: &str) -> Option<String> {
        self.indexes.last_position(source)
    }

    /// Notes that `source` got as far as `position` without logging anything for it (rows it
    /// skipped or dead-lettered), so that a restart resumes after it.
    pub fn passed(&self, source: &str, position: String) {
        self.indexes.set_last_position(source, position);
    }

    /// Appends `batch` for `source` as one atomic group; resolves once it is durable.
    pub async fn append(&self, source: &str, batch: ChangeBatch) -> Result<Appended, AppendError> {
        let ChangeBatch { records, last_position, keys, guards, then, .. } = batch;
        let (indexes, logged, source) =
            (Arc::clone(&self.indexes), Arc::clone(&self.logged), source.to_owned());
        let count = records.len() as u64;
        let hook = move |appended: &Appended| {
            for (key, (first, last)) in keys {
                let landed = Landed {
                    first_offset: appended.first_offset + first as u64,
                    last_offset: appended.first_offset + last as u64,
                };
                indexes.land(&key, landed);
            }
            if let Some(position) = last_position {
                indexes.set_last_position(&source, position);
            }
            logged.add(&source, count);
            if let Some(then) = then {
                then(appended);
            }
            indexes.applied_main(Mark { offset: appended.last_offset, time_ms: appended.timestamp_ms });
            // The claims end here: their keys landed above (and are released when the hook is
            // dropped unrun).
            drop(guards);
        };
        self.main.append(records, Some(Box::new(hook))).await
    }

    /// Every change record of `source` in the log, oldest first (for sources that must know what
    /// they logged before, e.g. after an interrupted snapshot).
    pub async fn scan_changes<F: ChangeFold>(&self, source: &str, fold: F) -> Result<F, EngineError> {
        let engine = self.main.engine();
        let source = source.to_owned();
        let first = engine.first_offset();
        let fold = Arc::new(std::sync::Mutex::new(fold));
        let folding = Arc::clone(&fold);
        let visit = crate::runtime::engine::scan(engine, first, move |record: Record| {
            let decoded = crate::record::decode(record.kind, &record.payload);
            if let crate::record::Decoded::Change(change) = decoded {
                if change.source == source {
                    folding.lock().unwrap_or_else(|e| e.into_inner()).fold(change);
                }
            }
            true
        })
        .await?;
        // The closure holds the other reference.
        drop(visit);
        let fold = Arc::try_unwrap(fold).unwrap_or_else(|_| unreachable!("the scan is over"));
        Ok(fold.into_inner().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A fold over a source's change records (see [`Ingest::scan_changes`]).
pub trait ChangeFold: Send + 'static {
    fn fold(&mut self, change: Change);
}

/// Changes of one source, encoded as log records, with what their durability tells the indexes.
#[derive(Default)]
pub struct ChangeBatch {
    records: Vec<AppendRecord>,
    bytes: usize,
    last_position: Option<String>,
    /// Idempotency keys and the first and last index of the records carrying each.
    keys: HashMap<IdempotencyKey, (usize, usize)>,
    guards: Vec<ClaimGuard>,
    then: Option<crate::runtime::engine::OnDurable>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for ChangeBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeBatch")
            .field("records", &self.records.len())
            .field("bytes", &self.bytes)
            .field("last_position", &self.last_position)
            .finish_non_exhaustive()
    }
}

impl ChangeBatch {
    pub fn new() -> ChangeBatch {
        ChangeBatch::default()
    }

    /// Adds a change (its position becomes the batch's last, its idempotency key is landed with it).
    pub fn push(&mut self, change: &Change) {
        if let Some(key) = &change.idempotency_key {
            let index = self.records.len();
            let scoped = IdempotencyKey::new(&change.source, &change.model, key);
            self.keys.entry(scoped).and_modify(|(_, last)| *last = index).or_insert((index, index));
        }
        self.last_position = Some(change.position.clone());
        // Serialized into a buffer kept for the next record, then copied at its exact size: a batch
        // of many small records holds no spare capacity per record.
        self.scratch.clear();
        serde_json::to_writer(&mut self.scratch, change).expect("a change serializes");
        self.push_encoded(self.scratch.as_slice().to_vec());
    }

    /// Adds a change record already encoded (a fast path's bytes, which must be exactly what
    /// serializing its [`Change`] gives, without an idempotency key); set its position with
    /// [`ChangeBatch::set_last_position`].
    pub fn push_encoded(&mut self, payload: Vec<u8>) {
        self.bytes += payload.len();
        self.records.push(AppendRecord { kind: KIND_CHANGE, payload });
    }

    /// The position the source is at once the batch is durable.
    pub fn set_last_position(&mut self, position: String) {
        self.last_position = Some(position);
    }

    /// Keeps a claimed idempotency key until the batch is durable (or failed).
    pub fn hold(&mut self, guard: ClaimGuard) {
        self.guards.push(guard);
    }

    /// Runs `then` when the batch is durable, in the log's order, before the append resolves.
    pub fn then(&mut self, then: impl FnOnce(&Appended) + Send + 'static) {
        self.then = Some(Box::new(then));
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The encoded records.
    pub fn records(&self) -> &[AppendRecord] {
        &self.records
    }

    /// Bytes of the encoded records.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn last_position(&self) -> Option<&str> {
        self.last_position.as_deref()
    }
}

/// The dead-letter queue's log and the open dead letters.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    appender: Appender,
    indexes: Arc<Indexes>,
}

impl DeadLetters {
    pub fn new(appender: Appender, indexes: Arc<Indexes>) -> DeadLetters {
        DeadLetters { appender, indexes }
    }

    pub fn indexes(&self) -> &Arc<Indexes> {
        &self.indexes
    }

    pub fn appender(&self) -> &Appender {
        &self.appender
    }

    /// Appends dead letters durably and opens them; returns their ids (their DLQ offsets).
    pub async fn append(&self, letters: Vec<DeadLetter>) -> Result<Vec<u64>, AppendError> {
        if letters.is_empty() {
            return Ok(Vec::new());
        }
        let records = letters
            .iter()
            .map(|l| AppendRecord {
                kind: KIND_DEAD_LETTER,
                payload: serde_json::to_vec(l).expect("serializable"),
            })
            .collect();
        let indexes = Arc::clone(&self.indexes);
        let count = letters.len() as u64;
        let hook = move |appended: &Appended| {
            for (i, letter) in letters.into_iter().enumerate() {
                let entry =
                    DlqEntry { id: appended.first_offset + i as u64, time_ms: appended.timestamp_ms, letter };
                indexes.add_dead_letter(entry);
            }
            indexes.applied_dlq(Mark { offset: appended.last_offset, time_ms: appended.timestamp_ms });
        };
        let appended = self.appender.append(records, Some(Box::new(hook))).await?;
        Ok((appended.first_offset..appended.first_offset + count).collect())
    }

    /// Appends a resolution (retried or dropped) durably and closes the entry.
    pub async fn resolve(&self, resolved: DeadLetterResolved) -> Result<(), AppendError> {
        let payload = serde_json::to_vec(&resolved).expect("serializable");
        let indexes = Arc::clone(&self.indexes);
        let id = resolved.id;
        let hook = move |appended: &Appended| {
            indexes.resolve(id);
            indexes.applied_dlq(Mark { offset: appended.last_offset, time_ms: appended.timestamp_ms });
        };
        self.appender
            .append(vec![AppendRecord { kind: KIND_DEAD_LETTER_RESOLVED, payload }], Some(Box::new(hook)))
            .await?;
        Ok(())
    }
}

/// How many change records each source has logged since the node started (the status display's
/// rates).
#[derive(Debug, Default)]
pub struct Logged {
    counts: BTreeMap<String, AtomicU64>,
}

impl Logged {
    pub fn new(config: &Config) -> Logged {
        Logged { counts: config.sources.iter().map(|s| (s.name().to_owned(), AtomicU64::new(0))).collect() }
    }

    /// `records` more were logged (durably) for `source`.
    pub fn add(&self, source: &str, records: u64) {
        if let Some(count) = self.counts.get(source) {
            count.fetch_add(records, Ordering::Relaxed);
        }
    }

    pub fn get(&self, source: &str) -> u64 {
        self.counts.get(source).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}
