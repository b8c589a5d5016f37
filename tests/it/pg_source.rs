//! The PostgreSQL source against a real PostgreSQL that the test starts (remix-pgtest): initial
//! snapshot with concurrent changes, streaming, restarts; the dataset's final state (last record per
//! key) must equal the source tables.

use crate::support::*;
use remix_pgtest::PgServer;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

pub const PG_CONFIG: &str = r#"
data_dir: "${REMIX_DATA_DIR}"
admin: { listen: "${REMIX_ADMIN_ADDR}" }
models:
  customer: { schema: "${REMIX_SCHEMAS}/customer.json", key: [id] }
  order: { schema: "${REMIX_SCHEMAS}/order.json", key: [id] }
sources:
  - name: shop_db
    kind: postgres
    dsn: "${REMIX_PG_SOURCE}"
    slot: remix_shop
    publication: remix_shop
    snapshot: initial
    tables:
      public.customers: { model: customer, fields: { id: id, email: email, name: full_name, created_at: created_at } }
      public.orders: { model: order, fields: { id: id, customer_id: customer_id, amount: amount_cents, status: status } }
targets:
  - { name: dataset, kind: jsonl, dir: "${REMIX_DATASET_DIR}", models: { customer: {}, order: {} } }
"#;

pub const SHOP_SCHEMA: &str = "
CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, full_name text, created_at timestamptz);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, amount_cents integer NOT NULL,
  status text NOT NULL);";

pub fn shop_server() -> PgServer {
    let server = PgServer::start();
    server.create_db("shop");
    server.psql("shop", SHOP_SCHEMA);
    server
}

/// Inserts customers and orders with ids `from..to`.
pub fn insert_rows(server: &PgServer, from: u64, to: u64) {
    server.psql(
        "shop",
        &format!(
            "INSERT INTO customers SELECT i, 'c' || i || '@example.com', 'Customer ' || i, \
               timestamptz '2026-11-24 10:00:00+00' + i * interval '1 second' FROM generate_series({from}, {to} - 1) i;
             INSERT INTO orders SELECT i, i, (i * 7) % 100000, (ARRAY['pending','paid','shipped'])[1 + i % 3] \
               FROM generate_series({from}, {to} - 1) i;"
        ),
    );
}

/// The source tables as the dataset should hold them (model field names; timestamps as epoch ms).
pub fn source_state(server: &PgServer) -> BTreeMap<String, BTreeMap<i64, Value>> {
    let customers = server.psql(
        "shop",
        "SELECT coalesce(json_agg(json_build_object('id', id, 'email', email, 'name', full_name, \
           'created_at', (extract(epoch from created_at) * 1000)::bigint) ORDER BY id), '[]') FROM customers",
    );
    let orders = server.psql(
        "shop",
        "SELECT coalesce(json_agg(json_build_object('id', id, 'customer_id', customer_id, 'amount', amount_cents, \
           'status', status) ORDER BY id), '[]') FROM orders",
    );
    let index = |text: &str| -> BTreeMap<i64, Value> {
        let rows: Vec<Value> = serde_json::from_str(text.trim()).expect("json_agg output");
        rows.into_iter().map(|r| (r["id"].as_i64().unwrap(), r)).collect()
    };
    BTreeMap::from([("customer".to_owned(), index(&customers)), ("order".to_owned(), index(&orders))])
}

/// Folds a model's dataset files (in name order) into its final state: last record per key, deletes
/// and truncates applied, partial records merged.
pub fn dataset_state(dataset_dir: &Path, model: &str) -> BTreeMap<i64, Value> {
    let mut state: BTreeMap<i64, Value> = BTreeMap::new();
    for line in dataset_lines(dataset_dir, model) {
        let mut record: Map<String, Value> = serde_json::from_str(&line).expect("a JSON line");
        match record.get("_op").and_then(Value::as_str) {
            Some("delete") => {
                state.remove(&record["key"]["id"].as_i64().unwrap());
            }
            Some("truncate") => state.clear(),
            _ => {
                if let Some(Value::String(t)) = record.get("created_at") {
                    let ms = remix::time::parse_rfc3339(t).expect("an RFC 3339 timestamp");
                    record.insert("created_at".into(), json!(ms));
                }
                let id = record["id"].as_i64().unwrap();
                let entry = state.entry(id).or_insert_with(|| Value::Object(Map::new()));
                for (k, v) in record {
                    entry[k.as_str()] = v;
                }
            }
        }
    }
    state
}

pub fn pg_node(root: &Path, server: &PgServer) -> Node {
    let schemas = schemas_dir().display().to_string();
    Node::new(root, PG_CONFIG, &[("REMIX_PG_SOURCE", &server.dsn("shop")), ("REMIX_SCHEMAS", &schemas)])
}

/// Waits until the dataset equals the source tables.
pub fn wait_converged(node: &Node, server: &PgServer) {
    let mut last = String::new();
    let converged = (0..600).any(|_| {
        let expected = source_state(server);
        let same = expected.iter().all(|(model, rows)| {
            let got = dataset_state(&node.dataset_dir, model);
            if &got != rows {
                last = format!("{model}: dataset has {} rows, source {}", got.len(), rows.len());
                let diff = rows.iter().find(|(k, v)| got.get(k) != Some(v));
                if let Some((k, v)) = diff {
                    last += &format!("; first difference at id {k}: source {v}, dataset {:?}", got.get(k));
                }
                return false;
            }
            true
        });
        if !same {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        same
    });
    assert!(converged, "the dataset did not converge to the source: {last}\n{}", node.output());
}

#[test]
fn snapshot_with_concurrent_changes_then_streaming_converges() {
    let server = shop_server();
    insert_rows(&server, 1, 50_001);
    let dir = tempfile::tempdir().unwrap();
    let mut node = pg_node(dir.path(), &server);
    node.start();
    // Changes while the snapshot runs: inserts beyond the copied ids, updates and deletes within.
    for round in 0..20u64 {
        let base = 50_001 + round * 100;
        insert_rows(&server, base, base + 100);
        server.psql(
            "shop",
            &format!(
                "UPDATE orders SET status = 'shipped', amount_cents = amount_cents + 1 WHERE id % 97 = {round};
                 UPDATE customers SET full_name = NULL WHERE id % 89 = {round};
                 DELETE FROM orders WHERE id % 101 = {round};"
            ),
        );
    }
    wait_converged(&node, &server);
    assert!(node.output().contains("initial snapshot done"), "{}", node.output());
    node.stop();
    // Changes while the node is down arrive after the restart, exactly once.
    server.psql("shop", "UPDATE customers SET email = 'x' || id || '@example.com' WHERE id <= 100; DELETE FROM customers WHERE id > 51000;");
    node.start();
    wait_converged(&node, &server);
    node.verify_log();
    let records = node.log_stat()["records"].as_u64().unwrap();
    // Every change is logged once: 100k snapshot rows + the streamed changes; nothing twice.
    let dump = node.cli(&["log", "dump", "--json"]);
    let mut positions = std::collections::HashSet::new();
    for line in stdout(&dump).lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        let position = record["position"].as_str().unwrap().to_owned();
        assert!(positions.insert(position.clone()), "position {position} logged twice");
    }
    assert_eq!(positions.len() as u64, records);
}
