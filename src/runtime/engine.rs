//! The log engine seam: the operations the runtime needs from a log, so that the local segmented log
//! (`remix-storage`, the one implementation today) can later sit beside a log kept in NATS JetStream
//! or Redis.
//!
//! Offsets are dense `u64` from 1. An append is one atomic group: all of its records become durable
//! together (and get consecutive offsets) or none does. `on_durable` hooks run in offset order, one
//! append after the other, before the append's future resolves and whether or not anyone still
//! awaits it: what they record (the ingest indexes) is therefore always a fold of a prefix of the log.
//! Readers never see past the durable offset.
//!
//! The storage crate is synchronous and knows nothing of tokio; every `spawn_blocking` around it is
//! in this file.

use crate::util::BoxFuture;
use remix_storage::{Log, LogReader};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use remix_storage::{AppendRecord, Appended, LogStat, Record, RetentionPolicy, RetentionReport};

/// Runs once an append is durable, on the engine's completion path: keep it short.
pub type OnDurable = Box<dyn FnOnce(&Appended) + Send>;

/// Why an engine operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// Temporary: the disk is full, or the log is closing. Nothing of the append is in the log.
    #[error("the log cannot accept records right now: {0}")]
    Unavailable(String),
    /// The log stopped after a fatal I/O error; the node must restart. Nothing more is appended.
    #[error("the log stopped: {0}")]
    Stopped(String),
    /// The append is too large for one atomic group.
    #[error("{0}")]
    TooLarge(String),
    /// The offset is before the log's first (retention removed it).
    #[error("offset {offset} is no longer in the log (it starts at {first})")]
    BelowStart { offset: u64, first: u64 },
    /// Reading failed (corruption, I/O): the message names segment, position and offset.
    #[error("{0}")]
    Read(String),
}

impl From<remix_storage::Error> for EngineError {
    fn from(error: remix_storage::Error) -> EngineError {
        use remix_storage::Error as E;
        match error {
            E::NoSpace => EngineError::Unavailable("no space left on device".into()),
            E::Closed => EngineError::Unavailable("shutting down".into()),
            E::Stopped { reason } => EngineError::Stopped(reason),
            e @ (E::BatchTooLarge { .. } | E::RecordTooLarge { .. }) => EngineError::TooLarge(e.to_string()),
            E::BelowStart { offset, first } => EngineError::BelowStart { offset, first },
            other => EngineError::Read(other.to_string()),
        }
    }
}

/// What a read may return: at most `records_max` records (and about `bytes_max` bytes of payload),
/// waiting up to `wait` for the first one and then up to `linger` for more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    pub records_max: usize,
    pub bytes_max: usize,
    pub wait: Duration,
    pub linger: Duration,
}

/// A log as the runtime uses it.
pub trait LogEngine: std::fmt::Debug + Send + Sync {
    /// Appends `records` as one atomic group; resolves once they are durable (after `on_durable`
    /// ran), or with the reason nothing of them is in the log.
    fn append(
        &self,
        records: Vec<AppendRecord>,
        on_durable: Option<OnDurable>,
    ) -> BoxFuture<'static, Result<Appended, EngineError>>;

    /// The last durable offset (0: none yet).
    fn durable_offset(&self) -> u64;

    /// The first offset the log still holds.
    fn first_offset(&self) -> u64;

    /// Why the log stopped, if it did.
    fn stopped(&self) -> Option<String>;

    /// A reader from `from` (at least [`LogEngine::first_offset`]).
    fn reader(&self, from: u64) -> Result<Box<dyn EngineReader>, EngineError>;

    /// Every durable record from `from`, in order, until `visit` says stop (`false`) or the durable
    /// end. Blocking: for threads that may block ([`scan`] wraps it for async code).
    fn scan_blocking(&self, from: u64, visit: &mut dyn FnMut(Record) -> bool) -> Result<(), EngineError>;

    /// The first offset appended at or after `time_ms` (one past the end when none is).
    fn offset_at_time(&self, time_ms: u64) -> BoxFuture<'_, Result<u64, EngineError>>;

    /// Removes what retention allows, never what a cursor in `cursors` still needs unless a byte
    /// limit forces it (those targets are reported as fallen behind).
    fn apply_retention(
        &self,
        policy: RetentionPolicy,
        now_ms: u64,
        cursors: BTreeMap<String, u64>,
    ) -> BoxFuture<'_, Result<RetentionReport, EngineError>>;

    /// Segments, sizes, offsets (for metrics and `log stat`).
    fn stat(&self) -> LogStat;
}

/// Reads durable records in order from an offset, waking on new data.
pub trait EngineReader: Send {
    /// The next records within `limits`; empty when none arrived within `limits.wait`.
    fn read(&mut self, limits: ReadLimits) -> BoxFuture<'_, Result<Vec<Record>, EngineError>>;

    /// Repositions the reader at `offset`.
    fn seek(&mut self, offset: u64) -> Result<(), EngineError>;

    /// The offset of the next record it will return.
    fn next_offset(&self) -> u64;
}

/// [`LogEngine::scan_blocking`] on a blocking thread; `visit` comes back with the result.
pub async fn scan<V: FnMut(Record) -> bool + Send + 'static>(
    engine: &Arc<dyn LogEngine>,
    from: u64,
    mut visit: V,
) -> Result<V, EngineError> {
    let engine = Arc::clone(engine);
    tokio::task::spawn_blocking(move || engine.scan_blocking(from, &mut visit).map(|()| visit))
        .await
        .map_err(|e| EngineError::Read(format!("the scan task failed: {e}")))?
}

