//! The PostgreSQL target against real PostgreSQL servers that the tests start (remix-pgtest): the
//! target tables must end equal to the source tables, row for row (ordered per-row checksums), with
//! `remix_cursors` at the last offset of the log, across kill -9 of Remix, a rewind to the start, and
//! the documented error cases (a missing column, a NOT NULL violation under `pause` and
//! `dead_letter`, connections terminated mid-batch, the target server restarted or crashed).
//!
//! The crash test's volume: 20k inserts, 10k updates and 2k deletes by default (about 30 s in a debug
//! build); `REMIX_PG_TARGET_ROWS=100000` runs the issue's 100k / 50k / 10k (about a minute). The node
//! is killed only after the initial snapshot is done (kills during a snapshot are the source's tests'
//! business: it is redone from scratch), so every change streams: partial records and the truncate
//! reach the target, which the test checks in the log.

use crate::support::*;
use remix_pgtest::PgServer;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A document with a large body (TOASTed at the source), tags, and nullable fields.
const DOC_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "properties": {
    "id": { "type": "integer" },
    "title": { "type": ["string", "null"] },
    "body": { "type": ["string", "null"] },
    "version": { "type": "integer" },
    "tags": { "type": ["array", "null"], "items": { "type": "string" } }
  },
  "required": ["id", "version"],
  "additionalProperties": false
}"#;

const SOURCE_TABLES: &str = "
CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, full_name text, created_at timestamptz);
CREATE TABLE docs (id bigint PRIMARY KEY, title text, body text, version integer NOT NULL, tags text[]);";

/// Source `shop` (customers, docs) into target `warehouse` (analytics.customers, analytics.documents,
/// renamed columns, created by Remix).
const CONFIG: &str = r#"
data_dir: "${REMIX_DATA_DIR}"
admin: { listen: "${REMIX_ADMIN_ADDR}" }
models:
  customer: { schema: "${REMIX_SCHEMAS}/customer.json", key: [id] }
  doc: { schema: "${REMIX_TEST_SCHEMAS}/doc.json", key: [id] }
sources:
  - name: shop_db
    kind: postgres
    dsn: "${REMIX_PG_SOURCE}"
    snapshot: initial
    tables:
      public.customers: { model: customer, fields: { id: id, email: email, name: full_name, created_at: created_at } }
      public.docs: { model: doc, fields: { id: id, title: title, body: body, version: version, tags: tags } }
targets:
  - name: warehouse
    kind: postgres
    dsn: "${REMIX_PG_TARGET}"
    create_tables: true
    batch: { records_max: 2000, linger_ms: 20 }
    models:
      customer: { table: analytics.customers, fields: { customer_id: id, mail: email, name: name, created: created_at } }
      doc: { table: analytics.documents, fields: { doc_id: id, title: title, content: body, version: version, tags: tags } }
"#;

/// Per-row checksums, ordered by key: `(source query on shop, target query on warehouse)`.
const CUSTOMER_ROWS: (&str, &str) = (
    "SELECT id || ':' || md5(concat_ws('|', email, coalesce(full_name, '~'), \
       coalesce(extract(epoch FROM created_at)::text, '~'))) FROM customers ORDER BY id",
    "SELECT customer_id || ':' || md5(concat_ws('|', mail, coalesce(name, '~'), \
       coalesce(extract(epoch FROM created)::text, '~'))) FROM analytics.customers ORDER BY customer_id",
);
const DOC_ROWS: (&str, &str) = (
    "SELECT id || ':' || md5(concat_ws('|', coalesce(title, '~'), coalesce(md5(body), '~'), version, \
       coalesce(to_jsonb(tags)::text, '~'))) FROM docs ORDER BY id",
    "SELECT doc_id || ':' || md5(concat_ws('|', coalesce(title, '~'), coalesce(md5(content), '~'), version, \
       coalesce(tags::text, '~'))) FROM analytics.documents ORDER BY doc_id",
);

struct Pair {
    source: PgServer,
    target: PgServer,
}

impl Pair {
    fn start() -> Pair {
        let source = PgServer::start();
        source.create_db("shop");
        source.psql("shop", SOURCE_TABLES);
        let target = PgServer::start();
        target.create_db("warehouse");
        Pair { source, target }
    }

