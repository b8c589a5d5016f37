//! Helpers shared by the binary's integration tests.

use remix::record::{Change, Op, KIND_CHANGE};
use remix_storage::{AppendRecord, Log, LogOptions, OsFs};
use serde_json::json;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

pub fn remix() -> Command {
    Command::new(env!("CARGO_BIN_EXE_remix"))
}

/// Runs `remix ARGS` and returns its output.
pub fn run(args: &[&str]) -> Output {
    remix().args(args).output().expect("run remix")
}

pub fn change(i: u64) -> AppendRecord {
    let model = if i % 2 == 0 { "customer" } else { "order" };
    let change = Change {
        source: "test".into(),
        position: format!("req-{i}"),
        model: model.into(),
        op: Op::Upsert,
        key: json!({"id": i}),
        data: Some(json!({"id": i, "name": format!("n{i}")}).as_object().unwrap().clone()),
        unchanged: vec![],
        idempotency_key: None,
    };
    AppendRecord { kind: KIND_CHANGE, payload: serde_json::to_vec(&change).unwrap() }
}

pub fn open_log(dir: &Path) -> Log {
    let options = LogOptions { segment_bytes: 64 * 1024, ..LogOptions::default() };
    Log::open(Arc::new(OsFs), dir, options).expect("open log")
}

pub fn append_changes(log: &Log, from: u64, to: u64) {
    for i in from..to {
        log.append_blocking(vec![change(i)]).expect("append");
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}
