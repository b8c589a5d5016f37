//! The ingest memory budget (`ingest.memory_bytes_max`), through the real binary: a request that
//! finds no room within `ingest.wait_ms` is answered `503` with `Retry-After` and leaves nothing in
//! the log or the DLQ; a sender that retries its 503s gets every record logged exactly once.

use crate::support::*;
use serde_json::{json, Value};
use std::io::Write;
use std::time::Duration;

/// The example webhook configuration without per-object idempotency (a retry is safe only because a
/// refused request left nothing behind), with `ingest` set to `ingest`.
fn config(ingest: &str) -> String {
    let config = example_config("webhook-to-jsonl.yaml");
    let config = config.replace("    idempotency_field: event_id", "");
    assert!(!config.contains("idempotency_field"));
    format!("{config}\ningest: {ingest}\n")
}

fn customer(id: u64) -> Value {
    json!({"id": id, "contact": {"email": format!("{id}@example.com")}, "name": format!("Customer {id}")})
}

/// `name value` of an unlabelled metric, from the admin API.
fn metric(node: &Node, name: &str) -> Option<f64> {
    let metrics = http("GET", &node.admin, "/metrics", &[], b"").ok()?.text();
    let line = metrics.lines().find(|l| l.split_whitespace().next() == Some(name))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_request_refused_for_memory_leaves_nothing_in_the_log_or_the_dlq() {
    let tmp = tempfile::tempdir().unwrap();
    let mut node = Node::new(tmp.path(), &config("{ memory_bytes_max: 64KiB, wait_ms: 200 }"), &[]);
    node.start();
    // A sender that announces 60,000 bytes and sends one: it holds the whole budget while its body
    // is read (what it reserves is its body and what the body becomes, at most the budget).
    let mut slow = std::net::TcpStream::connect(&node.webhook).unwrap();
    let head = "POST /customers HTTP/1.1\r\nHost: remix\r\nContent-Type: application/json\r\n\
                Content-Length: 60000\r\n\r\n[";
    slow.write_all(head.as_bytes()).unwrap();
    wait_for("the slow request's reservation", || {
        (metric(&node, "remix_ingest_memory_bytes") == Some(65536.0)).then_some(())
    });
    assert_eq!(metric(&node, "remix_ingest_memory_bytes_max"), Some(65536.0));

    let valid = json!([customer(1), customer(2)]);
    let invalid = json!([customer(3), {"id": "not a number", "contact": {"email": 5}}]);
    for body in [&valid, &invalid] {
        let r = node.post("/customers", &[], body).unwrap();
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.header("retry-after"), Some("1"), "{:?}", r.headers);
        let message = r.json()["error"].as_str().unwrap().to_owned();
        assert!(message.contains("memory budget"), "{message}");
    }
    assert!(metric(&node, "remix_ingest_memory_refused_total").is_some_and(|n| n >= 2.0));
    let stat = node.log_stat();
    assert_eq!(stat["last_offset"], 0, "nothing was logged: {stat}");
    assert_eq!(node.cli_json(&["dlq", "list"]), json!([]), "nothing was dead-lettered");

    // The sender goes away: its room comes back, and the same requests are answered as usual.
    drop(slow);
    wait_for("the room to come back", || {
        (metric(&node, "remix_ingest_memory_bytes") == Some(0.0)).then_some(())
    });
    let r = node.post("/customers", &[], &valid).unwrap();
    assert_eq!((r.status, r.json()["offsets"].clone()), (200, json!([1, 2])), "{}", r.text());
    let r = node.post("/customers", &[], &invalid).unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(node.cli_json(&["dlq", "list"]).as_array().map(Vec::len), Some(1));
    node.wait_caught_up("dataset");
    assert_eq!(dataset_lines(&node.dataset_dir, "customer").len(), 2);
    node.verify_log();
}

/// Posts `body` with reqwest until it is answered `200`, sleeping out every `503`'s `Retry-After`;
/// returns the number of 503s.
async fn post_until_accepted(client: &reqwest::Client, url: &str, body: Vec<u8>) -> u64 {
    let mut refused = 0;
    loop {
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("the node answers");
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
        let text = response.text().await.unwrap_or_default();
        match (status, retry_after) {
            (200, _) => return refused,
            (503, Some(seconds)) => {
                refused += 1;
                tokio::time::sleep(Duration::from_secs(seconds)).await;
            }
            _ => panic!("answered {status} (Retry-After {retry_after:?}): {text}"),
        }
    }
}

#[test]
fn a_sender_retrying_its_503s_gets_every_record_logged_exactly_once() {
    const CLIENTS: u64 = 16;
    const BATCHES: u64 = 4;
    const RECORDS: u64 = 500;
    let tmp = tempfile::tempdir().unwrap();
    // Room for about two of these requests (36 KB bodies) at once; the others wait 50 ms, then 503.
    let mut node = Node::new(tmp.path(), &config("{ memory_bytes_max: 320KiB, wait_ms: 50 }"), &[]);
    node.start();
    remix::install_tls_provider();
    let url = format!("http://{}/customers", node.webhook);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let refused: u64 = runtime.block_on(async {
        let client = reqwest::Client::new();
        let senders: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    let mut refused = 0;
                    for b in 0..BATCHES {
                        let first = (c * BATCHES + b) * RECORDS;
                        let batch: Vec<Value> = (first..first + RECORDS).map(customer).collect();
                        refused +=
                            post_until_accepted(&client, &url, serde_json::to_vec(&batch).unwrap()).await;
                    }
                    refused
                })
            })
            .collect();
        let mut refused = 0;
        for sender in senders {
            refused += sender.await.unwrap();
        }
        refused
    });
    assert!(refused > 0, "the budget never refused a request: the test proves nothing");
    let total = CLIENTS * BATCHES * RECORDS;
    assert_eq!(node.log_stat()["last_offset"], total);
    node.wait_caught_up("dataset");
    let mut ids: Vec<u64> = dataset_lines(&node.dataset_dir, "customer")
        .iter()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["id"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..total).collect::<Vec<_>>(), "every record exactly once");
    assert_eq!(node.cli_json(&["dlq", "list"]), json!([]));
    assert_eq!(metric(&node, "remix_ingest_memory_bytes"), Some(0.0));
    eprintln!("{refused} requests were refused for memory and retried");
    node.verify_log();
}
