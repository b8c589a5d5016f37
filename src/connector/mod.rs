//! The connector interface: what a kind of source or target gives the rest of Remix. The one table
//! of the kinds compiled into this binary is [`crate::registry`].
//!
//! A kind is a value ([`SourceKind`], [`TargetKind`]) naming its config section's keys, its part of
//! `config/remix.schema.json`, and the function that reads its section into a spec
//! ([`SourceSpec`], [`TargetSpec`]): the parsed, validated configuration of one source or target,
//! which knows how to describe itself (`remix check`), check the systems it names (`remix doctor`)
//! and start (`remix run`).
//!
//! Architecture invariant: a connector folder (`src/postgres/`, `src/stripe/`, `src/webhook/`,
//! `src/http/`, `src/jsonl/`, ...) imports the runtime's handles (ingest, delivery, state store),
//! config helpers, models, mapping, records and `util`, and never another connector folder; the
//! runtime, config and CLI reach connectors only through this interface and the registry.

pub mod dataset;
pub mod doctor;

use crate::config::section::SectionCx;
use crate::config::{Config, InputBinding, TargetCommon};
use crate::mapping::Mapping;
use crate::runtime::delivery::worker::WorkerContext;
use crate::runtime::delivery::TargetHandle;
use crate::runtime::ingest::Ingest;
use crate::util::BoxFuture;
use std::any::Any;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use doctor::{Check, Report, Status};

/// A kind of source (`kind: postgres` in `sources`).
#[derive(Debug)]
pub struct SourceKind {
    /// The value of `kind`.
    pub kind: &'static str,
    /// The keys of its section besides `name` and `kind`.
    pub keys: &'static [&'static str],
    /// Its part of `config/remix.schema.json` (JSON): `$defs` entries, the first one named
    /// `<kind>_source` being the section; its `properties` leave out `name` and `kind`.
    pub schema: &'static str,
    /// Reads a section whose keys are checked already, reporting every problem through `cx`.
    pub parse: fn(cx: &mut SectionCx<'_, '_>, name: &str) -> Option<Arc<dyn SourceSpec>>,
}

/// A kind of target (`kind: jsonl` in `targets`).
#[derive(Debug)]
pub struct TargetKind {
    pub kind: &'static str,
    /// The keys of its section besides the common ones (`name`, `kind`, `rate_limit`, `batch`,
    /// `on_error`, `truncate`).
    pub keys: &'static [&'static str],
    /// Its part of `config/remix.schema.json`, as for [`SourceKind::schema`] (`<kind>_target`).
    pub schema: &'static str,
    pub parse: fn(cx: &mut SectionCx<'_, '_>, common: &TargetCommon) -> Option<Arc<dyn TargetSpec>>,
}

/// One input of a source as `remix check` shows it: `("route", "/customers", binding)`.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// What names the input: `route`, `table`, `object`.
    pub by: &'static str,
    pub name: String,
    pub binding: &'a InputBinding,
}

/// The HTTP server a source needs: its address, and the paths it serves there (with where each is
/// configured, for errors).
#[derive(Debug, Clone)]
pub struct Served {
    pub listen: String,
    /// (path, the config key that sets it, relative to the source: `routes./customers`, `path`).
    pub paths: Vec<(String, Vec<String>)>,
}

/// The parsed configuration of one source.
pub trait SourceSpec: std::fmt::Debug + Send + Sync + Any {
    /// Its inputs, in config order.
    fn inputs(&self) -> Vec<Input<'_>>;

    /// The HTTP server it serves on, if any (sources on the same address share one server).
    fn served(&self) -> Option<Served> {
        None
    }

    /// What `remix run` prints when ready, to show how to feed this source (a `curl` line).
    fn ready_hint(&self) -> Option<String> {
        None
    }

    /// `remix doctor`'s checks of the system this source reads.
    fn doctor<'a>(&'a self, _name: &'a str, _report: &'a mut Report) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// Builds the source, before the node scans the log at start.
    fn build(&self, name: &str, config: &Arc<Config>) -> Result<Box<dyn Source>, StartError>;

    fn as_any(&self) -> &dyn Any;
}

/// State a source keeps from its own change records in the log (the Stripe source's newest event
/// per key): folded at start, and saved in the start-up checkpoint so that a start reads only the
/// records after it.
pub trait LogFold: std::fmt::Debug + Send + Sync {
    /// One of the source's change records, in log order. A record may be observed again after a
    /// restore (the checkpoint and the records after it overlap by whole appends): the fold must be
    /// idempotent.
    fn observe(&self, change: &crate::record::Change);

