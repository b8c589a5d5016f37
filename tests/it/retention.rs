//! Retention and the set of configured targets: a removed target's cursor stops holding the log, a
//! configured target that has no cursor yet holds it, and a target added after retention moved the
//! log's start begins there instead of failing.

use crate::support::{example_config, wait_for, Node};
use serde_json::{json, Value};

/// The webhook example with 64 KiB segments, retention as soon as applied, and `targets` (a list of
/// target names, each a jsonl target in its own directory).
fn config(targets: &[&str]) -> String {
    let base = example_config("webhook-to-jsonl.yaml");
    let (head, _) = base.split_once("targets:").expect("the example has targets");
    let head =
        head.replacen("models:", "log: { segment_bytes: 64KiB, retention: { min_age: 0s } }\nmodels:", 1);
    let mut text = format!("{head}targets:\n");
    for name in targets {
        text.push_str(&format!(
            "  - {{ name: {name}, kind: jsonl, dir: \"${{REMIX_DATASET_DIR}}/{name}\", models: {{ customer: {{}} }} }}\n"
        ));
    }
    text
}

fn post_customers(node: &Node, ids: std::ops::Range<u64>) {
    for chunk in ids.collect::<Vec<_>>().chunks(200) {
        let objects: Vec<Value> = chunk
            .iter()
            .map(|id| json!({"id": id, "contact": {"email": format!("c{id}@example.com")}, "name": "x".repeat(200)}))
            .collect();
        let response = node.post("/customers", &[], &Value::Array(objects)).expect("POST");
        assert_eq!(response.status, 200, "{}", response.text());
    }
}

fn restart_with(node: &mut Node, targets: &[&str]) {
    node.stop();
    std::fs::write(&node.config, config(targets)).unwrap();
    node.start();
}

#[test]
fn removed_targets_do_not_hold_the_log_and_new_ones_start_at_its_start() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = Node::new(tmp.path(), &config(&["first"]), &[]);
    node.start();
    post_customers(&node, 1..1001);
    node.wait_caught_up("first");

    // `first` is removed: its cursor (1000) stays on disk. `second` is new and holds everything
    // until it has applied it.
    restart_with(&mut node, &["second"]);
    post_customers(&node, 1001..2001);
    node.wait_caught_up("second");
    assert_eq!(node.log_stat()["first_offset"], 1, "a new target holds the log until it has a cursor");

    // Retention runs at start: `first`'s cursor does not hold it back any more.
    restart_with(&mut node, &["second"]);
    let first_offset = wait_for("retention past the removed target's cursor", || {
        let first = node.log_stat()["first_offset"].as_u64().unwrap();
        (first > 1001).then_some(first)
    });
    assert!(node.output().contains("the cursor of a target that is not configured"), "{}", node.output());
    let targets = node.log_stat()["targets"].clone();
    assert_eq!(
        targets,
        json!([{"name": "first", "cursor": 1000, "lag_records": 1000, "configured": false},
               {"name": "second", "cursor": 2000, "lag_records": 0, "configured": true}]),
    );

    // `third` arrives after retention: it starts at the log's start instead of failing.
    restart_with(&mut node, &["second", "third"]);
    let third = node.wait_caught_up("third");
    assert_eq!(third["cursor"], 2000, "{third}");
    let lines = crate::support::dataset_lines(&node.dataset_dir.join("third"), "customer");
    assert_eq!(lines.len() as u64, 2001 - first_offset, "third has every record from the log's start");
    assert!(node.output().contains("a new target starts at the log's first offset"));
    node.stop();
    node.verify_log();
}
