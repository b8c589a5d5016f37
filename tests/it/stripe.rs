//! The Stripe source and target through the real binary, against a local server that imitates
//! Stripe's API: the Events API (newest first, `limit`, `starting_after`, `ending_before`,
//! `created[gte]`, 429 with `Retry-After`), and the customer endpoints (create, update, delete,
//! search, idempotency keys answered as Stripe does). Webhooks are signed here with HMAC-SHA256
//! directly, not with Remix's code.

use crate::support::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "whsec_remix_test";
const API_KEY: &str = "sk_test_remix";

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// `Stripe-Signature` for `body`, signed now.
fn sign(body: &[u8], secret: &str) -> String {
    let t = now();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// A `customer.*` event for the customer whose `metadata.remix_id` is `remix_id`.
fn customer_event(id: &str, kind: &str, created: i64, remix_id: u64, email: Value, name: &str) -> Value {
    json!({"id": id, "object": "event", "type": kind, "created": created, "livemode": false,
        "api_version": "2024-06-20", "pending_webhooks": 1,
        "data": {"object": {"id": format!("cus_src{remix_id}"), "object": "customer", "email": email,
            "name": name, "metadata": {"remix_id": remix_id.to_string()}}}})
}

fn email(remix_id: u64) -> Value {
    json!(format!("c{remix_id}@example.com"))
}

/// Posts a signed event to the node's Stripe route.
fn deliver(addr: &str, event: &Value) -> std::io::Result<Response> {
    let body = serde_json::to_vec(event).unwrap();
    let signature = sign(&body, SECRET);
    http(
        "POST",
        addr,
        "/stripe",
        &[("Content-Type", "application/json"), ("Stripe-Signature", &signature)],
        &body,
    )
}

fn deliver_ok(node: &Node, event: &Value) -> Value {
    let response = deliver(&node.webhook, event).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

// ---------------------------------------------------------------------------------------------------
// The imitation of Stripe's API.
// ---------------------------------------------------------------------------------------------------

/// A request to an object endpoint, and the status it was answered.
#[derive(Debug, Clone)]
struct ObjectRequest {
    method: String,
    path: String,
    form: String,
    key: Option<String>,
    status: u16,
}

#[derive(Debug, Default)]
struct Account {
    /// Oldest first.
    events: Vec<Value>,
    /// The next this many requests to the Events API / to object endpoints are answered 429.
    throttle_events: usize,
    throttle_objects: usize,
    throttled_events: usize,
    throttled_objects: usize,
    /// The query strings of `GET /v1/events`, in order.
    event_queries: Vec<String>,
    /// Customers by id: their form fields (`email`, `metadata[remix_id]`, ...).
    customers: BTreeMap<String, BTreeMap<String, String>>,
    created: u64,
    requests: Vec<ObjectRequest>,
    /// Idempotency key -> (method path form, status, answer).
    idempotent: HashMap<String, (String, u16, Value)>,
}

struct FakeStripe {
    base: String,
    account: Arc<Mutex<Account>>,
    runtime: Option<tokio::runtime::Runtime>,
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn parse_form(text: &str) -> BTreeMap<String, String> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn stripe_error(status: u16, kind: &str, message: &str) -> (u16, Value) {
    (status, json!({"error": {"type": kind, "message": message}}))
}

impl Account {
    fn list_events(&self, query: &BTreeMap<String, String>) -> (u16, Value) {
        let limit: usize = query.get("limit").map_or(10, |l| l.parse().unwrap());
        let gte: i64 = query.get("created[gte]").map_or(i64::MIN, |c| c.parse().unwrap());
        let list: Vec<&Value> =
            self.events.iter().rev().filter(|e| e["created"].as_i64().unwrap() >= gte).collect();
        let find = |id: &str| list.iter().position(|e| e["id"] == id);
        let (page, has_more): (Vec<&Value>, bool) =
            match (query.get("starting_after"), query.get("ending_before")) {
                (Some(after), None) => {
                    let Some(at) = find(after) else {
                        return stripe_error(404, "invalid_request_error", "No such event");
                    };
                    let rest = &list[at + 1..];
                    (rest.iter().take(limit).copied().collect(), rest.len() > limit)
                }
                (None, Some(before)) => {
                    let Some(at) = find(before) else {
                        return stripe_error(404, "invalid_request_error", "No such event");
                    };
                    let newer = &list[..at];
                    (newer[newer.len().saturating_sub(limit)..].to_vec(), newer.len() > limit)
                }
                (None, None) => (list.iter().take(limit).copied().collect(), list.len() > limit),
                _ => return stripe_error(400, "invalid_request_error", "both cursors"),
            };
        (200, json!({"object": "list", "url": "/v1/events", "has_more": has_more, "data": page}))
    }

    fn customer(&self, id: &str) -> Value {
        let fields = &self.customers[id];
        json!({"id": id, "object": "customer", "fields": fields})
    }

    /// An object request, with Stripe's idempotency rules for `POST`.
    fn object_request(&mut self, method: &str, path: &str, form: &str, key: Option<&str>) -> (u16, Value) {
        let fingerprint = format!("{method} {path} {form}");
        if let Some(key) = key {
            if let Some((first, status, answer)) = self.idempotent.get(key) {
                if *first != fingerprint {
                    return stripe_error(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same parameters",
                    );
                }
                return (*status, answer.clone());
            }
        }
        let answer = self.execute(method, path, form);
        if let (Some(key), "POST") = (key, method) {
            self.idempotent.insert(key.to_owned(), (fingerprint, answer.0, answer.1.clone()));
        }
        answer
    }

    fn execute(&mut self, method: &str, path: &str, form: &str) -> (u16, Value) {
        let id = path.strip_prefix("/v1/customers/").map(str::to_owned);
        match (method, id) {
            ("POST", None) => {
                self.created += 1;
                let id = format!("cus_{}", self.created);
                self.customers.insert(id.clone(), parse_form(form));
                (200, self.customer(&id))
            }
            ("POST", Some(id)) => match self.customers.get_mut(&id) {
                Some(fields) => {
                    fields.extend(parse_form(form));
                    (200, self.customer(&id))
                }
                None => stripe_error(404, "invalid_request_error", "No such customer"),
            },
            ("DELETE", Some(id)) => match self.customers.remove(&id) {
                Some(_) => (200, json!({"id": id, "object": "customer", "deleted": true})),
                None => stripe_error(404, "invalid_request_error", "No such customer"),
            },
            _ => stripe_error(404, "invalid_request_error", "Unrecognized request URL"),
        }
    }

    fn search(&self, query: &str) -> (u16, Value) {
        // metadata['remix_id']:'7'
        let field = query.split('\'').nth(1).unwrap_or_default();
        let value = query.split('\'').nth(3).unwrap_or_default();
        let form_key = format!("metadata[{field}]");
        let found: Vec<Value> = self
            .customers
            .iter()
            .filter(|(_, fields)| fields.get(&form_key).map(String::as_str) == Some(value))
            .map(|(id, _)| self.customer(id))
            .collect();
        (200, json!({"object": "search_result", "data": found, "has_more": false}))
    }

    /// The customers by `metadata[remix_id]`: `(email, name)`.
    fn by_remix_id(&self) -> BTreeMap<u64, (String, String)> {
        self.customers
            .values()
            .map(|f| {
                let id = f["metadata[remix_id]"].parse().unwrap();
                (id, (f["email"].clone(), f.get("name").cloned().unwrap_or_default()))
            })
            .collect()
    }
}

impl FakeStripe {
    fn start() -> FakeStripe {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let account: Arc<Mutex<Account>> = Arc::default();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::clone(&account);
        let handler = move |method: axum::http::Method,
                            uri: axum::http::Uri,
                            headers: axum::http::HeaderMap,
                            body: axum::body::Bytes| {
            let account = Arc::clone(&shared);
            async move {
                let (status, answer, throttled) = answer(&account, &method, &uri, &headers, &body);
                let status = axum::http::StatusCode::from_u16(status).unwrap();
                let retry = if throttled { "1" } else { "0" };
                (status, [("retry-after", retry), ("content-type", "application/json")], answer.to_string())
            }
        };
        let router = axum::Router::new().fallback(handler);
        runtime.spawn(async move { axum::serve(listener, router).await.unwrap() });
        FakeStripe { base, account, runtime: Some(runtime) }
    }

    fn account(&self) -> std::sync::MutexGuard<'_, Account> {
        self.account.lock().unwrap()
    }

    fn add_event(&self, event: Value) {
        self.account().events.push(event);
    }
}

/// Answers one request: `(status, body, throttled)`.
fn answer(
    account: &Mutex<Account>,
    method: &axum::http::Method,
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> (u16, Value, bool) {
    let mut account = account.lock().unwrap();
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
    if authorization != Some(&format!("Bearer {API_KEY}")) {
        let (status, body) = stripe_error(401, "invalid_request_error", "Invalid API Key provided");
        return (status, body, false);
    }
    let path = uri.path();
    let query: BTreeMap<String, String> = parse_form(uri.query().unwrap_or(""));
    let form = String::from_utf8(body.to_vec()).unwrap();
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let throttled = |n: &mut usize| {
        if *n > 0 {
            *n -= 1;
            true
        } else {
            false
        }
    };
    if path == "/v1/events" && method == "GET" {
        account.event_queries.push(uri.query().unwrap_or("").to_owned());
        if throttled(&mut account.throttle_events) {
            account.throttled_events += 1;
            let (status, body) = stripe_error(429, "rate_limit_error", "Too many requests");
            return (status, body, true);
        }
        let (status, body) = account.list_events(&query);
        return (status, body, false);
    }
    if throttled(&mut account.throttle_objects) {
        account.throttled_objects += 1;
        let (status, body) = stripe_error(429, "rate_limit_error", "Too many requests");
        return (status, body, true);
    }
    let (status, answer) = if path == "/v1/customers/search" && method == "GET" {
        account.search(&query["query"])
    } else {
        account.object_request(method.as_str(), path, &form, key.as_deref())
    };
    account.requests.push(ObjectRequest {
        method: method.to_string(),
        path: path.to_owned(),
        form,
        key,
        status,
    });
    (status, answer, false)
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

// ---------------------------------------------------------------------------------------------------

fn config(with_api: bool) -> String {
    let schemas = schemas_dir();
    let api = if with_api {
        "\n    api_key: \"${STRIPE_API_KEY}\"\n    api_base: \"${STRIPE_API_BASE}\""
    } else {
        ""
    };
    let crm = if with_api {
        r#"
  - name: crm
    kind: stripe
    api_key: "${STRIPE_API_KEY}"
    api_base: "${STRIPE_API_BASE}"
    rate_limit: { records_per_second: 1000 }
    batch: { records_max: 40, linger_ms: 5 }
    models:
      customer: { object: customer, key_field: metadata.remix_id, fields: { metadata.remix_id: id, email: email, name: name } }"#
    } else {
        ""
    };
    format!(
        r#"
data_dir: "${{REMIX_DATA_DIR}}"
admin: {{ listen: "${{REMIX_ADMIN_ADDR}}" }}
log: {{ segment_bytes: 64KiB }}
models:
  customer: {{ schema: {schemas}/customer.json, key: [id] }}
sources:
  - name: billing
    kind: stripe
    listen: "${{REMIX_WEBHOOK_ADDR}}"
    path: /stripe
    signing_secret: "${{STRIPE_WEBHOOK_SECRET}}"{api}
    objects:
      customer: {{ model: customer, fields: {{ id: {{ from: metadata.remix_id, type: integer }}, email: email, name: name }} }}
targets:
  - name: dataset
    kind: jsonl
    dir: "${{REMIX_DATASET_DIR}}"
    batch: {{ records_max: 50, linger_ms: 5 }}
    models: {{ customer: {{}} }}{crm}
"#,
        schemas = schemas.display()
    )
}

/// `remix log dump --json`: the change records.
fn log_records(node: &Node) -> Vec<Value> {
    let out = node.cli(&["log", "dump", "--json"]);
    assert!(out.status.success(), "remix log dump: {out:?}");
    stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The event id of each change record, checking that none is there twice.
fn logged_events(records: &[Value]) -> BTreeMap<String, Value> {
    let mut by_event = BTreeMap::new();
    for record in records {
        let position = record["position"].as_str().unwrap();
        let (event, _) = position.split_once('@').unwrap_or_else(|| panic!("position {position}"));
        assert!(by_event.insert(event.to_owned(), record.clone()).is_none(), "event {event} logged twice");
    }
    by_event
}

/// The customer model state the log leads to: id -> (email, name).
fn final_state(records: &[Value]) -> BTreeMap<u64, (String, String)> {
    let mut state = BTreeMap::new();
    for r in records {
        let id = r["key"]["id"].as_u64().unwrap();
        match r["op"].as_str().unwrap() {
            "upsert" => {
                let data = &r["data"];
                let name = data["name"].as_str().unwrap_or_default().to_owned();
                state.insert(id, (data["email"].as_str().unwrap().to_owned(), name));
            }
            "delete" => {
                state.remove(&id);
            }
            other => panic!("op {other}"),
        }
    }
    state
}

#[test]
fn webhooks_catch_up_and_the_stripe_target() {
    let tmp = tempfile::tempdir().unwrap();
    let stripe = FakeStripe::start();
    let env =
        [("STRIPE_WEBHOOK_SECRET", SECRET), ("STRIPE_API_KEY", API_KEY), ("STRIPE_API_BASE", &stripe.base)];
    let mut node = Node::new(tmp.path(), &config(true), &env);
    node.start();
    let t0 = now() - 3600;

    // Signatures are checked before anything else.
    let e1 = customer_event("evt_1", "customer.created", t0 + 1, 1, email(1), "Ada");
    let body = serde_json::to_vec(&e1).unwrap();
    let json_type = ("Content-Type", "application/json");
    let missing = http("POST", &node.webhook, "/stripe", &[json_type], &body).unwrap();
    assert_eq!(missing.status, 400);
    assert!(
        missing.json()["error"].as_str().unwrap().contains("missing Stripe-Signature"),
        "{}",
        missing.text()
    );
    let wrong = sign(&body, "whsec_wrong");
    let wrong =
        http("POST", &node.webhook, "/stripe", &[json_type, ("Stripe-Signature", &wrong)], &body).unwrap();
    assert_eq!(wrong.status, 400);
    assert!(wrong.json()["error"].as_str().unwrap().contains("matches"), "{}", wrong.text());
    let old = format!("t={},v1=00", now() - 1000);
    let expired =
        http("POST", &node.webhook, "/stripe", &[json_type, ("Stripe-Signature", &old)], &body).unwrap();
    assert_eq!(expired.status, 400);

    // Phase 1, the node running: events arrive as webhooks (and are in Stripe's event list too).
    let e2 = customer_event("evt_2", "customer.created", t0 + 2, 2, email(2), "Bob");
    let e3 = customer_event("evt_3", "customer.updated", t0 + 20, 1, email(1), "Ada Lovelace");
    let e4 = customer_event("evt_4", "customer.updated", t0 + 10, 1, email(1), "Ada (older)");
    let invoice = json!({"id": "evt_inv", "object": "event", "type": "invoice.paid", "created": t0 + 21,
        "data": {"object": {"id": "in_1", "object": "invoice", "amount_paid": 500}}});
    let invalid = customer_event("evt_bad", "customer.updated", t0 + 22, 3, Value::Null, "No Mail");
    for event in [&e1, &e2, &e4, &e3, &invoice, &invalid] {
        stripe.add_event((*event).clone());
    }
    assert_eq!(deliver_ok(&node, &e1)["outcome"], "logged");
    assert_eq!(deliver_ok(&node, &e2)["outcome"], "logged");
    let again = deliver_ok(&node, &e1);
    assert_eq!((again["outcome"].as_str(), again["offset"].as_u64()), (Some("duplicate"), Some(1)));
    assert_eq!(deliver_ok(&node, &e3)["outcome"], "logged");
    assert_eq!(deliver_ok(&node, &e4)["outcome"], "stale", "an older event never overwrites a newer one");
    assert_eq!(deliver_ok(&node, &invoice)["outcome"], "ignored");
    let dead = deliver_ok(&node, &invalid);
    assert_eq!(dead["outcome"], "dead_lettered");
    assert_eq!(deliver_ok(&node, &invalid)["outcome"], "duplicate");
    let dlq = node.cli_json(&["dlq", "list"]);
    assert_eq!(dlq.as_array().unwrap().len(), 1, "{dlq}");
    assert_eq!(
        (dlq[0]["route"].as_str(), dlq[0]["position"].as_str()),
        (Some("customer"), Some(format!("evt_bad@{}", t0 + 22).as_str()))
    );
    let metrics = http("GET", &node.admin, "/metrics", &[], b"").unwrap().text();
    assert!(
        metrics.lines().any(|l| l.starts_with("remix_stripe_events_ignored_total") && l.contains("invoice")),
        "{metrics}"
    );
    assert_eq!(log_records(&node).len(), 3);
    // The older event did not overwrite the newer state in the targets.
    node.wait_caught_up("dataset");
    node.wait_caught_up("crm");
    let lines: Vec<Value> = dataset_lines(&node.dataset_dir, "customer")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&Value> = lines.iter().filter(|l| l["id"] == 1).map(|l| &l["name"]).collect();
    assert_eq!(names, [&json!("Ada"), &json!("Ada Lovelace")]);
    assert_eq!(stripe.account().by_remix_id()[&1].1, "Ada Lovelace");

    // Phase 2, the node stopped: Stripe creates 232 more events (3 pages), and rate-limits twice.
    node.stop();
    let mut offline = Vec::new();
    for k in 0..230u64 {
        let id = 100 + k;
        offline.push(customer_event(
            &format!("evt_off{k}"),
            "customer.created",
            t0 + 100 + k as i64,
            id,
            email(id),
            "New",
        ));
    }
    offline.push(customer_event("evt_upd2", "customer.updated", t0 + 400, 2, email(2), "Bob B"));
    offline.push(customer_event("evt_del1", "customer.deleted", t0 + 401, 1, email(1), "Ada Lovelace"));
    for event in &offline {
        stripe.add_event(event.clone());
    }
    stripe.account().throttle_events = 2;
    node.start();
    let expected = 3 + offline.len();
    let records = wait_for("the catch-up at start", || {
        let records = log_records(&node);
        (records.len() >= expected).then_some(records)
    });
    let by_event = logged_events(&records);
    assert_eq!(records.len(), expected, "every missed event once, nothing else");
    for event in offline.iter().chain([&e1, &e2, &e3]) {
        assert!(by_event.contains_key(event["id"].as_str().unwrap()), "{} missing", event["id"]);
    }
    assert_eq!(by_event["evt_del1"]["op"], "delete");
    {
        let account = stripe.account();
        assert_eq!(account.throttled_events, 2, "the 429s were answered");
        let queries = &account.event_queries;
        assert!(queries[0].contains(&format!("created[gte]={}", t0 + 20 - 600)), "{queries:?}");
        assert!(queries.iter().any(|q| q.contains("starting_after=")), "{queries:?}");
        assert!(queries.iter().any(|q| q.contains("ending_before=")), "{queries:?}");
    }

    // Duplicates of delivered events are ignored, by webhook and by an on-demand catch-up.
    let again = deliver_ok(&node, &offline[5]);
    assert_eq!(again["outcome"], "duplicate");
    let report = node.cli_json(&["source", "catch-up", "billing"]);
    assert_eq!(report["logged"], 0, "{report}");
    assert_eq!(report["events"], 6 + offline.len(), "{report}");
    assert_eq!(report["stale"], 1, "{report}");
    assert_eq!(report["ignored"], 1, "{report}");
    assert_eq!(log_records(&node).len(), expected);

    // The Stripe target: one rate limit answer on the way, then everything applied in log order.
    stripe.account().throttle_objects = 1;
    node.wait_caught_up("dataset");
    node.wait_caught_up("crm");
    let records = log_records(&node);
    let state = final_state(&records);
    let account = stripe.account();
    assert_eq!(account.throttled_objects, 1);
    assert_eq!(account.by_remix_id(), state, "Stripe holds the state the log leads to");
    assert!(!state.contains_key(&1) && state[&2].1 == "Bob B");
    let by_offset: BTreeMap<u64, &Value> =
        records.iter().map(|r| (r["offset"].as_u64().unwrap(), r)).collect();
    let writes: Vec<&ObjectRequest> = account.requests.iter().filter(|r| r.method != "GET").collect();
    assert_eq!(writes.len(), records.len(), "one write per change: {:?}", &writes[..3]);
    for write in &writes {
        assert_eq!(write.status, 200, "{write:?}");
        match write.method.as_str() {
            "POST" => {
                let key = write.key.as_deref().expect("an idempotency key");
                let offset: u64 = key.strip_prefix("crm:").expect("crm:<offset>").parse().unwrap();
                let record = by_offset[&offset];
                let id = record["key"]["id"].as_u64().unwrap();
                let data = &record["data"];
                let expected_form = format!(
                    "email={}&metadata[remix_id]={id}&name={}",
                    data["email"].as_str().unwrap().replace('@', "%40"),
                    data["name"].as_str().unwrap().replace(' ', "%20")
                );
                assert_eq!(write.form, expected_form, "{write:?}");
            }
            "DELETE" => assert!(write.key.is_none()),
            other => panic!("{other}"),
        }
    }
    let first = &writes[0];
    assert_eq!(
        (first.method.as_str(), first.path.as_str(), first.key.as_deref()),
        ("POST", "/v1/customers", Some("crm:1"))
    );
    assert_eq!(first.form, "email=c1%40example.com&metadata[remix_id]=1&name=Ada");
    let update = writes.iter().find(|w| w.key.as_deref() == Some("crm:3")).unwrap();
    assert_eq!(
        (update.path.as_str(), update.form.as_str()),
        ("/v1/customers/cus_1", "email=c1%40example.com&metadata[remix_id]=1&name=Ada%20Lovelace")
    );
    let delete = writes.iter().find(|w| w.method == "DELETE").unwrap();
    assert_eq!(delete.path, "/v1/customers/cus_1");
    drop(account);

    // Without a node, `remix source catch-up` works on the data directory.
    node.stop();
    let late = customer_event("evt_late", "customer.updated", t0 + 500, 2, email(2), "Bob C");
    stripe.add_event(late);
    let out = node.cli(&["source", "catch-up", "billing", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["logged"], 1, "{report}");
    node.start();
    node.wait_caught_up("crm");
    assert_eq!(stripe.account().by_remix_id()[&2].1, "Bob C");
    node.stop();
    node.verify_log();
}

#[test]
fn every_event_is_logged_once_across_kill9() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = Node::new(tmp.path(), &config(false), &[("STRIPE_WEBHOOK_SECRET", SECRET)]);
    let mut rng = Rng::from_clock("stripe kill9");
    node.start();
    let webhook = node.webhook.clone();
    let stop = AtomicBool::new(false);
    let t0 = now() - 100_000;
    let sent: Vec<String> = std::thread::scope(|scope| {
        let clients: Vec<_> = (1..=2u64)
            .map(|client| {
                let (webhook, stop) = (&webhook, &stop);
                scope.spawn(move || {
                    let mut acknowledged = Vec::new();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let id = client * 1_000_000 + n;
                        let event_id = format!("evt_c{client}_{n}");
                        let event =
                            customer_event(&event_id, "customer.created", t0 + n as i64, id, email(id), "K");
                        // Stripe retries until it gets a 2xx.
                        let mut attempts = 0;
                        loop {
                            attempts += 1;
                            assert!(attempts < 5000, "{event_id} was never acknowledged");
                            match deliver(webhook, &event) {
                                Ok(r) if r.status == 200 => break,
                                Ok(r) if r.status == 503 => {}
                                Ok(r) => panic!("{event_id}: {} {}", r.status, r.text()),
                                Err(_) => {}
                            }
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        acknowledged.push(event_id);
                    }
                    acknowledged
                })
            })
            .collect();
        let stopper = scopeguard(&stop);
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(rng.range(100..=900)));
            node.kill9();
            node.start();
        }
        std::thread::sleep(Duration::from_millis(200));
        drop(stopper);
        clients.into_iter().flat_map(|c| c.join().expect("a client failed")).collect()
    });
    let records = log_records(&node);
    let by_event = logged_events(&records);
    assert_eq!(records.len(), sent.len(), "every acknowledged event once, and nothing else");
    for event in &sent {
        assert!(by_event.contains_key(event), "{event} acknowledged but not logged");
    }
    eprintln!("stripe kill9: {} events acknowledged across 6 kills", sent.len());
    node.stop();
    node.verify_log();
}

/// Sets the flag when dropped (also when the test fails), so the clients end and the scope can too.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn scopeguard(flag: &AtomicBool) -> StopOnDrop<'_> {
    StopOnDrop(flag)
}

#[test]
fn the_stripe_to_postgres_example_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("stripe-to-postgres.yaml");
    std::fs::write(&path, example_config("stripe-to-postgres.yaml")).unwrap();
    let out = remix()
        .args(["check", "--config"])
        .arg(&path)
        .env_remove("REMIX_CONFIG")
        .env("STRIPE_WEBHOOK_SECRET", "whsec_example")
        .env("STRIPE_API_KEY", "rk_test_example")
        .env("REMIX_PG_TARGET", "host=127.0.0.1 dbname=shop")
        .output()
        .unwrap();
    assert!(out.status.success(), "remix check: {}\n{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
}
