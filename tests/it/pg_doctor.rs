//! `remix doctor` against a real PostgreSQL: a healthy setup passes; each problem is named with a fix.

use crate::pg_source::{pg_node, shop_server};
use serde_json::Value;

#[test]
fn doctor_passes_a_healthy_source_and_names_each_problem_with_a_fix() {
    let server = shop_server();
    let dir = tempfile::tempdir().unwrap();
    let node = pg_node(dir.path(), &server);
    let out = node.cli(&["doctor"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));

    server.psql(
        "shop",
        "ALTER TABLE orders DROP CONSTRAINT orders_pkey; ALTER TABLE customers REPLICA IDENTITY NOTHING;",
    );
    let out = node.cli(&["doctor", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let checks: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<&Value> = checks.iter().filter(|c| c["status"] == "fail").collect();
    assert_eq!(failed.len(), 2, "{checks:#?}");
    assert!(failed.iter().any(|c| c["check"] == "table public.orders"
        && c["fix"].as_str().unwrap().contains("REPLICA IDENTITY FULL")));
    assert!(failed.iter().any(|c| c["check"] == "table public.customers"
        && c["fix"].as_str().unwrap().contains("REPLICA IDENTITY DEFAULT")));
    let human = node.cli(&["doctor"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("fix: ALTER TABLE"), "{human:?}");
}
