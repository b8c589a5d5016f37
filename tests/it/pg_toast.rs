//! Unchanged TOAST values: a table with large text columns (stored out of line, incompressible) and
//! REPLICA IDENTITY DEFAULT. pgoutput does not send an unchanged TOASTed value when another column is
//! updated; the change must say which fields it leaves out (`"unchanged"`), the dataset's line must
//! carry only what was sent, and the large value must never become NULL or a placeholder downstream.

use crate::pg_source::dataset_state;
use crate::support::*;
use remix_pgtest::PgServer;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

const CONFIG: &str = r#"
data_dir: "${REMIX_DATA_DIR}"
admin: { listen: "${REMIX_ADMIN_ADDR}" }
models:
  doc: { schema: "${REMIX_DOC_SCHEMA}", key: [id] }
sources:
  - name: docs_db
    kind: postgres
    dsn: "${REMIX_PG_SOURCE}"
    slot: remix_docs
    publication: remix_docs
    snapshot: initial
    tables:
      public.docs: { model: doc, fields: { id: id, title: title, big: big, summary: notes } }
targets:
  - { name: dataset, kind: jsonl, dir: "${REMIX_DATASET_DIR}", models: { doc: {} } }
"#;

/// `big` is required: a partial upsert that leaves it out must still validate.
const DOC_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "doc",
  "type": "object",
  "properties": {
    "id": { "type": "integer" },
    "title": { "type": "string" },
    "big": { "type": ["string", "null"] },
    "summary": { "type": ["string", "null"] }
  },
  "required": ["id", "title", "big"],
  "additionalProperties": false
}"#;

/// SQL for an incompressible text of 32 kB (a chain of MD5 digests), far above the TOAST threshold.
fn large(seed: &str) -> String {
    format!("(SELECT string_agg(md5('{seed}' || j), '') FROM generate_series(1, 1000) j)")
}

/// The source table in model form: id → object.
fn source_docs(server: &PgServer) -> BTreeMap<i64, Value> {
    let text = server.psql(
        "docs",
        "SELECT coalesce(json_agg(json_build_object('id', id, 'title', title, 'big', big, 'summary', notes) \
           ORDER BY id), '[]') FROM docs",
    );
    let rows: Vec<Value> = serde_json::from_str(&text).unwrap();
    rows.into_iter().map(|r| (r["id"].as_i64().unwrap(), r)).collect()
}

