//! Memory under webhook bursts (issue 16; SPEC guarantee 5: memory never grows with load), through
//! the real binary on the default configuration (`config/remix.yaml`: webhook in, JSONL out).
//!
//! Each load runs on a fresh node and data directory, and prints the node's peak RSS (`VmHWM`), its
//! RSS 10 s after the last answer (`VmRSS`; the target has caught up by then or is reported as not),
//! records/s from the first request sent to the last answer (every answer a `200`; a `503` is retried
//! after its `Retry-After`, as a well-behaved sender does, and counted), and the CPU time the node
//! used:
//! - `burst`: 16 concurrent POSTs of 110,000 small customer objects each (about 9.5 MiB bodies, under
//!   the 10 MiB limit) to `/customers`; next to it `burst, 1 client`: the same 16 bodies one after the
//!   other (the anchor);
//! - `small`: 1,000 concurrent POSTs of 100 objects; next to it the same 1,000 from one client.
//!
//! `cargo bench --bench memory` (about a minute and a half). `REMIX_BENCH_LOADS=burst` (or `small`)
//! runs only those; `REMIX_BENCH_BIN` runs another build of `remix` in the same harness (A/B);
//! `REMIX_BENCH_IDLE_SECONDS` (default 10) sets the wait before the idle RSS.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{free_port, Remix, POLL};

const BURST_REQUESTS: usize = 16;
const BURST_RECORDS: u64 = 110_000;
const SMALL_REQUESTS: usize = 1_000;
const SMALL_RECORDS: u64 = 100;
/// The webhook's default `body_bytes_max`.
const BODY_BYTES_MAX: usize = 10 << 20;
const CATCH_UP_MAX: Duration = Duration::from_secs(300);

/// One customer object of about 90 bytes (110,000 of them make a 9.6 MiB body).
fn object(id: u64) -> String {
    format!(r#"{{"id":{id},"email":"customer{id:07}@example.com","name":"Customer number {id:07}, shop"}}"#)
}

/// `requests` bodies of `records` objects each, ids 1.. across all.
fn bodies(requests: usize, records: u64) -> Vec<bytes::Bytes> {
    (0..requests as u64)
        .map(|r| {
            let objects: Vec<String> = (r * records + 1..=(r + 1) * records).map(object).collect();
            let body = format!("[{}]", objects.join(","));
            assert!(body.len() < BODY_BYTES_MAX, "a body of {} bytes is over the limit", body.len());
            bytes::Bytes::from(body)
        })
        .collect()
}

/// What one load did.
#[derive(Debug)]
struct Outcome {
    records: u64,
    elapsed: Duration,
    refused: u64,
    peak_rss: u64,
    idle_rss: u64,
    caught_up: bool,
    cpu: Duration,
}

/// `VmRSS` of a running node, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    kib * 1024
}

