//! Restart to ready with a full 128 MiB active segment (SPEC section 9: under 1 second, and not
//! growing with sealed history).
//!
//! The log is written beforehand through `remix-storage` (the last segment is opened with twice the
//! size it gets, so its 128 MiB of records stay in the one active, unsealed segment: recovery must scan
//! it, as after a crash), with change records shaped like the webhook's (about 300 bytes, an
//! idempotency key on every tenth batch, so the start-up index scan has work), and the target's cursor
//! at the end (a caught-up target, as usual at a restart). Then `remix run` on the default
//! configuration is timed from spawn to the first `200` from `/readyz` (with the CPU time the process
//! used by then, which depends less on what else the shared machine runs), medians of several starts,
//! on three logs in the same run:
//! - an empty log: the anchor (process start, configuration, schemas, listeners);
//! - only the full active segment;
//! - 2 GiB of sealed segments (128 MiB each, sealed with their `.idx` by the writer as in production)
//!   before the same full active segment. The goal is at most 1.5x the previous case: a start must not
//!   grow with sealed history.
//!
//! `cargo bench --bench restart` (release build; about 2.3 GiB in a temp dir). `REMIX_BENCH_SEGMENT_MIB`
//! (default 128) sets the size of the active segment and of each sealed one, `REMIX_BENCH_SEALED_MIB`
//! (default 2048) the sealed history, e.g. `REMIX_BENCH_SEGMENT_MIB=8 REMIX_BENCH_SEALED_MIB=64` for a
//! quick run.

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

/// Appends batches of records from offset `next` until `log` has `bytes_min` more bytes of frames;
/// returns the next offset.
fn append_bytes(log: &Log, mut next: u64, bytes_min: u64) -> u64 {
    let mut written = 0u64;
    while written < bytes_min {
        let batch = next / BATCH_RECORDS;
        let key = batch.is_multiple_of(IDEMPOTENT_EVERY_BATCHES).then(|| format!("batch-{batch}"));
        let records: Vec<AppendRecord> =
            (next..next + BATCH_RECORDS).map(|i| change(i, key.clone())).collect();
        written += records.iter().map(|r| r.payload.len() as u64 + 32).sum::<u64>();
        log.append_blocking(records).expect("append");
        next += BATCH_RECORDS;
    }
    next
}

/// Fills the log in `data_dir`: `sealed_bytes` of records in sealed segments of `segment_bytes` (none
/// when 0), then `active_bytes` in one active segment; returns the number of records.
fn fill(data_dir: &Path, sealed_bytes: u64, segment_bytes: u64, active_bytes: u64) -> u64 {
    let mut next = 1;
    if sealed_bytes > 0 {
        let options = LogOptions { segment_bytes, ..LogOptions::default() };
        let log = Log::open(Arc::new(OsFs), data_dir, options).expect("open log");
        // The writer seals a segment once it holds `segment_bytes` and starts the next one (empty):
        // stop right after the last roll, so the active segment starts with the records below.
        let segments = sealed_bytes.div_ceil(segment_bytes);
        while sealed_segments(data_dir) < segments {
            next = append_bytes(&log, next, 1);
        }
        log.close().expect("close");
    }
    let options = LogOptions { segment_bytes: 2 * active_bytes.max(segment_bytes), ..LogOptions::default() };
    let log = Log::open(Arc::new(OsFs), data_dir, options).expect("open log");
    let last = append_bytes(&log, next, active_bytes) - 1;
    log.store_cursor("dataset", last).expect("store cursor");
    log.close().expect("close");
    last
}

/// How many segments of the log in `data_dir` are sealed (have their `.idx`).
fn sealed_segments(data_dir: &Path) -> u64 {
    let entries = std::fs::read_dir(data_dir.join("log")).expect("log dir");
    entries.filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".idx"))).count()
        as u64
}

