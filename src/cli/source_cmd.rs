//! `remix source catch-up NAME`: a Stripe source reads what it missed from the Events API, through
//! the node's admin API when one runs, on the data directory otherwise (then the log is opened and
//! its lock taken for the command).

use super::client::AdminClient;
use super::{Exit, Out, UsageError};
use crate::config::Config;
use crate::connector::SourceStart;
use crate::runtime::ingest::SourceContext;
use crate::runtime::ingest::{Appender, Indexes};
use serde_json::Value;
use std::sync::Arc;

#[derive(Debug, clap::Subcommand)]
pub enum SourceCommand {
    /// Read the Stripe Events API from a little before the newest event the log holds (everything
    /// Stripe keeps when it holds none) and log what is missing; events already logged are skipped.
    CatchUp { name: String },
}

pub async fn run(command: &SourceCommand, config: Arc<Config>, out: &mut Out) -> anyhow::Result<Exit> {
    let SourceCommand::CatchUp { name } = command;
    if config.source(name).is_none() {
        return Err(UsageError(format!("no source '{name}' in the configuration")).into());
    }
    let report = match AdminClient::connect(&config).await {
        Some(client) => client.post(&format!("/sources/{name}/catch-up"), None).await?,
        None => direct(name, config).await?,
    };
    if out.json {
        out.json_value(&report)?;
    } else {
        let count = |k: &str| report.get(k).and_then(Value::as_u64).unwrap_or(0);
        out.line(format_args!(
            "{name}: {} events read in {} pages: {} logged, {} already logged, {} stale, {} ignored, {} dead-lettered, {} malformed",
            count("events"),
            count("pages"),
            count("logged"),
            count("duplicates"),
            count("stale"),
            count("ignored"),
            count("dead_lettered"),
            count("malformed"),
        ))?;
    }
    Ok(Exit::Ok)
}

async fn direct(name: &str, config: Arc<Config>) -> anyhow::Result<Value> {
    let (log, dlq_log) = {
        let config = Arc::clone(&config);
        let (main, dlq) =
            tokio::task::spawn_blocking(move || crate::runtime::node::open_logs(&config)).await??;
        (Arc::new(main), Arc::new(dlq))
    };
    let source = config.source(name).expect("checked");
    let built = source.spec.build(name, &config)?;
    let indexes = {
        let (log, dlq_log) = (Arc::clone(&log), Arc::clone(&dlq_log));
        let observe = built.observe();
        let visited: Vec<String> = observe.iter().map(|_| name.to_owned()).collect();
        let mut visit = move |change: &crate::record::Change| {
            if let Some(observe) = &observe {
                observe(change)
            }
        };
        Arc::new(
            tokio::task::spawn_blocking(move || {
                Indexes::rebuild_visiting(&log, &dlq_log, &visited, &mut visit)
            })
            .await??,
        )
    };
    let context = SourceContext {
        config: Arc::clone(&config),
        appender: Appender::new(Arc::clone(&log)),
        dlq: Appender::new(Arc::clone(&dlq_log)),
        indexes,
        logged: Arc::new(crate::runtime::ingest::Logged::new(&config)),
    };
    // Started without serving: only its catch-up runs, and the shutdown signal stops the rest.
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let started = built.start(SourceStart { context, shutdown })?;
    let Some(catch_up) = started.catch_up.clone() else {
        let _ = stop.send(true);
        return Err(UsageError(format!(
            "source '{name}' is a {} source, which has no catch-up (stripe sources do)",
            source.kind()
        ))
        .into());
    };
    let report = catch_up().await;
    let _ = stop.send(true);
    drop(catch_up);
    drop(started);
    for log in [log, dlq_log] {
        if let Ok(log) = Arc::try_unwrap(log) {
            tokio::task::spawn_blocking(move || log.close()).await??;
        }
    }
    report.map_err(|e| anyhow::anyhow!(e))
}
