//! In-memory indexes rebuilt from the log on start: idempotency keys already logged (so a retried
//! request is answered, not appended twice, even across a restart) and open dead letters.

use crate::record::{self, Change, DeadLetter, Decoded};
use crate::runtime::engine::{EngineError, LogEngine, Record};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// How many idempotency keys are remembered; the oldest are forgotten first. A retry of a request
/// older than that many requests is appended again.
pub const IDEMPOTENCY_KEYS_MAX: usize = 1_000_000;
/// How many open dead letters are kept in memory; beyond it the oldest are still in the log but
/// listed only after the newer ones are resolved or on restart.
pub const DEAD_LETTERS_MAX: usize = 100_000;

/// The fields of a change record the indexes need; the others are skipped without being built.
#[derive(Debug, serde::Deserialize)]
struct ChangeHead<'a> {
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(borrow)]
    position: Cow<'a, str>,
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(default, borrow)]
    idempotency_key: Option<Cow<'a, str>>,
}

/// An idempotency key in its scope: a key names one request of one source for one model. The same
/// key sent to two sources, or to two routes of different models, names two requests (a client's
/// `op-1` for `/customers` must not swallow its `op-1` for `/orders`). Change records carry the
/// key as sent; the scope comes from their `source` and `model`, so logs written before keys were
/// scoped are indexed the same way.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn new(source: &str, model: &str, key: &str) -> IdempotencyKey {
        // The unit separator does not occur in configured names.
        IdempotencyKey(format!("{source}\u{1f}{model}\u{1f}{key}"))
    }
}

/// Where an idempotency key's batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Landed {
    pub first_offset: u64,
    pub last_offset: u64,
}

#[derive(Debug)]
enum KeyState {
    Done(Landed),
    /// A request with this key is being appended; others wait for it.
    InFlight(Arc<Notify>),
}

/// What a request with an idempotency key should do.
#[derive(Debug)]
pub enum Claim {
    /// First with this key: append the batch holding the guard ([`ChangeBatch::hold`]).
    Proceed(ClaimGuard),
    /// Already logged: answer with the same offsets.
    Done(Landed),
}

/// An idempotency key claimed by one request. The append that logs its records lands the key
/// (in the log's durability order); when the guard goes without that (the append failed, or the
/// request was dropped before appending), the key is released and the next request with it may
/// proceed. So a key is never stuck in flight, and never released while its records may still land.
///
/// [`ChangeBatch::hold`]: super::ChangeBatch::hold
#[derive(Debug)]
pub struct ClaimGuard {
    indexes: Arc<Indexes>,
    key: IdempotencyKey,
}

impl ClaimGuard {
    pub fn key(&self) -> &IdempotencyKey {
        &self.key
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        self.indexes.release(&self.key);
    }
}

/// An open dead letter, by its log offset (its id).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DlqEntry {
    pub id: u64,
    pub time_ms: u64,
    pub letter: DeadLetter,
}

#[derive(Debug, Default)]
struct Inner {
    /// The position of the last change each source logged (log order is each source's order).
    last_positions: HashMap<String, String>,
    keys: HashMap<IdempotencyKey, KeyState>,
    order: VecDeque<IdempotencyKey>,
    dead_letters: BTreeMap<u64, DlqEntry>,
    /// Open dead letters by [`same_input`] fingerprint: a sender that repeats a refused request
    /// does not fill the DLQ with copies.
    by_input: HashMap<u64, Vec<u64>>,
    /// The positions of the latest dead letters of each source (resolved ones too), oldest first: a
    /// source that resumes from before them skips them by exact position instead of sending the same
    /// rows to the DLQ again.
    dead_letter_positions: HashMap<String, VecDeque<String>>,
    /// The last record of each log whose effects the indexes hold (with every record before it).
    applied_main: Mark,
    applied_dlq: Mark,
}

/// A record of a log: its offset and time (a checkpoint checks both against the log).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mark {
    pub offset: u64,
    pub time_ms: u64,
}

/// The indexes as a value: what the start-up checkpoint saves.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexesState {
    pub applied_main: Mark,
    pub applied_dlq: Mark,
    /// Landed idempotency keys, oldest first.
    pub keys: Vec<(IdempotencyKey, Landed)>,
    pub last_positions: BTreeMap<String, String>,
    pub dead_letters: Vec<DlqEntry>,
    pub dead_letter_positions: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Default)]
pub struct Indexes {
    inner: Mutex<Inner>,
}

impl Mark {
    fn max_by_offset(self, other: Mark) -> Mark {
        if other.offset > self.offset {
            other
        } else {
            self
        }
    }
}

impl Inner {
    /// A change record carrying `key` at `offset`: the key's first record opens its range, later
    /// ones extend it.
    fn observe_key(&mut self, key: IdempotencyKey, offset: u64) {
        match self.keys.get_mut(&key) {
            Some(KeyState::Done(landed)) => landed.last_offset = landed.last_offset.max(offset),
            _ => {
                self.keys.insert(
                    key.clone(),
                    KeyState::Done(Landed { first_offset: offset, last_offset: offset }),
                );
                self.order.push_back(key);
                while self.order.len() > IDEMPOTENCY_KEYS_MAX {
                    let oldest = self.order.pop_front().expect("non-empty");
                    self.keys.remove(&oldest);
                }
            }
        }
    }

