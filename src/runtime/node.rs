//! `remix run`: the node. Opens the data directory (logs, state, indexes), starts one worker per
//! target, serves the sources and the admin API, applies retention, and shuts down gracefully: stop
//! accepting, let in-flight appends finish (their senders get their answer), stop the workers after
//! their current batch (cursors saved), close the logs.

use super::engine::LogEngine;
use super::engine::RetentionPolicy;
use super::open::{open, OpenError};
use crate::config::Config;
use crate::connector::{CatchUp, Source, SourceStart, SourceStatus, StartError, TargetStart};
use crate::runtime::delivery::worker::WorkerContext;
use crate::runtime::delivery::TargetHandle;
use crate::runtime::ingest::{checkpoint, Indexes, Ingest, Logged};
use crate::runtime::state::StateStore;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often retention runs.
const RETENTION_INTERVAL_SECONDS: u64 = 60;

/// Why the node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Serve(#[from] super::serve::ServeError),
    #[error("metrics: {0}")]
    Metrics(String),
}

/// Everything the admin API and the CLI (through it) can reach in a running node.
#[derive(Debug)]
pub struct NodeState {
    pub config: Arc<Config>,
    pub engine: Arc<dyn LogEngine>,
    pub ingest: Ingest,
    pub state: Arc<dyn StateStore>,
    pub targets: Vec<TargetHandle>,
    pub sources: Vec<SourceHandle>,
    /// The sources' folds (what checkpoints save of them).
    pub observers: Vec<(String, crate::connector::Observer)>,
    pub ready: AtomicBool,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl NodeState {
    pub fn target(&self, name: &str) -> Option<&TargetHandle> {
        self.targets.iter().find(|t| t.name == name)
    }

    pub fn indexes(&self) -> &Arc<Indexes> {
        self.ingest.indexes()
    }

    /// Change records logged per source since the start.
    pub fn logged(&self) -> &Logged {
        self.ingest.logged()
    }

    /// What keeps the node from being ready (`/readyz`); empty when it is: the log accepts appends,
    /// the servers listen (webhook and Stripe sources are connected from then on), and every source
    /// connected to a system is connected.
    pub fn not_ready(&self) -> Vec<String> {
        if let Some(reason) = self.engine.stopped() {
            return vec![format!("log stopped: {reason}")];
        }
        if !self.ready.load(Ordering::Acquire) {
            return vec!["starting or shutting down".into()];
        }
        self.sources.iter().filter_map(source_not_connected).collect()
    }
}

/// The node's handle on a started source.
#[derive(Clone)]
pub struct SourceHandle {
    pub name: String,
    pub kind: &'static str,
    /// Where it listens, for sources that serve HTTP.
    pub listen: Option<String>,
    /// The state of a source connected to a system.
    pub status: Option<Arc<std::sync::Mutex<SourceStatus>>>,
    pub catch_up: Option<CatchUp>,
}

impl std::fmt::Debug for SourceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceHandle").field("name", &self.name).field("kind", &self.kind).finish()
    }
}