    fn node(&self, root: &Path, config: &str) -> Node {
        let schemas = schemas_dir().display().to_string();
        let test_schemas = root.join("schemas");
        std::fs::create_dir_all(&test_schemas).unwrap();
        std::fs::write(test_schemas.join("doc.json"), DOC_SCHEMA).unwrap();
        let test_schemas = test_schemas.display().to_string();
        Node::new(
            root,
            config,
            &[
                ("REMIX_PG_SOURCE", &self.source.dsn("shop")),
                ("REMIX_PG_TARGET", &self.target.dsn("warehouse")),
                ("REMIX_SCHEMAS", &schemas),
                ("REMIX_TEST_SCHEMAS", &test_schemas),
            ],
        )
    }

    /// The first difference between the source and the target rows, if any.
    fn difference(&self, (source_sql, target_sql): (&str, &str)) -> Option<String> {
        let source = self.source.psql("shop", source_sql);
        let target = match self.target.try_psql("warehouse", target_sql) {
            Ok(rows) => rows,
            Err(e) => return Some(format!("cannot read the target: {e}")),
        };
        if source == target {
            return None;
        }
        let (s, t): (Vec<&str>, Vec<&str>) = (source.lines().collect(), target.lines().collect());
        let at = s.iter().zip(&t).position(|(a, b)| a != b).unwrap_or(s.len().min(t.len()));
        Some(format!(
            "source has {} rows, target {}; first difference at row {at}: source {:?}, target {:?}",
            s.len(),
            t.len(),
            s.get(at),
            t.get(at)
        ))
    }

    fn cursor(&self, target: &str) -> Option<u64> {
        let sql = format!("SELECT log_offset FROM remix_cursors WHERE target = '{target}'");
        self.target.try_psql("warehouse", &sql).ok()?.parse().ok()
    }

