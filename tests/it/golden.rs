//! The golden data directory of Remix v0.1 (`tests/golden/v0.1/`, described in its README.md): a data
//! directory written by this release with every kind of file the node and the CLI write there, the
//! configuration that wrote it (`remix.yaml`), the jsonl targets' files (`dataset/`), and what the CLI
//! printed about it (`expected/`). It guards the on-disk state: a later build must read it as this
//! release did and carry on from where it stopped.
//!
//! [`golden_v0_1_reads_unchanged_and_continues`] copies it into a temp dir, checks the CLI's outputs
//! against `expected/` (only the absolute paths are normalised), then runs a node on it: retries are
//! still answered from the log with the old offsets, new records get the next offsets, the paused
//! target stays paused, the pending rewind is carried out, the request the http target and the Stripe
//! target had in flight is sent again as it was, the jsonl target goes on without a duplicate line, the
//! PostgreSQL source does not redo its snapshot and streams on, the DLQ is listed, retried and dropped.
//!
//! Regenerate with `cargo test --release --test it golden::regenerate -- --ignored --nocapture`
//! (replaces `data/`, `dataset/` and `expected/` beside `remix.yaml`). The point of the directory is
//! that it was written by v0.1: regenerate it only from the v0.1 release commit (e.g. to add a file
//! kind), never to make the test pass after a change elsewhere; a new on-disk version gets a new
//! directory beside it.

use crate::pg_source::SHOP_SCHEMA;
use crate::support::*;
use hmac::{Hmac, Mac};
use remix_pgtest::PgServer;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The Stripe source's signing secret in `remix.yaml`.
const STRIPE_SECRET: &str = "whsec_remix_golden";
/// Every target of `remix.yaml`.
const TARGETS: [&str; 5] = ["dataset", "archive", "api", "audit", "crm"];
/// The CLI outputs kept in `expected/`, and the arguments that print each (`$DATA_DIR` is replaced).
/// `dlq list` comes last: without a node it opens the logs for writing.
const OUTPUTS: [(&str, &[&str]); 7] = [
    ("log-verify.json", &["log", "verify", "--json"]),
    ("log-ls.json", &["log", "ls", "--json"]),
    ("log-stat.json", &["log", "stat", "--json"]),
    ("log-dump.jsonl", &["log", "dump", "--json"]),
    ("dlq-log-dump.jsonl", &["log", "dump", "--json", "--data-dir", "$DATA_DIR/dlq"]),
    ("target-list.json", &["target", "list", "--json"]),
    ("dlq-list.json", &["dlq", "list", "--json"]),
];
/// `created` of the first Stripe event (2026-11-18).
const STRIPE_T0: i64 = 1_795_000_000;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v0.1")
}

/// `remix.yaml` with its schema paths made absolute ([`Node`] writes the configuration elsewhere).
fn golden_config() -> String {
    let text =
        std::fs::read_to_string(golden_dir().join("remix.yaml")).expect("tests/golden/v0.1/remix.yaml");
    assert!(text.contains("../../../schemas/"), "remix.yaml no longer names ../../../schemas/");
    text.replace("../../../schemas/", &format!("{}/", schemas_dir().display()))
}

fn golden_node(root: &Path, pg: &PgServer, api: &TestApi, stripe: &FakeStripe) -> Node {
    let extra = [
        ("REMIX_PG_SOURCE", pg.dsn("shop")),
        ("REMIX_HTTP_API", api.url("")),
        ("REMIX_STRIPE_API", stripe.base.clone()),
    ];
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Node::new(root, &golden_config(), &extra)
}

/// `cp -a from/. to` (creating `to`).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let status = Command::new("cp").arg("-a").arg(from.join(".")).arg(to).status().expect("cp");
    assert!(status.success(), "cp -a {} {}", from.display(), to.display());
}

/// Runs [`OUTPUTS`] against the node's data directory (no node running): name and normalised text.
fn cli_outputs(node: &Node) -> Vec<(&'static str, String)> {
    let data_dir = node.data_dir.display().to_string();
    OUTPUTS
        .iter()
        .map(|(name, args)| {
            let args: Vec<String> = args.iter().map(|a| a.replace("$DATA_DIR", &data_dir)).collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = node.cli(&args);
            assert!(out.status.success(), "remix {args:?}: {out:?}");
            (*name, normalise(name, &stdout(&out), node))
        })
        .collect()
}

