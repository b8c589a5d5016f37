//! PostgreSQL → PostgreSQL catch-up: Remix (the real binary: postgres source → log → postgres target)
//! against PostgreSQL's own logical replication (publication/subscription), in one run, on three
//! throwaway servers (remix-pgtest): the source, the native subscriber, and Remix's target.
//!
//! Both replicators start from the same point (their slots are created before any data), and each
//! catch-up is timed alone, the other one stopped: N rows are inserted at the source in 1,000-row
//! transactions, then native replication is enabled and timed until the subscriber has them all, then
//! Remix is started and timed until its target has them all; then the same for an update of every
//! row (1,000-row transactions). "Has them all" is the marker row the source commits after the load:
//! both replicators apply in commit order (Remix's batches commit in log order, cursor included), so
//! the marker is visible only when everything before it is. Afterwards the tables are compared with
//! the source (count and an ordered checksum). Remix's peak RSS is its `VmHWM`.
//!
//! `cargo bench --bench pg_to_pg` (release build). `REMIX_BENCH_ROWS` (default 1,000,000) scales the
//! load. Goals (SPEC section 9): inserts faster than native, updates in at most half of native's
//! time, peak RSS under 256 MiB.

mod support;

use remix_pgtest::{PgOptions, PgServer};
use std::path::Path;
use std::time::{Duration, Instant};
use support::{free_port, Remix, POLL};

const TABLE: &str = "CREATE TABLE bench (id bigint PRIMARY KEY, k integer NOT NULL, payload text NOT NULL, \
                     v integer NOT NULL); CREATE TABLE marker (phase text PRIMARY KEY);";
const TRANSACTION_ROWS: u64 = 1000;
/// The same settings on every server: fewer checkpoints in the middle of a run.
const SERVER_CONF: [&str; 3] =
    ["max_wal_size = '8GB'", "checkpoint_timeout = '30min'", "shared_buffers = '256MB'"];
const CATCH_UP_MAX: Duration = Duration::from_secs(900);

const ROW_SCHEMA: &str = r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
  "properties": {"id": {"type": "integer"}, "k": {"type": "integer"}, "payload": {"type": "string"},
    "v": {"type": "integer"}},
  "required": ["id", "k", "payload", "v"], "additionalProperties": false}"#;
const MARKER_SCHEMA: &str = r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
  "properties": {"phase": {"type": "string"}}, "required": ["phase"], "additionalProperties": false}"#;

fn server() -> PgServer {
    let options = SERVER_CONF.iter().fold(PgOptions::new(), |o, line| o.conf(*line));
    let server = PgServer::start_with(options);
    server.create_db("bench");
    server.psql("bench", TABLE);
    server
}

/// The server processes whose CPU time counts: each replicator's walsender at the source, native's
/// apply worker, Remix's session at the target (the only client besides the poller).
const WALSENDER_NATIVE: &str = "SELECT pid FROM pg_stat_replication WHERE application_name = 'native'";
const WALSENDER_REMIX: &str = "SELECT pid FROM pg_stat_replication WHERE application_name = 'remix'";
const APPLY_WORKER: &str = "SELECT pid FROM pg_stat_subscription WHERE subname = 'native' AND relid IS NULL";
const TARGET_BACKEND: &str = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' \
                              AND datname = 'bench' AND pid <> pg_backend_pid()";

/// A connection kept open to ask for the marker: a `psql` process per poll would cost more CPU than
/// the query, on the same cores as what is timed.
struct Poller {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Poller {
    fn connect(server: &PgServer) -> Poller {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        // A current-thread runtime drives the connection task during each `block_on`.
        let client = runtime.block_on(async {
            let (client, connection) =
                tokio_postgres::connect(&server.dsn("bench"), tokio_postgres::NoTls).await.expect("connect");
            tokio::spawn(connection);
            client
        });
        Poller { runtime, client }
    }

    /// CPU time of the server processes a query lists (`SELECT pid ...`).
    fn cpu_of(&self, pids_sql: &str) -> Duration {
        let rows = self.runtime.block_on(self.client.query(pids_sql, &[])).expect("list server processes");
        rows.iter().map(|row| support::process_cpu(row.get::<_, i32>(0) as u32)).sum()
    }

    fn has_marker(&self, phase: &str) -> bool {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&phase];
        let query = self.client.query_opt("SELECT 1 FROM marker WHERE phase = $1", &params);
        self.runtime.block_on(query).is_ok_and(|row| row.is_some())
    }

    fn wait_marker(&self, phase: &str, mut also: impl FnMut()) -> Duration {
        let start = Instant::now();
        while !self.has_marker(phase) {
            assert!(start.elapsed() < CATCH_UP_MAX, "{phase}: no catch-up after {CATCH_UP_MAX:?}");
            also();
            std::thread::sleep(POLL);
        }
        start.elapsed()
    }
}

