//! PostgreSQL source into the log: how fast `remix run` (postgres source, no targets: only ingest)
//! streams N updated rows into its log, against `pg_recvlogical` streaming the same changes (same
//! publication, pgoutput protocol version 1) to a file, in one run on one throwaway server.
//!
//! Both slots are created before the load, and the load runs while neither consumer runs: N rows are
//! inserted, then every row is updated in 1,000-row transactions (`UPDATE bench SET v = v + 1`). Then
//! each consumer catches up alone: Remix from start to the moment its log's durable offset holds all N
//! changes (`remix_log_durable_offset` on `/metrics`); `pg_recvlogical --endpos <the LSN after the
//! load>` from start to exit (it writes the stream to a file and fsyncs it when it stops). Remix goes
//! first, so the WAL is as warm or warmer for the anchor. Each one's start-up is included.
//!
//! `cargo bench --bench pg_source` (release build). `REMIX_BENCH_ROWS` (default 1,000,000) scales the
//! load. Goal (SPEC section 9): Remix's rate at least 80% of `pg_recvlogical`'s.

mod support;

use remix_pgtest::{PgOptions, PgServer};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{free_port, Remix, POLL};

const TRANSACTION_ROWS: u64 = 1000;
const SERVER_CONF: [&str; 3] =
    ["max_wal_size = '8GB'", "checkpoint_timeout = '30min'", "shared_buffers = '256MB'"];
const CATCH_UP_MAX: Duration = Duration::from_secs(900);
const ROW_SCHEMA: &str = r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
  "properties": {"id": {"type": "integer"}, "k": {"type": "integer"}, "payload": {"type": "string"},
    "v": {"type": "integer"}},
  "required": ["id", "k", "payload", "v"], "additionalProperties": false}"#;

fn write_config(dir: &Path, source: &PgServer, admin: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("row.json"), ROW_SCHEMA).expect("write schema");
    let config = format!(
        r#"
data_dir: "{data}"
admin: {{ listen: "{admin}" }}
models:
  row: {{ schema: "{dir}/row.json", key: [id] }}
sources:
  - name: bench_db
    kind: postgres
    dsn: "{source}"
    slot: remix_bench
    publication: remix_bench
    snapshot: never
    tables:
      public.bench: {{ model: row }}
"#,
        data = dir.join("data").display(),
        dir = dir.display(),
        source = source.dsn("bench"),
    );
    let path = dir.join("remix.yaml");
    std::fs::write(&path, config).expect("write config");
    path
}

fn main() {
    let rows: u64 = std::env::var("REMIX_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    // `cargo bench` passes `--bench`; anything else (e.g. `cargo test --benches`) is a smoke run.
    let rows = if std::env::args().any(|a| a == "--bench") { rows } else { rows.min(2000) };
    let options = SERVER_CONF.iter().fold(PgOptions::new(), |o, line| o.conf(*line));
    let source = PgServer::start_with(options);
    source.create_db("bench");
    source.psql(
        "bench",
        "CREATE TABLE bench (id bigint PRIMARY KEY, k integer NOT NULL, payload text NOT NULL, v integer NOT NULL)",
    );
    source.psql(
        "bench",
        &format!(
            "INSERT INTO bench SELECT i, i % 1000, md5(i::text) || md5((i + 1)::text) || md5((i + 2)::text), 0 \
             FROM generate_series(1, {rows}) i"
        ),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = format!("127.0.0.1:{}", free_port());
    let config = write_config(dir.path(), &source, &admin);

    // Remix's first start creates its slot and publication; the anchor gets a slot of its own.
    let mut remix = Remix::start(&config, &admin);
    let deadline = Instant::now() + Duration::from_secs(60);
    while remix.log_durable_offset().is_none()
        || source.psql("bench", "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'remix_bench'")
            != "1"
    {
        assert!(Instant::now() < deadline, "remix did not create its slot");
        std::thread::sleep(POLL);
    }
    remix.stop();
    source.psql("bench", "SELECT pg_create_logical_replication_slot('recv', 'pgoutput')");

    eprintln!("pg_source: updating {rows} rows in {TRANSACTION_ROWS}-row transactions");
    let started = Instant::now();
    source.psql(
        "bench",
        &format!(
            "CREATE PROCEDURE load() LANGUAGE plpgsql AS $$ BEGIN FOR b IN 0..{} LOOP \
               UPDATE bench SET v = v + 1 WHERE id > b * {TRANSACTION_ROWS} AND id <= (b + 1) * {TRANSACTION_ROWS}; \
               COMMIT; END LOOP; END $$",
            rows.div_ceil(TRANSACTION_ROWS) - 1
        ),
    );
    source.psql("bench", "CALL load()");
    let end_lsn = source.psql("bench", "SELECT pg_current_wal_lsn()");
    let load = started.elapsed();
    source.psql("bench", "CHECKPOINT");
    eprintln!("pg_source: load committed in {:.1} s, WAL up to {end_lsn}", load.as_secs_f64());

    let started = Instant::now();
    let mut remix = Remix::start(&config, &admin);
    while remix.log_durable_offset().is_none_or(|offset| offset < rows) {
        assert!(started.elapsed() < CATCH_UP_MAX, "remix: no catch-up after {CATCH_UP_MAX:?}");
        std::thread::sleep(POLL);
    }
    let remix_time = started.elapsed();
    let remix_cpu = remix.cpu_time();
    remix.stop();
    let records = stdout_of(
        Command::new(env!("CARGO_BIN_EXE_remix")).args(["log", "stat", "--json", "--config"]).arg(&config),
    );
    let records: serde_json::Value = serde_json::from_str(&records).expect("log stat JSON");
    assert_eq!(records["records"], rows, "the log holds exactly the updates");

    let out = dir.path().join("recvlogical.bin");
    let started = Instant::now();
    let status = Command::new(PgServer::bindir().join("pg_recvlogical"))
        .args(["-d", &source.dsn("bench"), "--slot", "recv", "--start", "--no-loop", "--endpos", &end_lsn])
        .args(["-o", "proto_version=1", "-o", "publication_names=remix_bench", "-f"])
        .arg(&out)
        .status()
        .expect("run pg_recvlogical");
    let recv_time = started.elapsed();
    assert!(status.success(), "pg_recvlogical failed: {status}");
    let recv_bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);

    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    let ratio = rate(remix_time) / rate(recv_time);
    println!();
    println!("PostgreSQL source -> log, {rows} updated rows in {TRANSACTION_ROWS}-row transactions");
    println!(
        "remix run (postgres source, log only): {:>8.2} s  {:>10.0} rows/s",
        remix_time.as_secs_f64(),
        rate(remix_time)
    );
    println!(
        "pg_recvlogical (pgoutput to a file):   {:>8.2} s  {:>10.0} rows/s  ({:.0} MiB written)",
        recv_time.as_secs_f64(),
        rate(recv_time),
        recv_bytes as f64 / (1024.0 * 1024.0)
    );
    println!("remix CPU time (user + system): {:.2} s", remix_cpu.as_secs_f64());
    let verdict = if ratio >= 0.8 { "met" } else { "NOT met" };
    println!("remix / pg_recvlogical rate: {ratio:.2}  goal >= 0.80 {verdict}");
}

fn stdout_of(command: &mut Command) -> String {
    let out = command.output().expect("run");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
