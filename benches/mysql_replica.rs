//! MariaDB → MariaDB catch-up: Remix (the real binary: mysql source → log → mysql target) against
//! MariaDB's own replication (a replica server catching up the same binary log), in one run, on three
//! throwaway servers (remix-mytest): the primary, the native replica, and Remix's target.
//!
//! Both replicators start from the same binary log position (taken before any data), and each
//! catch-up is timed alone, the other one stopped: N rows are inserted at the primary in 1,000-row
//! transactions, then the replica's threads are started (`START SLAVE`) and timed until it has them
//! all, then `remix run` is started and timed until its target has them all; then the same for an
//! update of every row (1,000-row transactions). "Has them all" is the marker row the primary commits
//! after the load: both replicators apply in commit order (Remix's batches commit in log order, cursor
//! included), so the marker is visible only when everything before it is. Afterwards the tables are
//! compared with the primary (count and an ordered hash). The replica runs MariaDB's defaults
//! (`slave_parallel_threads=0`: one applier thread); neither the replica nor Remix's target writes a
//! binary log of its own, and all three servers have the same InnoDB settings.
//!
//! `cargo bench --bench mysql_replica` (release build). `REMIX_BENCH_ROWS` (default 1,000,000) scales
//! the load. Goal (issue 14): Remix no slower than the native replica for inserts.

mod support;

use mysql_async::prelude::Queryable;
use remix_mytest::{MyOptions, MyServer};
use std::path::Path;
use std::time::{Duration, Instant};
use support::{free_port, process_cpu, Remix, POLL};

const TABLE: &str =
    "CREATE TABLE bench (id BIGINT PRIMARY KEY, k INT NOT NULL, payload VARCHAR(200) NOT NULL, \
                     v INT NOT NULL); CREATE TABLE marker (phase VARCHAR(20) PRIMARY KEY);";
const TRANSACTION_ROWS: u64 = 1000;
/// The same settings on every server: the table fits in memory, few checkpoints in a run.
const SERVER_ARGS: [&str; 2] = ["--innodb-buffer-pool-size=1G", "--innodb-log-file-size=512M"];
const CATCH_UP_MAX: Duration = Duration::from_secs(900);
const REMIX_SERVER_ID: u32 = 4242;

const ROW_SCHEMA: &str = r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
  "properties": {"id": {"type": "integer"}, "k": {"type": "integer"}, "payload": {"type": "string"},
    "v": {"type": "integer"}},
  "required": ["id", "k", "payload", "v"], "additionalProperties": false}"#;
const MARKER_SCHEMA: &str = r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
  "properties": {"phase": {"type": "string"}}, "required": ["phase"], "additionalProperties": false}"#;

fn server(binlog: bool) -> MyServer {
    let options = SERVER_ARGS.iter().fold(MyOptions::new(), |o, arg| o.arg(*arg));
    let server = MyServer::start_with(MyOptions { no_binlog: !binlog, ..options });
    server.create_db("bench");
    server.sql("bench", TABLE);
    server
}

/// The `mariadbd` process id of a server (from its pid file).
fn server_pid(server: &MyServer) -> u32 {
    let pid_file = server.data_dir().parent().expect("the server's directory").join("mariadbd.pid");
    let text = std::fs::read_to_string(&pid_file).expect("the pid file");
    text.trim().parse().expect("a pid")
}

/// A connection kept open (to load the primary, to ask for the marker): a `mariadb` process per poll
/// would cost more CPU than the query, on the same cores as what is timed.
struct Client {
    runtime: tokio::runtime::Runtime,
    conn: mysql_async::Conn,
}

impl Client {
    fn connect(server: &MyServer) -> Client {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let opts = mysql_async::Opts::from_url(&server.url("bench")).expect("url");
        let conn = runtime.block_on(mysql_async::Conn::new(opts)).expect("connect");
        Client { runtime, conn }
    }

