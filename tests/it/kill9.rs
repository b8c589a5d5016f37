//! Crash safety of the whole node: `remix run` is killed with SIGKILL at random moments (some shortly
//! after a rewind of the dataset) while clients stream batches and retry whatever was not
//! acknowledged. Every acknowledged record must end up in the
//! log once, in the dataset once, and at the HTTP API once (across distinct idempotency keys).

use crate::support::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const KILLS: usize = 12;
const CLIENTS: u64 = 2;

fn config() -> String {
    let schemas = schemas_dir();
    format!(
        r#"
data_dir: "${{REMIX_DATA_DIR}}"
admin: {{ listen: "${{REMIX_ADMIN_ADDR}}" }}
log: {{ segment_bytes: 64KiB }}
models:
  customer: {{ schema: {schemas}/customer.json, key: [id] }}
sources:
  - name: hooks
    kind: webhook
    listen: "${{REMIX_WEBHOOK_ADDR}}"
    routes:
      /customers: {{ model: customer, fields: {{ id: id, email: email, name: name }} }}
targets:
  - name: dataset
    kind: jsonl
    dir: "${{REMIX_DATASET_DIR}}"
    batch: {{ records_max: 300, linger_ms: 5 }}
    models: {{ customer: {{}} }}
  - name: api
    kind: http
    url: "${{REMIX_HTTP_URL}}"
    timeout: 5s
    batch: {{ records_max: 100, linger_ms: 5 }}
    models: {{ customer: {{}} }}
"#,
        schemas = schemas.display()
    )
}

/// One client: sends batches with an `Idempotency-Key` until told to stop, retrying each one until it
/// is acknowledged. Returns the records acknowledged.
fn client(webhook: &str, thread: u64, stop: &AtomicBool, duplicates: &AtomicUsize) -> Vec<Value> {
    let mut acknowledged = Vec::new();
    let mut rng = Rng::new(thread);
    let mut batch = 0u64;
    while !stop.load(Ordering::Relaxed) {
        batch += 1;
        let records: Vec<Value> = (0..rng.range(1..=20))
            .map(|i| {
                let id = thread * 1_000_000_000 + batch * 100 + i;
                json!({"id": id, "email": format!("{id}@example.com"), "name": format!("t{thread} b{batch} #{i}")})
            })
            .collect();
        let key = format!("t{thread}-b{batch}");
        let mut attempts = 0;
        loop {
            attempts += 1;
            assert!(attempts < 5000, "batch {key} was never acknowledged");
            match post_json(
                webhook,
                "/customers",
                &[("Idempotency-Key", &key)],
                &Value::Array(records.clone()),
            ) {
                Ok(response) if response.status == 200 => {
                    let body = response.json();
                    assert_eq!(body["accepted"], records.len(), "{key}: {body}");
                    if body["duplicate"] == true {
                        duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
                // The node is shutting down or not there: retry.
                Ok(response) if response.status == 503 => {}
                Ok(response) => panic!("{key}: unexpected answer {} {}", response.status, response.text()),
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        acknowledged.extend(records);
        std::thread::sleep(Duration::from_millis(2));
    }
    acknowledged
}

/// Sets the flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn every_acknowledged_record_is_delivered_exactly_once_across_kill9() {
    let tmp = tempfile::tempdir().unwrap();
    let api = TestApi::start();
    let url = api.url("/ingest");
    let mut node = Node::new(tmp.path(), &config(), &[("REMIX_HTTP_URL", &url)]);
    let mut rng = Rng::from_clock("kill9");
    node.start();
    let webhook = node.webhook.clone();
    let stop = AtomicBool::new(false);
    let duplicates = AtomicUsize::new(0);

    let acknowledged: Vec<Value> = std::thread::scope(|scope| {
        let clients: Vec<_> = (1..=CLIENTS)
            .map(|t| {
                let (webhook, stop, duplicates) = (&webhook, &stop, &duplicates);
                scope.spawn(move || client(webhook, t, stop, duplicates))
            })
            .collect();
        // Whatever happens here (a failed assertion too), the clients stop, so the scope can end.
        let _stop = StopOnDrop(&stop);
        for round in 0..KILLS {
            std::thread::sleep(Duration::from_millis(rng.range(50..=1200)));
            if round % 3 == 1 {
                // A rewind shortly before the crash: the dataset must still end with each record once.
                let durable = node.log_stat()["durable_offset"].as_u64().unwrap();
                let to = rng.range(0..=durable).to_string();
                node.cli_json(&["target", "rewind", "dataset", "--to-offset", &to]);
                std::thread::sleep(Duration::from_millis(rng.range(0..=300)));
            }
            node.kill9();
            // While no node runs: `log verify` beside a busy node can race with cursor updates.
            node.verify_log();
            node.start();
        }
        stop.store(true, Ordering::Relaxed);
        clients.into_iter().flat_map(|c| c.join().expect("a client failed")).collect()
    });
    eprintln!(
        "kill9: {} records acknowledged in {KILLS} runs, {} retries answered as duplicates",
        acknowledged.len(),
        duplicates.load(Ordering::Relaxed)
    );

    node.wait_caught_up("dataset");
    node.wait_caught_up("api");
    let stat = node.log_stat();
    assert_eq!(stat["records"], acknowledged.len(), "the log holds every acknowledged record once: {stat}");
    let want = multiset(&acknowledged);
    assert!(want.values().all(|&n| n == 1));

    let lines: Vec<Value> = dataset_lines(&node.dataset_dir, "customer")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got = multiset(&lines);
    let doubled: Vec<_> = got.iter().filter(|(_, &n)| n > 1).map(|(l, _)| l).take(5).collect();
    assert!(doubled.is_empty(), "duplicate dataset lines: {doubled:?}");
    let missing: Vec<_> = want.keys().filter(|l| !got.contains_key(*l)).take(5).collect();
    assert!(missing.is_empty(), "acknowledged but not in the dataset: {missing:?}");
    assert_eq!(got, want, "the dataset is exactly the acknowledged records");

    // The API may see a request again after a crash, under the same key and with the same body; across
    // distinct keys every record arrives exactly once.
    let mut bodies: BTreeMap<String, Value> = BTreeMap::new();
    let mut by_key: BTreeMap<String, Value> = BTreeMap::new();
    let mut resent = 0;
    for r in api.received() {
        if let Some(first) = bodies.insert(r.key.clone(), r.body.clone()) {
            assert_eq!(first, r.body, "two bodies under idempotency key {}", r.key);
        }
        if (200..300).contains(&r.status) && by_key.insert(r.key.clone(), r.body).is_some() {
            resent += 1;
        }
    }
    eprintln!("kill9: {} requests to the API, {resent} of them sent again after a crash", bodies.len());
    let records: Vec<Value> =
        by_key.values().flat_map(|b| b["records"].as_array().unwrap().clone()).collect();
    let delivered = by_offset(&records);
    assert_eq!(delivered.len(), acknowledged.len(), "every record reached the API once");
    let data: Vec<Value> = delivered.values().map(|r| r["data"].clone()).collect();
    assert_eq!(multiset(&data), want);

    node.stop();
    node.verify_log();
}
