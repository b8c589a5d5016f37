//! `remix dataset export MODEL --to URL [--at-offset N | --at-time T] [--format parquet|jsonl]
//! [--split train=0.9,validation=0.1]`: the current state of a model as of an offset, folded here
//! from the log (read-only, beside a running node), written by the dataset writer compiled in.

use super::{Exit, Out, UsageError};
use crate::connector::dataset::{ExportOptions, Snapshot};
use crate::record::{self, Decoded, Op};
use clap::Subcommand;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Writes the current state of MODEL as a dataset (data files per split, manifest, card).
    Export {
        model: String,
        /// s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or file:///dir.
        #[arg(long)]
        to: String,
        /// The last offset to include (default: the log's durable end).
        #[arg(long, conflicts_with = "at_time")]
        at_offset: Option<u64>,
        /// Include the records logged at or before this time (RFC 3339).
        #[arg(long)]
        at_time: Option<String>,
        #[arg(long, default_value = "parquet")]
        format: String,
        /// Splits by a hash of the key: `train=0.9,validation=0.1` (default: all in train).
        #[arg(long)]
        split: Option<String>,
        /// An S3-compatible endpoint (credentials from the environment).
        #[arg(long)]
        endpoint: Option<String>,
    },
}

/// `train=0.9,validation=0.1`.
fn parse_splits(text: Option<&str>) -> Result<Vec<(String, f64)>, UsageError> {
    let Some(text) = text else { return Ok(vec![("train".into(), 1.0)]) };
    let mut splits = Vec::new();
    for part in text.split(',') {
        let parsed = part.split_once('=').and_then(|(name, share)| {
            let share: f64 = share.trim().parse().ok()?;
            let name = name.trim();
            let ok =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            (ok && share > 0.0 && share.is_finite()).then(|| (name.to_owned(), share))
        });
        match parsed {
            Some(split) if !splits.iter().any(|(n, _)| *n == split.0) => splits.push(split),
            _ => {
                return Err(UsageError(format!(
                    "--split: '{part}' is not name=share (e.g. train=0.9,validation=0.1)"
                )))
            }
        }
    }
    let total: f64 = splits.iter().map(|(_, s)| s).sum();
    if (total - 1.0).abs() > 1e-9 {
        return Err(UsageError(format!("--split: the shares add up to {total}, not 1")));
    }
    Ok(splits)
}

pub fn run(command: &DatasetCommand, config: &crate::config::Config, out: &mut Out) -> anyhow::Result<Exit> {
    let DatasetCommand::Export { model, to, at_offset, at_time, format, split, endpoint } = command;
    let Some(writer) = crate::registry::DATASET_WRITER else {
        return Err(UsageError(
            "this binary was built without a dataset writer (feature object_store)".into(),
        )
        .into());
    };
    let Some(schema) = config.model(model) else {
        return Err(UsageError(format!("unknown model '{model}'")).into());
    };
    if format != "parquet" && format != "jsonl" {
        return Err(UsageError(format!("--format: '{format}' (expected parquet or jsonl)")).into());
    }
    let splits = parse_splits(split.as_deref())?;
    let until_ms = match at_time {
        Some(t) => {
            Some(crate::time::parse_rfc3339(t).map_err(|e| UsageError(format!("--at-time: {e}")))?.max(0)
                as u64)
        }
        None => None,
    };
    let view = super::log_cmd::open_view(&config.data_dir)?;
    if view.first_offset() > 1 {
        anyhow::bail!(
            "the log starts at offset {} (retention removed what came before): the state cannot be rebuilt",
            view.first_offset()
        );
    }
    let end = at_offset.unwrap_or(u64::MAX).min(view.durable_offset());
    let mut state: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let (mut offset, mut time_ms) = (0, 0);
    for record in view.reader(view.first_offset())? {
        let record = record?;
        if record.offset > end || until_ms.is_some_and(|t| record.timestamp_ms > t) {
            break;
        }
        (offset, time_ms) = (record.offset, record.timestamp_ms);
        let Decoded::Change(change) = record::decode(record.kind, &record.payload) else { continue };
        if change.model != *model {
            continue;
        }
        let key = change.key.to_string();
        match change.op {
            Op::Upsert => {
                let mut object = change.data.unwrap_or_default();
                if let Some(previous) = state.get(&key) {
                    for field in &change.unchanged {
                        if let Some(value) = previous.get(field) {
                            object.insert(field.clone(), value.clone());
                        }
                    }
                }
                state.insert(key, object);
            }
            Op::Delete => {
                state.remove(&key);
            }
            Op::Truncate => state.clear(),
        }
    }
    let snapshot = Snapshot { model: schema.clone(), offset, time_ms, rows: state.into_iter().collect() };
    let options =
        ExportOptions { to: to.clone(), endpoint: endpoint.clone(), format: format.clone(), splits };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let manifest = runtime.block_on(writer(snapshot, options))?;
    if out.json {
        out.json_value(&manifest)?;
    } else {
        out.line(format_args!(
            "exported {} rows of {model} as of offset {} to {to}",
            manifest["rows"], manifest["offset"]
        ))?;
        for file in manifest["files"].as_array().into_iter().flatten() {
            out.line(format_args!("  {}  {} rows  sha256 {}", file["path"], file["rows"], file["sha256"]))?;
        }
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_parse_and_must_add_up() {
        assert_eq!(parse_splits(None).unwrap(), [("train".to_owned(), 1.0)]);
        assert_eq!(
            parse_splits(Some("train=0.9,validation=0.1")).unwrap(),
            [("train".to_owned(), 0.9), ("validation".to_owned(), 0.1)]
        );
        for bad in ["train=0.9", "train", "train=x", "a=0.5,a=0.5", "=1", "a b=1"] {
            assert!(parse_splits(Some(bad)).is_err(), "{bad}");
        }
    }
}