/// Posts `body` until it is answered `200`, waiting out each `503`'s `Retry-After`; returns the
/// number of `503`s.
async fn post(client: &reqwest::Client, url: &str, body: bytes::Bytes) -> u64 {
    let mut refused = 0;
    loop {
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("request");
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

/// Runs one load on a fresh node: `bodies` from `clients` concurrent clients (each takes the next
/// body until none is left).
fn run(root: &Path, bodies: &[bytes::Bytes], records: u64, clients: usize, idle: Duration) -> Outcome {
    let config = std::fs::canonicalize("config/remix.yaml").expect("config/remix.yaml");
    let dir = tempfile::tempdir_in(root).expect("tempdir");
    let (admin, webhook) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let mut remix = Remix::start_with_env(
        &config,
        &dir.path().join("remix.out"),
        &admin,
        &[
            ("REMIX_DATA_DIR", dir.path().join("data").to_str().expect("utf-8")),
            ("REMIX_DATASET_DIR", dir.path().join("datasets").to_str().expect("utf-8")),
            ("REMIX_ADMIN_ADDR", &admin),
            ("REMIX_WEBHOOK_ADDR", &webhook),
        ],
    );
    remix.wait_ready();
    let url = format!("http://{webhook}/customers");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let queue = Arc::new(std::sync::Mutex::new(bodies.to_vec()));
    let started = Instant::now();
    let refused: u64 = runtime.block_on(async {
        let client = reqwest::Client::builder().pool_max_idle_per_host(clients).build().expect("client");
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (client, url, queue) = (client.clone(), url.clone(), Arc::clone(&queue));
                tokio::spawn(async move {
                    let mut refused = 0;
                    loop {
                        let Some(body) = queue.lock().expect("queue").pop() else { return refused };
                        refused += post(&client, &url, body).await;
                    }
                })
            })
            .collect();
        let mut refused = 0;
        for task in tasks {
            refused += task.await.expect("client");
        }
        refused
    });
    let elapsed = started.elapsed();
    let pid = remix.pid();
    let ended = Instant::now();
    let mut caught_up = false;
    while ended.elapsed() < idle.max(CATCH_UP_MAX) {
        caught_up = caught_up || remix.target_caught_up(records);
        if caught_up && ended.elapsed() >= idle {
            break;
        }
        std::thread::sleep(POLL * 10);
    }
    let outcome = Outcome {
        records,
        elapsed,
        refused,
        peak_rss: remix.peak_rss(),
        idle_rss: rss(pid),
        caught_up,
        cpu: remix.cpu_time(),
    };
    remix.stop();
    outcome
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn print(what: &str, o: &Outcome, anchor: Option<&Outcome>) {
    let rate = o.records as f64 / o.elapsed.as_secs_f64();
    let ratio = anchor.map_or(String::from("-"), |a| {
        format!("{:.2}x", rate / (a.records as f64 / a.elapsed.as_secs_f64()))
    });
    println!(
        "{what:<22} {:>9} {:>8.2} s {:>10.0} {:>7} {:>6} {:>9.0} {:>9.0} {:>6.1} s {:>9}",
        o.records,
        o.elapsed.as_secs_f64(),
        rate,
        ratio,
        o.refused,
        mib(o.peak_rss),
        mib(o.idle_rss),
        o.cpu.as_secs_f64(),
        if o.caught_up { "yes" } else { "NO" },
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks benches to list themselves
    }
    remix::install_tls_provider();
    let loads = std::env::var("REMIX_BENCH_LOADS").unwrap_or_else(|_| "burst,small".into());
    let idle = Duration::from_secs(
        std::env::var("REMIX_BENCH_IDLE_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10),
    );
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    println!(
        "memory under webhook bursts, default configuration; idle RSS {} s after the last answer",
        idle.as_secs()
    );
    println!(
        "{:<22} {:>9} {:>10} {:>10} {:>7} {:>6} {:>9} {:>9} {:>8} {:>9}",
        "load", "records", "time", "records/s", "/1 cl.", "503s", "peak MiB", "idle MiB", "CPU", "caught up"
    );
    if loads.contains("burst") {
        let burst = bodies(BURST_REQUESTS, BURST_RECORDS);
        let records = BURST_REQUESTS as u64 * BURST_RECORDS;
        let bytes: usize = burst.iter().map(|b| b.len()).sum();
        eprintln!("burst: {BURST_REQUESTS} bodies of {:.2} MiB", mib(bytes as u64) / BURST_REQUESTS as f64);
        let one = run(root.path(), &burst, records, 1, idle);
        print("burst, 1 client", &one, None);
        let many = run(root.path(), &burst, records, BURST_REQUESTS, idle);
        print(&format!("burst, {BURST_REQUESTS} clients"), &many, Some(&one));
        let goal = |ok: bool| if ok { "met" } else { "NOT met" };
        println!(
            "goals for the burst: peak RSS <= 256 MiB: {}; RSS <= 64 MiB {} s after: {}",
            goal(many.peak_rss <= 256 << 20),
            idle.as_secs(),
            goal(many.idle_rss <= 64 << 20)
        );
    }
    if loads.contains("small") {
        let small = bodies(SMALL_REQUESTS, SMALL_RECORDS);
        let records = SMALL_REQUESTS as u64 * SMALL_RECORDS;
        let one = run(root.path(), &small, records, 1, idle);
        print("small, 1 client", &one, None);
        let many = run(root.path(), &small, records, SMALL_REQUESTS, idle);
        print(&format!("small, {SMALL_REQUESTS} clients"), &many, Some(&one));
    }
}
