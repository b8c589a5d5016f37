//! The whole pipeline through the real binary: webhook in, validation, the log, the DLQ, idempotent
//! retries, and the jsonl and http targets, with configurations derived from `config/examples/`.

use crate::support::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// What one planned request should get.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// 200: every object logged (or already logged under its key).
    Accepted,
    /// 422 whole, naming these indexes.
    Refused(Vec<usize>),
}

#[derive(Debug, Clone)]
struct Planned {
    route: &'static str,
    objects: Vec<Value>,
    /// The `Idempotency-Key` header, if any.
    key: Option<String>,
    expect: Expect,
}

/// A valid customer input and the dataset line it becomes (`customer: {}`: the model object).
fn customer(rng: &mut Rng, id: u64) -> (Value, Value) {
    let email = format!("c{id}@example.com");
    let mut input = json!({"id": id, "contact": {"email": email}, "ignored": "not mapped"});
    let mut line = json!({"id": id, "email": email});
    match rng.range(0..=3) {
        0 => {
            input["name"] = json!(format!("Name {id}"));
            line["name"] = json!(format!("Name {id}"));
        }
        1 => {
            input["name"] = Value::Null;
            line["name"] = Value::Null;
        }
        2 => {
            // The id as a decimal string: cast to an integer.
            input["id"] = json!(id.to_string());
        }
        _ => {} // no name: it stays missing
    }
    (input, line)
}

/// A valid order input and its dataset line (`order_id`, `customer_id`, `cents`, `status`).
fn order(rng: &mut Rng, id: u64) -> (Value, Value) {
    let amount = rng.range(0..=99_999);
    let customer_id = rng.range(1..=999);
    let mut input =
        json!({"id": id.to_string(), "customer": {"id": customer_id}, "amount_cents": amount.to_string()});
    let status = match rng.range(0..=2) {
        0 => "pending", // by default
        1 => "paid",
        _ => "shipped",
    };
    if status != "pending" || rng.chance(50) {
        input["status"] = json!(status);
    }
    let line = json!({"order_id": id, "customer_id": customer_id, "cents": amount, "status": status});
    (input, line)
}

/// An invalid object of `route`: a failed cast, a missing required field, a value outside an enum.
fn invalid(rng: &mut Rng, route: &str, id: u64) -> Value {
    match (route, rng.range(0..=2)) {
        ("/customers", 0) => json!({"id": id, "name": "no email"}),
        ("/customers", 1) => json!({"id": format!("x{id}"), "contact": {"email": "a@example.com"}}),
        ("/customers", _) => json!({"id": id, "contact": {"email": 42}}),
        (_, 0) => json!({"id": id, "customer": {"id": 1}, "amount_cents": "12.5"}),
        (_, 1) => json!({"id": id, "customer": {"id": 1}, "amount_cents": "100", "status": "lost"}),
        (_, _) => json!({"id": id, "amount_cents": "100"}),
    }
}

