//! One worker per target: read from the cursor, remix out, batch, rate-limit, apply with retries,
//! then advance the cursor. Control (pause, resume, rewind) arrives on a bounded channel
//! (`control.rs`); applying, retrying and dead-lettering are in `apply.rs`.
//!
//! Invariants: the cursor is stored only after the target confirmed the batch (`Ok` from `apply`);
//! items of one key reach the target in log order; a target's failure only ever stops its own worker.
//! A batch holds at most `records_max` records and about `BATCH_BYTES_MAX` bytes, so a worker's
//! memory does not grow with its backlog.

use super::handle::{publish_state, Command, RunState, Shared, TargetHandle, COMMANDS_MAX};
use super::limiter::Limiter;
use super::Target;
use crate::config::TargetCommon;
use crate::connector::TargetStart;
use crate::mapping::Mapping;
use crate::runtime::engine::{EngineReader, LogEngine, ReadLimits, Record};
use crate::runtime::ingest::DeadLetters;
use crate::runtime::state::StateStore;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How long a worker waits for the first record of a batch before looking at its commands again.
const IDLE_POLL_MS: u64 = 250;
/// Payload bytes a batch reads at most (a batch of large records stops early).
pub const BATCH_BYTES_MAX: usize = 32 << 20;

/// What a worker needs besides its target.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    pub engine: Arc<dyn LogEngine>,
    pub dead_letters: DeadLetters,
    pub state: Arc<dyn StateStore>,
    pub shutdown: watch::Receiver<bool>,
}

/// Starts the worker of one target.
pub fn spawn<T: Target>(
    target: T,
    kind: &'static str,
    start: TargetStart<'_>,
) -> (TargetHandle, tokio::task::JoinHandle<()>) {
    let TargetStart { config, common, worker: context } = start;
    let outputs: BTreeMap<String, Mapping> = config
        .target(&common.name)
        .map(|t| {
            t.outputs().into_iter().map(|(model, mapping)| (model.to_owned(), mapping.clone())).collect()
        })
        .unwrap_or_default();
    let (commands, receiver) = mpsc::channel(COMMANDS_MAX);
    let cursor = context.state.cursor(&common.name).unwrap_or(0);
    let state = RunState::Running;
    let shared = Arc::new(Mutex::new(Shared { state, cursor, last_error: None, pending_since_ms: None }));
    // Published from the start: a target that never changes state has its series too.
    publish_state(&common.name, state);
    let handle = TargetHandle {
        name: common.name.clone(),
        kind,
        shared: Arc::clone(&shared),
        commands,
        engine: Arc::clone(&context.engine),
    };
    let limiter = common.rate_limit.map(Limiter::new);
    let capabilities = target.capabilities();
    let records_max = common
        .batch
        .records_max
        .unwrap_or(capabilities.batch_records_default)
        .min(capabilities.batch_records_max)
        .max(1);
    let worker = Worker {
        target,
        common,
        outputs,
        context,
        shared,
        commands: receiver,
        limiter,
        paused: false,
        records_max,
        applied_through: cursor,
    };
    let task = tokio::spawn(worker.run());
    (handle, task)
}

pub(super) struct Worker<T: Target> {
    pub(super) target: T,
    pub(super) common: TargetCommon,
    pub(super) outputs: BTreeMap<String, Mapping>,
    pub(super) context: WorkerContext,
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) limiter: Option<Limiter>,
    pub(super) paused: bool,
    /// The user's `batch.records_max`, capped by what the target takes.
    pub(super) records_max: usize,
    /// The last offset of the last batch applied (the cursor, unless the target holds items).
    pub(super) applied_through: u64,
}

/// How a wait ended.
pub(super) enum Woken {
    Shutdown,
    Command(Command),
    Timeout,
}

type Reader = Box<dyn EngineReader>;

impl<T: Target> Worker<T> {
    pub(super) fn name(&self) -> &str {
        &self.common.name
    }

    pub(super) fn set(&self, state: RunState, error: Option<String>) {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.state = state;
        if error.is_some() || state == RunState::Running {
            shared.last_error = error.or(shared.last_error.take().filter(|_| state != RunState::Running));
        }
        drop(shared);
        publish_state(&self.common.name, state);
    }

