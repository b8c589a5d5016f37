//! `remix source catch-up NAME`: a Stripe source reads what it missed from the Events API, through
//! the node's admin API when one runs, on the data directory otherwise (then the log is opened and
//! its lock taken for the command).

use super::client::AdminClient;
use super::{Exit, Out, UsageError};
use crate::config::{Config, SourceConfig};
use crate::pipeline::{Appender, Indexes};
use crate::sources::stripe::{self, StripeHandle};
use crate::sources::SourceContext;
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
    match config.source(name) {
        Some(SourceConfig::Stripe(_)) => {}
        Some(other) => {
            return Err(UsageError(format!(
                "source '{name}' is a {} source; catch-up is for stripe sources",
                other.kind()
            ))
            .into())
        }
        None => return Err(UsageError(format!("no source '{name}' in the configuration")).into()),
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
        let (main, dlq) = tokio::task::spawn_blocking(move || crate::node::open_logs(&config)).await??;
        (Arc::new(main), Arc::new(dlq))
    };
    let states: Vec<_> = stripe::states(&config).into_iter().filter(|s| s.name() == name).collect();
    let indexes = {
        let (log, dlq_log, states) = (Arc::clone(&log), Arc::clone(&dlq_log), states.clone());
        let visited: Vec<String> = states.iter().map(|s| s.name().to_owned()).collect();
        let mut visit = move |change: &crate::record::Change| stripe::observe(&states, change);
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
        logged: Arc::new(crate::sources::Logged::new(&config)),
    };
    let state = states.into_iter().next().expect("checked: a stripe source");
    let handle = StripeHandle::new(state, context)?;
    let report = handle.catch_up().await;
    drop(handle);
    for log in [log, dlq_log] {
        if let Ok(log) = Arc::try_unwrap(log) {
            tokio::task::spawn_blocking(move || log.close()).await??;
        }
    }
    Ok(serde_json::to_value(report?)?)
}