/// Count and ordered checksum of the bench table.
fn checksum(server: &PgServer) -> String {
    server.psql(
        "bench",
        "SELECT count(*) || ' rows, ' || coalesce(md5(string_agg(concat_ws('|', id, k, payload, v), ',' ORDER BY id)), '-') \
         FROM bench",
    )
}

/// Commits the load at the source: `rows` inserts or an update of every row, 1,000 rows per
/// transaction, then the marker row of the phase.
fn load(source: &PgServer, phase: &str, rows: u64) -> Duration {
    let start = Instant::now();
    let batches = rows.div_ceil(TRANSACTION_ROWS);
    let body = match phase {
        "insert" => format!(
            "INSERT INTO bench SELECT i, i % 1000, md5(i::text) || md5((i + 1)::text) || md5((i + 2)::text), 0 \
             FROM generate_series(b * {TRANSACTION_ROWS} + 1, least((b + 1) * {TRANSACTION_ROWS}, {rows})) i"
        ),
        _ => format!(
            "UPDATE bench SET v = v + 1, k = k + 1 WHERE id > b * {TRANSACTION_ROWS} AND id <= (b + 1) * {TRANSACTION_ROWS}"
        ),
    };
    source.psql(
        "bench",
        &format!(
            "CREATE OR REPLACE PROCEDURE load_{phase}() LANGUAGE plpgsql AS $$ BEGIN \
             FOR b IN 0..{} LOOP {body}; COMMIT; END LOOP; END $$",
            batches - 1
        ),
    );
    source.psql("bench", &format!("CALL load_{phase}()"));
    source.psql("bench", &format!("INSERT INTO marker VALUES ('{phase}')"));
    start.elapsed()
}

fn set_subscription(native: &PgServer, enabled: bool) {
    let verb = if enabled { "ENABLE" } else { "DISABLE" };
    native.psql("bench", &format!("ALTER SUBSCRIPTION native {verb}"));
    if !enabled {
        // Wait for the apply worker to exit, so that it does not compete with Remix.
        let deadline = Instant::now() + Duration::from_secs(60);
        while native.psql("bench", "SELECT count(pid) FROM pg_stat_subscription WHERE subname = 'native'")
            != "0"
        {
            assert!(Instant::now() < deadline, "the subscription's worker did not stop");
            std::thread::sleep(POLL);
        }
    }
}

fn write_config(dir: &Path, source: &PgServer, target: &PgServer, admin: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("row.json"), ROW_SCHEMA).expect("write schema");
    std::fs::write(dir.join("marker.json"), MARKER_SCHEMA).expect("write schema");
    let config = format!(
        r#"
data_dir: "{data}"
admin: {{ listen: "{admin}" }}
models:
  row: {{ schema: "{dir}/row.json", key: [id] }}
  marker: {{ schema: "{dir}/marker.json", key: [phase] }}
sources:
  - name: bench_db
    kind: postgres
    dsn: "{source}"
    slot: remix_bench
    publication: remix_bench
    snapshot: never
    tables:
      public.bench: {{ model: row }}
      public.marker: {{ model: marker }}
targets:
  - name: warehouse
    kind: postgres
    dsn: "{target}"
    batch: {{ records_max: 10000, linger_ms: 20 }}
    models:
      row: {{ table: public.bench }}
      marker: {{ table: public.marker }}
"#,
        data = dir.join("data").display(),
        dir = dir.display(),
        source = source.dsn("bench"),
        target = target.dsn("bench"),
    );
    let path = dir.join("remix.yaml");
    std::fs::write(&path, config).expect("write config");
    path
}

struct Phase {
    name: &'static str,
    load: Duration,
    native: Duration,
    remix: Duration,
    /// When Remix's log held the whole phase (from Remix's start).
    remix_log: Option<Duration>,
    /// CPU time Remix used for the phase.
    remix_cpu: Duration,
    /// CPU time of native replication's walsender and apply worker.
    native_cpu: Duration,
    /// CPU time of Remix's walsender and its session at the target.
    servers_cpu: Duration,
}

