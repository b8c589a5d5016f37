//! The state store: everything the node keeps besides the log, behind one interface (the shape of
//! supabase/etl's `StateStore`), so that a multi-node engine can keep it in JetStream KV or Redis.
//!
//! - **cursors**: the last log offset each target has durably applied;
//! - **target control**: paused, and a rewind requested while no node ran;
//! - **target journals**: what a target must remember across a crash to stay exactly once (the
//!   http target's request in flight, the Stripe target's requests and ids);
//! - **source progress**: e.g. whether the PostgreSQL source's initial snapshot is done;
//! - **checkpoints**: the start-up indexes as of an offset, so start-up does not read the whole log.
//!
//! Every `store`/`append` is durable when it returns `Ok` (a crash leaves the old or the new value,
//! never a mix); a failed one may be retried.

pub mod file;

use crate::util::BoxFuture;
use std::collections::BTreeMap;

pub use file::FileStateStore;

/// One value of the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StateKey {
    /// A target's control state (JSON: [`TargetControl`]).
    TargetControl(String),
    /// A target's journal named `name` (`inflight`, `stripe`): bytes the target defines.
    TargetJournal { target: String, name: &'static str },
    /// A source's progress (JSON the source defines).
    SourceProgress(String),
    /// A checkpoint named `name` (bytes the runtime defines).
    Checkpoint(&'static str),
}

impl std::fmt::Display for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateKey::TargetControl(target) => write!(f, "control state of target {target}"),
            StateKey::TargetJournal { target, name } => write!(f, "{name} journal of target {target}"),
            StateKey::SourceProgress(source) => write!(f, "progress of source {source}"),
            StateKey::Checkpoint(name) => write!(f, "checkpoint {name}"),
        }
    }
}

/// Why the store could not do something.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{key}: {source}")]
    Io {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("cursor of {target}: {message}")]
    Cursor { target: String, message: String },
}

/// A target's control state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetControl {
    #[serde(default)]
    pub paused: bool,
    /// A rewind to this offset that the worker carries out when it next starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewind_to: Option<u64>,
}

/// Where the node keeps its state.
pub trait StateStore: std::fmt::Debug + Send + Sync {
    /// The cursor of `target`, `None` when it has none yet.
    fn cursor(&self, target: &str) -> Option<u64>;

    /// Every cursor, by target.
    fn cursors(&self) -> BTreeMap<String, u64>;

    /// Durably sets `target`'s cursor (it may go back: a rewind).
    fn store_cursor<'a>(&'a self, target: &'a str, offset: u64) -> BoxFuture<'a, Result<(), StateError>>;

    /// The value of `key`, `None` when it was never stored.
    fn load<'a>(&'a self, key: &'a StateKey) -> BoxFuture<'a, Result<Option<Vec<u8>>, StateError>>;

    /// Durably replaces the value of `key`.
    fn store<'a>(&'a self, key: &'a StateKey, value: Vec<u8>) -> BoxFuture<'a, Result<(), StateError>>;

    /// Durably appends `bytes` to the value of `key` (a journal line).
    fn append<'a>(&'a self, key: &'a StateKey, bytes: Vec<u8>) -> BoxFuture<'a, Result<(), StateError>>;

    /// Durably removes `key` (nothing when it is not there).
    fn remove<'a>(&'a self, key: &'a StateKey) -> BoxFuture<'a, Result<(), StateError>>;
}

/// A target's control state from `store` (the default when none is stored).
pub async fn load_control(store: &dyn StateStore, target: &str) -> Result<TargetControl, StateError> {
    let key = StateKey::TargetControl(target.to_owned());
    match store.load(&key).await? {
        None => Ok(TargetControl::default()),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| StateError::Invalid { key: key.to_string(), message: e.to_string() }),
    }
}

/// Durably stores a target's control state.
pub async fn store_control(
    store: &dyn StateStore,
    target: &str,
    control: &TargetControl,
) -> Result<(), StateError> {
    let key = StateKey::TargetControl(target.to_owned());
    store.store(&key, serde_json::to_vec_pretty(control).expect("serializable")).await
}
