//! `remix dataset export`: the CLI folds the log into one model's current state as of an offset
//! ([`Snapshot`]); a dataset writer compiled into this binary (reached through
//! [`crate::registry::DATASET_WRITER`]) writes it where the URL says.

use crate::models::Model;
use crate::util::BoxFuture;
use serde_json::{Map, Value};
use std::sync::Arc;

/// One model's state as of a log offset.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub model: Arc<Model>,
    /// The offset it stands at, and that record's time.
    pub offset: u64,
    pub time_ms: u64,
    /// The objects, ordered by the canonical JSON text of their key (given with each).
    pub rows: Vec<(String, Map<String, Value>)>,
}

/// What `remix dataset export` was asked for besides the state.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// `s3://bucket/prefix`, `gs://...`, `az://...`, `file:///dir`.
    pub to: String,
    pub endpoint: Option<String>,
    /// `parquet` or `jsonl`.
    pub format: String,
    /// (split name, share), shares summing to 1; `[("train", 1.0)]` without `--split`.
    pub splits: Vec<(String, f64)>,
}

/// Why an export failed (nothing at the destination is to be trusted then; run it again).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ExportError(pub String);

/// Writes a snapshot; returns the report `remix dataset export --json` prints (files, rows, hashes).
pub type DatasetWriter = fn(Snapshot, ExportOptions) -> BoxFuture<'static, Result<Value, ExportError>>;