/// The paths of this run replaced by `$DATA_DIR` and `$ROOT`; a JSON document pretty-printed (a line
/// per field diffs well), JSON lines (`*.jsonl`) as printed.
fn normalise(name: &str, text: &str, node: &Node) -> String {
    let text = text
        .replace(&node.data_dir.display().to_string(), "$DATA_DIR")
        .replace(&node.root.display().to_string(), "$ROOT");
    if name.ends_with(".jsonl") {
        return text;
    }
    let value: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON ({e}): {text}"));
    serde_json::to_string_pretty(&value).unwrap() + "\n"
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Fails with the first line that differs.
fn assert_same_text(what: &str, expected: &str, actual: &str) {
    if expected == actual {
        return;
    }
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let at = e.iter().zip(&a).position(|(x, y)| x != y).unwrap_or(e.len().min(a.len()));
    panic!(
        "{what} differs from the golden one at line {} ({} lines expected, {} printed):\nexpected: {}\nprinted:  {}",
        at + 1,
        e.len(),
        a.len(),
        e.get(at).unwrap_or(&"<end>"),
        a.get(at).unwrap_or(&"<end>")
    );
}

/// Every record of the main log (`log dump --json`).
fn dump(node: &Node) -> Vec<Value> {
    let out = node.cli(&["log", "dump", "--json"]);
    assert!(out.status.success(), "log dump: {out:?}");
    json_lines(&stdout(&out))
}

/// The line a jsonl target writes for a `log dump` record (`{}` mapping).
fn jsonl_line(record: &Value) -> Value {
    match record["op"].as_str() {
        Some("upsert") => record["data"].clone(),
        Some("delete") => json!({"_op": "delete", "key": record["key"]}),
        Some("truncate") => json!({"_op": "truncate"}),
        other => panic!("op {other:?} in {record}"),
    }
}

/// A PostgreSQL LSN (`X/Y`) as a number.
fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}

// ---------------------------------------------------------------------------------------------------
// The APIs the targets deliver to.
// ---------------------------------------------------------------------------------------------------

/// A request the imitation of Stripe's API received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StripeRequest {
    method: String,
    /// With the query.
    path: String,
    form: String,
    key: Option<String>,
}

