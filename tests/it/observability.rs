//! The admin API's observability (SPEC §8) on a running node: `/metrics` exports latencies and group
//! sizes as histograms and every target's state from the start; `/readyz` answers 200 only once every
//! PostgreSQL source is connected, and says which one is not.

use crate::pg_source::{shop_server, PG_CONFIG};
use crate::support::*;
use serde_json::json;

/// `GET /metrics`, which must answer 200.
fn scrape(node: &Node) -> String {
    let response = http("GET", &node.admin, "/metrics", &[], b"").expect("GET /metrics");
    assert_eq!(response.status, 200, "{}", response.text());
    response.text()
}

fn webhook_node(root: &std::path::Path) -> Node {
    let mut node = Node::new(root, &example_config("webhook-to-jsonl.yaml"), &[]);
    node.start();
    node
}

#[test]
fn metrics_export_latencies_and_group_sizes_as_histograms() {
    let dir = tempfile::tempdir().unwrap();
    let node = webhook_node(dir.path());
    let customer = json!({"id": 1, "contact": {"email": "ada@example.com"}, "name": "Ada"});
    let response = node.post("/customers", &[], &customer).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    // The log's observer records a group after its fsync: it may come just after the answer.
    let text = wait_for("the fsync in /metrics", || {
        let text = scrape(&node);
        text.contains("remix_log_fsync_seconds_count ").then_some(text)
    });
    let histograms = [
        "remix_log_fsync_seconds",
        "remix_log_write_seconds",
        "remix_append_seconds",
        "remix_log_group_records",
        "remix_log_group_bytes",
        "remix_append_batch_records",
    ];
    for name in histograms {
        let type_line = format!("# TYPE {name} histogram");
        assert!(text.lines().any(|l| l == type_line), "no `{type_line}` in:\n{text}");
        for bucket in ["le=\"", "le=\"+Inf\"} "] {
            let line = format!("{name}_bucket{{{bucket}");
            assert!(text.lines().any(|l| l.starts_with(&line)), "no `{line}...` in:\n{text}");
        }
        assert!(!text.contains(&format!("{name}{{quantile=")), "{name} is still a summary:\n{text}");
    }
    // The latency buckets start at 50 µs and end at 10 s; the group sizes count from 1 record.
    for line in [
        "remix_log_fsync_seconds_bucket{le=\"0.00005\"} ",
        "remix_log_fsync_seconds_bucket{le=\"10\"} ",
        "remix_log_group_records_bucket{le=\"1\"} ",
    ] {
        assert!(text.lines().any(|l| l.starts_with(line)), "no `{line}...` in:\n{text}");
    }
}

#[test]
fn a_target_has_its_state_in_metrics_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let node = webhook_node(dir.path());
    // Nothing posted: the target never changed state.
    let text = scrape(&node);
    let value = |state: &str| {
        let series = text.lines().find(|l| {
            l.starts_with("remix_target_state{")
                && l.contains("target=\"dataset\"")
                && l.contains(&format!("state=\"{state}\""))
        });
        series.and_then(|l| l.rsplit(' ').next()).unwrap_or_else(|| panic!("no {state} series in:\n{text}"))
    };
    assert_eq!(value("running"), "1");
    for state in ["paused", "retrying", "failed"] {
        assert_eq!(value(state), "0");
    }
}

#[test]
fn readyz_names_an_unconnected_postgres_source_until_it_connects() {
    let mut server = shop_server();
    server.stop();
    let dir = tempfile::tempdir().unwrap();
    let schemas = schemas_dir().display().to_string();
    // Over TCP: the stopped server's port is closed.
    let dsn = server.tcp_dsn("shop");
    let mut node =
        Node::new(dir.path(), PG_CONFIG, &[("REMIX_PG_SOURCE", &dsn), ("REMIX_SCHEMAS", &schemas)]);
    node.start_live();
    let readyz = || http("GET", &node.admin, "/readyz", &[], b"").expect("GET /readyz");
    let answer = wait_for("/readyz to name the failing source", || {
        let answer = readyz();
        answer.text().contains("source shop_db: retrying: ").then_some(answer)
    });
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert!(answer.text().to_lowercase().contains("connection refused"), "{}", answer.text());
    let health = http("GET", &node.admin, "/healthz", &[], b"").expect("GET /healthz");
    assert_eq!(health.status, 200, "{}", health.text());

    server.restart();
    let answer = wait_for("/readyz 200 once the source connects", || {
        let answer = readyz();
        (answer.status == 200).then_some(answer)
    });
    assert_eq!(answer.text(), "ready\n");
    node.stop();
}
