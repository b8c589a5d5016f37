//! Targets: where records go. Each target has one worker that reads the log from the target's cursor,
//! remixes each change into the target's shape, batches, rate-limits, applies, and only then advances
//! the cursor. A paused, slow or failing target never blocks the others or the sources: each worker
//! only reads the log.

mod apply;
pub mod backoff;
pub mod collapse;
mod control;
pub mod handle;
mod limiter;
pub mod message;
mod remix_out;
pub mod worker;

pub use handle::{RewindTo, RunState, TargetHandle, TargetStatus};

use crate::record::Op;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::future::Future;

/// One change, remixed for a target.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The log offset of the change.
    pub offset: u64,
    pub timestamp_ms: u64,
    pub model: String,
    /// The source that logged the change.
    pub source: String,
    pub op: Op,
    /// The key in the target's field names (`{"order_id": 7}`); `null` for a truncate.
    pub key: Value,
    /// The remixed object for an upsert (only the fields it carries, for a partial one).
    pub data: Option<Fields>,
    /// Target fields a partial upsert leaves untouched (unchanged at the source).
    pub unchanged: Vec<String>,
}

/// An upsert's fields: a map, or still the JSON text of the log record they came from.
///
/// With an identity mapping the worker passes the logged object through as `Raw`, so a target that
/// reads the text itself (the postgres target) never builds a map per record: building and freeing
/// maps was about a quarter of the worker's time. The text is serde_json's own output of a map (keys
/// sorted, numbers and strings in its one form), so writing it out again is byte for byte what
/// serializing the parsed map would give.
#[derive(Debug, Clone)]
pub enum Fields {
    Map(Map<String, Value>),
    /// A JSON object's text.
    Raw(Box<RawValue>),
}

impl Fields {
    /// The fields as a map (parsed when raw).
    pub fn to_map(&self) -> Cow<'_, Map<String, Value>> {
        match self {
            Fields::Map(map) => Cow::Borrowed(map),
            Fields::Raw(raw) => Cow::Owned(parse_object(raw)),
        }
    }

    pub fn into_map(self) -> Map<String, Value> {
        match self {
            Fields::Map(map) => map,
            Fields::Raw(raw) => parse_object(&raw),
        }
    }
}

/// A field's value as [`Fields::for_each`] shows it: parsed, or its JSON text.
#[derive(Debug, Clone, Copy)]
pub enum FieldValue<'a> {
    Parsed(&'a Value),
    Raw(&'a RawValue),
}

impl Fields {
    /// Calls `visit` with each field in the object's order, without building a map.
    pub fn for_each<'a>(&'a self, mut visit: impl FnMut(&str, FieldValue<'a>)) {
        match self {
            Fields::Map(map) => map.iter().for_each(|(field, value)| visit(field, FieldValue::Parsed(value))),
            Fields::Raw(raw) => {
                let mut json = serde_json::Deserializer::from_str(raw.get());
                serde::Deserializer::deserialize_map(&mut json, RawFields(&mut visit))
                    .expect("a logged object parses");
            }
        }
    }
}

/// Visits a raw object's fields: names borrowed unless escaped, values as slices of the text.
struct RawFields<'v, F>(&'v mut F);

impl<'de, F: FnMut(&str, FieldValue<'de>)> serde::de::Visitor<'de> for RawFields<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(FieldName(name)) = map.next_key()? {
            let value: &'de RawValue = map.next_value()?;
            (self.0)(&name, FieldValue::Raw(value));
        }
        Ok(())
    }
}

struct FieldName<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'de> serde::de::Visitor<'de> for Name {
            type Value = FieldName<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<FieldName<'de>, E> {
                Ok(FieldName(Cow::Borrowed(name)))
            }
            fn visit_str<E>(self, name: &str) -> Result<FieldName<'de>, E> {
                Ok(FieldName(Cow::Owned(name.to_owned())))
            }
        }
        deserializer.deserialize_str(Name)
    }
}

/// A raw object from a decoded log record; the record decoded, so its object parses.
fn parse_object(raw: &RawValue) -> Map<String, Value> {
    serde_json::from_str(raw.get()).expect("a logged object parses as a map")
}

impl From<Map<String, Value>> for Fields {
    fn from(map: Map<String, Value>) -> Fields {
        Fields::Map(map)
    }
}

impl PartialEq for Fields {
    fn eq(&self, other: &Fields) -> bool {
        match (self, other) {
            (Fields::Raw(a), Fields::Raw(b)) => a.get() == b.get(),
            _ => self.to_map() == other.to_map(),
        }
    }
}

impl serde::Serialize for Fields {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Fields::Map(map) => map.serialize(serializer),
            Fields::Raw(raw) => raw.serialize(serializer),
        }
    }
}

/// A batch of items covering the log offsets `first_offset..=last_offset` (records in that range
/// that are not for this target are not in `items`, but the range counts them as handled).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    pub first_offset: u64,
    pub last_offset: u64,
    pub items: Vec<Item>,
}

