//! Restart to ready with a full 128 MiB active segment (SPEC section 9: under 1 second).
//!
//! The log is written beforehand through `remix-storage` (segments of 256 MiB, so the 128 MiB of
//! records stay in the one active, unsealed segment: recovery must scan it, as after a crash), with
//! change records shaped like the webhook's (about 300 bytes, an idempotency key on every tenth batch,
//! so the start-up index scan has work), and the target's cursor at the end (a caught-up target, as
//! usual at a restart). Then `remix run` on the default configuration is timed from spawn to the first
//! `200` from `/readyz`, median of several starts; the same on an empty log is the anchor (process
//! start, configuration, schemas, listeners).
//!
//! `cargo bench --bench restart` (release build). `REMIX_BENCH_SEGMENT_MIB` (default 128) sets the
//! size of the active segment.

mod support;

use remix::record::{Change, Op, KIND_CHANGE};
use remix_storage::{AppendRecord, Log, LogOptions, OsFs};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{free_port, http_get, Remix, POLL};

const STARTS: usize = 5;
const BATCH_RECORDS: u64 = 1000;
const IDEMPOTENT_EVERY_BATCHES: u64 = 10;
const READY_MAX: Duration = Duration::from_secs(120);

fn change(i: u64, idempotency_key: Option<String>) -> AppendRecord {
    let change = Change {
        source: "hooks".into(),
        position: format!("req-{:016x}:{}", i / BATCH_RECORDS, i % BATCH_RECORDS),
        model: "customer".into(),
        op: Op::Upsert,
        key: json!({ "id": i }),
        data: json!({"id": i, "email": format!("customer{i}@example.com"), "name": format!("Customer number {i}"),
            "created_at": "2026-11-24T10:00:00Z", "note": "x".repeat(120)})
        .as_object()
        .cloned(),
        unchanged: Vec::new(),
        idempotency_key,
    };
    AppendRecord { kind: KIND_CHANGE, payload: serde_json::to_vec(&change).expect("JSON") }
}

/// Fills the log in `data_dir` with `bytes_min` bytes of records in one active segment; returns the
/// number of records.
fn fill(data_dir: &Path, bytes_min: u64) -> u64 {
    let options = LogOptions { segment_bytes: 2 * bytes_min, ..LogOptions::default() };
    let log = Log::open(Arc::new(OsFs), data_dir, options).expect("open log");
    let (mut written, mut next) = (0u64, 1u64);
    while written < bytes_min {
        let batch = next / BATCH_RECORDS;
        let key = batch.is_multiple_of(IDEMPOTENT_EVERY_BATCHES).then(|| format!("batch-{batch}"));
        let records: Vec<AppendRecord> =
            (next..next + BATCH_RECORDS).map(|i| change(i, key.clone())).collect();
        written += records.iter().map(|r| r.payload.len() as u64 + 32).sum::<u64>();
        log.append_blocking(records).expect("append");
        next += BATCH_RECORDS;
    }
    let last = next - 1;
    log.store_cursor("dataset", last).expect("store cursor");
    log.close().expect("close");
    last
}

/// Spawn to first `200` from `/readyz`, median of [`STARTS`] starts.
fn time_to_ready(root: &Path) -> Duration {
    let config = std::fs::canonicalize("config/remix.yaml").expect("config/remix.yaml");
    let mut times = Vec::new();
    for _ in 0..STARTS {
        let admin = format!("127.0.0.1:{}", free_port());
        let webhook = format!("127.0.0.1:{}", free_port());
        let started = Instant::now();
        let mut remix = Remix::start_with_env(
            &config,
            &root.join("remix.out"),
            &admin,
            &[
                ("REMIX_DATA_DIR", root.join("data").to_str().expect("utf-8")),
                ("REMIX_DATASET_DIR", root.join("datasets").to_str().expect("utf-8")),
                ("REMIX_ADMIN_ADDR", &admin),
                ("REMIX_WEBHOOK_ADDR", &webhook),
            ],
        );
        while http_get(&admin, "/readyz").map(|(status, _)| status) != Some(200) {
            remix.assert_running();
            assert!(started.elapsed() < READY_MAX, "remix did not become ready");
            std::thread::sleep(POLL / 20);
        }
        times.push(started.elapsed());
        remix.stop();
    }
    times.sort();
    times[STARTS / 2]
}

fn main() {
    let mib: u64 = std::env::var("REMIX_BENCH_SEGMENT_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(128);
    // `cargo bench` passes `--bench`; anything else (e.g. `cargo test --benches`) is a smoke run.
    let mib = if std::env::args().any(|a| a == "--bench") { mib } else { mib.min(1) };
    let empty = tempfile::tempdir().expect("tempdir");
    let full = tempfile::tempdir().expect("tempdir");
    let records = fill(&full.path().join("data"), mib * 1024 * 1024);
    eprintln!("restart: {records} records ({mib} MiB) in the active segment");
    let anchor = time_to_ready(empty.path());
    let with_log = time_to_ready(full.path());
    println!();
    println!("restart to ready (median of {STARTS}), default configuration");
    println!("empty log:                        {:>8.0} ms", anchor.as_secs_f64() * 1000.0);
    println!(
        "{mib} MiB active segment ({records} records): {:>8.0} ms  ({:.1}x the empty start)",
        with_log.as_secs_f64() * 1000.0,
        with_log.as_secs_f64() / anchor.as_secs_f64()
    );
    let verdict = if with_log < Duration::from_secs(1) { "met" } else { "NOT met" };
    println!("goal < 1000 ms {verdict}");
}