impl SourceHandle {
    pub fn status(&self) -> Option<SourceStatus> {
        self.status.as_ref().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// `source <name>: <state>[: <last error>]` unless the source is connected (or connects to nothing).
fn source_not_connected(source: &SourceHandle) -> Option<String> {
    let status = source.status()?;
    match (status.connected(), &status.last_error) {
        (true, _) => None,
        (false, Some(error)) => Some(format!("source {}: {}: {error}", source.name, status.state)),
        (false, None) => Some(format!("source {}: {}", source.name, status.state)),
    }
}

/// A cursor of a target that is no longer configured stays on disk (a target put back resumes where
/// it was), but it no longer holds back retention.
fn warn_of_unconfigured_cursors(config: &Config, state: &dyn StateStore) {
    for (name, cursor) in state.cursors() {
        if !config.targets.iter().any(|t| t.name() == name) {
            let path = config.data_dir.join("cursors").join(format!("{name}.cursor"));
            tracing::warn!(target = %name, cursor, "the cursor of a target that is not configured does not \
                hold back retention; delete {} if the target is gone for good", path.display());
        }
    }
}

/// Histogram buckets of durations (`*_seconds`: fsync, write, append): 50 µs to 10 s.
const LATENCY_BUCKETS_SECONDS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Histogram buckets of group and batch sizes in records (`*_records`): 1 to 100,000.
const GROUP_SIZE_BUCKETS_RECORDS: [f64; 16] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0, 20_000.0,
    50_000.0, 100_000.0,
];
/// Histogram buckets of group sizes in bytes (`*_bytes`): 256 B to 64 MiB, by fours.
const GROUP_SIZE_BUCKETS_BYTES: [f64; 10] = [
    256.0,
    1_024.0,
    4_096.0,
    16_384.0,
    65_536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// The Prometheus recorder: every histogram is exported as a histogram (`_bucket{le=...}` lines),
/// with buckets chosen by the unit its name ends in.
fn install_metrics() -> Result<metrics_exporter_prometheus::PrometheusHandle, NodeError> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let buckets = || -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS_SECONDS)?
            .set_buckets_for_metric(Matcher::Suffix("_records".into()), &GROUP_SIZE_BUCKETS_RECORDS)?
            .set_buckets_for_metric(Matcher::Suffix("_bytes".into()), &GROUP_SIZE_BUCKETS_BYTES)
    };
    let recorder = buckets().map_err(|e| NodeError::Metrics(e.to_string()))?.build_recorder();
    let handle = recorder.handle();
    // A second node in the same process (tests) keeps the first recorder.
    let _ = metrics::set_global_recorder(recorder);
    Ok(handle)
}

/// Runs the node until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), NodeError> {
    let config = Arc::new(config);
    let metrics = install_metrics()?;
    let built = build_sources(&config)?;
    let observers =
        built.iter().filter_map(|(name, _, source)| Some((name.clone(), source.observe()?))).collect();
    let opened = open(&config, observers).await?;
    warn_of_unconfigured_cursors(&config, opened.state.as_ref());
    let ingest = opened.ingest.clone();
    let (shutdown_sender, shutdown) = watch::channel(false);
    let context = WorkerContext {
        engine: Arc::clone(&opened.engine),
        dead_letters: ingest.dead_letters().clone(),
        state: Arc::clone(&opened.state),
        shutdown: shutdown.clone(),
    };
    let (targets, mut workers) = start_targets(&config, &context)?;
    let mut sources = Vec::new();
    let mut routers = Vec::new();
    let mut when_ready = Vec::new();
    for (name, kind, source) in built {
        let listen = config.source(&name).and_then(|s| s.listen());
        let started = source.start(SourceStart { ingest: ingest.clone(), shutdown: shutdown.clone() })?;
        if let (Some(router), Some(listen)) = (started.router, &listen) {
            routers.push((listen.clone(), router));
        }
        workers.extend(started.tasks);
        when_ready.extend(started.when_ready);
        sources.push(SourceHandle { name, kind, listen, status: started.status, catch_up: started.catch_up });
    }
    let state = Arc::new(NodeState {
        config: Arc::clone(&config),
        engine: Arc::clone(&opened.engine),
        ingest: ingest.clone(),
        state: Arc::clone(&opened.state),
        targets,
        sources,
        observers: opened.observers.clone(),
        ready: AtomicBool::new(false),
        metrics,
    });
    let mut servers = super::serve::serve_routers(routers, shutdown.clone()).await?;
    let admin = crate::runtime::admin::router(Arc::clone(&state));
    servers.push(super::serve::serve(&config.admin.listen, admin, shutdown.clone()).await?);
    state.ready.store(true, Ordering::Release);
    for start in when_ready {
        start(shutdown.clone());
    }
    announce(&config);
    let background = tokio::spawn(background_tasks(Arc::clone(&state), shutdown.clone()));
    wait_for_signal().await;
    tracing::info!("shutting down: no new records accepted, draining");
    state.ready.store(false, Ordering::Release);
    ingest.close();
    let _ = shutdown_sender.send(true);
    for server in servers {
        let _ = server.await;
    }
    for worker in workers {
        let _ = worker.await;
    }
    background.abort();
    let _ = background.await;
    // Every handle on the logs goes, so that they can be closed explicitly.
    drop((state, context, ingest));
    opened.close().await?;
    tracing::info!("stopped");
    Ok(())
}