#[test]
fn ten_thousand_records_with_invalid_batches_and_retries_end_exactly_once_in_the_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = Node::new(tmp.path(), &example_config("webhook-to-jsonl.yaml"), &[]);
    node.start();
    let mut rng = Rng::from_clock("pipeline");

    // Plan ~10k objects in batches of 1..=50. Ids are unique, so every valid object is one line.
    let mut plan: Vec<Planned> = Vec::new();
    let mut expected: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut invalid_objects: Vec<(&str, Value)> = Vec::new();
    let (mut objects_sent, mut next_id, mut event, mut event_retries) = (0usize, 1u64, 0u64, 0);
    // Objects sent with an `event_id` (the configured idempotency_field), to resend later.
    let mut with_events: Vec<(&'static str, Value)> = Vec::new();
    while objects_sent < 10_000 {
        let route = if rng.chance(50) { "/customers" } else { "/orders" };
        let size = rng.range(1..=50) as usize;
        let refuse = rng.chance(8);
        let by_event = !refuse && route == "/customers" && rng.chance(30);
        let mut objects = Vec::new();
        let mut bad = Vec::new();
        let mut lines = Vec::new();
        for index in 0..size {
            let id = next_id;
            next_id += 1;
            if by_event && !with_events.is_empty() && rng.chance(20) {
                // A retry of an object some earlier request sent: logged once only.
                let (_, object) = with_events[rng.range(0..=with_events.len() as u64 - 1) as usize].clone();
                objects.push(object);
                event_retries += 1;
                continue;
            }
            if refuse && (index == 0 || rng.chance(30)) {
                bad.push(index);
                objects.push(invalid(&mut rng, route, id));
                continue;
            }
            let (mut input, line) =
                if route == "/customers" { customer(&mut rng, id) } else { order(&mut rng, id) };
            if by_event {
                event += 1;
                input["event_id"] = json!(format!("evt-{event}"));
                with_events.push((route, input.clone()));
            }
            objects.push(input);
            lines.push(line);
        }
        objects_sent += objects.len();
        let expect = if bad.is_empty() {
            let model = if route == "/customers" { "customer" } else { "order" };
            expected.entry(model).or_default().extend(lines);
            Expect::Accepted
        } else {
            invalid_objects.extend(bad.iter().map(|&i| (route, objects[i].clone())));
            Expect::Refused(bad)
        };
        let key = (!by_event && rng.chance(70)).then(|| format!("batch-{}", plan.len()));
        plan.push(Planned { route, objects, key, expect });
    }
    assert!(event_retries > 0, "the plan resends some event ids");
    // Resend some keyed requests, valid and refused, later in the stream (possibly concurrently).
    let resends: Vec<Planned> = plan
        .iter()
        .filter(|p| p.key.is_some() && p.expect == Expect::Accepted)
        .filter(|_| rng.chance(10))
        .cloned()
        .collect();
    for resend in resends {
        let at = rng.range(0..=plan.len() as u64) as usize;
        plan.insert(at, resend);
    }

    // Four senders; each request is checked as it is answered.
    let answers: Mutex<Vec<(Planned, Value)>> = Mutex::new(Vec::new());
    let chunks: Vec<Vec<Planned>> =
        (0..4).map(|t| plan.iter().skip(t).step_by(4).cloned().collect()).collect();
    std::thread::scope(|scope| {
        for chunk in &chunks {
            let (node, answers) = (&node, &answers);
            scope.spawn(move || {
                for planned in chunk {
                    let headers: Vec<(&str, &str)> =
                        planned.key.iter().map(|k| ("Idempotency-Key", k.as_str())).collect();
                    let response =
                        node.post(planned.route, &headers, &Value::Array(planned.objects.clone())).unwrap();
                    let body = response.json();
                    match &planned.expect {
                        Expect::Accepted => {
                            assert_eq!(response.status, 200, "{body}");
                            assert_eq!(body["accepted"], planned.objects.len(), "{body}");
                            assert_eq!(body["offsets"].as_array().unwrap().len(), planned.objects.len());
                        }
                        Expect::Refused(bad) => {
                            assert_eq!(response.status, 422, "{body}");
                            let mut indexes: Vec<usize> = body["errors"]
                                .as_array()
                                .expect("errors")
                                .iter()
                                .map(|e| {
                                    assert!(
                                        e["path"].is_string()
                                            && e["message"].as_str().is_some_and(|m| !m.is_empty()),
                                        "{e}"
                                    );
                                    e["index"].as_u64().unwrap() as usize
                                })
                                .collect();
                            indexes.dedup();
                            assert_eq!(&indexes, bad, "every invalid record, by index: {body}");
                        }
                    }
                    answers.lock().unwrap().push((planned.clone(), body));
                }
            });
        }
    });

    // A key answered twice (or more) gives the same offsets each time, `duplicate` on all but one.
    let answers = answers.into_inner().unwrap();
    let mut by_key: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for (planned, body) in &answers {
        if let (Some(key), Expect::Accepted) = (&planned.key, &planned.expect) {
            by_key.entry(key).or_default().push(body);
        }
    }
    let mut resent = 0;
    for (key, bodies) in &by_key {
        assert!(bodies.iter().all(|b| b["offsets"] == bodies[0]["offsets"]), "{key}: {bodies:?}");
        let fresh = bodies.iter().filter(|b| b.get("duplicate").is_none()).count();
        assert_eq!(fresh, 1, "{key}: exactly one answer is not a duplicate: {bodies:?}");
        assert!(bodies.iter().filter(|b| b.get("duplicate").is_some()).all(|b| b["duplicate"] == true));
        resent += bodies.len() - 1;
    }
    assert!(resent > 0, "the plan resent some keys");
    // An event id gets one offset, whichever request carried it.
    let mut event_offsets: BTreeMap<String, u64> = BTreeMap::new();
    for (planned, body) in &answers {
        for (object, offset) in planned.objects.iter().zip(body["offsets"].as_array().into_iter().flatten()) {
            if let Some(event) = object.get("event_id") {
                let offset = offset.as_u64().unwrap();
                let first = *event_offsets.entry(event.as_str().unwrap().to_owned()).or_insert(offset);
                assert_eq!(first, offset, "event {event} answered with two offsets");
            }
        }
    }

    let unique: usize = expected.values().map(Vec::len).sum();
    node.wait_caught_up("dataset");
    let stat = node.log_stat();
    assert_eq!(stat["records"], unique, "the log holds each valid object once: {stat}");
    assert_eq!(stat["durable_offset"], unique);
    for model in ["customer", "order"] {
        let lines: Vec<Value> = dataset_lines(&node.dataset_dir, model)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let want = &expected[model];
        assert_eq!(lines.len(), want.len(), "{model}: lines");
        assert_eq!(
            multiset(&lines),
            multiset(want),
            "{model}: the dataset is every valid object, remixed, once"
        );
    }

    // The DLQ holds exactly the invalid objects, each with its errors.
    let dlq = node.cli_json(&["dlq", "list"]);
    let entries = dlq.as_array().unwrap();
    for e in entries {
        for key in ["id", "time", "source", "position", "model", "errors", "input"] {
            assert!(e.get(key).is_some(), "{key} in {e}");
        }
        assert_eq!(e["source"], "hooks");
        assert!(!e["errors"].as_array().unwrap().is_empty(), "{e}");
        let model = if e["route"] == "/customers" { "customer" } else { "order" };
        assert_eq!(e["model"], model, "{e}");
    }
    let inputs: Vec<Value> = entries.iter().map(|e| json!([e["route"], e["input"]])).collect();
    let want: Vec<Value> = invalid_objects.iter().map(|(route, object)| json!([route, object])).collect();
    assert_eq!(multiset(&inputs), multiset(&want), "the DLQ holds exactly the invalid objects");

    node.verify_log();
    node.stop();
    node.verify_log();
    // Without a node, the DLQ is read from the data directory: the same entries.
    assert_eq!(node.cli_json(&["dlq", "list"]), dlq);
}