fn main() {
    let rows: u64 = std::env::var("REMIX_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    // `cargo bench` passes `--bench`; anything else (e.g. `cargo test --benches`) is a smoke run.
    let rows = if std::env::args().any(|a| a == "--bench") { rows } else { rows.min(2000) };
    eprintln!(
        "pg_to_pg: {rows} rows, {TRANSACTION_ROWS}-row transactions; starting three PostgreSQL servers"
    );
    let source = server();
    let native = server();
    let target = server();
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = format!("127.0.0.1:{}", free_port());
    let config = write_config(dir.path(), &source, &target, &admin);

    source.psql("bench", "CREATE PUBLICATION native FOR TABLE bench, marker");
    native.psql(
        "bench",
        &format!(
            "CREATE SUBSCRIPTION native CONNECTION '{}' PUBLICATION native WITH (copy_data = false, enabled = false)",
            source.dsn("bench")
        ),
    );
    // Remix's first start creates its slot and publication; it then stops until its catch-up.
    let mut remix = Remix::start(&config, &admin);
    remix.wait_ready();
    let deadline = Instant::now() + Duration::from_secs(60);
    while source.psql("bench", "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'remix_bench'")
        != "1"
    {
        assert!(Instant::now() < deadline, "remix did not create its slot");
        std::thread::sleep(POLL);
    }
    remix.stop();

    let source_poller = Poller::connect(&source);
    let native_poller = Poller::connect(&native);
    let target_poller = Poller::connect(&target);
    let mut phases = Vec::new();
    let mut peak_rss = 0;
    let mut expected_offset = 0;
    for name in ["insert", "update"] {
        let load_time = load(&source, name, rows);
        expected_offset += rows + 1;
        eprintln!("{name}: source load committed in {:.1} s", load_time.as_secs_f64());
        source.psql("bench", "CHECKPOINT");
        set_subscription(&native, true);
        let native_time = native_poller.wait_marker(name, || {});
        let native_cpu = source_poller.cpu_of(WALSENDER_NATIVE) + native_poller.cpu_of(APPLY_WORKER);
        set_subscription(&native, false);
        eprintln!("{name}: native caught up in {:.2} s", native_time.as_secs_f64());
        let start = Instant::now();
        let remix = Remix::start(&config, &admin);
        let mut remix_log = None;
        target_poller.wait_marker(name, || {
            if remix_log.is_none() && remix.target_durable_offset().is_some_and(|o| o >= expected_offset) {
                remix_log = Some(start.elapsed());
            }
        });
        let remix_time = start.elapsed();
        peak_rss = peak_rss.max(remix.peak_rss());
        let remix_cpu = remix.cpu_time();
        let servers_cpu = source_poller.cpu_of(WALSENDER_REMIX) + target_poller.cpu_of(TARGET_BACKEND);
        remix.stop();
        eprintln!("{name}: remix caught up in {:.2} s", remix_time.as_secs_f64());
        let expected = checksum(&source);
        for (who, server) in [("native", &native), ("remix", &target)] {
            let got = checksum(server);
            assert_eq!(got, expected, "{name}: the {who} copy differs from the source");
        }
        phases.push(Phase {
            name,
            load: load_time,
            native: native_time,
            remix: remix_time,
            remix_log,
            remix_cpu,
            native_cpu,
            servers_cpu,
        });
    }

    println!();
    println!("PostgreSQL -> PostgreSQL catch-up, {rows} rows in {TRANSACTION_ROWS}-row transactions");
    println!(
        "{:<8} {:>10} {:>12} {:>12} {:>14} {:>13} {:>13}  goal",
        "phase", "load (s)", "native (s)", "remix (s)", "remix/native", "remix log (s)", "remix CPU (s)"
    );
    for p in &phases {
        let ratio = p.remix.as_secs_f64() / p.native.as_secs_f64();
        let (goal, limit) = if p.name == "insert" { ("< 1.00", 1.0) } else { ("<= 0.50", 0.5) };
        let verdict = if ratio <= limit { "met" } else { "NOT met" };
        println!(
            "{:<8} {:>10.2} {:>12.2} {:>12.2} {:>14.2} {:>13} {:>13.2}  {goal} {verdict}",
            p.name,
            p.load.as_secs_f64(),
            p.native.as_secs_f64(),
            p.remix.as_secs_f64(),
            ratio,
            p.remix_log.map_or("-".to_owned(), |d| format!("{:.2}", d.as_secs_f64())),
            p.remix_cpu.as_secs_f64(),
        );
    }
    println!();
    println!("CPU time (s): native = walsender + apply worker; remix = walsender + remix + target session");
    for p in &phases {
        let remix_total = p.servers_cpu + p.remix_cpu;
        println!(
            "{:<8} native {:>6.2}   remix {:>6.2} (servers {:.2} + remix {:.2})   on 2 cores at least {:.2} s",
            p.name,
            p.native_cpu.as_secs_f64(),
            remix_total.as_secs_f64(),
            p.servers_cpu.as_secs_f64(),
            p.remix_cpu.as_secs_f64(),
            remix_total.as_secs_f64() / 2.0,
        );
    }
    let mib = peak_rss as f64 / (1024.0 * 1024.0);
    let verdict = if mib < 256.0 { "met" } else { "NOT met" };
    println!("remix peak RSS (VmHWM): {mib:.0} MiB  goal < 256 MiB {verdict}");
}
