//! Opening a data directory for writing: the main log and the dead-letter log behind their engines,
//! the state store, and the indexes rebuilt from the logs. `remix run` opens it for the node; the CLI
//! opens it the same way to act while no node runs (a DLQ retry, a Stripe catch-up).

use super::engine::{EngineError, LocalLog, LogEngine};
use super::ingest::{checkpoint, Appender, DeadLetters, Ingest, Logged};
use super::state::{FileStateStore, StateStore};
use crate::config::Config;
use crate::connector::Observer;
use remix_storage::{Log, LogOptions, OsFs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Segment size of the dead-letter log.
const DLQ_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// How long closing waits for tasks that stop on the shutdown signal (a Stripe catch-up, a target's
/// read in progress) to let go of a log.
const LOG_RELEASE_WAIT: Duration = Duration::from_secs(5);

/// Why a data directory could not be opened or closed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the log in {dir}: {source}")]
    Log {
        dir: PathBuf,
        #[source]
        source: remix_storage::Error,
    },
    #[error("reading the log at start: {0}")]
    Scan(#[from] EngineError),
    #[error("closing the log: {0}")]
    Close(#[source] remix_storage::Error),
    #[error("a blocking task failed: {0}")]
    Task(String),
}

/// The dead-letter log's directory: a second log beside the main one, so dead letters never count
/// as (or interleave with) the records targets consume.
pub fn dlq_dir(config: &Config) -> PathBuf {
    config.data_dir.join("dlq")
}

/// A data directory opened for writing.
#[derive(Debug)]
pub struct Opened {
    pub main: Arc<Log>,
    pub dlq: Arc<Log>,
    pub engine: Arc<dyn LogEngine>,
    pub dlq_engine: Arc<dyn LogEngine>,
    pub state: Arc<dyn StateStore>,
    pub ingest: Ingest,
    /// The sources' folds (what the checkpoint saves of them).
    pub observers: Vec<(String, Observer)>,
}

/// Opens the logs (recovery runs here), then rebuilds the indexes, showing each change record of a
/// source in `observers` to its observer.
pub async fn open(config: &Arc<Config>, observers: Vec<(String, Observer)>) -> Result<Opened, OpenError> {
    let (main, dlq) = {
        let config = Arc::clone(config);
        let opened = tokio::task::spawn_blocking(move || open_logs(&config))
            .await
            .map_err(|e| OpenError::Task(e.to_string()))??;
        (Arc::new(opened.0), Arc::new(opened.1))
    };
    let engine: Arc<dyn LogEngine> = Arc::new(LocalLog::new(Arc::clone(&main)));
    let dlq_engine: Arc<dyn LogEngine> = Arc::new(LocalLog::new(Arc::clone(&dlq)));
    let state: Arc<dyn StateStore> = Arc::new(FileStateStore::new(&config.data_dir, Arc::clone(&main)));
    let started = Instant::now();
    let (indexes, read) = checkpoint::load(state.as_ref(), &engine, &dlq_engine, &observers).await?;
    tracing::info!("indexes ready in {} ms", started.elapsed().as_millis());
    let indexes = Arc::new(indexes);
    if read >= checkpoint::CHECKPOINT_RECORDS_MIN {
        // So that the next start, even after a crash, reads only what comes after this.
        if let Err(e) = checkpoint::save(state.as_ref(), &indexes, &observers).await {
            tracing::warn!("cannot write the start-up checkpoint: {e}");
        }
    }
    let dead_letters = DeadLetters::new(Appender::new(Arc::clone(&dlq_engine)), indexes);
    let ingest = Ingest::new(
        Arc::clone(config),
        Appender::new(Arc::clone(&engine)),
        dead_letters,
        Arc::new(Logged::new(config)),
        Arc::clone(&state),
    );
    Ok(Opened { main, dlq, engine, dlq_engine, state, ingest, observers })
}

/// Opens the main log and the dead-letter log of this configuration (blocking).
pub fn open_logs(config: &Config) -> Result<(Log, Log), OpenError> {
    let open = |dir: &std::path::Path, segment_bytes: u64| -> Result<Log, OpenError> {
        let observer: remix_storage::GroupObserver = Arc::new(|group: &remix_storage::GroupStats| {
            metrics::histogram!("remix_log_fsync_seconds").record(group.sync_micros as f64 / 1e6);
            metrics::histogram!("remix_log_write_seconds").record(group.write_micros as f64 / 1e6);
            metrics::histogram!("remix_log_group_records").record(group.records as f64);
            metrics::histogram!("remix_log_group_bytes").record(group.bytes as f64);
        });
        let options = LogOptions { segment_bytes, observer: Some(observer), ..LogOptions::default() };
        let log = Log::open(Arc::new(OsFs), dir, options)
            .map_err(|source| OpenError::Log { dir: dir.to_owned(), source })?;
        for note in log.recovery_notes() {
            tracing::warn!("recovery: {note}");
        }
        Ok(log)
    };
    let main = open(&config.data_dir, config.log.segment_bytes)?;
    let dlq = open(&dlq_dir(config), DLQ_SEGMENT_BYTES)?;
    Ok((main, dlq))
}

impl Opened {
    /// Closes both logs once nothing else holds them (everything acknowledged is durable either way).
    /// Saves a checkpoint (nothing is being appended any more), then closes both logs once nothing
    /// else holds them (everything acknowledged is durable either way).
    pub async fn close(self) -> Result<(), OpenError> {
        let Opened { main, dlq, engine, dlq_engine, state, ingest, observers } = self;
        if let Err(e) = checkpoint::save(state.as_ref(), ingest.indexes(), &observers).await {
            tracing::warn!("cannot write the checkpoint at shutdown (the next start reads more): {e}");
        }
        drop((engine, dlq_engine, state, ingest, observers));
        for log in [main, dlq] {
            close_log(log).await?;
        }
        Ok(())
    }
}

async fn close_log(mut log: Arc<Log>) -> Result<(), OpenError> {
    let deadline = Instant::now() + LOG_RELEASE_WAIT;
    loop {
        match Arc::try_unwrap(log) {
            Ok(log) => {
                return tokio::task::spawn_blocking(move || log.close())
                    .await
                    .map_err(|e| OpenError::Task(e.to_string()))?
                    .map_err(OpenError::Close)
            }
            Err(shared) if Instant::now() < deadline => {
                log = shared;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {
                tracing::warn!("a log is still in use at shutdown; it closes when the process exits");
                return Ok(());
            }
        }
    }
}