    fn forget_input(&mut self, id: u64, letter: &DeadLetter) {
        let key = fingerprint(letter);
        if let Some(ids) = self.by_input.get_mut(&key) {
            ids.retain(|&other| other != id);
            if ids.is_empty() {
                self.by_input.remove(&key);
            }
        }
    }
}

/// Two dead letters hold the same refused input: same source, route and object.
fn same_input(a: &DeadLetter, b: &DeadLetter) -> bool {
    a.source == b.source && a.route == b.route && a.op == b.op && a.input == b.input
}

/// A hash of what [`same_input`] compares.
fn fingerprint(letter: &DeadLetter) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&letter.source, &letter.route, letter.input.to_string()).hash(&mut hasher);
    hasher.finish()
}

impl Indexes {
    /// Reads the main log from `from` (idempotency keys, last positions), also showing every change
    /// record of the sources named in `visited`, in log order, to `visit` (for sources that keep
    /// state of their own from the log, such as the Stripe source's newest event per key). Other
    /// records are read only as far as the indexes need (source, position, idempotency key), which
    /// is several times faster than decoding them. Blocking; returns the records read.
    pub fn scan_main(
        &self,
        main: &dyn LogEngine,
        from: u64,
        visited: &[String],
        visit: &mut dyn FnMut(&Change),
    ) -> Result<u64, EngineError> {
        let mut inner = self.lock();
        let mut read = 0;
        main.scan_blocking(from.max(main.first_offset()), &mut |record| {
            read += 1;
            inner.applied_main = Mark { offset: record.offset, time_ms: record.timestamp_ms };
            if record.kind != record::KIND_CHANGE {
                return true;
            }
            // A record that does not decode is skipped here as everywhere (`remix log dump` shows it).
            let Ok(head) = serde_json::from_slice::<ChangeHead<'_>>(&record.payload) else { return true };
            if visited.iter().any(|s| *s == head.source) {
                if let Decoded::Change(change) = record::decode(record.kind, &record.payload) {
                    visit(&change);
                }
            }
            if let Some(key) = &head.idempotency_key {
                inner.observe_key(IdempotencyKey::new(&head.source, &head.model, key), record.offset);
            }
            match inner.last_positions.get_mut(head.source.as_ref()) {
                Some(position) => head.position.as_ref().clone_into(position),
                None => {
                    inner.last_positions.insert(head.source.into_owned(), head.position.into_owned());
                }
            }
            true
        })?;
        Ok(read)
    }

    /// Reads the dead-letter log from `from`: a dead letter opens an entry, a resolution closes
    /// one. Blocking; returns the records read.
    pub fn scan_dlq(&self, dlq: &dyn LogEngine, from: u64) -> Result<u64, EngineError> {
        let mut read = 0;
        dlq.scan_blocking(from.max(dlq.first_offset()), &mut |record| {
            read += 1;
            self.observe_dead_letter_record(&record);
            self.lock().applied_dlq = Mark { offset: record.offset, time_ms: record.timestamp_ms };
            true
        })?;
        Ok(read)
    }

    /// One record of the dead-letter log: a dead letter opens an entry, a resolution closes one.
    fn observe_dead_letter_record(&self, record: &Record) {
        match record::decode(record.kind, &record.payload) {
            Decoded::DeadLetter(letter) => {
                self.add_dead_letter(DlqEntry { id: record.offset, time_ms: record.timestamp_ms, letter })
            }
            Decoded::Resolved(resolved) => self.resolve(resolved.id),
            _ => {}
        }
    }

    /// The effects of the main log's records up to `mark` are in (appends call this last in their
    /// durability hook).
    pub fn applied_main(&self, mark: Mark) {
        let mut inner = self.lock();
        inner.applied_main = inner.applied_main.max_by_offset(mark);
    }

    /// The offset of the main log's last record whose effects the indexes hold.
    pub fn applied_main_offset(&self) -> u64 {
        self.lock().applied_main.offset
    }

    /// As [`Indexes::applied_main`], for the dead-letter log.
    pub fn applied_dlq(&self, mark: Mark) {
        let mut inner = self.lock();
        inner.applied_dlq = inner.applied_dlq.max_by_offset(mark);
    }

    /// The indexes as a value (landed keys only: a claim in flight is not saved).
    pub fn state(&self) -> IndexesState {
        let inner = self.lock();
        let keys = inner
            .order
            .iter()
            .filter_map(|key| match inner.keys.get(key) {
                Some(KeyState::Done(landed)) => Some((key.clone(), *landed)),
                _ => None,
            })
            .collect();
        IndexesState {
            applied_main: inner.applied_main,
            applied_dlq: inner.applied_dlq,
            keys,
            last_positions: inner.last_positions.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            dead_letters: inner.dead_letters.values().cloned().collect(),
            dead_letter_positions: inner
                .dead_letter_positions
                .iter()
                .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
                .collect(),
        }
    }