/// The change records of the log (`remix log dump --json`).
fn changes(node: &Node) -> Vec<Value> {
    let out = node.cli(&["log", "dump", "--json"]);
    assert!(out.status.success(), "{out:?}");
    stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn unchanged_toast_values_are_left_out_never_nulled() {
    let server = PgServer::start();
    server.create_db("docs");
    server
        .psql("docs", "CREATE TABLE docs (id bigint PRIMARY KEY, title text NOT NULL, big text, notes text)");
    assert_eq!(
        server.psql("docs", "SELECT relreplident FROM pg_class WHERE relname = 'docs'"),
        "d",
        "REPLICA IDENTITY DEFAULT"
    );
    server.psql("docs", &format!("INSERT INTO docs VALUES (1, 'one', {}, 'short')", large("a")));
    // Stored out of line: the table's TOAST relation holds the values.
    let toasted = server.psql(
        "docs",
        "SELECT pg_column_size(big) > 8192 AND pg_relation_size(reltoastrelid) > 0 FROM docs, pg_class \
         WHERE relname = 'docs' AND id = 1",
    );
    assert_eq!(toasted, "t", "the large value is TOASTed");

    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("doc.json");
    std::fs::write(&schema, DOC_SCHEMA).unwrap();
    let mut node = Node::new(
        dir.path(),
        CONFIG,
        &[("REMIX_PG_SOURCE", &server.dsn("docs")), ("REMIX_DOC_SCHEMA", &schema.display().to_string())],
    );
    node.start();
    // Row 1 from the snapshot in the dataset: the slot exists, so what follows is streamed.
    wait_for("the snapshot in the dataset", || {
        dataset_lines(&node.dataset_dir, "doc").iter().any(|l| l.contains(r#""id":1"#)).then_some(())
    });
    let statements = [
        format!("INSERT INTO docs VALUES (2, 'two', {}, {})", large("b"), large("c")),
        "UPDATE docs SET title = 'changed 1' WHERE id = 1".to_owned(),
        "UPDATE docs SET title = 'changed 2' WHERE id = 2".to_owned(),
        "UPDATE docs SET big = big || 'tail' WHERE id = 1".to_owned(),
        "UPDATE docs SET title = 'final 1' WHERE id = 1".to_owned(),
        "UPDATE docs SET notes = NULL, title = 'final 2' WHERE id = 2".to_owned(),
        "UPDATE docs SET title = 'end' WHERE id = 2".to_owned(),
    ];
    // One transaction each, so each is one change.
    for sql in &statements {
        server.psql("docs", sql);
    }
    let streamed = wait_for("every change in the log", || {
        let streamed: Vec<Value> = changes(&node)
            .into_iter()
            .filter(|c| !c["position"].as_str().unwrap().starts_with("snapshot:"))
            .collect();
        (streamed.len() == statements.len()).then_some(streamed)
    });
    let source = source_docs(&server);
    let (big1, big2, notes2) = (&source[&1]["big"], &source[&2]["big"], large_value(&server, "c"));
    let big1_before = large_value(&server, "a");
    assert!(big1.as_str().unwrap().ends_with("tail") && big1.as_str().unwrap().len() > 32_000);

    // What each change carries: the fields sent, and the unchanged ones named.
    let expected = [
        (json!({"id": 2, "title": "two", "big": big2, "summary": notes2}), vec![]),
        (json!({"id": 1, "title": "changed 1", "summary": "short"}), vec!["big"]),
        (json!({"id": 2, "title": "changed 2"}), vec!["big", "summary"]),
        (json!({"id": 1, "title": "changed 1", "big": big1, "summary": "short"}), vec![]),
        (json!({"id": 1, "title": "final 1", "summary": "short"}), vec!["big"]),
        (json!({"id": 2, "title": "final 2", "summary": null}), vec!["big"]),
        (json!({"id": 2, "title": "end", "summary": null}), vec!["big"]),
    ];
    for (change, (data, unchanged)) in streamed.iter().zip(&expected) {
        assert_eq!(change["op"], "upsert", "{change}");
        assert_eq!(&change["data"], data, "data of {}", change["position"]);
        let got: BTreeSet<&str> = change["unchanged"]
            .as_array()
            .map(|a| a.iter().map(|f| f.as_str().unwrap()).collect())
            .unwrap_or_default();
        assert_eq!(got, unchanged.iter().copied().collect(), "unchanged fields of {}", change["position"]);
    }
    assert_eq!(streamed[1]["unchanged"], json!(["big"]), "the change record names the unchanged field");

    node.wait_caught_up("dataset");
    let lines: Vec<Value> =
        dataset_lines(&node.dataset_dir, "doc").iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    // The partial line holds what was sent and nothing else: no "big" key at all.
    assert!(lines.contains(&json!({"id": 1, "title": "changed 1", "summary": "short"})), "{lines:?}");
    assert!(lines.contains(&json!({"id": 2, "title": "changed 2"})), "{lines:?}");
    // A large value downstream is always one the source had: never null, empty or a placeholder.
    let known: Vec<&Value> = vec![&big1_before, big1, big2];
    for line in &lines {
        if let Some(big) = line.get("big") {
            assert!(known.contains(&big), "line {} has big = {:.80}", line["id"], big.to_string());
        }
    }
    // The folded state keeps the large values.
    assert_eq!(dataset_state(&node.dataset_dir, "doc"), source);
    node.stop();
}

/// The text `large(seed)` makes.
fn large_value(server: &PgServer, seed: &str) -> Value {
    Value::String(server.psql("docs", &format!("SELECT {}", large(seed))))
}
