//! Plain rows (integers, text, booleans; identity mapping; a schema of types only) take the source's
//! direct path (`sources::postgres::fast`): streamed through kill -9s into a postgres target, they
//! arrive equal to the source; a row the schema refuses still goes to the DLQ with its reasons.

use crate::support::{wait_for, Node, Rng};
use remix_pgtest::PgServer;
use serde_json::Value;
use std::time::Duration;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "A plain row",
  "type": "object",
  "properties": {
    "id": { "type": "integer" },
    "n": { "type": ["integer", "null"] },
    "label": { "type": "string" },
    "ok": { "type": "boolean" },
    "note": { "type": ["string", "null"] }
  },
  "required": ["id", "label"],
  "additionalProperties": false
}"#;

const CONFIG: &str = r#"
data_dir: "${REMIX_DATA_DIR}"
admin: { listen: "${REMIX_ADMIN_ADDR}" }
models:
  plain: { schema: "${REMIX_TEST_SCHEMAS}/plain.json", key: [id] }
sources:
  - name: db
    kind: postgres
    dsn: "${REMIX_PG_SOURCE}"
    snapshot: never
    tables:
      public.plain: { model: plain }
targets:
  - name: warehouse
    kind: postgres
    dsn: "${REMIX_PG_TARGET}"
    create_tables: true
    batch: { records_max: 700, linger_ms: 10 }
    models:
      plain: { table: public.plain }
"#;

/// Every row but the refused one (id 0), as text, ordered.
const ROWS: &str = "SELECT concat_ws('|', id, coalesce(n::text, '~'), label, coalesce(ok::text, '~'), \
                    coalesce(note, '~')) FROM plain WHERE id > 0 ORDER BY id";

/// Labels with everything JSON and COPY escape: quotes, backslashes, tabs, newlines, control
/// characters, non-ASCII.
const LABEL: &str = "'l' || i || E' \"q\" \\\\ \\t tab \\n nl \\x01 é ☃'";

#[test]
fn plain_rows_stream_directly_through_kills_and_a_refused_row_is_dead_lettered() {
    let source = PgServer::start();
    source.create_db("shop");
    source.psql(
        "shop",
        "CREATE TABLE plain (id bigint PRIMARY KEY, n integer, label text NOT NULL, ok boolean, note varchar(40))",
    );
    let target = PgServer::start();
    target.create_db("warehouse");
    let dir = tempfile::tempdir().unwrap();
    let schemas = dir.path().join("schemas");
    std::fs::create_dir_all(&schemas).unwrap();
    std::fs::write(schemas.join("plain.json"), SCHEMA).unwrap();
    let mut node = Node::new(
        dir.path(),
        CONFIG,
        &[
            ("REMIX_PG_SOURCE", &source.dsn("shop")),
            ("REMIX_PG_TARGET", &target.dsn("warehouse")),
            ("REMIX_TEST_SCHEMAS", &schemas.display().to_string()),
        ],
    );
    node.start();
    // With `snapshot: never`, only changes after the slot's creation are streamed.
    wait_for("the replication slot", || node.snapshot_done("db").then_some(()));
    // `ok` may not be null in the model: this row is refused (the general path names the reason).
    source.psql("shop", "INSERT INTO plain VALUES (0, 0, 'refused', NULL, NULL)");
    let mut rng = Rng::from_clock("plain_rows_stream_directly_through_kills");
    const ROUNDS: u64 = 6;
    const ROWS_PER_ROUND: u64 = 1500;
    for r in 0..ROUNDS {
        let (from, to) = (1 + r * ROWS_PER_ROUND, (r + 1) * ROWS_PER_ROUND);
        source.psql(
            "shop",
            &format!(
                "INSERT INTO plain SELECT i, CASE WHEN i % 7 = 0 THEN NULL ELSE i * 1000 - 2147483 END, {LABEL}, \
                   i % 2 = 0, CASE WHEN i % 3 = 0 THEN NULL ELSE 'n' || i END \
                 FROM generate_series({from}, {to}) i;
                 UPDATE plain SET n = coalesce(n, 0) + 1, note = NULL WHERE id > 0 AND id % 5 = {r} AND id <= {to};
                 DELETE FROM plain WHERE id > 0 AND id % 97 = {r};"
            ),
        );
        std::thread::sleep(Duration::from_millis(rng.range(50..=400)));
        node.kill9();
        // Any moment is a kill's moment: the source may still be connecting when the next one comes.
        node.start_live();
    }
    wait_for("the target to equal the source", || {
        let source_rows = source.psql("shop", ROWS);
        let target_rows = target.try_psql("warehouse", ROWS).ok()?;
        (source_rows == target_rows).then_some(())
    });
    let refused = target.try_psql("warehouse", "SELECT count(*) FROM plain WHERE id = 0").unwrap();
    assert_eq!(refused, "0", "the refused row is not at the target");
    let dlq = node.cli_json(&["dlq", "list"]);
    let entries = dlq.as_array().expect("an array");
    assert_eq!(entries.len(), 1, "{dlq:#}");
    assert!(entries[0].to_string().contains("/ok"), "the reason names the field: {dlq:#}");
    // A record as the direct path wrote it: every column, nulls included, the text as it was.
    let dump = node.cli(&["log", "dump", "--json", "--model", "plain"]);
    assert!(dump.status.success(), "remix log dump: {}", String::from_utf8_lossy(&dump.stderr));
    let first: Value = serde_json::from_slice(dump.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["key"], serde_json::json!({"id": 1}), "{first}");
    assert_eq!(first["data"]["label"], "l1 \"q\" \\ \t tab \n nl \u{1} é ☃", "{first}");
    assert_eq!(first["data"]["ok"], false, "{first}");
    assert_eq!(first["data"]["note"], "n1", "{first}");
    assert_eq!(first["data"]["n"], 1000 - 2147483, "{first}");
    node.stop();
    node.verify_log();
}