    /// Indexes holding `state`.
    pub fn from_state(state: IndexesState) -> Indexes {
        let indexes = Indexes::default();
        for entry in state.dead_letters {
            indexes.add_dead_letter(entry);
        }
        let mut inner = indexes.lock();
        inner.applied_main = state.applied_main;
        inner.applied_dlq = state.applied_dlq;
        inner.last_positions = state.last_positions.into_iter().collect();
        inner.dead_letter_positions =
            state.dead_letter_positions.into_iter().map(|(k, v)| (k, v.into_iter().collect())).collect();
        for (key, landed) in state.keys {
            inner.keys.insert(key.clone(), KeyState::Done(landed));
            inner.order.push_back(key);
        }
        drop(inner);
        indexes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims an idempotency key: waits while another request with it is in flight.
    pub async fn claim(self: &Arc<Self>, key: &IdempotencyKey) -> Claim {
        loop {
            let notify = {
                let mut inner = self.lock();
                match inner.keys.get(key) {
                    Some(KeyState::Done(landed)) => return Claim::Done(*landed),
                    Some(KeyState::InFlight(notify)) => Arc::clone(notify),
                    None => {
                        inner.keys.insert(key.clone(), KeyState::InFlight(Arc::new(Notify::new())));
                        return Claim::Proceed(ClaimGuard { indexes: Arc::clone(self), key: key.clone() });
                    }
                }
            };
            let notified = notify.notified();
            // The holder may have finished between the lookup and here.
            if matches!(self.lock().keys.get(key), Some(KeyState::InFlight(n)) if Arc::ptr_eq(n, &notify)) {
                notified.await;
            }
        }
    }

    /// Records where a key's records landed (they are durable); wakes requests waiting for it.
    pub fn land(&self, key: &IdempotencyKey, landed: Landed) {
        let mut inner = self.lock();
        let previous = inner.keys.insert(key.clone(), KeyState::Done(landed));
        if !matches!(previous, Some(KeyState::Done(_))) {
            inner.order.push_back(key.clone());
            while inner.order.len() > IDEMPOTENCY_KEYS_MAX {
                let oldest = inner.order.pop_front().expect("non-empty");
                inner.keys.remove(&oldest);
            }
        }
        if let Some(KeyState::InFlight(notify)) = previous {
            notify.notify_waiters();
        }
    }

    /// Releases a key still in flight (its records did not land); a landed key stays.
    fn release(&self, key: &IdempotencyKey) {
        let mut inner = self.lock();
        if let Some(KeyState::InFlight(_)) = inner.keys.get(key) {
            if let Some(KeyState::InFlight(notify)) = inner.keys.remove(key) {
                notify.notify_waiters();
            }
        }
    }

    /// The positions of `source`'s latest dead letters (at most [`DEAD_LETTERS_MAX`]), resolved or not.
    pub fn dead_letter_positions(&self, source: &str) -> Vec<String> {
        self.lock().dead_letter_positions.get(source).map(|p| p.iter().cloned().collect()).unwrap_or_default()
    }

    /// The position of the last change `source` logged, if any.
    pub fn last_position(&self, source: &str) -> Option<String> {
        self.lock().last_positions.get(source).cloned()
    }

    pub fn set_last_position(&self, source: &str, position: String) {
        self.lock().last_positions.insert(source.to_owned(), position);
    }

    pub fn add_dead_letter(&self, entry: DlqEntry) {
        let mut inner = self.lock();
        let positions = inner.dead_letter_positions.entry(entry.letter.source.clone()).or_default();
        positions.push_back(entry.letter.position.clone());
        if positions.len() > DEAD_LETTERS_MAX {
            positions.pop_front();
        }
        inner.by_input.entry(fingerprint(&entry.letter)).or_default().push(entry.id);
        inner.dead_letters.insert(entry.id, entry);
        while inner.dead_letters.len() > DEAD_LETTERS_MAX {
            let (id, evicted) = inner.dead_letters.pop_first().expect("over the maximum");
            inner.forget_input(id, &evicted.letter);
        }
        metrics::gauge!("remix_dlq_size").set(inner.dead_letters.len() as f64);
    }

    pub fn resolve(&self, id: u64) {
        let mut inner = self.lock();
        if let Some(entry) = inner.dead_letters.remove(&id) {
            inner.forget_input(id, &entry.letter);
        }
        metrics::gauge!("remix_dlq_size").set(inner.dead_letters.len() as f64);
    }

    /// The id of an open dead letter of the same source and route with the same input, if any.
    pub fn open_dead_letter_like(&self, letter: &DeadLetter) -> Option<u64> {
        let inner = self.lock();
        let ids = inner.by_input.get(&fingerprint(letter))?;
        ids.iter()
            .copied()
            .find(|id| inner.dead_letters.get(id).is_some_and(|e| same_input(&e.letter, letter)))
    }

    pub fn dead_letters(&self) -> Vec<DlqEntry> {
        self.lock().dead_letters.values().cloned().collect()
    }

    pub fn dead_letter(&self, id: u64) -> Option<DlqEntry> {
        self.lock().dead_letters.get(&id).cloned()
    }
}
