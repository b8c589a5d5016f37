//! What the node does with bad input and failing targets, through the real binary: every refused
//! request gets its documented status and nothing of it is logged as a change; a target that refuses
//! (400) pauses or dead-letters per `on_error`; a target that fails (500) is retried until it recovers;
//! `remix check` reports every mistake of a configuration at once. Each test also checks that nothing
//! accepted was lost.

use crate::support::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const TOKEN: &str = "s3cret-token";

fn customer(id: u64) -> Value {
    json!({"id": id, "contact": {"email": format!("{id}@example.com")}, "name": format!("C{id}")})
}

fn customer_line(id: u64) -> Value {
    json!({"id": id, "email": format!("{id}@example.com"), "name": format!("C{id}")})
}

fn error_paths(body: &Value) -> Vec<(u64, String)> {
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {body}"))
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["path"].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn webhook_refuses_bad_requests_with_their_status_and_logs_nothing_of_them() {
    let tmp = tempfile::tempdir().unwrap();
    let config =
        example_config("webhook-to-jsonl.yaml").replace("body_bytes_max: 1MiB", "body_bytes_max: 2KiB");
    let mut node = Node::new(tmp.path(), &config, &[("REMIX_WEBHOOK_TOKEN", TOKEN)]);
    node.start();
    let auth = format!("Bearer {TOKEN}");
    let ok = [("Authorization", auth.as_str())];
    let post = |path: &str, headers: &[(&str, &str)], body: &[u8]| {
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        http("POST", &node.webhook, path, &all, body).unwrap()
    };
    let one = serde_json::to_vec(&customer(1)).unwrap();
    let mut accepted = vec![];

    // Credentials.
    assert_eq!(post("/customers", &[], &one).status, 401, "missing token");
    assert_eq!(post("/customers", &[("Authorization", "Bearer wrong")], &one).status, 403, "wrong token");
    assert_eq!(post("/customers", &[("Authorization", &format!("Basic {TOKEN}"))], &one).status, 401);
    let r = post("/customers", &ok, &one);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["offsets"], json!([1]));
    accepted.push(customer_line(1));

    // Malformed bodies: 400.
    for body in [&b"{\"id\":"[..], b"[1, 2]", b"\"text\"", b"", b"[{\"id\": 1}, 7]"] {
        let r = post("/customers", &ok, body);
        assert_eq!(r.status, 400, "{:?}: {}", String::from_utf8_lossy(body), r.text());
        assert!(r.json()["error"].is_string());
    }
    let r = post("/customers", &[ok[0], ("X-Remix-Op", "explode")], &one);
    assert_eq!(r.status, 400, "{}", r.text());

    // Unknown route: 404; a GET on a route is not a POST.
    let r = post("/nowhere", &ok, &one);
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(http("GET", &node.webhook, "/customers", &ok, b"").unwrap().status, 405);

    // Over body_bytes_max (2 KiB): 413, whether or not the objects are valid.
    let big: Vec<Value> = (100..160).map(customer).collect();
    let big = serde_json::to_vec(&big).unwrap();
    assert!(big.len() > 2048);
    let r = post("/customers", &ok, &big);
    assert_eq!(r.status, 413, "{}", r.text());

    // Wrong types: 422, every error by index and path, the valid objects of the batch refused too.
    let batch = json!([
        customer(2),
        {"id": "abc", "contact": {"email": 5}},
        customer(3),
        {"id": 4, "contact": {"email": "4@example.com"}, "name": 12},
    ]);
    let r = post("/customers", &ok, &serde_json::to_vec(&batch).unwrap());
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let paths = error_paths(&r.json());
    let paths_of_batch = paths.clone();
    assert!(paths.contains(&(1, "/id".into())), "{paths:?}");
    assert!(paths.contains(&(1, "/email".into())), "{paths:?}");
    assert!(paths.contains(&(3, "/name".into())), "{paths:?}");
    assert!(paths.iter().all(|(i, _)| *i == 1 || *i == 3), "{paths:?}");
    let orders = json!([{"id": 9, "customer": {"id": "x"}, "amount_cents": 1.5, "status": "lost"}]);
    let r = post("/orders", &ok, &serde_json::to_vec(&orders).unwrap());
    assert_eq!(r.status, 422, "{}", r.text());
    let paths = error_paths(&r.json());
    for path in ["/customer_id", "/amount"] {
        assert!(paths.contains(&(0, path.into())), "{path} in {paths:?}");
    }
    // The same refused request again: the same 422, and its objects are not dead-lettered twice.
    let again = post("/customers", &ok, &serde_json::to_vec(&batch).unwrap());
    assert_eq!((again.status, error_paths(&again.json())), (422, paths_of_batch.clone()));
    // A retry of the refused batch after fixing it is accepted whole.
    let fixed = json!([customer(2), customer(5), customer(3), customer(4)]);
    let r = post("/customers", &ok, &serde_json::to_vec(&fixed).unwrap());
    assert_eq!(r.status, 200, "{}", r.text());
    accepted.extend([2, 5, 3, 4].map(customer_line));

    // Nothing of the refused requests was logged; the invalid objects are in the DLQ.
    node.wait_caught_up("dataset");
    let stat = node.log_stat();
    assert_eq!(stat["records"], accepted.len(), "{stat}");
    let lines: Vec<Value> = dataset_lines(&node.dataset_dir, "customer")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, accepted);
    assert!(dataset_lines(&node.dataset_dir, "order").is_empty());
    let dlq = node.cli_json(&["dlq", "list"]);
    let inputs: Vec<&Value> = dlq.as_array().unwrap().iter().map(|e| &e["input"]).collect();
    assert_eq!(inputs, [&batch[1], &batch[3], &orders[0]], "exactly the invalid objects");
    let metrics = http("GET", &node.admin, "/metrics", &[], b"").unwrap().text();
    for status in ["200", "400", "401", "403", "413", "422"] {
        assert!(metrics.contains(&format!("status=\"{status}\"")), "{status} in /metrics");
    }
    node.verify_log();
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn hmac_signed_webhooks_pass_and_wrong_or_missing_signatures_do_not() {
    let tmp = tempfile::tempdir().unwrap();
    let api = TestApi::start();
    let url = api.url("/crm");
    let secret = "hmac-secret";
    let mut node = Node::new(
        tmp.path(),
        &example_config("webhook-to-http.yaml"),
        &[("REMIX_WEBHOOK_SECRET", secret), ("REMIX_HTTP_URL", &url)],
    );
    node.start();
    let post = |headers: &[(&str, &str)], body: &[u8]| {
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        http("POST", &node.webhook, "/customers", &all, body).unwrap()
    };
    let body = br#"[{"id": 1, "email": "a@example.com", "name": "A"}, {"id": 2, "email": "b@example.com"}]"#;
    let signature = sign(secret, body);
    let r = post(&[("X-Remix-Signature", &signature)], body);
    assert_eq!(r.status, 200, "{}", r.text());
    let other = br#"{"id": 3, "email": "c@example.com"}"#;
    let r = post(&[("X-Remix-Signature", &format!("sha256={}", sign(secret, other)))], other);
    assert_eq!(r.status, 200, "the sha256= prefix is accepted: {}", r.text());

    assert_eq!(post(&[], body).status, 401, "missing signature");
    assert_eq!(post(&[("X-Remix-Signature", &sign("other-secret", body))], body).status, 403);
    assert_eq!(post(&[("X-Remix-Signature", &signature)], other).status, 403, "signature of another body");
    assert_eq!(post(&[("X-Remix-Signature", "zz")], body).status, 403, "not hex");

    // Exactly the two accepted requests reached the log and the API.
    node.wait_caught_up("crm");
    assert_eq!(node.log_stat()["records"], 3);
    let delivered = by_offset(&api.delivered("/crm", "crm"));
    let ids: Vec<&Value> = delivered.values().map(|r| &r["data"]["external_id"]).collect();
    assert_eq!(ids, [&json!("1"), &json!("2"), &json!("3")]);
    assert_eq!(
        delivered[&1]["data"],
        json!({"external_id": "1", "email": "a@example.com", "display_name": "A", "source": "remix"})
    );
    node.verify_log();
}