#[test]
fn http_target_gets_every_record_once_under_one_idempotency_key_per_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let api = TestApi::start();
    // Every 5th request fails once with 503 and every 7th once with 500: retried under the same key.
    let mut seen = std::collections::HashSet::new();
    let mut count = 0u64;
    api.respond(move |_, key, _| {
        count += 1;
        if seen.insert(key.to_owned()) && (count.is_multiple_of(5) || count.is_multiple_of(7)) {
            if count.is_multiple_of(5) {
                503
            } else {
                500
            }
        } else {
            200
        }
    });
    let config = example_config("webhook-to-http.yaml")
        .replace("records_per_second: 200, burst: 400", "records_per_second: 100000, burst: 100000")
        .replace("records_max: 100, linger_ms: 100", "records_max: 100, linger_ms: 10");
    let url = api.url("/ingest");
    let mut node = Node::new(tmp.path(), &config, &[("REMIX_HTTP_URL", &url)]);
    node.start();
    let mut rng = Rng::from_clock("pipeline-http");

    let mut expected = Vec::new();
    let mut next_id = 1;
    for request in 0..120 {
        let route = if request % 2 == 0 { "/customers" } else { "/orders" };
        let mut objects = Vec::new();
        for _ in 0..rng.range(1..=30) {
            let id = next_id;
            next_id += 1;
            if route == "/customers" {
                let (name, display) = if rng.chance(50) {
                    (json!(format!("N{id}")), json!(format!("N{id}")))
                } else {
                    (Value::Null, Value::Null)
                };
                objects.push(json!({"id": id, "email": format!("c{id}@example.com"), "name": name}));
                expected.push(json!({"model": "customer", "key": {"external_id": id.to_string()},
                    "data": {"external_id": id.to_string(), "email": format!("c{id}@example.com"), "display_name": display, "source": "remix"}}));
            } else {
                let data = json!({"id": id, "customer_id": id % 10, "amount": id * 3, "status": "paid"});
                objects.push(data.clone());
                expected.push(json!({"model": "order", "key": {"id": id}, "data": data}));
            }
        }
        let key = format!("r{request}");
        let response = node.post(route, &[("Idempotency-Key", &key)], &Value::Array(objects)).unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
    }

    let target = node.wait_caught_up("crm");
    assert_eq!(target["kind"], "http");
    assert_eq!(target["cursor"], expected.len());
    let delivered = by_offset(&api.delivered("/ingest", "crm"));
    assert_eq!(delivered.len(), expected.len(), "every record delivered exactly once");
    assert_eq!(
        delivered.keys().copied().collect::<Vec<_>>(),
        (1..=expected.len() as u64).collect::<Vec<_>>()
    );
    let got: Vec<Value> = delivered
        .values()
        .map(|r| {
            assert_eq!(r["op"], "upsert");
            assert!(r["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{r}");
            json!({"model": r["model"], "key": r["key"], "data": r["data"]})
        })
        .collect();
    assert_eq!(multiset(&got), multiset(&expected), "each record remixed per the target's mapping");
    // In log order.
    let ids: Vec<u64> = got
        .iter()
        .map(|r| {
            r["data"]["id"]
                .as_u64()
                .unwrap_or_else(|| r["data"]["external_id"].as_str().unwrap().parse().unwrap())
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "delivered in log order");
    assert!(api.received().iter().any(|r| r.status >= 500), "some requests were retried");
    node.verify_log();
}

#[test]
fn a_node_whose_ports_were_taken_meanwhile_starts_on_new_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = Node::new(tmp.path(), &example_config("webhook-to-jsonl.yaml"), &[]);
    // What a parallel test's connection can do between `free_addr` and the node's bind.
    let taken = std::net::TcpListener::bind(&node.webhook).expect("bind the picked address");
    let picked = node.webhook.clone();
    node.start();
    assert_ne!(node.webhook, picked);
    assert!(node.output().contains("Address already in use"), "{}", node.output());
    let response = node.post("/customers", &[], &json!([])).expect("POST to the new address");
    assert!(response.status < 500, "{}", response.text());
    drop(taken);
    node.stop();
}

