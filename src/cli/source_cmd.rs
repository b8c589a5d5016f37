//! `remix source catch-up NAME`: a Stripe source reads what it missed from the Events API, through
//! the node's admin API when one runs, on the data directory otherwise (then the log is opened and
//! its lock taken for the command).

use super::client::AdminClient;
use super::{Exit, Out, UsageError};
use crate::config::Config;
use crate::connector::SourceStart;
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
    let source = config.source(name).expect("checked");
    let built = source.spec.build(name, &config)?;
    let observers = built.observe().map(|observe| (name.to_owned(), observe)).into_iter().collect();
    let opened = crate::runtime::open::open(&config, observers).await?;
    // Started without serving: only its catch-up runs, and the shutdown signal stops the rest.
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let started = built.start(SourceStart { ingest: opened.ingest.clone(), shutdown })?;
    let report = match started.catch_up.clone() {
        Some(catch_up) => catch_up().await.map_err(|e| anyhow::anyhow!(e)),
        None => Err(UsageError(format!(
            "source '{name}' is a {} source, which has no catch-up (stripe sources do)",
            source.kind()
        ))
        .into()),
    };
    let _ = stop.send(true);
    drop(started);
    opened.close().await?;
    report
}
