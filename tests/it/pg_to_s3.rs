//! PostgreSQL → Remix → S3 Parquet (SeaweedFS): an initial snapshot of 200k rows with changes made
//! while it runs, then streaming. The shards' changelog (committed shards read back with pyarrow,
//! in name order, each checked against its manifest) replays to exactly the source tables, every
//! log offset appears once, and nothing of the streaming (staging objects, multipart uploads) is
//! left.

use crate::conformance::object_store::{test_bin, Seaweed, BUCKET, S3_KEY, S3_SECRET};
use crate::pg_source::{insert_rows, shop_server, source_state};
use crate::support::*;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;

const CONFIG: &str = r#"
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
  - name: lake
    kind: object_store
    url: s3://remix/lake
    endpoint: "${REMIX_S3_ENDPOINT}"
    format: parquet
    shard: { rows_max: 40000, age_max: 1s }
    models: { customer: {}, order: {} }
"#;

/// Every committed row of `models`, in shard and row order.
fn shard_rows(endpoint: &str, models: &[&str]) -> Vec<(String, Map<String, Value>)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/conformance/object_store_read.py");
    let out = Command::new(test_bin("python"))
        .arg(script)
        .arg(format!("{BUCKET}/lake"))
        .args(models)
        .args(["--s3", endpoint, S3_KEY, S3_SECRET])
        .output()
        .unwrap();
    assert!(out.status.success(), "the reader failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["model"].as_str().unwrap().to_owned(), v["row"].as_object().unwrap().clone())
        })
        .collect()
}

/// The tables the changelog replays to (source field names as the models name them; timestamps as
/// epoch ms), and the offsets seen twice.
fn replay(rows: &[(String, Map<String, Value>)]) -> (BTreeMap<String, BTreeMap<i64, Value>>, Vec<u64>) {
    let mut state: BTreeMap<String, BTreeMap<i64, Value>> =
        ["customer", "order"].iter().map(|m| ((*m).to_owned(), BTreeMap::new())).collect();
    let mut offsets = HashSet::new();
    let mut twice = Vec::new();
    for (model, row) in rows {
        let offset = row["_offset"].as_u64().unwrap();
        if !offsets.insert(offset) {
            twice.push(offset);
        }
        let table = state.get_mut(model).unwrap();
        let unchanged: Vec<&str> = row
            .get("_unchanged")
            .and_then(Value::as_array)
            .map_or(Vec::new(), |a| a.iter().filter_map(Value::as_str).collect());
        match row["_op"].as_str().unwrap() {
            "delete" => {
                table.remove(&row["id"].as_i64().unwrap());
            }
            "truncate" => table.clear(),
            _ => {
                let id = row["id"].as_i64().unwrap();
                let mut object: Map<String, Value> = row
                    .iter()
                    .filter(|(k, _)| !k.starts_with('_'))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if let Some(Value::String(t)) = object.get("created_at") {
                    let ms = remix::time::parse_rfc3339(t).expect("a timestamp");
                    object.insert("created_at".into(), json!(ms));
                }
                if let Some(Value::Object(previous)) = table.get(&id) {
                    for field in &unchanged {
                        if let Some(v) = previous.get(*field) {
                            object.insert((*field).to_owned(), v.clone());
                        }
                    }
                }
                table.insert(id, Value::Object(object));
            }
        }
    }
    (state, twice)
}

fn difference(
    expected: &BTreeMap<String, BTreeMap<i64, Value>>,
    got: &BTreeMap<String, BTreeMap<i64, Value>>,
) -> Option<String> {
    for (model, rows) in expected {
        let held = &got[model];
        if held != rows {
            let first = rows.iter().find(|(k, v)| held.get(k) != Some(v)).map(|(k, v)| (*k, v.clone()));
            let extra = held.keys().find(|k| !rows.contains_key(k));
            return Some(format!(
                "{model}: the shards replay to {} rows, the source has {}; first differing {first:?} (shards: {:?}); extra id {extra:?}",
                held.len(),
                rows.len(),
                first.as_ref().and_then(|(k, _)| held.get(k))
            ));
        }
    }
    None
}

#[test]
fn snapshot_of_200k_rows_with_concurrent_changes_replays_from_the_shards() {
    let server = shop_server();
    insert_rows(&server, 1, 100_001);
    let s3 = Seaweed::start();
    let dir = tempfile::tempdir().unwrap();
    let schemas = schemas_dir().display().to_string();
    let mut env: Vec<(String, String)> = Seaweed::env();
    env.push(("REMIX_PG_SOURCE".into(), server.dsn("shop")));
    env.push(("REMIX_SCHEMAS".into(), schemas));
    env.push(("REMIX_S3_ENDPOINT".into(), s3.endpoint.clone()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut node = Node::new(dir.path(), CONFIG, &env);
    node.start();
    // Changes while the snapshot runs: inserts beyond the copied ids, updates and deletes within.
    for round in 0..20u64 {
        let base = 100_001 + round * 100;
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
    let expected = source_state(&server);
    let mut last = String::new();
    let converged = (0..60).any(|_| {
        node.wait_caught_up("lake");
        let (got, twice) = replay(&shard_rows(&s3.endpoint, &["customer", "order"]));
        assert!(twice.is_empty(), "offsets in the shards twice: {:?}", &twice[..twice.len().min(10)]);
        match difference(&expected, &got) {
            None => true,
            Some(d) => {
                last = d;
                std::thread::sleep(std::time::Duration::from_millis(500));
                false
            }
        }
    });
    assert!(converged, "the shards do not replay to the source: {last}\n{}", node.output());
    let rows: usize = expected.values().map(BTreeMap::len).sum();
    eprintln!("pg_to_s3: the shards replay to the source's {rows} rows");
    node.stop();
}