/// A webhook -> http configuration with `on_error` and an extra target setting.
fn http_config(on_error: &str) -> String {
    format!(
        r#"
data_dir: "${{REMIX_DATA_DIR}}"
admin: {{ listen: "${{REMIX_ADMIN_ADDR}}" }}
models:
  customer: {{ schema: {schemas}/customer.json, key: [id] }}
sources:
  - name: hooks
    kind: webhook
    listen: "${{REMIX_WEBHOOK_ADDR}}"
    routes:
      /customers: {{ model: customer, fields: {{ id: id, email: contact.email, name: name }} }}
targets:
  - name: api
    kind: http
    url: "${{REMIX_HTTP_URL}}"
    timeout: 5s
    on_error: {on_error}
    batch: {{ records_max: 10, linger_ms: 5 }}
    models: {{ customer: {{}} }}
"#,
        schemas = schemas_dir().display()
    )
}

/// Posts customers `ids` in requests of 8 and returns how many were logged.
fn post_customers(node: &Node, ids: std::ops::RangeInclusive<u64>) -> usize {
    let ids: Vec<u64> = ids.collect();
    for chunk in ids.chunks(8) {
        let body = Value::Array(chunk.iter().map(|&id| customer(id)).collect());
        let r = node.post("/customers", &[], &body).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    ids.len()
}

/// Whether a request body holds the record of customer `id`.
fn holds(body: &Value, id: u64) -> bool {
    body["records"].as_array().into_iter().flatten().any(|r| r["data"]["id"] == id)
}

/// The customer ids of delivered records, in offset order, each offset once.
fn delivered_ids(api: &TestApi, target: &str) -> Vec<u64> {
    by_offset(&api.delivered("/api", target)).values().map(|r| r["data"]["id"].as_u64().unwrap()).collect()
}

#[test]
fn http_target_refused_with_400_pauses_and_resumes_without_losing_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let api = TestApi::start();
    let refuse = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&refuse);
    api.respond(move |_, _, body| if flag.load(Ordering::SeqCst) && holds(body, 13) { 400 } else { 200 });
    let url = api.url("/api");
    let mut node = Node::new(tmp.path(), &http_config("pause"), &[("REMIX_HTTP_URL", &url)]);
    node.start();
    let n = post_customers(&node, 1..=40);

    let t = wait_for("the target to pause", || Some(node.target("api")).filter(|t| t["state"] == "paused"));
    let error = t["last_error"].as_str().unwrap_or_else(|| panic!("a last_error: {t}"));
    assert!(error.contains("400"), "{t}");
    assert!(t["lag_records"].as_u64().unwrap() > 0 && t["cursor"].as_u64().unwrap() < 13, "{t}");
    // Paused: no more requests, even as time passes and records arrive.
    let requests = api.received().len();
    post_customers(&node, 41..=48);
    assert_eq!(node.target("api")["state"], "paused");
    assert_eq!(api.received().len(), requests);

    // The API is fixed; resume: the refused batch goes again, then the rest.
    refuse.store(false, Ordering::SeqCst);
    let resumed = node.cli_json(&["target", "resume", "api"]);
    assert_eq!(resumed["state"], "running", "{resumed}");
    let t = node.wait_caught_up("api");
    assert_eq!(t["cursor"], n + 8);
    assert_eq!(delivered_ids(&api, "api"), (1..=48).collect::<Vec<_>>(), "every record once, in order");
    assert_eq!(node.cli_json(&["dlq", "list"]), json!([]));
    node.verify_log();
}