    pub(super) fn cursor(&self) -> u64 {
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).cursor
    }

    async fn run(mut self) {
        let Some(mut reader) = self.start().await else { return };
        loop {
            match self.step(reader).await {
                Some(next) => reader = next,
                None => return,
            }
        }
    }

    /// Opens the target, settles the cursor, carries out a pending rewind. `None`: shut down.
    async fn start(&mut self) -> Option<Reader> {
        let local = self.cursor();
        let control = crate::runtime::state::load_control(self.context.state.as_ref(), self.name()).await;
        let control = control.unwrap_or_else(|e| {
            tracing::error!(target = %self.name(), "{e}; starting unpaused");
            Default::default()
        });
        // A rewind recorded while the node was stopped: the cursor shown is the rewind point from
        // the start (opening a target can take a while), never the old one.
        if let Some(to) = control.rewind_to {
            self.shared.lock().unwrap_or_else(|e| e.into_inner()).cursor = local.min(to);
        }
        let mut backoff = super::backoff::Backoff::default();
        let opened = loop {
            match self.target.open(local).await {
                Ok(cursor) => break cursor,
                Err(error) => {
                    if !self.back_off(&mut backoff, error).await {
                        return None;
                    }
                }
            }
        };
        let cursor = self.first_cursor(opened);
        let durable = self.context.engine.durable_offset();
        if cursor > durable {
            let error =
                format!("the target has applied up to offset {cursor}, beyond the log's end {durable}");
            self.set(RunState::Failed, Some(error));
            self.wait_forever().await;
            return None;
        }
        let stored = match control.rewind_to {
            // Stored by the rewind below.
            Some(to) => {
                self.shared.lock().unwrap_or_else(|e| e.into_inner()).cursor = cursor.min(to);
                Ok(())
            }
            None => self.store_cursor(cursor).await,
        };
        if let Err(e) = stored {
            self.set(RunState::Failed, Some(e.to_string()));
            return None;
        }
        self.applied_through = cursor;
        self.paused = control.paused;
        if let Some(to) = control.rewind_to {
            if let Err(e) = self.rewind(super::handle::RewindTo::Offset(to)).await {
                self.set(RunState::Failed, Some(crate::error_chain(&e)));
                // Not rewound: the target's own cursor stands.
                if let Err(e) = self.store_cursor(cursor).await {
                    tracing::error!(target = %self.name(), "{e}");
                }
            }
        }
        if self.paused {
            self.set(RunState::Paused, None);
        }
        self.reader_at(self.cursor() + 1).await
    }

    /// The cursor to start from, given the target's own. A target that has never applied anything
    /// (cursor 0, no cursor stored) on a log whose start retention has moved begins at that start:
    /// the records before it are gone for every target added from now on. A target that had a
    /// cursor and fell behind is not moved: it fails until it is rewound (nothing skipped silently).
    fn first_cursor(&self, cursor: u64) -> u64 {
        let first_offset = self.context.engine.first_offset();
        if cursor > 0 || first_offset <= 1 || self.context.state.cursor(self.name()).is_some() {
            return cursor;
        }
        tracing::warn!(target = %self.name(), first_offset,
            "a new target starts at the log's first offset: retention removed the {} records before it",
            first_offset - 1);
        first_offset - 1
    }

    pub(super) async fn reader_at(&mut self, from: u64) -> Option<Reader> {
        loop {
            match self.context.engine.reader(from) {
                Ok(reader) => return Some(reader),
                Err(e) => {
                    self.set(RunState::Failed, Some(format!("{e}; rewind the target to continue")));
                    match self.wait(None).await {
                        Woken::Shutdown => return None,
                        Woken::Command(command) => self.handle(command).await,
                        Woken::Timeout => {}
                    }
                    if self.cursor() + 1 != from {
                        return self.context.engine.reader(self.cursor() + 1).ok();
                    }
                }
            }
        }
    }

    /// One turn of the loop: commands, then one batch. `None`: shut down.
    async fn step(&mut self, mut reader: Reader) -> Option<Reader> {
        while let Ok(command) = self.commands.try_recv() {
            let before = self.cursor();
            self.handle(command).await;
            if self.cursor() != before {
                reader.seek(self.cursor() + 1).ok()?;
            }
        }
        if *self.context.shutdown.borrow() {
            return None;
        }
        if self.paused {
            match self.wait(None).await {
                Woken::Shutdown => return None,
                Woken::Command(command) => {
                    self.handle(command).await;
                    return self.reader_at(self.cursor() + 1).await;
                }
                Woken::Timeout => return Some(reader),
            }
        }
        let records = match self.read(&mut reader).await {
            Ok(records) => records,
            Err(e) => {
                self.set(RunState::Failed, Some(e.to_string()));
                self.wait_forever().await;
                return None;
            }
        };
        if records.is_empty() {
            self.idle().await;
            if self.target.held_from().is_none() {
                self.shared.lock().unwrap_or_else(|e| e.into_inner()).pending_since_ms = None;
            }
            return Some(reader);
        }
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).pending_since_ms =
            Some(records[0].timestamp_ms);
        if !self.deliver(records).await {
            // Shut down, or rewound/paused mid-delivery: continue from the cursor.
            if *self.context.shutdown.borrow() {
                return None;
            }
            return self.reader_at(self.cursor() + 1).await;
        }
        Some(reader)
    }

    /// Reads up to `records_max` durable records, waiting briefly for the first and at most the
    /// linger time for the rest.
    async fn read(&self, reader: &mut Reader) -> Result<Vec<Record>, crate::runtime::engine::EngineError> {
        let limits = ReadLimits {
            records_max: self.records_max,
            bytes_max: BATCH_BYTES_MAX,
            wait: Duration::from_millis(IDLE_POLL_MS),
            linger: self.common.batch.linger,
        };
        reader.read(limits).await
    }
}