/// An imitation of the Stripe endpoints the `stripe` target uses for customers: create (ids
/// `<prefix><n>`), update, delete, and search, which finds nothing (every customer here is one the
/// target created, found through its journal). While `down`, every write is answered 500.
struct FakeStripe {
    base: String,
    requests: Arc<Mutex<Vec<StripeRequest>>>,
    down: Arc<AtomicBool>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeStripe {
    fn start(id_prefix: &'static str) -> FakeStripe {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let requests: Arc<Mutex<Vec<StripeRequest>>> = Arc::default();
        let down = Arc::new(AtomicBool::new(false));
        let created = Arc::new(AtomicU64::new(0));
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (r, d) = (Arc::clone(&requests), Arc::clone(&down));
        let handler = move |method: axum::http::Method,
                            uri: axum::http::Uri,
                            headers: axum::http::HeaderMap,
                            form: String| {
            let (requests, down, created) = (Arc::clone(&r), Arc::clone(&d), Arc::clone(&created));
            async move {
                let path = uri.path_and_query().map_or_else(String::new, |p| p.as_str().to_owned());
                let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
                let method = method.as_str().to_owned();
                let (status, answer) = stripe_answer(&method, &path, &down, &created, id_prefix);
                requests.lock().unwrap().push(StripeRequest { method, path, form, key });
                (axum::http::StatusCode::from_u16(status).unwrap(), axum::Json(answer))
            }
        };
        let router = axum::Router::new().fallback(handler);
        runtime.spawn(async move { axum::serve(listener, router).await.unwrap() });
        FakeStripe { base, requests, down, runtime: Some(runtime) }
    }

    fn requests(&self) -> Vec<StripeRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn stripe_answer(
    method: &str,
    path: &str,
    down: &AtomicBool,
    created: &AtomicU64,
    prefix: &str,
) -> (u16, Value) {
    if method != "GET" && down.load(Ordering::SeqCst) {
        return (500, json!({"error": {"type": "api_error", "message": "the golden API is down"}}));
    }
    let route = path.split('?').next().unwrap_or_default();
    match (method, route.strip_prefix("/v1/customers")) {
        ("GET", Some("/search")) => (200, json!({"object": "search_result", "data": [], "has_more": false})),
        ("POST", Some("")) => {
            let id = format!("{prefix}{}", created.fetch_add(1, Ordering::SeqCst) + 1);
            (200, json!({"id": id, "object": "customer"}))
        }
        ("POST", Some(id)) => (200, json!({"id": id.trim_start_matches('/'), "object": "customer"})),
        ("DELETE", Some(id)) => {
            (200, json!({"id": id.trim_start_matches('/'), "object": "customer", "deleted": true}))
        }
        _ => (404, json!({"error": {"type": "invalid_request_error", "message": "no such route"}})),
    }
}

/// `Stripe-Signature` for `body`, signed now.
fn sign(body: &[u8]) -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(STRIPE_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// Delivers a signed Stripe event to the node; expects 200 and returns the answer.
fn deliver_event(node: &Node, event: &Value) -> Value {
    let body = serde_json::to_vec(event).unwrap();
    let signature = sign(&body);
    let headers = [("Content-Type", "application/json"), ("Stripe-Signature", signature.as_str())];
    let response = http("POST", &node.webhook, "/stripe", &headers, &body).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

// ---------------------------------------------------------------------------------------------------
// The generator.
// ---------------------------------------------------------------------------------------------------

/// Rows the PostgreSQL source's initial snapshot copies; customer 10001's name is stored out of line
/// (TOAST), so an update of another column leaves it unchanged.
const GOLDEN_ROWS: &str = "
ALTER TABLE customers ALTER COLUMN full_name SET STORAGE EXTERNAL;
INSERT INTO customers VALUES (10001, 'c10001@example.com',
  (SELECT string_agg(md5('golden' || i), '') FROM generate_series(1, 80) i), '2026-11-24 10:00:01+00');
INSERT INTO customers SELECT i, 'c' || i || '@example.com', 'Customer ' || i,
  timestamptz '2026-11-24 10:00:00+00' + (i - 10000) * interval '1 second' FROM generate_series(10002, 10005) i;
INSERT INTO orders SELECT i, 10001 + i % 5, i * 7, 'paid' FROM generate_series(10001, 10005) i;";

/// Changes streamed after the snapshot: an insert, a partial update (the TOASTed name unchanged), a
/// delete, a row the order schema refuses (dead-lettered), a truncate and inserts after it.
const GOLDEN_CHANGES: &str = "
INSERT INTO customers VALUES (10006, 'c10006@example.com', 'Customer 10006', '2026-11-24 10:00:06+00');
UPDATE customers SET email = 'new10001@example.com' WHERE id = 10001;
DELETE FROM customers WHERE id = 10005;
INSERT INTO orders VALUES (10006, 10001, 4200, 'lost');
TRUNCATE orders;
INSERT INTO orders SELECT i, 10002, i, 'pending' FROM generate_series(10010, 10012) i;";

fn customers(ids: std::ops::RangeInclusive<u64>) -> Value {
    ids.map(|id| {
        json!({"id": id, "email": format!("c{id}@example.com"), "name": format!("Customer {id}"),
            "created_at": 1_795_000_000 + id})
    })
    .collect()
}

fn order(id: u64) -> Value {
    let status = ["pending", "paid", "shipped"][(id % 3) as usize];
    json!({"id": id, "customer_id": id % 40 + 1, "amount": id * 13 % 10_000, "status": status})
}

/// Posts orders `first..first + count`, 25 per request, without idempotency keys.
fn post_orders(node: &Node, first: u64, count: u64) {
    let ids: Vec<u64> = (first..first + count).collect();
    for chunk in ids.chunks(25) {
        let body: Value = chunk.iter().map(|&id| order(id)).collect();
        let response = node.post("/orders", &[], &body).unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
    }
}

/// A `customer.*` event of the customer with `metadata.customer_id` `id`.
fn stripe_event(n: u64, kind: &str, created: i64, id: u64, email: Value) -> Value {
    json!({"id": format!("evt_golden_{n}"), "object": "event", "type": kind, "created": created,
        "livemode": false, "api_version": "2024-06-20", "pending_webhooks": 1,
        "data": {"object": {"id": format!("cus_src{id}"), "object": "customer", "email": email,
            "name": format!("Stripe customer {id} ({kind})"), "metadata": {"customer_id": id.to_string()}}}})
}

/// The requests sent while generating, with their answers (the test sends them again).
#[derive(Default)]
struct Transcript {
    webhook: Vec<Value>,
    stripe: Vec<Value>,
}

impl Transcript {
    fn post(
        &mut self,
        node: &Node,
        route: &str,
        headers: &[(&str, &str)],
        body: Value,
        status: u16,
    ) -> Value {
        let response = node.post(route, headers, &body).unwrap();
        assert_eq!(response.status, status, "POST {route} {body}: {}", response.text());
        let answer = response.json();
        let headers: Map<String, Value> = headers.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
        self.webhook.push(json!({"route": route, "headers": headers, "body": body, "status": status,
            "answer": answer}));
        answer
    }

    fn event(&mut self, node: &Node, event: Value) -> Value {
        let answer = deliver_event(node, &event);
        self.stripe.push(json!({"event": event, "answer": answer}));
        answer
    }
}

/// The generation's http API: `/api` refuses (400) a request holding a customer of `refuse` (once
/// alone in a request, it is taken out: the retried dead letter passes), and answers 503 to
/// everything while `down`; `/audit` takes everything.
fn api_status(path: &str, body: &Value, refuse: &Mutex<BTreeSet<u64>>, down: &AtomicBool) -> u16 {
    if path != "/api" {
        return 200;
    }
    if down.load(Ordering::SeqCst) {
        return 503;
    }
    let records = body["records"].as_array().cloned().unwrap_or_default();
    let mut refuse = refuse.lock().unwrap();
    let refused: Vec<u64> = records
        .iter()
        .filter(|r| r["model"] == "customer")
        .filter_map(|r| r["key"]["customer_id"].as_u64().or(r["key"]["id"].as_u64()))
        .filter(|id| refuse.contains(id))
        .collect();
    match refused.as_slice() {
        [] => 200,
        [id] if records.len() == 1 => {
            refuse.remove(id);
            400
        }
        _ => 400,
    }
}

/// The newest segment of the main log.
fn newest_segment(data_dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(data_dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    segments.pop().expect("a segment")
}

fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(bytes).unwrap();
    file.sync_all().unwrap();
}

fn wait_caught_up_all(node: &Node, targets: &[&str]) {
    for target in targets {
        node.wait_caught_up(target);
    }
}

/// The id of the one open dead letter that `matches`.
fn dead_letter(node: &Node, what: &str, matches: impl Fn(&Value) -> bool) -> u64 {
    let list = node.cli_json(&["dlq", "list"]);
    let found: Vec<u64> =
        list.as_array().unwrap().iter().filter(|e| matches(e)).map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!(found.len(), 1, "{what}: {list}");
    found[0]
}

#[test]
#[ignore = "writes tests/golden/v0.1 (see the module docs)"]
fn regenerate() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = PgServer::start();
    let api = TestApi::start();
    let stripe = FakeStripe::start("cus_golden_");
    let refuse: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let api_down = Arc::new(AtomicBool::new(false));
    {
        let (refuse, down) = (Arc::clone(&refuse), Arc::clone(&api_down));
        api.respond(move |path, _key, body| api_status(path, body, &refuse, &down));
    }
    let mut node = golden_node(tmp.path(), &pg, &api, &stripe);
    let mut t = Transcript::default();

    // 1. A segment's worth of orders that every target applies. The source's database does not
    //    exist yet (the source retries), so its snapshot comes after them and stays in the log.
    node.start_live();
    post_orders(&node, 1, 400);
    wait_caught_up_all(&node, &TARGETS);
    node.stop();

    // 2. Retention at the next start removes the sealed segments every target has passed (log/start);
    //    then the source's initial snapshot.
    std::thread::sleep(Duration::from_millis(1500));
    node.start_live();
    wait_for("retention to move the log's start", || {
        (node.log_stat()["first_offset"].as_u64()? > 1).then_some(())
    });
    assert!(node.data_dir.join("log/start").is_file());
    pg.create_db("shop");
    pg.psql("shop", SHOP_SCHEMA);
    pg.psql("shop", GOLDEN_ROWS);
    wait_for("the initial snapshot", || node.snapshot_done("shop_db").then_some(()));
    wait_caught_up_all(&node, &TARGETS);
    node.cli_json(&["target", "pause", "archive"]);
    let archive_cursor = node.target("archive")["cursor"].as_u64().unwrap();

    // 3. Every kind of record and dead letter.
    *refuse.lock().unwrap() = BTreeSet::from([7, 8]);
    for (n, ids) in [(1, 1..=4), (2, 5..=8), (3, 9..=12)] {
        let key = format!("golden-customers-{n}");
        t.post(&node, "/customers", &[("Idempotency-Key", &key)], customers(ids), 200);
    }
    let again =
        t.post(&node, "/customers", &[("Idempotency-Key", "golden-customers-1")], customers(1..=4), 200);
    assert_eq!(again["duplicate"], true, "{again}");
    let with_request_ids = |ids: &[u64]| -> Value {
        ids.iter()
            .map(|&id| {
                let mut o = order(id);
                o["request_id"] = json!(format!("golden-order-{id}"));
                o
            })
            .collect()
    };
    t.post(&node, "/orders", &[], with_request_ids(&[501, 502, 503, 504, 505, 506, 507, 508, 509, 510]), 200);
    let mixed = t.post(&node, "/orders", &[], with_request_ids(&[505, 511]), 200);
    assert_eq!(mixed["accepted"], 2, "{mixed}");
    t.post(&node, "/customers", &[("X-Remix-Op", "delete")], json!([{"id": 3}]), 200);
    t.post(&node, "/orders", &[], json!([{"id": 502, "deleted": true}]), 200);
    t.post(&node, "/customers", &[], json!([{"id": "x1", "email": "x1@example.com"}]), 422);
    t.post(&node, "/customers", &[], json!([{"id": 901, "name": "no email"}]), 422);
    t.post(&node, "/orders", &[], json!([{"id": 902, "customer_id": 1, "amount": 5, "status": "lost"}]), 422);

    let answers = [
        t.event(&node, stripe_event(1, "customer.created", STRIPE_T0, 20001, json!("s20001@example.com"))),
        t.event(
            &node,
            stripe_event(2, "customer.updated", STRIPE_T0 + 20, 20001, json!("s20001@example.com")),
        ),
        t.event(&node, stripe_event(3, "customer.updated", STRIPE_T0 + 10, 20001, json!("old@example.com"))),
        t.event(&node, stripe_event(4, "customer.created", STRIPE_T0, 20002, json!("s20002@example.com"))),
        t.event(
            &node,
            stripe_event(5, "customer.deleted", STRIPE_T0 + 30, 20002, json!("s20002@example.com")),
        ),
        t.event(&node, stripe_event(6, "customer.created", STRIPE_T0, 20003, Value::Null)),
    ];
    let outcomes: Vec<&str> = answers.iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["logged", "logged", "stale", "logged", "logged", "dead_lettered"]);

    pg.psql("shop", GOLDEN_CHANGES);
    wait_for("the PostgreSQL changes", || {
        dump(&node).iter().any(|r| r["source"] == "shop_db" && r["key"]["id"] == 10012).then_some(())
    });
    post_orders(&node, 1001, 1000);
    wait_for("the api target's dead letters", || {
        let list = node.cli_json(&["dlq", "list"]);
        let targets = list.as_array()?.iter().filter(|e| e["source"] == "api").count();
        (targets == 2).then_some(())
    });
    wait_caught_up_all(&node, &["dataset", "api", "audit", "crm"]);
    let is_api = |id: u64| move |e: &Value| e["source"] == "api" && e["input"]["key"]["customer_id"] == id;
    let retried = dead_letter(&node, "customer 7 refused by api", is_api(7));
    let answer = node.cli_json(&["dlq", "retry", &retried.to_string()]);
    assert_eq!(answer["result"], "logged", "{answer}");
    let dropped = dead_letter(&node, "customer 901", |e| e["input"]["id"] == 901);
    node.cli_json(&["dlq", "drop", &dropped.to_string()]);
    wait_caught_up_all(&node, &["dataset", "api", "audit", "crm"]);
    node.stop();

    // 4. A torn tail, as a power loss leaves the unsynced end of the newest segment: the next start
    //    cuts it off into quarantine/.
    append(&newest_segment(&node.data_dir), &[0u8; 512]);
    node.start();
    assert!(node.output().contains("cut a torn tail"), "no torn tail cut:\n{}", node.output());

    // 5. The http and Stripe targets left with a request that has no answer.
    api_down.store(true, Ordering::SeqCst);
    stripe.down.store(true, Ordering::SeqCst);
    let last = t.post(&node, "/customers", &[("Idempotency-Key", "golden-final")], customers(41..=43), 200);
    let last = last["offsets"][2].as_u64().unwrap();
    wait_caught_up_all(&node, &["dataset", "audit"]);
    wait_for("the api request in flight", || {
        let inflight = std::fs::read(node.data_dir.join("targets/api.inflight")).ok()?;
        let inflight: Value = serde_json::from_slice(&inflight).ok()?;
        (inflight["last_offset"] == last && node.target("api")["state"] == "retrying").then_some(())
    });
    wait_for("the Stripe request without an answer", || {
        let journal = std::fs::read_to_string(node.data_dir.join("targets/crm.stripe")).ok()?;
        let line: Value = serde_json::from_str(journal.lines().last()?).ok()?;
        (line["send"]["offset"].as_u64()? > last - 3 && node.target("crm")["state"] == "retrying")
            .then_some(())
    });
    node.stop();

    // 6. A rewind recorded while no node runs, carried out at the next start.
    let records = dump(&node);
    let rewind_to = records
        .iter()
        .filter(|r| r["model"] == "order" && r["offset"].as_u64().unwrap() > archive_cursor)
        .nth(20)
        .map(|r| r["offset"].as_u64().unwrap() - 1)
        .unwrap();
    node.cli_json(&["target", "rewind", "audit", "--to-offset", &rewind_to.to_string()]);
    let state = read_json(&node.data_dir.join("targets/audit.json"));
    assert_eq!(state["rewind_to"], rewind_to, "{state}");

    // The directory must not move at the test's start: retention there removes nothing (every sealed
    // segment holds a record after the lowest cursor, the paused archive's).
    let ls = node.cli_json(&["log", "ls"]);
    let lowest = archive_cursor.min(rewind_to);
    for segment in ls.as_array().unwrap().iter().filter(|s| s["sealed"] == true) {
        assert!(segment["last_offset"].as_u64().unwrap() > lowest, "{segment} would go at the next start");
    }
    let sealed = ls.as_array().unwrap().iter().filter(|s| s["sealed"] == true).count();
    assert!(sealed >= 3, "{sealed} sealed segments");

    // 7. Out into the repository, and what the CLI prints about it.
    let out = golden_dir();
    for sub in ["data", "dataset", "expected"] {
        match std::fs::remove_dir_all(out.join(sub)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("{sub}: {e}"),
            _ => {}
        }
    }
    copy_dir(&node.data_dir, &out.join("data"));
    copy_dir(&node.dataset_dir, &out.join("dataset"));
    let check = tempfile::tempdir().unwrap();
    let copy = golden_node(check.path(), &pg, &api, &stripe);
    copy_dir(&out.join("data"), &copy.data_dir);
    copy_dir(&out.join("dataset"), &copy.dataset_dir);
    std::fs::create_dir_all(out.join("expected")).unwrap();
    for (name, text) in cli_outputs(&copy) {
        std::fs::write(out.join("expected").join(name), text).unwrap();
    }
    let id_of = |what: &str, f: &dyn Fn(&Value) -> bool| dead_letter(&copy, what, f);
    let dead_letters = json!({
        "retried": retried,
        "dropped": dropped,
        "target": id_of("customer 8 refused by api", &is_api(8)),
        "webhook_customer": id_of("customer x1", &|e| e["input"]["id"] == "x1"),
        "webhook_order": id_of("order 902", &|e| e["input"]["id"] == 902),
        "stripe": id_of("the Stripe customer 20003", &|e| e["source"] == "billing"),
        "postgres": id_of("order 10006", &|e| e["source"] == "shop_db"),
    });
    let generation = json!({
        "webhook": t.webhook, "stripe": t.stripe, "rewind_to": rewind_to, "archive_cursor": archive_cursor,
        "dead_letters": dead_letters,
    });
    let text = serde_json::to_string_pretty(&generation).unwrap() + "\n";
    std::fs::write(out.join("expected/generation.json"), text).unwrap();
    eprintln!("golden directory written to {}", out.display());
}

// ---------------------------------------------------------------------------------------------------
// The test.
// ---------------------------------------------------------------------------------------------------

#[test]
fn golden_v0_1_reads_unchanged_and_continues() {
    let golden = golden_dir();
    let expected = golden.join("expected");
    let generation = read_json(&expected.join("generation.json"));
    let tmp = tempfile::tempdir().unwrap();
    // A new server: the source's state file says the initial snapshot is done, so this row must not
    // be copied.
    let pg = PgServer::start();
    pg.create_db("shop");
    pg.psql("shop", SHOP_SCHEMA);
    pg.psql("shop", "INSERT INTO customers VALUES (10001, 'not-copied@example.com', 'Not copied', NULL)");
    let api = TestApi::start();
    let stripe = FakeStripe::start("cus_after_");
    let mut node = golden_node(tmp.path(), &pg, &api, &stripe);
    copy_dir(&golden.join("data"), &node.data_dir);
    copy_dir(&golden.join("dataset"), &node.dataset_dir);

    // 1. The CLI reads the directory as the release did.
    for (name, text) in cli_outputs(&node) {
        assert_same_text(name, &read(&expected.join(name)), &text);
    }
    let golden_records = json_lines(&read(&expected.join("log-dump.jsonl")));
    let last = read_json(&expected.join("log-stat.json"))["last_offset"].as_u64().unwrap();
    let cursors: BTreeMap<String, u64> = read_json(&expected.join("target-list.json"))
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_owned(), t["cursor"].as_u64().unwrap()))
        .collect();
    let inflight = read_json(&golden.join("data/targets/api.inflight"));
    let journal = json_lines(&read(&golden.join("data/targets/crm.stripe")));
    let pending = journal.last().unwrap()["send"].clone();
    assert!(pending.is_object(), "the Stripe journal ends with a request without an answer: {pending}");
    let customer_1_id = journal
        .iter()
        .rev()
        .find_map(|e| {
            let entry = e.get("done").or(e.get("id"))?;
            (entry["key"] == "customer 1").then(|| entry["id"].as_str().map(str::to_owned))?
        })
        .expect("the journal holds the Stripe id of customer 1");
    let rewind_to = generation["rewind_to"].as_u64().unwrap();
    let golden_dlq: Vec<Value> = read_json(&expected.join("dlq-list.json")).as_array().unwrap().clone();
    let dataset_dir = node.dataset_dir.join("dataset");
    let golden_lines = |model: &str| dataset_lines(&dataset_dir, model);
    let golden_dataset = (golden_lines("customer"), golden_lines("order"));
    let golden_archive = dataset_lines(&node.dataset_dir.join("archive"), "order");

