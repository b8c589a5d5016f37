//! The node's handle on a target's worker: its state as `remix target list` shows it, and the
//! control commands (pause, resume, rewind) it sends on a bounded channel.

use crate::runtime::engine::LogEngine;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Control commands waiting for a worker.
pub(super) const COMMANDS_MAX: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Paused,
    Retrying,
    Failed,
}

impl RunState {
    const ALL: [RunState; 4] = [RunState::Running, RunState::Paused, RunState::Retrying, RunState::Failed];

    /// The name `remix target list` and the `state` label of `remix_target_state` show.
    fn label(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Retrying => "retrying",
            RunState::Failed => "failed",
        }
    }
}

/// Sets `remix_target_state{target, state}`: 1 for the target's state, 0 for the others.
pub(super) fn publish_state(target: &str, state: RunState) {
    for s in RunState::ALL {
        let value = if s == state { 1.0 } else { 0.0 };
        metrics::gauge!("remix_target_state", "target" => target.to_owned(), "state" => s.label()).set(value);
    }
}

/// What `remix target list` shows of a target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetStatus {
    pub name: String,
    pub kind: String,
    pub state: RunState,
    pub cursor: u64,
    pub lag_records: u64,
    pub lag_seconds: f64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewindTo {
    Offset(u64),
    /// Milliseconds since the epoch: re-deliver every record at least this recent.
    Time(u64),
    Start,
}

#[derive(Debug)]
pub(super) enum Command {
    Pause(oneshot::Sender<()>),
    Resume(oneshot::Sender<()>),
    Rewind(RewindTo, oneshot::Sender<Result<u64, RewindError>>),
}

/// What the worker shares with its handle.
#[derive(Debug, Clone)]
pub(super) struct Shared {
    pub state: RunState,
    pub cursor: u64,
    pub last_error: Option<String>,
    /// Timestamp of the oldest record not yet applied, while there is one.
    pub pending_since_ms: Option<u64>,
}

/// Why a command did not reach a worker.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("target '{0}' has stopped")]
    Stopped(String),
    #[error(transparent)]
    Refused(#[from] RewindError),
}

/// Why a rewind was not done (the target and its cursor are as before).
#[derive(Debug, thiserror::Error)]
pub enum RewindError {
    #[error(transparent)]
    Log(#[from] crate::runtime::engine::EngineError),
    #[error(transparent)]
    Target(#[from] super::TargetError),
    #[error(transparent)]
    State(#[from] crate::runtime::state::StateError),
}

/// The node's handle on a running worker.
#[derive(Debug, Clone)]
pub struct TargetHandle {
    pub name: String,
    pub kind: &'static str,
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) engine: Arc<dyn LogEngine>,
}

impl TargetHandle {
    pub fn status(&self) -> TargetStatus {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let lag_records = self.engine.durable_offset().saturating_sub(shared.cursor);
        // A worker that is not reading (paused, failed) knows no pending record: ask the log for the
        // oldest one not applied yet, so a waiting backlog never shows as 0 seconds of lag.
        let pending_since = match (lag_records, shared.pending_since_ms) {
            (0, _) => None,
            (_, Some(since)) => Some(since),
            (_, None) => self.oldest_pending(shared.cursor + 1),
        };
        let lag_seconds =
            pending_since.map_or(0.0, |since| crate::time::now_ms().saturating_sub(since) as f64 / 1000.0);
        TargetStatus {
            name: self.name.clone(),
            kind: self.kind.to_owned(),
            state: shared.state,
            cursor: shared.cursor,
            lag_records,
            lag_seconds,
            last_error: shared.last_error.clone(),
        }
    }

    /// The time of the record at `offset` (one short read).
    fn oldest_pending(&self, offset: u64) -> Option<u64> {
        let mut time_ms = None;
        let _ = self.engine.scan_blocking(offset, &mut |record| {
            time_ms = Some(record.timestamp_ms);
            false
        });
        time_ms
    }

    async fn send<R>(&self, make: impl FnOnce(oneshot::Sender<R>) -> Command) -> Result<R, ControlError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || ControlError::Stopped(self.name.clone());
        self.commands.send(make(reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())
    }

    pub async fn pause(&self) -> Result<(), ControlError> {
        self.send(Command::Pause).await
    }

    pub async fn resume(&self) -> Result<(), ControlError> {
        self.send(Command::Resume).await
    }

    /// Rewinds and returns the offset the target was rewound to (its cursor).
    pub async fn rewind(&self, to: RewindTo) -> Result<u64, ControlError> {
        self.send(|reply| Command::Rewind(to, reply)).await?.map_err(ControlError::Refused)
    }
}