#[test]
fn http_target_refused_with_400_dead_letters_the_record_and_delivers_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let api = TestApi::start();
    let refuse = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&refuse);
    api.respond(move |_, _, body| if flag.load(Ordering::SeqCst) && holds(body, 13) { 400 } else { 200 });
    let url = api.url("/api");
    let mut node = Node::new(tmp.path(), &http_config("dead_letter"), &[("REMIX_HTTP_URL", &url)]);
    node.start();
    post_customers(&node, 1..=40);

    let t = node.wait_caught_up("api");
    assert_eq!(t["cursor"], 40);
    assert!(t["last_error"].as_str().is_some_and(|e| e.contains("400")), "{t}");
    let mut want: Vec<u64> = (1..=40).filter(|&id| id != 13).collect();
    assert_eq!(delivered_ids(&api, "api"), want, "all but the refused record, once each");
    let dlq = node.cli_json(&["dlq", "list"]);
    let entries = dlq.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{dlq}");
    let letter = &entries[0];
    assert_eq!(letter["source"], "api");
    assert_eq!(letter["route"], "target:api");
    assert_eq!(letter["model"], "customer");
    assert_eq!(letter["input"]["offset"], 13, "{letter}");
    assert_eq!(letter["input"]["data"]["id"], 13, "{letter}");
    assert!(letter["errors"][0]["message"].as_str().unwrap().contains("400"), "{letter}");

    // Once the API accepts it, a retry from the DLQ logs the change again and it is delivered.
    refuse.store(false, Ordering::SeqCst);
    let id = letter["id"].as_u64().unwrap().to_string();
    let retried = node.cli_json(&["dlq", "retry", &id]);
    assert_eq!(retried["result"], "logged", "{retried}");
    node.wait_caught_up("api");
    want.push(13);
    assert_eq!(delivered_ids(&api, "api"), want);
    assert_eq!(node.cli_json(&["dlq", "list"]), json!([]));
    assert_eq!(node.log_stat()["records"], 41);

    // Refused again (offset 42), then a newer change of the same customer is delivered (43): a retry
    // of the dead letter would put the older state back after it, so it is refused as superseded.
    refuse.store(true, Ordering::SeqCst);
    post_customers(&node, 13..=13);
    let letter = wait_for("the second dead letter", || {
        node.cli_json(&["dlq", "list"]).as_array().and_then(|e| e.first().cloned())
    });
    assert_eq!(letter["input"]["offset"], 42, "{letter}");
    refuse.store(false, Ordering::SeqCst);
    post_customers(&node, 13..=13);
    node.wait_caught_up("api");
    let id = letter["id"].as_u64().unwrap().to_string();
    let retried = node.cli_json(&["dlq", "retry", &id]);
    assert_eq!(retried, json!({"result": "superseded", "id": letter["id"], "newer_offset": 43}));
    assert_eq!(node.cli_json(&["dlq", "list"]).as_array().unwrap().len(), 1, "the entry stays");
    assert_eq!(node.log_stat()["records"], 43, "nothing was logged");
    // `--all` says the same, through the node and, once it has stopped, on the data directory.
    assert_eq!(node.cli_json(&["dlq", "retry", "--all"]), json!([retried]));
    node.stop();
    assert_eq!(node.cli_json(&["dlq", "retry", "--all"]), json!([retried]));
    node.verify_log();
}