    node.start();

    // 2. Retries are answered from the log: the Idempotency-Key header and the idempotency field with
    //    the offsets they got; a repeated refused request adds no dead letter; Stripe events by id.
    let mut replayed = BTreeMap::from([("keyed", 0), ("fielded", 0), ("refused", 0)]);
    for entry in generation["webhook"].as_array().unwrap() {
        let headers: Vec<(&str, &str)> = entry["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
            .collect();
        let keyed = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("idempotency-key"));
        let fielded =
            entry["body"].as_array().is_some_and(|b| b.iter().all(|o| o.get("request_id").is_some()));
        // A refused request is sent again only while its dead letter is open (a dropped one's objects
        // would rightly be dead-lettered again).
        let refused = entry["status"] == 422;
        let open = |e: &Value| entry["body"].as_array().is_some_and(|b| b.contains(&e["input"]));
        if refused && !golden_dlq.iter().any(open) {
            continue;
        }
        if !(keyed || fielded || refused) {
            continue;
        }
        let route = entry["route"].as_str().unwrap();
        let response = node.post(route, &headers, &entry["body"]).unwrap();
        assert_eq!(response.status, entry["status"], "again {entry}: {}", response.text());
        let answer = response.json();
        if !refused {
            assert_eq!(answer["offsets"], entry["answer"]["offsets"], "again {entry}: {answer}");
        }
        if keyed {
            assert_eq!(answer["duplicate"], true, "again {entry}: {answer}");
        }
        let kind = if keyed {
            "keyed"
        } else if fielded {
            "fielded"
        } else {
            "refused"
        };
        *replayed.get_mut(kind).unwrap() += 1;
    }
    assert_eq!(
        replayed,
        BTreeMap::from([("keyed", 5), ("fielded", 2), ("refused", 2)]),
        "requests sent again"
    );
    for entry in generation["stripe"].as_array().unwrap() {
        let answer = deliver_event(&node, &entry["event"]);
        let before = &entry["answer"];
        match before["outcome"].as_str().unwrap() {
            "logged" => {
                assert_eq!(answer["outcome"], "duplicate", "{answer}");
                assert_eq!(answer["offset"], before["offset"], "{answer}");
            }
            "stale" => assert_eq!(answer["outcome"], "stale", "{answer}"),
            "dead_lettered" => assert_eq!(answer["outcome"], "duplicate", "{answer}"),
            other => panic!("outcome {other}"),
        }
    }
    let logged: Vec<Value> =
        dump(&node).into_iter().filter(|r| r["offset"].as_u64().unwrap() > last).collect();
    assert!(logged.is_empty(), "logged since the start (a retry, or a snapshot copied again): {logged:?}");