#[test]
fn idempotency_keys_are_scoped_by_model_and_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = Node::new(tmp.path(), &example_config("webhook-to-jsonl.yaml"), &[]);
    node.start();
    // The status lines (logged at start on a non-terminal) show every source, a webhook too.
    wait_for("the webhook source's status line", || {
        node.output().contains("source hooks (webhook): listening on").then_some(())
    });
    let post = |node: &Node, route: &str, key: Option<&str>, object: Value| {
        let headers: Vec<(&str, &str)> = key.iter().map(|k| ("Idempotency-Key", *k)).collect();
        let response = node.post(route, &headers, &object).expect("POST");
        assert_eq!(response.status, 200, "{route}: {}", response.text());
        let body = response.json();
        (body["offsets"].clone(), body.get("duplicate").is_some_and(|d| d == true))
    };
    let customer = json!({"id": 1, "contact": {"email": "c1@example.com"}});
    let order = json!({"id": "1", "customer": {"id": 1}, "amount_cents": "100"});
    let by_event = json!({"id": 2, "contact": {"email": "c2@example.com"}, "event_id": "evt-1"});
    let order_by_event =
        json!({"id": "2", "customer": {"id": 2}, "amount_cents": "200", "event_id": "evt-1"});

    // One key, two models: two requests, both logged.
    let (customer_offsets, duplicate) = post(&node, "/customers", Some("op-1"), customer.clone());
    assert!(!duplicate);
    let (order_offsets, duplicate) = post(&node, "/orders", Some("op-1"), order.clone());
    assert!(!duplicate, "an order under a customer's key is a new request: {order_offsets}");
    assert_ne!(customer_offsets, order_offsets);
    // The same for the configured idempotency field.
    let (event_offsets, _) = post(&node, "/customers", None, by_event.clone());
    let (order_event_offsets, duplicate) = post(&node, "/orders", None, order_by_event.clone());
    assert!(!duplicate && order_event_offsets != event_offsets);

    // After a restart the index is rebuilt from the log: header and field keys alike.
    node.stop();
    node.start();
    assert_eq!(post(&node, "/customers", Some("op-1"), customer), (customer_offsets, true));
    assert_eq!(post(&node, "/orders", Some("op-1"), order), (order_offsets, true));
    assert_eq!(post(&node, "/customers", None, by_event), (event_offsets, false));
    assert_eq!(post(&node, "/orders", None, order_by_event), (order_event_offsets, false));
    assert_eq!(node.log_stat()["records"], 4, "nothing was logged twice");
    node.stop();
}

#[test]
fn a_blackhole_target_reads_remixes_and_drops_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let config = example_config("webhook-to-jsonl.yaml")
        .replace("kind: jsonl\n    dir: \"${REMIX_DATASET_DIR:-./datasets}\"", "kind: blackhole");
    assert!(config.contains("kind: blackhole"), "the example's jsonl target moved: {config}");
    let mut node = Node::new(tmp.path(), &config, &[]);
    node.start();
    let customers: Vec<Value> =
        (1..=300).map(|id| json!({"id": id, "contact": {"email": format!("c{id}@example.com")}})).collect();
    let response = node.post("/customers", &[], &json!(customers)).expect("POST");
    assert_eq!(response.status, 200, "{}", response.text());
    let target = node.wait_caught_up("dataset");
    assert_eq!(target["kind"], "blackhole");
    assert_eq!(node.log_stat()["records"], 300);
    assert_eq!(target["cursor"], node.log_stat()["last_offset"], "{target}");
    assert!(!node.dataset_dir.exists(), "a blackhole writes nothing");
    node.stop();
}