    /// The state as JSON, for the checkpoint.
    fn save(&self) -> serde_json::Value;

    /// Restores a saved state, before any record is observed.
    fn restore(&self, saved: &serde_json::Value) -> Result<(), FoldError>;
}

/// A saved fold that cannot be restored (the start then reads the whole log).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FoldError(pub String);

/// What a source observes of each of its change records in the log.
pub type Observer = Arc<dyn LogFold>;

/// A source built but not started yet.
pub trait Source: Send {
    /// Called with every change record of this source in the log, oldest first, at start (before
    /// [`Source::start`]); for sources that keep state of their own from the log.
    fn observe(&self) -> Option<Observer> {
        None
    }

    /// Starts the source. Sources that serve HTTP return their routes; sources that read a system
    /// return their task, which ends when `shutdown` turns true.
    fn start(self: Box<Self>, start: SourceStart) -> Result<Started, StartError>;
}

/// What a source gets from the node when it starts.
#[derive(Debug)]
pub struct SourceStart {
    pub ingest: Ingest,
    pub shutdown: watch::Receiver<bool>,
}

/// A catch-up on demand (`remix source catch-up NAME`): its report as JSON.
pub type CatchUp =
    Arc<dyn Fn() -> BoxFuture<'static, Result<serde_json::Value, CatchUpFailed>> + Send + Sync>;

/// Why a catch-up stopped (what it logged before stays logged).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CatchUpFailed(pub String);

/// A started source.
#[derive(Default)]
pub struct Started {
    /// Routes to serve on [`SourceSpec::served`]'s address.
    pub router: Option<axum::Router>,
    /// Work that runs until shutdown.
    pub tasks: Vec<JoinHandle<()>>,
    /// A source connected to a system reports its state here; the node is not ready while it is
    /// neither `snapshot` nor `streaming`, and the status display shows it.
    pub status: Option<Arc<Mutex<SourceStatus>>>,
    pub catch_up: Option<CatchUp>,
    /// Runs once the node is ready (its servers listen), e.g. a catch-up at start.
    pub when_ready: Option<Box<dyn FnOnce(watch::Receiver<bool>) + Send>>,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("router", &self.router.is_some())
            .field("tasks", &self.tasks.len())
            .field("status", &self.status)
            .field("catch_up", &self.catch_up.is_some())
            .finish()
    }
}

/// What the node shows of a source connected to a system.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SourceStatus {
    /// `starting`, `snapshot`, `streaming`, `retrying`.
    pub state: String,
    /// The position the system was last told is durable (a PostgreSQL LSN).
    pub confirmed_position: String,
    pub last_error: Option<String>,
    pub snapshot_rows: u64,
    /// The table the snapshot is copying and the estimate of its rows (progress, ETA).
    pub snapshot_table: String,
    pub snapshot_rows_estimate: u64,
}

impl SourceStatus {
    /// Whether the source is connected (copying its snapshot or streaming).
    pub fn connected(&self) -> bool {
        matches!(self.state.as_str(), "snapshot" | "streaming")
    }
}

/// The parsed configuration of one target.
pub trait TargetSpec: std::fmt::Debug + Send + Sync + Any {
    /// The models it receives, with their output mappings.
    fn outputs(&self) -> Vec<(&str, &Mapping)>;

    /// Where it writes, for `remix check` (a directory, a URL); empty when the config says it
    /// elsewhere (a DSN is not shown).
    fn place(&self) -> String {
        String::new()
    }

    /// `remix doctor`'s checks of the system this target writes to.
    fn doctor<'a>(
        &'a self,
        _name: &'a str,
        _config: &'a Config,
        _report: &'a mut Report,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// Builds the target and starts its worker.
    fn start(&self, start: TargetStart<'_>) -> Result<(TargetHandle, JoinHandle<()>), StartError>;

    fn as_any(&self) -> &dyn Any;
}

/// What a target gets from the node when it starts.
#[derive(Debug)]
pub struct TargetStart<'a> {
    pub config: &'a Config,
    pub common: TargetCommon,
    pub worker: WorkerContext,
}

/// Why a source or target could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{kind} {name}: {message}")]
pub struct StartError {
    pub kind: &'static str,
    pub name: String,
    pub message: String,
}
