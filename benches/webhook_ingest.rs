//! Webhook ingest, end to end through the real binary: records/s and request latency (p50, p99) at
//! several client concurrency levels. Every 200 means the records are fsynced in the log.
//!
//! The node runs the shape of the default configuration (webhook in, JSONL dataset out) on a
//! temporary data directory; the load generator (tokio + reqwest, in this process) shares the machine
//! with it, so on 2 cores the figures are a floor.
//!
//! `cargo bench --bench webhook_ingest` (REMIX_BENCH_SECONDS sets the time per level, default 5).

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Records per request.
const BATCH_RECORDS: usize = 10;
const CONCURRENCY_LEVELS: [usize; 4] = [1, 8, 32, 128];

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

struct Node(Child);
impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_node(dir: &std::path::Path, webhook: u16, admin: u16) -> Node {
    let schemas = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let config = format!(
        r#"
data_dir: {data}
admin: {{ listen: "127.0.0.1:{admin}" }}
models:
  customer: {{ schema: {schemas}/customer.json, key: [id] }}
sources:
  - name: hooks
    kind: webhook
    listen: "127.0.0.1:{webhook}"
    routes:
      /customers: {{ model: customer, fields: {{ id: {{ from: id, type: integer }}, email: email, name: name }} }}
targets:
  - {{ name: dataset, kind: jsonl, dir: {dataset}, models: {{ customer: {{}} }} }}
"#,
        data = dir.join("data").display(),
        dataset = dir.join("dataset").display(),
        schemas = schemas.display(),
    );
    let path = dir.join("remix.yaml");
    std::fs::File::create(&path).and_then(|mut f| f.write_all(config.as_bytes())).expect("write config");
    let child = Command::new(env!("CARGO_BIN_EXE_remix"))
        .args(["run", "--config", path.to_str().expect("utf-8 path")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start remix");
    let node = Node(child);
    let host = format!("127.0.0.1:{admin}");
    for _ in 0..300 {
        if answers_200(&host, "/readyz") {
            return node;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("remix did not become ready");
}

/// A tiny blocking readiness probe over a raw TCP stream.
fn answers_200(host: &str, path: &str) -> bool {
    use std::io::Read;
    let Ok(mut stream) = std::net::TcpStream::connect(host) else { return false };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

struct Level {
    concurrency: usize,
    records_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn run_level(
    url: &str,
    concurrency: usize,
    duration: Duration,
    next_id: Arc<std::sync::atomic::AtomicU64>,
) -> Level {
    remix::install_tls_provider();
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().expect("client");
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, stop, next_id) =
            (client.clone(), url.to_owned(), Arc::clone(&stop), Arc::clone(&next_id));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let first = next_id.fetch_add(BATCH_RECORDS as u64, Ordering::Relaxed);
                let body: Vec<_> = (first..first + BATCH_RECORDS as u64)
                    .map(|id| serde_json::json!({"id": id, "email": format!("u{id}@example.com"), "name": "bench user"}))
                    .collect();
                let sent = Instant::now();
                let response = client.post(&url).json(&body).send().await.expect("request");
                assert_eq!(response.status(), 200, "ingest failed");
                let _ = response.bytes().await;
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("task"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pick = |q: f64| {
        latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_secs_f64() * 1000.0
    };
    Level {
        concurrency,
        records_per_second: (latencies.len() * BATCH_RECORDS) as f64 / elapsed,
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks benches to list themselves
    }
    let seconds: u64 = std::env::var("REMIX_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let (webhook, admin) = (free_port(), free_port());
    let _node = start_node(dir.path(), webhook, admin);
    let url = format!("http://127.0.0.1:{webhook}/customers");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let next_id = Arc::new(std::sync::atomic::AtomicU64::new(1));
    println!(
        "webhook ingest: {BATCH_RECORDS} records per request, {seconds} s per level, data on {}",
        dir.path().display()
    );
    println!("{:>12} {:>14} {:>10} {:>10}", "concurrency", "records/s", "p50 ms", "p99 ms");
    for concurrency in CONCURRENCY_LEVELS {
        let level = runtime.block_on(run_level(
            &url,
            concurrency,
            Duration::from_secs(seconds),
            Arc::clone(&next_id),
        ));
        println!(
            "{:>12} {:>14.0} {:>10.2} {:>10.2}",
            level.concurrency, level.records_per_second, level.p50_ms, level.p99_ms
        );
    }
}