    // 3. The DLQ as it was, through the node.
    let dlq = node.cli_json(&["dlq", "list"]);
    assert_eq!(dlq, Value::Array(golden_dlq.clone()), "dlq list through the node");

    // 4. New records get the next offsets.
    let mut updated = customers(1..=1);
    updated[0]["name"] = json!("Customer 1, renamed after the restart");
    let body = Value::Array(vec![updated[0].clone(), customers(50..=50)[0].clone()]);
    let answer = node.post("/customers", &[("Idempotency-Key", "after-1")], &body).unwrap().json();
    assert_eq!(answer["offsets"], json!([last + 1, last + 2]), "{answer}");
    let orders: Value = (2001..=2005).map(order).collect();
    let answer = node.post("/orders", &[], &orders).unwrap().json();
    assert_eq!(answer["offsets"], json!([last + 3, last + 4, last + 5, last + 6, last + 7]), "{answer}");

    // 5. The DLQ's entries can be retried and dropped: the target's dead letter is logged again (next
    //    offset); a source's invalid input is still invalid; a dropped one is gone.
    let ids = &generation["dead_letters"];
    let retried = node.cli_json(&["dlq", "retry", &ids["target"].to_string()]);
    assert_eq!(retried, json!({"result": "logged", "id": ids["target"], "offset": last + 8}));
    let invalid = node.cli_json(&["dlq", "retry", &ids["webhook_order"].to_string()]);
    assert_eq!(invalid["result"], "invalid", "{invalid}");
    node.cli_json(&["dlq", "drop", &ids["webhook_customer"].to_string()]);
    let mut open = golden_dlq.clone();
    open.retain(|e| e["id"] != ids["target"] && e["id"] != ids["webhook_customer"]);
    assert_eq!(node.cli_json(&["dlq", "list"]), Value::Array(open));

