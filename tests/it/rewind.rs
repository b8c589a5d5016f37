//! `remix target rewind | pause | resume | list` against a running node (and a rewind recorded while
//! no node runs): a rewind re-delivers and the dataset ends identical; a paused target lags and
//! catches up when resumed.

use crate::support::*;
use serde_json::{json, Value};

/// The datasets of both models (each model's files concatenated in name order).
fn datasets(node: &Node) -> (Vec<String>, Vec<String>) {
    (dataset_lines(&node.dataset_dir, "customer"), dataset_lines(&node.dataset_dir, "order"))
}

fn assert_no_duplicate_lines(lines: &[String]) {
    let mut sorted = lines.to_vec();
    sorted.sort();
    let before = sorted.len();
    sorted.dedup();
    assert_eq!(sorted.len(), before, "duplicate lines in the dataset");
}

/// Posts `count` customers and `count` orders from id `first`, in requests of 7, and every 10th
/// customer deleted again; returns how many records were logged.
fn post_records(node: &Node, first: u64, count: u64) -> u64 {
    let mut logged = 0;
    let ids: Vec<u64> = (first..first + count).collect();
    for chunk in ids.chunks(7) {
        let customers: Vec<Value> = chunk
            .iter()
            .map(|id| json!({"id": id, "contact": {"email": format!("{id}@example.com")}, "name": format!("C{id}")}))
            .collect();
        let orders: Vec<Value> = chunk
            .iter()
            .map(|id| json!({"id": id, "customer": {"id": id}, "amount_cents": (id * 7).to_string(), "status": "paid"}))
            .collect();
        for (route, body) in [("/customers", customers), ("/orders", orders)] {
            let response = node.post(route, &[], &Value::Array(body)).unwrap();
            assert_eq!(response.status, 200, "{}", response.text());
            logged += response.json()["accepted"].as_u64().unwrap();
        }
        let deletes: Vec<Value> =
            chunk.iter().filter(|id| *id % 10 == 0).map(|id| json!({"id": id})).collect();
        if !deletes.is_empty() {
            let response =
                node.post("/customers", &[("X-Remix-Op", "delete")], &Value::Array(deletes)).unwrap();
            assert_eq!(response.status, 200, "{}", response.text());
            logged += response.json()["accepted"].as_u64().unwrap();
        }
    }
    logged
}

fn rewind(node: &Node, how: &[&str]) -> Value {
    let mut args = vec!["target", "rewind", "dataset"];
    args.extend_from_slice(how);
    node.cli_json(&args)
}

