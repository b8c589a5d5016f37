//! `remix target list | pause | resume | rewind`: through the node's admin API when one runs, on the
//! data directory otherwise (a pause, resume or rewind then takes effect when the node starts).

use super::client::AdminClient;
use super::{Exit, Out, UsageError};
use crate::config::Config;
use crate::runtime::state::{load_control, store_control, FileStateStore};
use serde_json::{json, Value};

#[derive(Debug, clap::Subcommand)]
pub enum TargetCommand {
    /// Name, kind, state, cursor, lag (records and seconds), last error.
    List,
    /// Stop delivering to a target (the log keeps everything for it).
    Pause { name: String },
    /// Continue delivering to a paused target.
    Resume { name: String },
    /// Re-deliver from an earlier point; the target ends in the same state as the first time.
    Rewind {
        name: String,
        /// Re-deliver every record after this offset.
        #[arg(long, group = "to")]
        to_offset: Option<u64>,
        /// Re-deliver every record logged at or after this time (RFC 3339).
        #[arg(long, group = "to")]
        to_time: Option<String>,
        /// Re-deliver the whole log.
        #[arg(long, group = "to")]
        to_start: bool,
    },
}

pub async fn run(command: &TargetCommand, config: &Config, out: &mut Out) -> anyhow::Result<Exit> {
    if let TargetCommand::Pause { name }
    | TargetCommand::Resume { name }
    | TargetCommand::Rewind { name, .. } = command
    {
        if config.target(name).is_none() {
            let names: Vec<&str> = config.targets.iter().map(|t| t.name()).collect();
            return Err(UsageError(format!(
                "no target '{name}' in the configuration (targets: {})",
                names.join(", ")
            ))
            .into());
        }
    }
    let value = match AdminClient::connect(config).await {
        Some(client) => through_node(command, &client).await?,
        None => direct(command, config).await?,
    };
    print(command, &value, out)?;
    Ok(Exit::Ok)
}

fn rewind_body(to_offset: Option<u64>, to_time: &Option<String>, to_start: bool) -> anyhow::Result<Value> {
    match (to_offset, to_time, to_start) {
        (Some(offset), None, false) => Ok(json!({ "to_offset": offset })),
        (None, Some(time), false) => Ok(json!({ "to_time": time })),
        (None, None, true) => Ok(json!({ "to_start": true })),
        _ => Err(UsageError("give one of --to-offset N, --to-time RFC3339, --to-start".into()).into()),
    }
}

async fn through_node(command: &TargetCommand, client: &AdminClient) -> anyhow::Result<Value> {
    match command {
        TargetCommand::List => client.get("/targets").await,
        TargetCommand::Pause { name } => client.post(&format!("/targets/{name}/pause"), None).await,
        TargetCommand::Resume { name } => client.post(&format!("/targets/{name}/resume"), None).await,
        TargetCommand::Rewind { name, to_offset, to_time, to_start } => {
            let body = rewind_body(*to_offset, to_time, *to_start)?;
            client.post(&format!("/targets/{name}/rewind"), Some(body)).await
        }
    }
}

/// Without a node: read cursors from the data directory, record pauses and rewinds for the next start.
async fn direct(command: &TargetCommand, config: &Config) -> anyhow::Result<Value> {
    let data_dir = &config.data_dir;
    let store = FileStateStore::offline(data_dir);
    match command {
        TargetCommand::List => {
            let (durable, cursors) = match super::log_cmd::open_view(data_dir) {
                Ok(view) => (view.durable_offset(), view.cursors().clone()),
                Err(_) => (0, Default::default()),
            };
            let mut rows = Vec::new();
            for t in &config.targets {
                let state = load_control(&store, t.name()).await.unwrap_or_default();
                let cursor = cursors.get(t.name()).copied().unwrap_or(0);
                rows.push(json!({"name": t.name(), "kind": t.kind(), "state": if state.paused { "paused" } else { "stopped" },
                    "cursor": cursor, "lag_records": durable.saturating_sub(cursor), "lag_seconds": 0.0,
                    "last_error": null, "node": "not running"}));
            }
            Ok(Value::Array(rows))
        }
        TargetCommand::Pause { name } | TargetCommand::Resume { name } => {
            let _lock = lock(data_dir)?;
            let mut state = load_control(&store, name).await?;
            state.paused = matches!(command, TargetCommand::Pause { .. });
            store_control(&store, name, &state).await?;
            Ok(
                json!({"name": name, "state": if state.paused { "paused" } else { "stopped" }, "node": "not running"}),
            )
        }
        TargetCommand::Rewind { name, to_offset, to_time, to_start } => {
            let body = rewind_body(*to_offset, to_time, *to_start)?;
            let _lock = lock(data_dir)?;
            let offset = direct_rewind_offset(config, &body)?;
            let mut state = load_control(&store, name).await?;
            state.rewind_to = Some(offset);
            store_control(&store, name, &state).await?;
            Ok(
                json!({"name": name, "cursor": offset, "node": "not running: the rewind happens when it starts"}),
            )
        }
    }
}

/// The data directory's lock, held while a change for the next start is written: a node cannot
/// start in between and miss it.
fn lock(data_dir: &std::path::Path) -> anyhow::Result<remix_storage::DataDirLock> {
    remix_storage::DataDirLock::take(&remix_storage::OsFs, data_dir).map_err(|e| {
        anyhow::anyhow!("{e}; a node that is starting or whose admin API is unreachable holds it, try again")
    })
}

fn direct_rewind_offset(config: &Config, body: &Value) -> anyhow::Result<u64> {
    let view = super::log_cmd::open_view(&config.data_dir)?;
    if let Some(offset) = body.get("to_offset").and_then(Value::as_u64) {
        return Ok(offset.min(view.durable_offset()));
    }
    if let Some(time) = body.get("to_time").and_then(Value::as_str) {
        let ms = crate::time::parse_rfc3339(time).map_err(|e| UsageError(format!("--to-time: {e}")))?;
        return Ok(view.offset_at_time(ms.max(0) as u64)?.saturating_sub(1));
    }
    Ok(view.first_offset().saturating_sub(1))
}

fn print(command: &TargetCommand, value: &Value, out: &mut Out) -> anyhow::Result<()> {
    if out.json {
        out.json_value(value)?;
        return Ok(());
    }
    match command {
        TargetCommand::List => {
            out.line(format_args!(
                "{:<20} {:<9} {:<9} {:>12} {:>12} {:>9}  LAST ERROR",
                "NAME", "KIND", "STATE", "CURSOR", "LAG", "LAG S"
            ))?;
            for t in value.as_array().into_iter().flatten() {
                out.line(format_args!(
                    "{:<20} {:<9} {:<9} {:>12} {:>12} {:>9.1}  {}",
                    t["name"].as_str().unwrap_or(""),
                    t["kind"].as_str().unwrap_or(""),
                    t["state"].as_str().unwrap_or(""),
                    t["cursor"].as_u64().unwrap_or(0),
                    t["lag_records"].as_u64().unwrap_or(0),
                    t["lag_seconds"].as_f64().unwrap_or(0.0),
                    t["last_error"].as_str().unwrap_or("-")
                ))?;
            }
        }
        _ => out.line(format_args!("{value}"))?,
    }
    Ok(())
}