    // 6. The PostgreSQL source streams on (its positions past the last one logged; a new server starts
    //    lower, so WAL is switched until it is past) and did not copy its tables again.
    let golden_lsn = golden_records
        .iter()
        .filter(|r| r["source"] == "shop_db")
        .filter_map(|r| {
            let position = r["position"].as_str()?;
            parse_lsn(position.strip_prefix("snapshot:").unwrap_or(position).split(':').next()?)
        })
        .max()
        .unwrap();
    for _ in 0..32 {
        if parse_lsn(&pg.psql("shop", "SELECT pg_current_wal_lsn()")).unwrap() > golden_lsn {
            break;
        }
        pg.psql("shop", "CREATE TABLE IF NOT EXISTS filler (x int); INSERT INTO filler VALUES (1); SELECT pg_switch_wal()");
    }
    pg.psql("shop", "INSERT INTO customers VALUES (10100, 'c10100@example.com', 'After the restart', NULL)");
    wait_for("the streamed insert", || {
        dump(&node).iter().any(|r| r["source"] == "shop_db" && r["key"]["id"] == 10100).then_some(())
    });

    // 7. Every target goes on from where it was.
    wait_caught_up_all(&node, &["dataset", "api", "audit", "crm"]);
    let records = dump(&node);
    assert_eq!(&records[..golden_records.len()], golden_records.as_slice(), "the golden records");
    let new: Vec<&Value> = records[golden_records.len()..].iter().collect();
    let shop_db: Vec<&Value> = new.iter().copied().filter(|r| r["source"] == "shop_db").collect();
    assert_eq!(shop_db.len(), 1, "the PostgreSQL source logged more than the insert: {shop_db:?}");