#[test]
fn rewind_redelivers_identically_and_pause_resume_lag_and_catch_up() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = Node::new(tmp.path(), &example_config("webhook-to-jsonl.yaml"), &[]);
    node.start();
    let mut logged = post_records(&node, 1, 300);
    node.wait_caught_up("dataset");
    let before = datasets(&node);
    assert!(before.1.len() == 300 && before.0.len() == 330, "{} {}", before.0.len(), before.1.len());
    assert!(before.0.iter().any(|l| l.starts_with(r#"{"_op":"delete""#)), "tombstones are lines");
    assert_no_duplicate_lines(&before.0);
    assert_no_duplicate_lines(&before.1);

    // To the start: everything again, the same lines.
    let answer = rewind(&node, &["--to-start"]);
    assert_eq!(answer["cursor"], 0, "{answer}");
    let t = node.wait_caught_up("dataset");
    assert_eq!(t["cursor"], logged);
    assert_eq!(datasets(&node), before, "the dataset after a rewind to the start is identical");

    // To an offset in the middle of a file: back to that file's start, then identical again.
    let answer = rewind(&node, &["--to-offset", &(logged / 2 + 3).to_string()]);
    assert!(answer["cursor"].as_u64().unwrap() <= logged / 2 + 3, "{answer}");
    node.wait_caught_up("dataset");
    assert_eq!(datasets(&node), before, "the dataset after a rewind to an offset is identical");
    // To a time before everything.
    rewind(&node, &["--to-time", "2000-01-01T00:00:00Z"]);
    node.wait_caught_up("dataset");
    assert_eq!(datasets(&node), before, "the dataset after a rewind to a time is identical");

    // Paused: the cursor stays, the lag grows with every record logged, nothing is written.
    let paused = node.cli_json(&["target", "pause", "dataset"]);
    assert_eq!(paused["state"], "paused", "{paused}");
    let t = node.target("dataset");
    for key in ["name", "kind", "state", "cursor", "lag_records", "lag_seconds", "last_error"] {
        assert!(t.get(key).is_some(), "{key} in {t}");
    }
    assert_eq!(t["kind"], "jsonl");
    assert_eq!(t["state"], "paused");
    assert_eq!(t["cursor"], logged);
    assert_eq!(t["lag_records"], 0);
    let cursor = logged;
    for round in 0..3 {
        logged += post_records(&node, 1000 + round * 100, 20);
        let t = node.target("dataset");
        assert_eq!(t["state"], "paused", "{t}");
        assert_eq!(t["cursor"], cursor, "{t}");
        assert_eq!(t["lag_records"], logged - cursor, "the lag grows while paused: {t}");
        assert!(t["lag_seconds"].as_f64().unwrap() > 0.0, "records are waiting, so the lag has an age: {t}");
        assert_eq!(node.log_stat()["targets"][0]["lag_records"], logged - cursor);
    }
    assert_eq!(datasets(&node), before, "a paused target writes nothing");
    let state = std::fs::read_to_string(node.data_dir.join("targets/dataset.json")).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&state).unwrap()["paused"], true, "persisted: {state}");
    // A pause survives a restart.
    node.stop();
    node.start();
    assert_eq!(node.target("dataset")["state"], "paused");

    let resumed = node.cli_json(&["target", "resume", "dataset"]);
    assert_eq!(resumed["state"], "running", "{resumed}");
    let t = node.wait_caught_up("dataset");
    assert_eq!(t["cursor"], logged);
    assert_eq!(t["lag_seconds"], 0.0);
    let after = datasets(&node);
    assert!(after.0.starts_with(&before.0) && after.1.starts_with(&before.1), "resumed after the old lines");
    assert_eq!(after.1.len(), before.1.len() + 60);
    assert_no_duplicate_lines(&after.0);
    assert_no_duplicate_lines(&after.1);

    // A rewind recorded while no node runs happens when it starts.
    node.stop();
    let answer = rewind(&node, &["--to-start"]);
    assert_eq!(answer["cursor"], 0, "{answer}");
    assert_eq!(node.target("dataset")["state"], "stopped");
    node.start();
    node.wait_caught_up("dataset");
    assert_eq!(datasets(&node), after, "identical after a rewind done without a node");
    assert_eq!(node.log_stat()["records"], logged, "nothing was lost or added");
    node.verify_log();
}

#[test]
fn a_pause_without_a_node_is_refused_while_the_directory_is_locked_and_holds_at_the_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = Node::new(tmp.path(), &example_config("webhook-to-jsonl.yaml"), &[]);
    // Another process holds the directory (a node starting up): the change is refused, not lost.
    let lock = remix_storage::DataDirLock::take(&remix_storage::OsFs, &node.data_dir).unwrap();
    let refused = node.cli(&["target", "pause", "dataset"]);
    assert!(!refused.status.success(), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is locked"), "{refused:?}");
    drop(lock);
    let paused = node.cli_json(&["target", "pause", "dataset"]);
    assert_eq!(paused["state"], "paused", "{paused}");
    // The human listing's numbers end under their headers.
    let list = stdout(&node.cli(&["target", "list"]));
    let lines: Vec<&str> = list.lines().collect();
    let cursor_end = lines[0].find("CURSOR").expect("a header") + "CURSOR".len();
    assert!(lines[1][..cursor_end].ends_with(" 0"), "{list}");
    node.start();
    assert_eq!(node.target("dataset")["state"], "paused");
    node.stop();
}