#[test]
fn http_target_failing_with_500_retries_until_the_server_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let api = TestApi::start();
    let failing = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&failing);
    api.respond(move |_, _, _| if flag.load(Ordering::SeqCst) { 500 } else { 200 });
    let url = api.url("/api");
    // on_error: pause, so that a 500 wrongly taken as permanent would show as paused.
    let mut node = Node::new(tmp.path(), &http_config("pause"), &[("REMIX_HTTP_URL", &url)]);
    node.start();
    post_customers(&node, 1..=30);

    let t = wait_for("the target to retry", || {
        Some(node.target("api")).filter(|t| t["state"] == "retrying" && api.received().len() >= 2)
    });
    assert!(t["last_error"].as_str().is_some_and(|e| e.contains("500")), "{t}");
    assert_eq!(t["cursor"], 0);
    assert_eq!(t["lag_records"], 30);
    assert!(api.received().iter().all(|r| r.status == 500));
    // A graceful stop does not wait for the API; the backlog is still there after a restart.
    node.stop();
    node.start();
    let t = wait_for("the target to retry again", || {
        Some(node.target("api")).filter(|t| t["state"] == "retrying")
    });
    assert_eq!(t["lag_records"], 30, "{t}");

    failing.store(false, Ordering::SeqCst);
    let t = node.wait_caught_up("api");
    assert_eq!(t["cursor"], 30);
    assert_eq!(delivered_ids(&api, "api"), (1..=30).collect::<Vec<_>>(), "every record once, in order");
    assert_eq!(node.cli_json(&["dlq", "list"]), json!([]));
    node.verify_log();
}

