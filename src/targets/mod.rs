//! Targets: where records go. Each target has one worker that reads the log from the target's cursor,
//! remixes each change into the target's shape, batches, rate-limits, applies, and only then advances
//! the cursor. A paused, slow or failing target never blocks the others or the sources: each worker
//! only reads the log.

pub mod collapse;
pub mod http;
pub mod jsonl;
pub mod postgres;
pub mod state;
pub mod stripe;
pub mod worker;

use crate::record::Op;
use serde_json::{Map, Value};
use std::future::Future;

/// One change, remixed for a target.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The log offset of the change.
    pub offset: u64,
    pub timestamp_ms: u64,
    pub model: String,
    pub op: Op,
    /// The key in the target's field names (`{"order_id": 7}`); `null` for a truncate.
    pub key: Value,
    /// The remixed object for an upsert (only the fields it carries, for a partial one).
    pub data: Option<Map<String, Value>>,
    /// Target fields a partial upsert leaves untouched (unchanged at the source).
    pub unchanged: Vec<String>,
}

/// A batch of items covering the log offsets `first_offset..=last_offset` (records in that range
/// that are not for this target are not in `items`, but the range counts them as handled).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    pub first_offset: u64,
    pub last_offset: u64,
    pub items: Vec<Item>,
}

/// Why a target could not apply something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Worth retrying as is (connection lost, timeout, 429/5xx, deadlock): retried with backoff forever.
    #[error("{0}")]
    Transient(String),
    /// Will fail again (constraint violation, 4xx, type mismatch): handled by `on_error`. `item` is the
    /// index in the batch of the item at fault, when the target can tell.
    #[error("{message}")]
    Permanent { item: Option<usize>, message: String },
}

/// A destination. The worker owns its target and calls it from one task: never concurrently, and
/// always in this order: `open` once, then any sequence of `apply` and `rewind`.
pub trait Target: Send + Sync + 'static {
    /// Whether the worker may collapse several changes to one key inside a batch into the last one
    /// (state targets such as tables); history targets (dataset files, HTTP feeds) say no.
    const COLLAPSE: bool;

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
}