    // The paused target stays paused where it was.
    let archive = node.target("archive");
    assert_eq!(archive["state"], "paused", "{archive}");
    assert_eq!(archive["cursor"], cursors["archive"], "{archive}");
    assert_eq!(dataset_lines(&node.dataset_dir.join("archive"), "order"), golden_archive);

    // The pending rewind was carried out: audit got every order after the offset again, once.
    let audit_requests: Vec<Received> = api.received().into_iter().filter(|r| r.path == "/audit").collect();
    assert!(!audit_requests.is_empty(), "audit received nothing");
    assert_eq!(audit_requests[0].body["first_offset"], rewind_to + 1, "the first request after the rewind");
    let audit_offsets: Vec<u64> =
        api.delivered("/audit", "audit").iter().map(|r| r["offset"].as_u64().unwrap()).collect();
    let orders_after: Vec<u64> = records
        .iter()
        .filter(|r| r["model"] == "order" && r["offset"].as_u64().unwrap() > rewind_to)
        .map(|r| r["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(audit_offsets, orders_after, "audit after its rewind");
    let state = read_json(&node.data_dir.join("targets/audit.json"));
    assert!(state.get("rewind_to").is_none(), "the rewind is still pending: {state}");

    // The http target sent its request in flight again, as it was, then went on.
    let api_requests: Vec<Received> = api.received().into_iter().filter(|r| r.path == "/api").collect();
    assert!(!api_requests.is_empty(), "api received nothing");
    let first_offset = inflight["first_offset"].as_u64().unwrap();
    let last_offset = inflight["last_offset"].as_u64().unwrap();
    assert_eq!(api_requests[0].key, format!("api:{first_offset}-{last_offset}"));
    let inflight_body: Value = serde_json::from_str(inflight["body"].as_str().unwrap()).unwrap();
    assert_eq!(api_requests[0].body, inflight_body, "the request in flight, sent again");
    let api_offsets: Vec<u64> =
        api.delivered("/api", "api").iter().map(|r| r["offset"].as_u64().unwrap()).collect();
    let expected_api: Vec<u64> = records
        .iter()
        .filter(|r| r.get("op").is_some() && r["offset"].as_u64().unwrap() >= first_offset)
        .map(|r| r["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(api_offsets, expected_api, "api after the restart");
    assert_eq!(cursors["api"], first_offset - 1, "the api target's cursor was before its request in flight");

    // The Stripe target sent its request without an answer again, byte for byte, and found the
    // customers it created in its journal (no search for them).
    let requests = stripe.requests();
    let first = requests.first().expect("the Stripe target sent nothing");
    let sent = StripeRequest {
        method: pending["method"].as_str().unwrap().to_owned(),
        path: pending["path"].as_str().unwrap().to_owned(),
        form: pending["form"].as_str().unwrap_or_default().to_owned(),
        key: pending["idempotency_key"].as_str().map(str::to_owned),
    };
    assert_eq!(first, &sent, "the first Stripe request after the restart");
    let update = format!("/v1/customers/{customer_1_id}");
    assert!(requests.iter().any(|r| r.method == "POST" && r.path == update), "{requests:#?}");
    let search_1 = |r: &StripeRequest| r.path.contains("/search") && r.path.contains("%271%27");
    assert!(!requests.iter().any(search_1), "customer 1 was searched for: {requests:#?}");

    // The jsonl target: its files as they were, then the new records' lines, none twice.
    let dataset_cursor = cursors["dataset"];
    assert_eq!(dataset_cursor, last, "the dataset target was caught up");
    for (model, before) in [("customer", &golden_dataset.0), ("order", &golden_dataset.1)] {
        let lines: Vec<Value> =
            golden_lines(model).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        let mut expected: Vec<Value> = before.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        expected.extend(new.iter().filter(|r| r["model"] == model).map(|r| jsonl_line(r)));
        assert_eq!(lines, expected, "the dataset's {model} lines");
    }

    node.verify_log();
    node.stop();
}
