//! `remix run`: the node. Opens the log, rebuilds the in-memory indexes, starts one worker per target,
//! serves the sources and the admin API, applies retention, and shuts down gracefully: stop accepting,
//! let in-flight appends finish (their senders get their answer), stop the workers after their current
//! batch (cursors saved), close the log.

use crate::config::Config;
use crate::connector::{CatchUp, Observer, Source, SourceStart, SourceStatus, TargetStart};
use crate::runtime::delivery::worker::{TargetHandle, WorkerContext};
use crate::runtime::ingest::SourceContext;
use crate::runtime::ingest::{Appender, Indexes};
use anyhow::Context;
use remix_storage::{Log, LogOptions, OsFs, RetentionPolicy};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often retention runs.
const RETENTION_INTERVAL_SECONDS: u64 = 60;

/// Everything the admin API and the CLI (through it) can reach in a running node.
#[derive(Debug)]
pub struct NodeState {
    pub config: Arc<Config>,
    pub log: Arc<Log>,
    pub appender: Appender,
    /// The dead-letter log (`<data_dir>/dlq/`).
    pub dlq_log: Arc<Log>,
    pub logs: crate::runtime::ingest::dlq::Logs,
    pub indexes: Arc<Indexes>,
    pub targets: Vec<TargetHandle>,
    pub sources: Vec<SourceHandle>,
    /// Change records logged per source since the start.
    pub logged: Arc<crate::runtime::ingest::Logged>,
    pub ready: AtomicBool,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl NodeState {
    pub fn target(&self, name: &str) -> Option<&TargetHandle> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// What keeps the node from being ready (`/readyz`); empty when it is: the log accepts appends,
    /// the servers listen (webhook and Stripe sources are connected from then on), and every
    /// PostgreSQL source is connected.
    pub fn not_ready(&self) -> Vec<String> {
        if let Some(reason) = self.log.stopped() {
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

/// Segment size of the dead-letter log.
const DLQ_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// The dead-letter log's directory: a second log beside the main one, so dead letters never count
/// as (or interleave with) the records targets consume.
pub fn dlq_dir(config: &Config) -> std::path::PathBuf {
    config.data_dir.join("dlq")
}

/// Opens the main log and the dead-letter log of this configuration (blocking).
pub fn open_logs(config: &Config) -> anyhow::Result<(Log, Log)> {
    let open = |dir: &std::path::Path, segment_bytes: u64| -> anyhow::Result<Log> {
        let observer: remix_storage::GroupObserver = Arc::new(|group: &remix_storage::GroupStats| {
            metrics::histogram!("remix_log_fsync_seconds").record(group.sync_micros as f64 / 1e6);
            metrics::histogram!("remix_log_write_seconds").record(group.write_micros as f64 / 1e6);
            metrics::histogram!("remix_log_group_records").record(group.records as f64);
            metrics::histogram!("remix_log_group_bytes").record(group.bytes as f64);
        });
        let options = LogOptions { segment_bytes, observer: Some(observer), ..LogOptions::default() };
        let log = Log::open(Arc::new(OsFs), dir, options)
            .with_context(|| format!("cannot open the log in {}", dir.display()))?;
        for note in log.recovery_notes() {
            tracing::warn!("recovery: {note}");
        }
        Ok(log)
    };
    let main = open(&config.data_dir, config.log.segment_bytes)?;
    let dlq = open(&dlq_dir(config), DLQ_SEGMENT_BYTES)?;
    Ok((main, dlq))
}

/// A cursor of a target that is no longer configured stays on disk (a target put back resumes where
/// it was), but it no longer holds back retention.
fn warn_of_unconfigured_cursors(config: &Config, log: &Log) {
    for (name, cursor) in log.cursors() {
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
fn install_metrics() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS_SECONDS)?
        .set_buckets_for_metric(Matcher::Suffix("_records".into()), &GROUP_SIZE_BUCKETS_RECORDS)?
        .set_buckets_for_metric(Matcher::Suffix("_bytes".into()), &GROUP_SIZE_BUCKETS_BYTES)?
        .build_recorder();
    let handle = recorder.handle();
    // A second node in the same process (tests) keeps the first recorder.
    let _ = metrics::set_global_recorder(recorder);
    Ok(handle)
}

/// Runs the node until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let metrics = install_metrics()?;
    let (log, dlq_log) = {
        let config = Arc::clone(&config);
        let (main, dlq) = tokio::task::spawn_blocking(move || open_logs(&config)).await??;
        (Arc::new(main), Arc::new(dlq))
    };
    warn_of_unconfigured_cursors(&config, &log);
    let built = build_sources(&config)?;
    let indexes = {
        let (log, dlq_log) = (Arc::clone(&log), Arc::clone(&dlq_log));
        let observers: Vec<(String, Observer)> =
            built.iter().filter_map(|(name, _, source)| Some((name.clone(), source.observe()?))).collect();
        let visited: Vec<String> = observers.iter().map(|(name, _)| name.clone()).collect();
        let mut visit = move |change: &crate::record::Change| {
            for (name, observe) in &observers {
                if change.source == *name {
                    observe(change);
                }
            }
        };
        Arc::new(
            tokio::task::spawn_blocking(move || {
                Indexes::rebuild_visiting(&log, &dlq_log, &visited, &mut visit)
            })
            .await??,
        )
    };
    let appender = Appender::new(Arc::clone(&log));
    let dlq = Appender::new(Arc::clone(&dlq_log));
    let (shutdown_sender, shutdown) = watch::channel(false);
    let context = WorkerContext {
        log: Arc::clone(&log),
        dlq: dlq.clone(),
        indexes: Arc::clone(&indexes),
        data_dir: config.data_dir.clone(),
        shutdown: shutdown.clone(),
    };
    let (targets, mut workers) = start_targets(&config, &context)?;
    let source_context = SourceContext {
        config: Arc::clone(&config),
        appender: appender.clone(),
        dlq: dlq.clone(),
        indexes: Arc::clone(&indexes),
        logged: Arc::new(crate::runtime::ingest::Logged::new(&config)),
    };
    let mut sources = Vec::new();
    let mut routers = Vec::new();
    let mut when_ready = Vec::new();
    for (name, kind, source) in built {
        let listen = config.source(&name).and_then(|s| s.listen());
        let started =
            source.start(SourceStart { context: source_context.clone(), shutdown: shutdown.clone() })?;
        if let (Some(router), Some(listen)) = (started.router, &listen) {
            routers.push((listen.clone(), router));
        }
        workers.extend(started.tasks);
        when_ready.extend(started.when_ready);
        sources.push(SourceHandle { name, kind, listen, status: started.status, catch_up: started.catch_up });
    }
    let state = Arc::new(NodeState {
        config: Arc::clone(&config),
        log: Arc::clone(&log),
        appender: appender.clone(),
        dlq_log: Arc::clone(&dlq_log),
        logs: crate::runtime::ingest::dlq::Logs { main: appender.clone(), dlq: dlq.clone() },
        indexes: Arc::clone(&indexes),
        targets,
        sources,
        logged: Arc::clone(&source_context.logged),
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
    appender.close();
    dlq.close();
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
    drop((state, context, source_context, appender, dlq));
    for log in [log, dlq_log] {
        close_log(log).await?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// How long shutdown waits for tasks that stop on the shutdown signal (a Stripe catch-up, a target's
/// read in progress) to let go of a log.
const LOG_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Closes a log once nothing else holds it (everything acknowledged is durable either way).
async fn close_log(mut log: Arc<Log>) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + LOG_RELEASE_WAIT;
    loop {
        match Arc::try_unwrap(log) {
            Ok(log) => return Ok(tokio::task::spawn_blocking(move || log.close()).await??),
            Err(shared) if std::time::Instant::now() < deadline => {
                log = shared;
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(_) => {
                tracing::warn!("a log is still in use at shutdown; it closes when the process exits");
                return Ok(());
            }
        }
    }
}

fn start_targets(
    config: &Config,
    context: &WorkerContext,
) -> anyhow::Result<(Vec<TargetHandle>, Vec<tokio::task::JoinHandle<()>>)> {
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
pub fn build_sources(config: &Arc<Config>) -> anyhow::Result<Vec<Built>> {
    let mut built = Vec::new();
    for source in &config.sources {
        built.push((source.name().to_owned(), source.kind(), source.spec.build(source.name(), config)?));
    }
    Ok(built)
}

fn announce(config: &Config) {
    for source in &config.sources {
        if let Some(s) = source.downcast::<crate::webhook::config::WebhookSource>() {
            if let Some((route, binding)) = s.routes.iter().next() {
                eprintln!(
                    "ready: POST records to http://{}{route} (model {}), for example:",
                    s.listen, binding.model
                );
                eprintln!(
                    "  curl -sS -H 'Content-Type: application/json' -d '{{\"id\": 1, \"email\": \"ada@example.com\", \"name\": \"Ada\"}}' http://{}{route}",
                    s.listen
                );
            }
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
    let mut status = crate::cli::status::StatusDisplay::new();
    let mut tick = tokio::time::interval(Duration::from_millis(status.interval_ms()));
    loop {
        tokio::select! {
            _ = shutdown.changed() => { status.finish(); return; }
            _ = retention.tick() => apply_retention(&state).await,
            _ = tick.tick() => status.update(&state),
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
    let log = Arc::clone(&state.log);
    let targets: Vec<String> = state.config.targets.iter().map(|t| t.common().name.clone()).collect();
    let retained = move || log.apply_retention_for(&policy, crate::time::now_ms(), &targets);
    match tokio::task::spawn_blocking(retained).await {
        Ok(Ok(report)) => {
            for (target, cursor) in report.fallen_behind {
                tracing::error!(target = %target, cursor, first_offset = report.first_offset,
                    "target fell behind retention (log.retention.max_bytes): rewind it to continue");
            }
        }
        Ok(Err(e)) => tracing::error!("retention: {e}"),
        Err(e) => tracing::error!("retention: {e}"),
    }
}
