//! Appending from async code: admission control in front of the log engine's bounded queue, and a
//! future that completes only when the records are durable (the log's fsync covers them).

use crate::runtime::engine::{AppendRecord, Appended, EngineError, LogEngine, OnDurable};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Bytes of payload that may wait for the log writer at once, across all sources. Callers beyond it
/// wait (asynchronously) for room: a slow disk slows the sources down instead of growing memory.
pub const INGEST_QUEUE_BYTES_MAX: usize = 8 * 1024 * 1024;
const ADMISSION_UNIT_BYTES: usize = 1024;

/// Why an append was not done. Nothing of the append is in the log in every case.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// Temporary: the disk is full, or the node is shutting down. Retry later (HTTP 503).
    #[error("the log cannot accept records right now: {0}")]
    Unavailable(String),
    /// The log stopped after a fatal I/O error; the node must restart (HTTP 503).
    #[error("the log stopped: {0}")]
    Stopped(String),
    /// The request itself is too large for one atomic append (HTTP 413).
    #[error("{0}")]
    TooLarge(String),
}

impl From<EngineError> for AppendError {
    fn from(error: EngineError) -> AppendError {
        match error {
            EngineError::Unavailable(reason) => AppendError::Unavailable(reason),
            EngineError::Stopped(reason) => AppendError::Stopped(reason),
            EngineError::TooLarge(reason) => AppendError::TooLarge(reason),
            other => AppendError::Stopped(other.to_string()),
        }
    }
}

/// The one way records enter a log (the main log or the dead-letter log).
#[derive(Debug, Clone)]
pub struct Appender {
    engine: Arc<dyn LogEngine>,
    admission: Arc<Semaphore>,
    closing: Arc<AtomicBool>,
}

impl Appender {
    pub fn new(engine: Arc<dyn LogEngine>) -> Appender {
        let permits = INGEST_QUEUE_BYTES_MAX / ADMISSION_UNIT_BYTES;
        Appender {
            engine,
            admission: Arc::new(Semaphore::new(permits)),
            closing: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn engine(&self) -> &Arc<dyn LogEngine> {
        &self.engine
    }

    /// Refuses new appends from now on (graceful shutdown); appends already admitted complete.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Appends the records as one atomic batch and resolves once they are durable; `on_durable`
    /// runs first, in the log's order (see [`crate::runtime::engine`]). When the append fails, or
    /// this future is dropped before the records were queued, `on_durable` is dropped unrun.
    pub async fn append(
        &self,
        records: Vec<AppendRecord>,
        on_durable: Option<OnDurable>,
    ) -> Result<Appended, AppendError> {
        if self.closing.load(Ordering::Acquire) {
            return Err(AppendError::Unavailable("shutting down".into()));
        }
        let bytes: usize = records.iter().map(|r| r.payload.len() + 32).sum();
        let total = INGEST_QUEUE_BYTES_MAX / ADMISSION_UNIT_BYTES;
        let units = (bytes / ADMISSION_UNIT_BYTES + 1).min(total) as u32;
        let _permit = Arc::clone(&self.admission)
            .acquire_many_owned(units)
            .await
            .map_err(|_| AppendError::Unavailable("shutting down".into()))?;
        let started = std::time::Instant::now();
        let count = records.len() as u64;
        let appended = self.engine.append(records, on_durable).await?;
        metrics::counter!("remix_records_appended_total").increment(count);
        metrics::counter!("remix_bytes_appended_total").increment(bytes as u64);
        metrics::histogram!("remix_append_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("remix_append_batch_records").record(count as f64);
        Ok(appended)
    }
}