/// The targets' handles and workers.
type Started = (Vec<TargetHandle>, Vec<tokio::task::JoinHandle<()>>);

fn start_targets(config: &Config, context: &WorkerContext) -> Result<Started, StartError> {
    let mut handles = Vec::new();
    let mut tasks = Vec::new();
    for target in &config.targets {
        let start = TargetStart { config, common: target.common().clone(), worker: context.clone() };
        let (handle, task) = target.spec.start(start)?;
        handles.push(handle);
        tasks.push(task);
    }
    Ok((handles, tasks))
}

/// A configured source, built (not started): `(name, kind, source)`.
pub type Built = (String, &'static str, Box<dyn Source>);

/// Every configured source, built (not started).
pub fn build_sources(config: &Arc<Config>) -> Result<Vec<Built>, StartError> {
    let mut built = Vec::new();
    for source in &config.sources {
        built.push((source.name().to_owned(), source.kind(), source.spec.build(source.name(), config)?));
    }
    Ok(built)
}

/// What to try now that the node is ready: each source's hint, and how to watch the log.
fn announce(config: &Config) {
    for source in &config.sources {
        if let Some(hint) = source.spec.ready_hint() {
            eprintln!("{hint}");
        }
    }
    eprintln!("  watch the log with: remix log tail --follow --config <this config>");
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Retention, and the status display (a live line on a terminal, progress lines otherwise).
async fn background_tasks(state: Arc<NodeState>, mut shutdown: watch::Receiver<bool>) {
    let mut retention = tokio::time::interval(Duration::from_secs(RETENTION_INTERVAL_SECONDS));
    let mut status = super::status::StatusDisplay::new();
    let mut tick = tokio::time::interval(Duration::from_millis(status.interval_ms()));
    let mut checkpoints = tokio::time::interval(Duration::from_secs(checkpoint::CHECKPOINT_INTERVAL_SECONDS));
    let mut checkpointed = state.indexes().applied_main_offset();
    loop {
        tokio::select! {
            _ = shutdown.changed() => { status.finish(); return; }
            _ = retention.tick() => apply_retention(&state).await,
            _ = tick.tick() => status.update(&state),
            _ = checkpoints.tick() => checkpointed = checkpoint_if_grown(&state, checkpointed).await,
        }
    }
}

/// Saves a start-up checkpoint when the log grew by `CHECKPOINT_RECORDS_MIN` since `last`; returns
/// the offset the newest checkpoint stands at.
async fn checkpoint_if_grown(state: &NodeState, last: u64) -> u64 {
    if state.indexes().applied_main_offset() < last + checkpoint::CHECKPOINT_RECORDS_MIN {
        return last;
    }
    match checkpoint::save(state.state.as_ref(), state.indexes(), &state.observers).await {
        Ok(mark) => mark.offset,
        Err(e) => {
            tracing::warn!("cannot write the checkpoint (the next start reads more of the log): {e}");
            last
        }
    }
}

async fn apply_retention(state: &Arc<NodeState>) {
    let retention = &state.config.log.retention;
    if retention.min_age.is_none() && retention.max_bytes.is_none() {
        return;
    }
    let policy = RetentionPolicy {
        min_age_ms: retention.min_age.map_or(u64::MAX, |d| d.as_millis() as u64),
        max_bytes: retention.max_bytes,
    };
    // Only the configured targets hold the log: a target without a cursor yet holds everything
    // (it will read from the start), the cursor of a target no longer configured holds nothing.
    let stored = state.state.cursors();
    let cursors = state
        .config
        .targets
        .iter()
        .map(|t| (t.name().to_owned(), stored.get(t.name()).copied().unwrap_or(0)))
        .collect();
    match state.engine.apply_retention(policy, crate::time::now_ms(), cursors).await {
        Ok(report) => {
            for (target, cursor) in report.fallen_behind {
                tracing::error!(target = %target, cursor, first_offset = report.first_offset,
                    "target fell behind retention (log.retention.max_bytes): rewind it to continue");
            }
        }
        Err(e) => tracing::error!("retention: {e}"),
    }
}