    fn run(&mut self, sql: &str) {
        let query = self.conn.query_drop(sql);
        self.runtime.block_on(query).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn has_marker(&mut self, phase: &str) -> bool {
        let query = self.conn.exec_first::<u8, _, _>("SELECT 1 FROM marker WHERE phase = ?", (phase,));
        self.runtime.block_on(query).is_ok_and(|row| row.is_some())
    }

    fn wait_marker(&mut self, phase: &str, mut also: impl FnMut()) -> Duration {
        let start = Instant::now();
        while !self.has_marker(phase) {
            assert!(start.elapsed() < CATCH_UP_MAX, "{phase}: no catch-up after {CATCH_UP_MAX:?}");
            also();
            std::thread::sleep(POLL);
        }
        start.elapsed()
    }
}

/// Count and ordered hash of the bench table.
fn checksum(server: &MyServer) -> String {
    server.sql(
        "bench",
        "SET SESSION group_concat_max_len = 1073741824; SELECT COUNT(*), \
         MD5(GROUP_CONCAT(MD5(CONCAT_WS('|', id, k, payload, v)) ORDER BY id SEPARATOR '')) FROM bench",
    )
}

/// Commits the load at the primary: `rows` inserts or an update of every row, 1,000 rows per
/// transaction (autocommitted statements), then the marker row of the phase.
fn load(primary: &mut Client, phase: &str, rows: u64) -> Duration {
    let start = Instant::now();
    for b in 0..rows.div_ceil(TRANSACTION_ROWS) {
        let (first, last) = (b * TRANSACTION_ROWS + 1, ((b + 1) * TRANSACTION_ROWS).min(rows));
        let sql = match phase {
            "insert" => format!(
                "INSERT INTO bench SELECT seq, seq % 1000, CONCAT(MD5(seq), MD5(seq + 1), MD5(seq + 2)), 0 \
                 FROM seq_{first}_to_{last}"
            ),
            _ => format!("UPDATE bench SET v = v + 1, k = k + 1 WHERE id BETWEEN {first} AND {last}"),
        };
        primary.run(&sql);
    }
    primary.run(&format!("INSERT INTO marker VALUES ('{phase}')"));
    start.elapsed()
}

/// Starts or stops the replica's threads; stopping waits until they are gone.
fn set_replica(native: &MyServer, running: bool) {
    native.sql("", if running { "START SLAVE" } else { "STOP SLAVE" });
}

fn write_config(dir: &Path, primary: &MyServer, target: &MyServer, admin: &str) -> std::path::PathBuf {
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
    kind: mysql
    url: "{primary}"
    server_id: {REMIX_SERVER_ID}
    snapshot: never
    tables:
      bench.bench: {{ model: row }}
      bench.marker: {{ model: marker }}
targets:
  - name: copy
    kind: mysql
    url: "{target}"
    batch: {{ records_max: 10000, linger_ms: 20 }}
    models:
      row: {{ table: bench }}
      marker: {{ table: marker }}
"#,
        data = dir.join("data").display(),
        dir = dir.display(),
        primary = primary.url(""),
        target = target.url("bench"),
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
    /// CPU time of the replica server (its I/O and SQL threads) during its catch-up.
    native_cpu: Duration,
    /// CPU time of Remix's target server during Remix's catch-up.
    target_cpu: Duration,
}

fn main() {
    let rows: u64 = std::env::var("REMIX_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    // `cargo bench` passes `--bench`; anything else (e.g. `cargo test --benches`) is a smoke run.
    let rows = if std::env::args().any(|a| a == "--bench") { rows } else { rows.min(2000) };
    eprintln!(
        "mysql_replica: {rows} rows, {TRANSACTION_ROWS}-row transactions; starting three MariaDB servers"
    );
    let primary = server(true);
    let native = server(false);
    let target = server(false);
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = format!("127.0.0.1:{}", free_port());
    let config = write_config(dir.path(), &primary, &target, &admin);

    // The replica starts where the primary is now (the tables exist on both already).
    let status = primary.sql("", "SHOW MASTER STATUS");
    let mut fields = status.split('\t');
    let (file, pos) = (fields.next().expect("binlog file"), fields.next().expect("binlog position"));
    native.sql(
        "",
        &format!(
            "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, MASTER_USER = 'root', \
             MASTER_PASSWORD = '', MASTER_LOG_FILE = '{file}', MASTER_LOG_POS = {pos}, MASTER_USE_GTID = no",
            primary.port()
        ),
    );
    // Remix's first start records the position it streams from; it then stops until its catch-up.
    let mut remix = Remix::start(&config, &admin);
    remix.wait_ready();
    remix.stop();

    let mut primary_client = Client::connect(&primary);
    let mut native_poller = Client::connect(&native);
    let mut target_poller = Client::connect(&target);
    let (native_pid, target_pid) = (server_pid(&native), server_pid(&target));
    let mut phases = Vec::new();
    let mut peak_rss = 0;
    let mut expected_offset = 0;
    for name in ["insert", "update"] {
        let load_time = load(&mut primary_client, name, rows);
        expected_offset += rows + 1;
        eprintln!("{name}: primary load committed in {:.1} s", load_time.as_secs_f64());
        let cpu_before = process_cpu(native_pid);
        set_replica(&native, true);
        let native_time = native_poller.wait_marker(name, || {});
        let native_cpu = process_cpu(native_pid).saturating_sub(cpu_before);
        set_replica(&native, false);
        eprintln!("{name}: native caught up in {:.2} s", native_time.as_secs_f64());
        let cpu_before = process_cpu(target_pid);
        let start = Instant::now();
        let remix = Remix::start(&config, &admin);
        let mut remix_log = None;
        target_poller.wait_marker(name, || {
            if remix_log.is_none() && remix.target_durable_offset().is_some_and(|o| o >= expected_offset) {
                remix_log = Some(start.elapsed());
            }
        });
        let remix_time = start.elapsed();
        let target_cpu = process_cpu(target_pid).saturating_sub(cpu_before);
        peak_rss = peak_rss.max(remix.peak_rss());
        let remix_cpu = remix.cpu_time();
        remix.stop();
        eprintln!("{name}: remix caught up in {:.2} s", remix_time.as_secs_f64());
        let expected = checksum(&primary);
        for (who, server) in [("native", &native), ("remix", &target)] {
            let got = checksum(server);
            assert_eq!(got, expected, "{name}: the {who} copy differs from the primary");
        }
        phases.push(Phase {
            name,
            load: load_time,
            native: native_time,
            remix: remix_time,
            remix_log,
            remix_cpu,
            native_cpu,
            target_cpu,
        });
    }

    println!();
    println!("MariaDB -> MariaDB catch-up, {rows} rows in {TRANSACTION_ROWS}-row transactions");
    println!(
        "{:<8} {:>10} {:>12} {:>12} {:>14} {:>13}  goal",
        "phase", "load (s)", "native (s)", "remix (s)", "remix/native", "remix log (s)"
    );
    for p in &phases {
        let ratio = p.remix.as_secs_f64() / p.native.as_secs_f64();
        let goal = if p.name == "insert" {
            if ratio <= 1.0 {
                "<= 1.00 met"
            } else {
                "<= 1.00 NOT met"
            }
        } else {
            "-"
        };
        println!(
            "{:<8} {:>10.2} {:>12.2} {:>12.2} {:>14.2} {:>13}  {goal}",
            p.name,
            p.load.as_secs_f64(),
            p.native.as_secs_f64(),
            p.remix.as_secs_f64(),
            ratio,
            p.remix_log.map_or("-".to_owned(), |d| format!("{:.2}", d.as_secs_f64())),
        );
    }
    println!();
    println!("CPU time (s): native = the replica server; remix = remix + its target server");
    for p in &phases {
        println!(
            "{:<8} native {:>6.2}   remix {:>6.2} (remix {:.2} + target server {:.2})",
            p.name,
            p.native_cpu.as_secs_f64(),
            (p.remix_cpu + p.target_cpu).as_secs_f64(),
            p.remix_cpu.as_secs_f64(),
            p.target_cpu.as_secs_f64(),
        );
    }
    println!("remix peak RSS (VmHWM): {:.0} MiB", peak_rss as f64 / (1024.0 * 1024.0));
}