/// The bytes of the segment files in `data_dir`: (sealed, active).
fn segment_bytes_on_disk(data_dir: &Path) -> (u64, u64) {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(data_dir.join("log"))
        .expect("log dir")
        .map(|e| e.expect("entry"))
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().expect("metadata").len()))
        .collect();
    files.sort();
    let active = files.pop().map_or(0, |(_, bytes)| bytes);
    (files.iter().map(|(_, bytes)| bytes).sum(), active)
}

/// Spawn to first `200` from `/readyz`, and the CPU time the process used by then (a figure that
/// depends much less on what else the machine runs), medians of [`STARTS`] starts.
fn time_to_ready(root: &Path) -> Ready {
    let config = std::fs::canonicalize("config/remix.yaml").expect("config/remix.yaml");
    let (mut times, mut cpu) = (Vec::new(), Vec::new());
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
        cpu.push(remix.cpu_time());
        remix.stop();
    }
    times.sort();
    cpu.sort();
    Ready { wall: times[STARTS / 2], cpu: cpu[STARTS / 2] }
}

#[derive(Debug, Clone, Copy)]
struct Ready {
    wall: Duration,
    cpu: Duration,
}

fn env_mib(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The goal on the history's cost: a start with sealed history at most this many times the start
/// with only the active segment.
const SEALED_RATIO_MAX: f64 = 1.5;

fn main() {
    let mib = env_mib("REMIX_BENCH_SEGMENT_MIB", 128);
    let sealed_mib = env_mib("REMIX_BENCH_SEALED_MIB", 2048);
    // `cargo bench` passes `--bench`; anything else (e.g. `cargo test --benches`) is a smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (mib, sealed_mib) = if smoke { (mib.min(1), sealed_mib.min(2)) } else { (mib, sealed_mib) };
    let segment = mib * 1024 * 1024;
    let empty = tempfile::tempdir().expect("tempdir");
    let active = tempfile::tempdir().expect("tempdir");
    let history = tempfile::tempdir().expect("tempdir");
    let records = fill(&active.path().join("data"), 0, segment, segment);
    eprintln!("restart: {records} records ({mib} MiB) in the active segment");
    let history_records = fill(&history.path().join("data"), sealed_mib * 1024 * 1024, segment, segment);
    let (sealed_bytes, active_bytes) = segment_bytes_on_disk(&history.path().join("data"));
    let sealed = sealed_segments(&history.path().join("data"));
    eprintln!(
        "restart: {history_records} records: {sealed} sealed segments ({} MiB) and an active one ({} MiB)",
        sealed_bytes >> 20,
        active_bytes >> 20
    );
    let anchor = time_to_ready(empty.path());
    let with_log = time_to_ready(active.path());
    let with_history = time_to_ready(history.path());
    let ratio = with_history.wall.as_secs_f64() / with_log.wall.as_secs_f64();
    let cpu_ratio = with_history.cpu.as_secs_f64() / with_log.cpu.as_secs_f64().max(0.01);
    let row = |what: &str, ready: Ready, records: u64| {
        let times = ready.wall.as_secs_f64() / anchor.wall.as_secs_f64();
        println!(
            "{what:<46} {:>7.0} ms  {:>7.0} ms  {times:>6.1}x  {records:>9}",
            ms(ready.wall),
            ms(ready.cpu)
        );
    };
    println!();
    println!("restart to ready (medians of {STARTS} starts), default configuration");
    println!("{:<46} {:>10} {:>11} {:>8} {:>11}", "log", "ready", "CPU", "/empty", "records");
    row("empty", anchor, 0);
    row(&format!("only the full active segment ({mib} MiB)"), with_log, records);
    let what = format!("{sealed} sealed segments ({} MiB) + the active one", sealed_bytes >> 20);
    row(&what, with_history, history_records);
    let verdict = if with_log.wall < Duration::from_secs(1) { "met" } else { "NOT met" };
    println!("goal < 1000 ms with the full active segment: {verdict}");
    let verdict = if ratio <= SEALED_RATIO_MAX { "met" } else { "NOT met" };
    println!(
        "with sealed history / only the active segment: {ratio:.2}x ready, {cpu_ratio:.2}x CPU \
         (goal <= {SEALED_RATIO_MAX}x: {verdict})"
    );
}
