//! `remix dlq list | show | retry | drop`: through the node's admin API when one runs, on the data
//! directory otherwise (then the log is opened and its lock taken for the command).

use super::client::AdminClient;
use super::{Exit, Out};
use crate::config::Config;
use crate::runtime::ingest::dlq;
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Open dead letters: id, time, source, position, model, errors, input.
    List,
    /// One dead letter.
    Show { id: u64 },
    /// Run remix in and validation again (e.g. after fixing a schema or mapping) and log what passes.
    Retry {
        #[arg(required_unless_present = "all")]
        id: Option<u64>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Remove a dead letter from the queue (recorded in the log).
    Drop { id: u64 },
}

pub async fn run(command: &DlqCommand, config: Arc<Config>, out: &mut Out) -> anyhow::Result<Exit> {
    let value = match AdminClient::connect(&config).await {
        Some(client) => through_node(command, &client).await?,
        None => direct(command, config).await?,
    };
    if out.json {
        out.json_value(&value)?;
    } else if let (DlqCommand::List, Some(entries)) = (command, value.as_array()) {
        for e in entries {
            let errors: Vec<String> = e["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| {
                    format!("{}: {}", x["path"].as_str().unwrap_or(""), x["message"].as_str().unwrap_or(""))
                })
                .collect();
            out.line(format_args!(
                "{:>10}  {}  {} {}  {}  {}",
                e["id"].as_u64().unwrap_or(0),
                e["time"].as_str().unwrap_or(""),
                e["source"].as_str().unwrap_or(""),
                e["position"].as_str().unwrap_or(""),
                e["model"].as_str().unwrap_or(""),
                errors.join("; ")
            ))?;
        }
        if entries.is_empty() {
            out.line(format_args!("the DLQ is empty"))?;
        }
    } else {
        out.line(format_args!("{}", serde_json::to_string_pretty(&value)?))?;
    }
    Ok(Exit::Ok)
}

async fn through_node(command: &DlqCommand, client: &AdminClient) -> anyhow::Result<Value> {
    match command {
        DlqCommand::List => client.get("/dlq").await,
        DlqCommand::Show { id } => client.get(&format!("/dlq/{id}")).await,
        DlqCommand::Retry { id: Some(id), .. } => client.post(&format!("/dlq/{id}/retry"), None).await,
        DlqCommand::Retry { id: None, .. } => client.post("/dlq/retry", None).await,
        DlqCommand::Drop { id } => client.delete(&format!("/dlq/{id}")).await,
    }
}

async fn direct(command: &DlqCommand, config: Arc<Config>) -> anyhow::Result<Value> {
    let opened = crate::runtime::open::open(&config, Vec::new()).await?;
    let value = direct_with(command, &opened.ingest).await;
    opened.close().await?;
    value
}

async fn direct_with(command: &DlqCommand, ingest: &crate::runtime::ingest::Ingest) -> anyhow::Result<Value> {
    let indexes = ingest.indexes();
    let not_found = |id: u64| anyhow::anyhow!("no open dead letter with id {id}");
    Ok(match command {
        DlqCommand::List => Value::Array(indexes.dead_letters().iter().map(dlq::entry_json).collect()),
        DlqCommand::Show { id } => dlq::entry_json(&indexes.dead_letter(*id).ok_or_else(|| not_found(*id))?),
        DlqCommand::Retry { id: Some(id), .. } => serde_json::to_value(dlq::retry(ingest, *id).await?)?,
        DlqCommand::Retry { id: None, .. } => {
            let ids: Vec<u64> = indexes.dead_letters().iter().map(|e| e.id).collect();
            let mut results = Vec::new();
            for retried in dlq::retry_many(ingest, &ids).await {
                results.push(serde_json::to_value(retried?)?);
            }
            Value::Array(results)
        }
        DlqCommand::Drop { id } => {
            dlq::drop_entry(ingest, *id).await?;
            json!({ "id": id, "result": "dropped" })
        }
    })
}