    /// Waits until every table equals its source and `remix_cursors` is at the log's last offset.
    fn wait_equal(&self, node: &Node, tables: &[(&str, &str)]) {
        let deadline = std::time::Instant::now() + WAIT_MAX;
        loop {
            let differences: Vec<String> = tables.iter().filter_map(|t| self.difference(*t)).collect();
            let last = if differences.is_empty() {
                let last_offset = node.log_stat()["last_offset"].as_u64().unwrap();
                let cursor = self.cursor("warehouse");
                if cursor == Some(last_offset) {
                    return;
                }
                format!("remix_cursors holds {cursor:?}, the log ends at {last_offset}")
            } else {
                differences.join("; ")
            };
            assert!(
                std::time::Instant::now() < deadline,
                "the target did not converge to the source: {last}\ntarget: {}\n{}",
                node.target("warehouse"),
                node.output()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A body of about 9.6 kB that does not compress: stored out of line (TOASTed) at the source.
fn big_body(seed: &str) -> String {
    format!("(SELECT string_agg(md5({seed} || '-' || g), '') FROM generate_series(1, 300) g)")
}

/// One round of the workload: inserts `ids`, updates and deletes among the rows inserted before.
fn round(source: &PgServer, ids: std::ops::Range<u64>, updates: u64, deletes: u64, rng: &mut Rng) {
    let (from, to) = (ids.start, ids.end);
    let below = from.max(2);
    let body = big_body("i::text");
    source.psql(
        "shop",
        &format!(
            "INSERT INTO customers SELECT i, 'c' || i || '@example.com', \
               CASE WHEN i % 7 = 0 THEN NULL ELSE 'Customer ' || i END, \
               CASE WHEN i % 11 = 0 THEN NULL ELSE now() - i * interval '1 second' END \
             FROM generate_series({from}, {to} - 1) i;
             INSERT INTO docs SELECT i, CASE WHEN i % 5 = 0 THEN NULL ELSE 'Doc ' || i END, \
               CASE WHEN i % 20 = 0 THEN {body} WHEN i % 9 = 0 THEN NULL ELSE 'short ' || i END, 1, \
               CASE WHEN i % 3 = 0 THEN NULL ELSE ARRAY['t' || (i % 4), 'x\"y'] END \
             FROM generate_series({from}, {to} - 1) i;"
        ),
    );
    // Updates: customers by a random stride, docs leaving the body alone (unchanged TOAST values
    // arrive as partial records) or, for a few, replacing it.
    let (a, b) = (rng.range(1..=below - 1), rng.range(2..=9));
    source.psql(
        "shop",
        &format!(
            "UPDATE customers SET full_name = CASE WHEN full_name IS NULL THEN 'Named ' || id END, \
               email = 'u' || id || '@example.com' WHERE id IN (SELECT id FROM customers WHERE id >= {a} \
               AND id % {b} = 0 ORDER BY id LIMIT {half});
             UPDATE docs SET version = version + 1, title = 'Title ' || version WHERE id IN \
               (SELECT id FROM docs WHERE id >= {a} AND id % {b} = 1 ORDER BY id LIMIT {half});
             UPDATE docs SET title = 'Big ' || version WHERE id IN \
               (SELECT id FROM docs WHERE id % 20 = 0 ORDER BY id DESC LIMIT 20);
             UPDATE docs SET body = {new_body}, version = version + 1 WHERE id IN \
               (SELECT id FROM docs WHERE id >= {a} AND id % 40 = 0 ORDER BY id LIMIT 5);",
            half = updates / 2,
            new_body = big_body("id::text || version"),
        ),
    );
    let c = rng.range(1..=below - 1);
    source.psql(
        "shop",
        &format!(
            "DELETE FROM customers WHERE id IN (SELECT id FROM customers WHERE id >= {c} ORDER BY id LIMIT {half});
             DELETE FROM docs WHERE id IN (SELECT id FROM docs WHERE id >= {c} ORDER BY id LIMIT {half});",
            half = deletes / 2
        ),
    );
}

#[test]
fn kill9_at_random_moments_leaves_the_target_equal_to_the_source() {
    let rows: u64 = std::env::var("REMIX_PG_TARGET_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let (updates, deletes) = (rows / 2, rows / 10);
    const ROUNDS: u64 = 20;
    const KILLS: usize = 12;
    let pair = Pair::start();
    let dir = tempfile::tempdir().unwrap();
    let mut node = pair.node(dir.path(), CONFIG);
    let mut rng = Rng::from_clock("kill9_at_random_moments_leaves_the_target_equal_to_the_source");
    // Rows before the first start go through the initial snapshot.
    round(&pair.source, 1..rows / ROUNDS + 1, 0, 0, &mut rng);
    // Kills during the snapshot are the source's tests' business (they redo it): here the changes
    // must stream, so that partial records and the truncate reach the target.
    node.start();
    wait_for("the initial snapshot", || node.snapshot_done("shop_db").then_some(()));
    let done = AtomicBool::new(false);
    let mut kills = 0;
    std::thread::scope(|scope| {
        let source = &pair.source;
        let done = &done;
        let mut workload_rng = Rng::new(rng.next());
        let workload = scope.spawn(move || {
            let per_round = rows / ROUNDS;
            for r in 1..ROUNDS {
                let from = 1 + r * per_round;
                round(source, from..from + per_round, updates / ROUNDS, deletes / ROUNDS, &mut workload_rng);
                if r == ROUNDS / 2 {
                    source.psql("shop", "TRUNCATE docs");
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            done.store(true, Ordering::SeqCst);
        });
        loop {
            std::thread::sleep(Duration::from_millis(rng.range(200..=1500)));
            node.kill9();
            kills += 1;
            if kills >= KILLS && done.load(Ordering::SeqCst) {
                break;
            }
            // Any moment is a kill's moment: the source may still be connecting when the next one comes.
            node.start_live();
        }
        workload.join().unwrap();
    });
    eprintln!("{kills} kills");
    node.start();
    pair.wait_equal(&node, &[CUSTOMER_ROWS, DOC_ROWS]);
    let dump = node.cli(&["log", "dump", "--json", "--model", "doc"]);
    assert!(dump.status.success(), "remix log dump: {}", String::from_utf8_lossy(&dump.stderr));
    let lines = dump.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    let (mut partial, mut truncates, mut records) = (0, 0, 0);
    for line in lines {
        let record: Value = serde_json::from_slice(line).expect("a JSON line");
        records += 1;
        partial += usize::from(record.get("unchanged").is_some());
        truncates += usize::from(record["op"] == "truncate");
    }
    eprintln!("doc records: {records}, partial: {partial}, truncates: {truncates}");
    assert!(partial > 0, "the workload made partial records (unchanged TOAST values)");
    assert!(truncates > 0, "the workload truncated a table");
    node.stop();
    node.verify_log();
}

#[test]
fn rewind_to_start_reapplies_the_whole_log() {
    let pair = Pair::start();
    pair.source.psql(
        "shop",
        "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, amount_cents integer NOT NULL, \
           status text NOT NULL);",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = example_config("postgres-to-postgres.yaml");
    let mut node = pair.node(dir.path(), &config);
    pair.source.psql(
        "shop",
        "INSERT INTO customers SELECT i, 'c' || i || '@example.com', 'C ' || i, now() FROM generate_series(1, 3000) i;
         INSERT INTO orders SELECT i, i % 300 + 1, i * 10, 'pending' FROM generate_series(1, 3000) i;",
    );
    node.start();
    pair.source.psql(
        "shop",
        "UPDATE orders SET status = 'paid', amount_cents = amount_cents + 1 WHERE id % 3 = 0;
         DELETE FROM customers WHERE id % 10 = 0; UPDATE customers SET full_name = NULL WHERE id % 7 = 0;
         INSERT INTO orders SELECT i, 1, 5, 'shipped' FROM generate_series(3001, 4000) i;",
    );
    let orders = (
        "SELECT id || ':' || md5(concat_ws('|', customer_id, amount_cents, status)) FROM orders ORDER BY id",
        "SELECT order_id || ':' || md5(concat_ws('|', customer_id, total_cents, state)) FROM analytics.orders \
           ORDER BY order_id",
    );
    let customers = (
        "SELECT id || ':' || md5(concat_ws('|', email, coalesce(full_name, '~'))) FROM customers ORDER BY id",
        "SELECT customer_id || ':' || md5(concat_ws('|', mail, coalesce(name, '~'))) FROM analytics.customers \
           ORDER BY customer_id",
    );
    pair.wait_equal(&node, &[customers, orders]);
    let last = node.log_stat()["last_offset"].as_u64().unwrap();
    // Damage the target: a rewind to the start must repair it from the log alone.
    pair.target.psql(
        "warehouse",
        "UPDATE analytics.orders SET state = 'lost' WHERE order_id < 100; DELETE FROM analytics.customers \
           WHERE customer_id % 3 = 0; UPDATE remix_cursors SET updated_at = 'epoch'",
    );
    assert!(pair.difference(orders).is_some());
    let out = node.cli(&["target", "rewind", "warehouse", "--to-start"]);
    assert!(out.status.success(), "remix target rewind: {out:?}");
    pair.wait_equal(&node, &[customers, orders]);
    let updated = pair.target.psql("warehouse", "SELECT updated_at > 'epoch' FROM remix_cursors");
    assert_eq!(updated, "t", "the cursor row was written again by the re-applied batches");
    assert_eq!(node.log_stat()["last_offset"].as_u64().unwrap(), last, "the rewind appended nothing");
    assert_eq!(node.target("warehouse")["cursor"], last);
    node.stop();
}

// ---------------------------------------------------------------------------------------------------
// Error cases, fed through a webhook source for exact control over what arrives.
// ---------------------------------------------------------------------------------------------------

const ITEM_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "properties": {
    "id": { "type": "integer" },
    "name": { "type": ["string", "null"] },
    "qty": { "type": "integer" },
    "meta": { "type": ["object", "null"] }
  },
  "required": ["id", "qty"],
  "additionalProperties": false
}"#;

fn webhook_config(create_tables: bool, on_error: &str) -> String {
    format!(
        r#"
data_dir: "${{REMIX_DATA_DIR}}"
admin: {{ listen: "${{REMIX_ADMIN_ADDR}}" }}
models:
  item: {{ schema: "${{REMIX_TEST_SCHEMAS}}/item.json", key: [id] }}
sources:
  - name: hooks
    kind: webhook
    listen: "${{REMIX_WEBHOOK_ADDR}}"
    routes:
      /items: {{ model: item }}
targets:
  - name: warehouse
    kind: postgres
    dsn: "${{REMIX_PG_TARGET}}"
    create_tables: {create_tables}
    on_error: {on_error}
    batch: {{ records_max: 500, linger_ms: 10 }}
    models:
      item: {{ table: shop.items, fields: {{ item_id: id, label: name, quantity: qty, meta: meta }} }}
"#
    )
}

fn webhook_node(root: &Path, target: &PgServer, config: &str) -> Node {
    let schemas = root.join("schemas");
    std::fs::create_dir_all(&schemas).unwrap();
    std::fs::write(schemas.join("item.json"), ITEM_SCHEMA).unwrap();
    Node::new(
        root,
        config,
        &[
            ("REMIX_PG_TARGET", &target.dsn("warehouse")),
            ("REMIX_TEST_SCHEMAS", &schemas.display().to_string()),
        ],
    )
}

fn target_server() -> PgServer {
    let target = PgServer::start();
    target.create_db("warehouse");
    target
}

fn item(id: u64, name: Option<&str>, qty: u64) -> Value {
    json!({"id": id, "name": name, "qty": qty, "meta": {"n": id, "s": format!("'; DROP TABLE x; --{id}")}})
}

fn post_items(node: &Node, items: &[Value]) {
    let response = node.post("/items", &[], &json!(items)).expect("POST /items");
    assert_eq!(response.status, 200, "{}", response.text());
}

/// Every row of `shop.items` as `id|label|quantity|meta`, ordered.
fn items_at_target(target: &PgServer) -> Vec<String> {
    let rows = target.psql(
        "warehouse",
        "SELECT concat_ws('|', item_id, coalesce(label, '~'), quantity, meta::text) FROM shop.items ORDER BY item_id",
    );
    rows.lines().map(str::to_owned).collect()
}

fn expected_row(id: u64, name: Option<&str>, qty: u64) -> String {
    let meta = json!({"n": id, "s": format!("'; DROP TABLE x; --{id}")}).to_string().replace(",", ", ");
    let meta = meta.replace("\":", "\": ");
    format!("{id}|{}|{qty}|{meta}", name.unwrap_or("~"))
}

const ITEMS_TABLE: &str = "CREATE SCHEMA shop; CREATE TABLE shop.items (item_id bigint PRIMARY KEY, \
    label text, quantity integer NOT NULL, meta jsonb)";

#[test]
fn a_missing_column_holds_the_target_until_it_is_added() {
    let target = target_server();
    target.psql("warehouse", ITEMS_TABLE);
    target.psql("warehouse", "ALTER TABLE shop.items DROP COLUMN label");
    let dir = tempfile::tempdir().unwrap();
    let mut node = webhook_node(dir.path(), &target, &webhook_config(false, "pause"));
    node.start();
    post_items(&node, &(1..=50).map(|i| item(i, Some("n"), i)).collect::<Vec<_>>());
    let status = wait_for("the target to report the missing column", || {
        let t = node.target("warehouse");
        t["last_error"].as_str().is_some_and(|e| e.contains("no column label")).then_some(t)
    });
    assert_eq!(status["state"], "retrying", "{status}");
    let error = status["last_error"].as_str().unwrap();
    assert!(error.contains("shop.items") && error.contains("ADD COLUMN \"label\" text"), "{error}");
    assert_eq!(target.psql("warehouse", "SELECT count(*) FROM shop.items"), "0");
    // `remix doctor` says the same.
    target.psql("warehouse", "ALTER TABLE shop.items ADD COLUMN label text");
    wait_for("the target to catch up", || {
        let t = node.target("warehouse");
        (t["lag_records"] == 0 && t["state"] == "running").then_some(())
    });
    let expected: Vec<String> = (1..=50).map(|i| expected_row(i, Some("n"), i)).collect();
    assert_eq!(items_at_target(&target), expected);
    node.stop();
}

#[test]
fn a_not_null_violation_pauses_on_the_record_and_resumes_after_the_fix() {
    let target = target_server();
    target.psql("warehouse", ITEMS_TABLE);
    target.psql("warehouse", "ALTER TABLE shop.items ALTER COLUMN label SET NOT NULL");
    let dir = tempfile::tempdir().unwrap();
    let mut node = webhook_node(dir.path(), &target, &webhook_config(false, "pause"));
    node.start();
    let mut items: Vec<Value> = (1..=300).map(|i| item(i, Some("ok"), i)).collect();
    items[136] = item(137, None, 137);
    post_items(&node, &items);
    let status = wait_for("the target to pause", || {
        let t = node.target("warehouse");
        (t["state"] == "paused").then_some(t)
    });
    let error = status["last_error"].as_str().unwrap();
    assert!(error.contains("offset 137 (item {\"item_id\":137})"), "the failing record is named: {error}");
    assert!(error.contains("null value in column \"label\"") && error.contains("23502"), "{error}");
    assert_eq!(status["cursor"], 0, "nothing of the batch is committed: {status}");
    assert_eq!(target.psql("warehouse", "SELECT count(*) FROM shop.items"), "0");
    target.psql("warehouse", "ALTER TABLE shop.items ALTER COLUMN label DROP NOT NULL");
    let out = node.cli(&["target", "resume", "warehouse"]);
    assert!(out.status.success(), "{out:?}");
    node.wait_caught_up("warehouse");
    let expected: Vec<String> = (1..=300)
        .map(|i| if i == 137 { expected_row(i, None, i) } else { expected_row(i, Some("ok"), i) })
        .collect();
    assert_eq!(items_at_target(&target), expected);
    node.stop();
}

#[test]
fn a_not_null_violation_dead_letters_the_record_and_applies_the_rest() {
    let target = target_server();
    target.psql("warehouse", ITEMS_TABLE);
    target.psql("warehouse", "ALTER TABLE shop.items ALTER COLUMN label SET NOT NULL");
    let dir = tempfile::tempdir().unwrap();
    let mut node = webhook_node(dir.path(), &target, &webhook_config(false, "dead_letter"));
    node.start();
    let bad = [5u64, 137, 138, 299];
    let items: Vec<Value> =
        (1..=300).map(|i| item(i, if bad.contains(&i) { None } else { Some("ok") }, i)).collect();
    post_items(&node, &items);
    node.wait_caught_up("warehouse");
    let expected: Vec<String> =
        (1..=300).filter(|i| !bad.contains(i)).map(|i| expected_row(i, Some("ok"), i)).collect();
    assert_eq!(items_at_target(&target), expected);
    let dlq = node.cli_json(&["dlq", "list"]);
    let mut offsets: Vec<u64> = dlq
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let message = d["errors"][0]["message"].as_str().unwrap();
            assert!(message.contains("null value in column \"label\""), "{d}");
            d["position"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    offsets.sort();
    assert_eq!(offsets, bad, "exactly the refused records are in the DLQ: {dlq}");
    assert_eq!(pair_cursor(&target), Some(300));
    node.stop();
}

fn pair_cursor(target: &PgServer) -> Option<u64> {
    cursor_at(&target.dsn("warehouse"))
}

fn cursor_at(dsn: &str) -> Option<u64> {
    let sql = "SELECT log_offset FROM remix_cursors WHERE target = 'warehouse'";
    remix_pgtest::psql_conninfo(dsn, sql, None).ok()?.parse().ok()
}

fn items_at(dsn: &str) -> Option<Vec<String>> {
    let sql = "SELECT concat_ws('|', item_id, coalesce(label, '~'), quantity, meta::text) FROM shop.items \
               ORDER BY item_id";
    let rows = remix_pgtest::psql_conninfo(dsn, sql, None).ok()?;
    Some(rows.lines().map(str::to_owned).collect())
}

/// Sends `batches` batches of items (ids wrap around, so later batches update), running `disturb`
/// after each; then waits until the target (at `dsn`) holds the last version of every item.
fn deliver_while(node: &Node, dsn: &str, batches: u64, mut disturb: impl FnMut(u64)) {
    let per_batch = 400;
    let ids = 1500;
    let mut last = std::collections::BTreeMap::new();
    for b in 0..batches {
        let items: Vec<Value> = (0..per_batch)
            .map(|j| {
                let id = (b * per_batch + j) % ids + 1;
                let qty = b * per_batch + j;
                last.insert(id, expected_row(id, Some("v"), qty));
                item(id, Some("v"), qty)
            })
            .collect();
        post_items(node, &items);
        disturb(b);
    }
    let expected: Vec<String> = last.into_values().collect();
    let total = batches * per_batch;
    wait_for("the target to hold every item's last version", || {
        (cursor_at(dsn) == Some(total) && items_at(dsn).as_ref() == Some(&expected)).then_some(())
    });
    assert_eq!(node.target("warehouse")["state"], "running");
}

#[test]
fn connections_terminated_mid_batch_lose_nothing() {
    let target = target_server();
    let dir = tempfile::tempdir().unwrap();
    let mut node = webhook_node(dir.path(), &target, &webhook_config(true, "pause"));
    node.start();
    let mut terminated = 0;
    deliver_while(&node, &target.dsn("warehouse"), 40, |_| {
        // Whenever the target has (re)connected, end its session: usually in the middle of a batch.
        terminated += wait_for("a session of the target", || {
            let out = target.psql(
                "warehouse",
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                   WHERE application_name = 'remix/warehouse'",
            );
            Some(out.parse::<u64>().unwrap()).filter(|&n| n > 0)
        });
    });
    assert!(terminated >= 40, "a session was terminated after every batch ({terminated})");
    node.stop();
}

#[test]
fn the_target_server_restarted_or_crashed_loses_nothing() {
    let mut target = target_server();
    let dsn = target.dsn("warehouse");
    let dir = tempfile::tempdir().unwrap();
    let mut node = webhook_node(dir.path(), &target, &webhook_config(true, "pause"));
    node.start();
    let mut restarts = 0;
    deliver_while(&node, &dsn, 12, |b| {
        if b % 3 == 1 {
            if b % 2 == 0 {
                target.kill();
            }
            target.restart();
            restarts += 1;
        }
    });
    assert_eq!(restarts, 4);
    node.stop();
}