#[test]
fn check_reports_every_mistake_of_a_configuration_with_its_path_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let config = format!(
        r#"data_dir: ./data
admin: {{ listen: "127.0.0.1:notaport" }}
bogus_top: 1
models:
  customer: {{ schema: {schemas}/customer.json, key: [idd] }}
  order: {{ schema: /nonexistent/order.json, key: [id] }}
sources:
  - name: hooks
    kind: webhook
    listen: "127.0.0.1:9701"
    body_bytes_max: lots
    routes:
      /customers: {{ model: customer, fields: {{ id: id, emial: email }} }}
      /orders: {{ model: ordr, fields: {{ id: id }} }}
targets:
  - {{ name: dataset, kind: jsnol, dir: ./d, models: {{ customer: {{}} }} }}
  - {{ name: api, kind: http, url: "http://127.0.0.1:1/x", on_error: explode, batch: {{ records_max: 0 }}, models: {{ customer: {{ fields: {{ cid: idx }} }} }} }}
"#,
        schemas = schemas_dir().display()
    );
    let path = tmp.path().join("remix.yaml");
    std::fs::write(&path, config).unwrap();
    let out = run(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    for (line, path, detail) in [
        (2, "admin.listen", "notaport"),
        (3, "bogus_top", "unknown key"),
        (5, "models.customer.key[0]", "idd"),
        (6, "models.order.schema", "/nonexistent/order.json"),
        (11, "sources[0].body_bytes_max", "lots"),
        (13, "sources[0].routes[\"/customers\"].fields.emial", "unknown model field"),
        (14, "sources[0].routes[\"/orders\"].model", "ordr"),
        (16, "targets[0].kind", "jsnol"),
        (17, "targets[1].on_error", "explode"),
        (17, "targets[1].batch.records_max", "0"),
        (17, "targets[1].models.customer.fields.cid", "idx"),
    ] {
        let found =
            text.lines().any(|l| l.contains(&format!("remix.yaml:{line}: {path}: ")) && l.contains(detail));
        assert!(found, "no `remix.yaml:{line}: {path}: ...{detail}...` in:\n{text}");
    }
    // The same with --json: one document on stdout.
    let out = run(&["check", "--json", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON document on stdout");
    assert_eq!(report["ok"], false, "{report}");
    let errors = report["errors"].as_array().expect("errors");
    assert!(errors.len() >= 11, "{report}");
    assert!(
        errors.iter().any(|e| e["path"] == "targets[0].kind"
            && e["line"] == 16
            && e["message"].as_str().unwrap().contains("jsnol")),
        "{report}"
    );
    // A valid configuration passes.
    let out = run(&["check", "--config", "config/remix.yaml"]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn doctor_checks_the_data_directory_addresses_and_an_unreachable_http_target() {
    let tmp = tempfile::tempdir().unwrap();
    let closed = format!("http://{}/api", free_addr());
    let mut node = Node::new(tmp.path(), &http_config("pause"), &[("REMIX_HTTP_URL", &closed)]);
    let doctor = |node: &Node| {
        let out = node.cli(&["doctor", "--json"]);
        let checks: Vec<Value> =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        let find = |subject: &str, check: &str| {
            checks
                .iter()
                .find(|c| c["subject"] == subject && c["check"] == check)
                .map(|c| c["status"].clone())
        };
        let found = [
            find("data directory", "writable"),
            find("data directory", "lock"),
            find("admin API", "listen"),
            find("source hooks", "listen"),
            find("target api", "reachable"),
        ];
        (out.status.code(), found.map(|f| f.unwrap_or(Value::Null)), checks)
    };
    let (code, found, checks) = doctor(&node);
    assert_eq!(code, Some(1), "{checks:#?}");
    assert_eq!(found, [json!("ok"), Value::Null, json!("ok"), json!("ok"), json!("fail")], "{checks:#?}");
    // With the node running, its addresses are its own: not checked, the lock says why.
    node.start();
    let (_, found, checks) = doctor(&node);
    assert_eq!(found, [json!("ok"), json!("ok"), Value::Null, Value::Null, json!("fail")], "{checks:#?}");
    node.stop();
}