/// The record at `offset`, if the log holds it (durably).
pub async fn read_one(engine: &Arc<dyn LogEngine>, offset: u64) -> Result<Option<Record>, EngineError> {
    if offset < engine.first_offset() || offset > engine.durable_offset() {
        return Ok(None);
    }
    let mut reader = engine.reader(offset)?;
    let limits =
        ReadLimits { records_max: 1, bytes_max: usize::MAX, wait: Duration::ZERO, linger: Duration::ZERO };
    Ok(reader.read(limits).await?.into_iter().next().filter(|r| r.offset == offset))
}

/// The local segmented log (`remix-storage`).
#[derive(Debug, Clone)]
pub struct LocalLog {
    log: Arc<Log>,
}

impl LocalLog {
    pub fn new(log: Arc<Log>) -> LocalLog {
        LocalLog { log }
    }

    /// The log itself, for the file state store (cursors live beside the log) and shutdown.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }
}

impl LogEngine for LocalLog {
    fn append(
        &self,
        records: Vec<AppendRecord>,
        on_durable: Option<OnDurable>,
    ) -> BoxFuture<'static, Result<Appended, EngineError>> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let queued = self.log.append(records, move |result| {
            if let (Ok(appended), Some(hook)) = (&result, on_durable) {
                hook(appended);
            }
            let _ = sender.send(result);
        });
        Box::pin(async move {
            queued?;
            let result = receiver.await.map_err(|_| EngineError::Stopped("the log writer is gone".into()))?;
            Ok(result?)
        })
    }

    fn durable_offset(&self) -> u64 {
        self.log.durable_offset()
    }

    fn first_offset(&self) -> u64 {
        self.log.first_offset()
    }

    fn stopped(&self) -> Option<String> {
        self.log.stopped()
    }

    fn reader(&self, from: u64) -> Result<Box<dyn EngineReader>, EngineError> {
        Ok(Box::new(LocalReader { reader: Some(self.log.reader(from)?), next_offset: from }))
    }

    fn scan_blocking(&self, from: u64, visit: &mut dyn FnMut(Record) -> bool) -> Result<(), EngineError> {
        for record in self.log.reader(from.max(self.log.first_offset()))? {
            if !visit(record?) {
                break;
            }
        }
        Ok(())
    }

    fn offset_at_time(&self, time_ms: u64) -> BoxFuture<'_, Result<u64, EngineError>> {
        let log = Arc::clone(&self.log);
        Box::pin(async move { blocking(move || Ok(log.offset_at_time(time_ms)?)).await })
    }

    fn apply_retention(
        &self,
        policy: RetentionPolicy,
        now_ms: u64,
        cursors: BTreeMap<String, u64>,
    ) -> BoxFuture<'_, Result<RetentionReport, EngineError>> {
        let log = Arc::clone(&self.log);
        Box::pin(
            async move { blocking(move || Ok(log.apply_retention_with(&policy, now_ms, cursors)?)).await },
        )
    }

    fn stat(&self) -> LogStat {
        self.log.stat()
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| EngineError::Read(format!("the log task failed: {e}")))?
}

/// A reader of the local log; it moves to a blocking thread for each read.
struct LocalReader {
    /// `None` only while a read runs (or after one panicked).
    reader: Option<LogReader>,
    next_offset: u64,
}

impl EngineReader for LocalReader {
    fn read(&mut self, limits: ReadLimits) -> BoxFuture<'_, Result<Vec<Record>, EngineError>> {
        Box::pin(async move {
            let mut reader =
                self.reader.take().ok_or_else(|| EngineError::Read("the reader was lost".into()))?;
            let (reader, result) = tokio::task::spawn_blocking(move || {
                let result = read_blocking(&mut reader, limits);
                (reader, result)
            })
            .await
            .map_err(|e| EngineError::Read(format!("the read task failed: {e}")))?;
            self.next_offset = reader.next_offset();
            self.reader = Some(reader);
            result
        })
    }

    fn seek(&mut self, offset: u64) -> Result<(), EngineError> {
        let reader = self.reader.as_mut().ok_or_else(|| EngineError::Read("the reader was lost".into()))?;
        reader.seek(offset)?;
        self.next_offset = reader.next_offset();
        Ok(())
    }

    fn next_offset(&self) -> u64 {
        self.next_offset
    }
}

/// Reads within `limits`: waits for the first record, then takes what is ready and lingers for more
/// until a limit or the linger time is reached.
fn read_blocking(reader: &mut LogReader, limits: ReadLimits) -> Result<Vec<Record>, EngineError> {
    let mut records = Vec::new();
    let Some(first) = reader.next_timeout(limits.wait)? else { return Ok(records) };
    let mut bytes = first.payload.len();
    records.push(first);
    let deadline = std::time::Instant::now() + limits.linger;
    while records.len() < limits.records_max && bytes < limits.bytes_max {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let next = match reader.try_next()? {
            Some(record) => Some(record),
            None if left.is_zero() => None,
            None => reader.next_timeout(left)?,
        };
        let Some(record) = next else { break };
        bytes += record.payload.len();
        records.push(record);
    }
    Ok(records)
}