/// The error a target's system gave, kept as the cause of a [`TargetError`].
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a target could not apply something. `message` is what `remix target list` shows (with the
/// system's own words); `source`, when there is one, is the system's error itself.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Worth retrying as is (connection lost, timeout, 429/5xx, deadlock): retried with backoff forever.
    #[error("{message}")]
    Transient {
        message: String,
        #[source]
        source: Option<Cause>,
    },
    /// Will fail again (constraint violation, 4xx, type mismatch): handled by `on_error`. `item` is the
    /// index in the batch of the item at fault, when the target can tell.
    #[error("{message}")]
    Permanent {
        item: Option<usize>,
        message: String,
        #[source]
        source: Option<Cause>,
    },
}

impl TargetError {
    pub fn transient(message: impl Into<String>) -> TargetError {
        TargetError::Transient { message: message.into(), source: None }
    }

    pub fn permanent(item: Option<usize>, message: impl Into<String>) -> TargetError {
        TargetError::Permanent { item, message: message.into(), source: None }
    }

    /// The same error, caused by `cause`.
    pub fn caused_by(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> TargetError {
        match &mut self {
            TargetError::Transient { source, .. } | TargetError::Permanent { source, .. } => {
                *source = Some(Box::new(cause))
            }
        }
        self
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, TargetError::Transient { .. })
    }

    pub fn message(&self) -> &str {
        match self {
            TargetError::Transient { message, .. } | TargetError::Permanent { message, .. } => message,
        }
    }
}

/// How a target stays exactly once (or as close as its system allows) across crashes and rewinds:
/// what README states as its guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// The target stores the cursor itself, in the same transaction as the data (SQL tables):
    /// exactly once.
    CursorInTarget,
    /// Writes are named by log offsets (files named by offset ranges): a re-delivery replaces or
    /// skips, never appends: exactly once.
    OffsetNamed,
    /// Every request carries a key derived from log offsets, which the system deduplicates within
    /// its window: exactly once inside the window, at least once with a stable id beyond it.
    IdempotencyKeys,
    /// At least once, each message with a stable id (`<target>:<offset>`) for consumers to
    /// deduplicate.
    AtLeastOnceStableId,
}

/// What a target can do, which the worker adapts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Whether the worker may collapse several changes to one key inside a batch into the last one
    /// (state targets such as tables); history targets (dataset files, feeds, queues) say no.
    pub collapse: bool,
    pub guarantee: Guarantee,
    /// The most records one `apply` takes (the configured `batch.records_max` is capped by it).
    pub batch_records_max: usize,
    /// Records per batch when the configuration sets no `batch.records_max`: what the target is
    /// fastest with while behind (a batch takes only what is ready, so a caught-up target still
    /// sends small batches after `linger_ms`), bounded by memory (`BATCH_BYTES_MAX` of payload).
    pub batch_records_default: usize,
}

/// A destination. The worker owns its target and calls it from one task: never concurrently, and
/// always in this order: `open` once, then any sequence of `apply` and `rewind`.
pub trait Target: Send + Sync + 'static {
    /// What the target can do (constant for a target's life).
    fn capabilities(&self) -> Capabilities;

    /// Called once before anything else, with the offset of the local cursor (0: nothing applied).
    /// Returns the offset up to which the target has applied the log, as far as it knows: targets
    /// that store their own position (a SQL table in the same transaction as the data, files named by
    /// offsets) return theirs, which wins over the local cursor; others return `cursor`.
    fn open(&mut self, cursor: u64) -> impl Future<Output = Result<u64, TargetError>> + Send;

    /// Applies one batch; items are in log order. `Ok` means every item is durably applied at the
    /// target and the worker may advance the cursor to `batch.last_offset`. After an error nothing may
    /// be assumed about the batch: it is applied again (so application must be idempotent), or, with
    /// `on_error: dead_letter`, again without the item at fault.
    fn apply(&mut self, batch: &Batch) -> impl Future<Output = Result<(), TargetError>> + Send;

    /// The operator rewound the target to `offset`: everything after it will be delivered again.
    /// Returns the offset the target actually rewound to (at most `offset`; a file target may have to
    /// go back to the start of a file).
    fn rewind(&mut self, offset: u64) -> impl Future<Output = Result<u64, TargetError>> + Send;

    /// For a target that holds confirmed items in an open unit across batches (an object store
    /// shard, sealed by rows, bytes or age): the offset of the first item it holds that is not yet
    /// durable at its system. The worker keeps the stored cursor below it, so a crash re-delivers
    /// what the open unit held; items re-read after an interruption are the target's to skip.
    /// `None` (the default): everything `apply` confirmed is durable.
    fn held_from(&self) -> Option<u64> {
        None
    }

    /// Called while the log has nothing new for the target (about every 250 ms) and it holds items
    /// ([`Target::held_from`]): a chance to seal an open unit by age. An error shows the target as
    /// `retrying`; `idle` is called again on the next idle turn.
    fn idle(&mut self) -> impl Future<Output = Result<(), TargetError>> + Send {
        async { Ok(()) }
    }
}

/// Runs blocking file work (a target's own files and journals) off the async threads; every I/O
/// error is transient, named by `what`.
pub async fn blocking_io<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, TargetError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(TargetError::transient(format!("{what}: {e}")).caused_by(e)),
        Err(e) => Err(TargetError::transient(format!("{what}: the file task failed: {e}"))),
    }
}
