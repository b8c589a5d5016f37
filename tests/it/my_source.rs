//! The `mysql` source against throwaway MariaDB servers (remix-mytest): every common type round-trips
//! MariaDB → log → MariaDB (through the `mysql` target), and `kill -9` of `remix run` during the
//! snapshot and during streaming, with a writer changing the source all along, ends with the target
//! equal to the source row for row and no streamed change twice in the log; a snapshot redone after a
//! `kill -9` deletes the rows the killed attempt copied that are gone since; and sysbench's
//! `oltp_write_only` changing a 100k-row table while Remix is killed again and again, during the
//! snapshot and while streaming, ends with the target equal to the source (ordered checksums).

use crate::support::*;
use remix_mytest::MyServer;
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TYPES_TABLE: &str = "
CREATE TABLE types (
  id INT PRIMARY KEY, i8 TINYINT, u8 TINYINT UNSIGNED, i16 SMALLINT, u24 MEDIUMINT UNSIGNED, i32 INT,
  u32 INT UNSIGNED, i64 BIGINT, u64 BIGINT UNSIGNED, dec1 DECIMAL(30,10), f FLOAT, d DOUBLE,
  c CHAR(5), vc VARCHAR(100), t TEXT, lat VARCHAR(20) CHARACTER SET latin1, bl BLOB, bn BINARY(4),
  vb VARBINARY(10), dt DATE, dtm DATETIME, dt6 DATETIME(6), ts TIMESTAMP(3) NULL, tm TIME(2), yr YEAR,
  en ENUM('small','medium','large'), st SET('a','b','c'), js JSON, bt BIT(10)
) CHARACTER SET utf8mb4";

const TYPES_COLUMNS: [&str; 29] = [
    "id", "i8", "u8", "i16", "u24", "i32", "u32", "i64", "u64", "dec1", "f", "d", "c", "vc", "t", "lat",
    "bl", "bn", "vb", "dt", "dtm", "dt6", "ts", "tm", "yr", "en", "st", "js", "bt",
];

fn types_row(id: i64) -> String {
    format!(
        "({id}, -128, 255, -32768, 16777215, -2147483648, 4294967295, -9223372036854775808, \
         18446744073709551615, '12345678901234567890.0123456789', 1.1, 2.718281828459045, 'ab', \
         'Zoë 名前 🦀 \"q\" \\\\', 'long\\ttext\\nline', 'café', X'00FF10', X'0102', X'', '2024-02-29', \
         '2026-11-24 10:00:00', '2026-11-24 10:00:00.123456', '2026-11-24 10:00:00.125', '838:59:59.99', 2024, \
         'medium', 'a,c', '{{\"k\": [1, 2.5, null, \"x\"], \"n\": {{\"z\": true}}}}', b'1000000001')"
    )
}

fn null_row(id: i64) -> String {
    format!("({id}{})", ", NULL".repeat(TYPES_COLUMNS.len() - 1))
}

fn schema_file(dir: &Path, name: &str, properties: &[(&str, &str)]) -> String {
    let props: serde_json::Map<String, Value> =
        properties.iter().map(|(n, t)| ((*n).to_owned(), serde_json::from_str(t).unwrap())).collect();
    let schema = serde_json::json!({"type": "object", "properties": props, "required": ["id"]});
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, schema.to_string()).unwrap();
    path.display().to_string()
}

/// The rows as hex, in key order (JSON documents compacted: MariaDB keeps their text).
fn dump_sql(table: &str, columns: &[&str]) -> String {
    let list: Vec<String> = columns
        .iter()
        .map(|c| if *c == "js" { "HEX(JSON_COMPACT(`js`))".to_owned() } else { format!("HEX(`{c}`)") })
        .collect();
    format!("SELECT {} FROM `{table}` ORDER BY id", list.join(", "))
}

fn wait_equal(node: &Node, my: &MyServer, table: &str, columns: &[&str]) {
    let mut last = (String::new(), String::new());
    let same = (0..300).any(|_| {
        let sql = dump_sql(table, columns);
        last = (my.sql("src", &sql), my.try_sql("dst", &sql).unwrap_or_default());
        let equal = last.0 == last.1;
        if !equal {
            std::thread::sleep(Duration::from_millis(200));
        }
        equal
    });
    if !same {
        let (a, b) = (&last.0, &last.1);
        let at = a.lines().zip(b.lines()).position(|(x, y)| x != y);
        panic!(
            "the target did not converge to the source: {} rows against {}; first difference at line {at:?}: {:?} / {:?}\n{}",
            a.lines().count(),
            b.lines().count(),
            at.and_then(|i| a.lines().nth(i)),
            at.and_then(|i| b.lines().nth(i)),
            node.output()
        );
    }
}

const CONFIG: &str = r#"
data_dir: "${REMIX_DATA_DIR}"
admin: { listen: "${REMIX_ADMIN_ADDR}" }
models:
  row: { schema: "${REMIX_SCHEMA}", key: [id] }
sources:
  - name: maria
    kind: mysql
    url: "${REMIX_MY_SOURCE}"
    snapshot: initial
    tables:
      src.${REMIX_TABLE}: { model: row }
targets:
  - name: copy
    kind: mysql
    url: "${REMIX_MY_TARGET}"
    create_tables: ${REMIX_CREATE}
    batch: { records_max: 1000, linger_ms: 20 }
    models:
      row: { table: ${REMIX_TABLE} }
"#;

fn node(root: &Path, my: &MyServer, schema: &str, table: &str, create: bool) -> Node {
    node_with(root, CONFIG, my, schema, table, create, &[])
}

/// A node on `config` with the variables of [`CONFIG`] and `extra`.
fn node_with(
    root: &Path,
    config: &str,
    my: &MyServer,
    schema: &str,
    table: &str,
    create: bool,
    extra: &[(&str, &str)],
) -> Node {
    let (source, target) = (my.url(""), my.url("dst"));
    let create = if create { "true" } else { "false" };
    let mut variables = vec![
        ("REMIX_MY_SOURCE", source.as_str()),
        ("REMIX_MY_TARGET", target.as_str()),
        ("REMIX_SCHEMA", schema),
        ("REMIX_TABLE", table),
        ("REMIX_CREATE", create),
    ];
    variables.extend_from_slice(extra);
    Node::new(root, config, &variables)
}

/// The model schema of [`ITEMS`].
fn items_schema(dir: &Path) -> String {
    schema_file(
        dir,
        "row",
        &[
            ("id", r#"{"type": "integer"}"#),
            ("name", r#"{"type": "string"}"#),
            ("qty", r#"{"type": "integer"}"#),
            ("note", r#"{"type": ["string", "null"]}"#),
        ],
    )
}

#[test]
fn every_type_round_trips_through_snapshot_and_binlog() {
    let my = MyServer::start();
    my.create_db("src");
    my.create_db("dst");
    my.sql("src", TYPES_TABLE);
    my.sql("dst", TYPES_TABLE);
    my.sql("src", &format!("INSERT INTO types VALUES {}, {}", types_row(1), null_row(2)));
    let dir = tempfile::tempdir().unwrap();
    let any = r#"{}"#;
    let properties: Vec<(&str, &str)> =
        TYPES_COLUMNS.iter().map(|c| (*c, if *c == "id" { r#"{"type": "integer"}"# } else { any })).collect();
    let schema = schema_file(dir.path(), "row", &properties);
    let mut node = node(dir.path(), &my, &schema, "types", false);
    node.start();
    wait_equal(&node, &my, "types", &TYPES_COLUMNS);
    // Streamed: inserts, an update of every column, a delete, a key change.
    my.sql("src", &format!("INSERT INTO types VALUES {}, {}", types_row(3), null_row(4)));
    my.sql("src", "UPDATE types SET u64 = 9223372036854775808, dec1 = '-0.0000000001', f = -3.5, c = 'x', \
        bl = X'DEADBEEF', dt6 = '1999-12-31 23:59:59.999999', ts = '2038-01-19 03:14:07.999', tm = '-26:03:04', \
        en = 'large', st = '', js = '[]', bt = b'0' WHERE id = 1");
    my.sql("src", "UPDATE types SET i8 = 1 WHERE id = 2; DELETE FROM types WHERE id = 4; UPDATE types SET id = 30 WHERE id = 3");
    wait_equal(&node, &my, "types", &TYPES_COLUMNS);
    let log = node.cli(&["log", "dump", "--json"]);
    let text = stdout(&log);
    assert!(text.contains("18446744073709551615"), "BIGINT UNSIGNED beyond i64 in the log: {text}");
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let data = &first["data"];
    assert_eq!(data["u64"], "18446744073709551615");
    assert_eq!(data["dec1"], "12345678901234567890.0123456789");
    assert_eq!(data["bl"], "AP8Q");
    assert_eq!(data["dt6"], "2026-11-24T10:00:00.123456");
    assert_eq!(data["ts"], "2026-11-24T10:00:00.125Z");
    assert_eq!(data["js"]["n"]["z"], true);
    assert_eq!(data["bt"], 513);
    node.stop();
}

const ITEMS: &str =
    "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL, qty INT NOT NULL, note TEXT)";

fn write_some(my: &MyServer, round: u64, rng: &mut Rng) {
    let base = 1_000_000 + round * 20;
    let mut sql = String::from("START TRANSACTION;");
    sql += &format!(
        "INSERT INTO items VALUES {};",
        (base..base + 10).map(|i| format!("({i}, 'n{i}', {}, NULL)", i % 97)).collect::<Vec<_>>().join(", ")
    );
    let a = rng.range(1..=20_000);
    sql += &format!("UPDATE items SET qty = qty + 1, note = 'r{round}' WHERE id BETWEEN {a} AND {};", a + 30);
    let b = rng.range(1..=20_000);
    sql += &format!("DELETE FROM items WHERE id BETWEEN {b} AND {};", b + 3);
    sql += "COMMIT";
    my.sql("src", &sql);
}

#[test]
fn kill9_during_streaming_loses_and_repeats_nothing() {
    let my = Arc::new(MyServer::start());
    my.create_db("src");
    my.create_db("dst");
    my.sql("src", ITEMS);
    my.sql(
        "src",
        "INSERT INTO items SELECT seq, CONCAT('item ', seq), seq % 100, IF(seq % 3 = 0, NULL, REPEAT('x', seq % 50)) \
         FROM seq_1_to_20000",
    );
    let dir = tempfile::tempdir().unwrap();
    let schema = items_schema(dir.path());
    let mut node = node(dir.path(), &my, &schema, "items", true);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (my, stop) = (Arc::clone(&my), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut rng = Rng::from_clock("my_source writer");
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                write_some(&my, round, &mut rng);
                round += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            round
        })
    };
    let mut rng = Rng::from_clock("kill9_during_snapshot_and_streaming");
    // Kills while streaming, once the snapshot is done (kills during the snapshot:
    // `snapshot_redone_after_kill9_deletes_rows_gone_since` and the sysbench test).
    node.start_live();
    wait_for("the snapshot", || node.snapshot_done("maria").then_some(()));
    for _ in 0..11 {
        std::thread::sleep(Duration::from_millis(rng.range(300..=1500)));
        node.kill9();
        node.start_live();
    }
    let rounds = {
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap()
    };
    wait_equal(&node, &my, "items", &["id", "name", "qty", "note"]);
    // No streamed change twice in the log (snapshot rows repeat when a snapshot was redone).
    let out = node.cli(&["log", "dump", "--json"]);
    let mut seen = HashSet::new();
    let mut streamed = 0;
    for line in stdout(&out).lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        let Some(position) = record["position"].as_str() else { continue };
        if position.starts_with("snapshot:") {
            continue;
        }
        streamed += 1;
        assert!(seen.insert(position.to_owned()), "position {position} is in the log twice");
    }
    eprintln!("{rounds} writer transactions, {streamed} streamed changes in the log, 11 kills");
    assert!(streamed > 0);
    node.stop();
}

/// `remix_snapshot_rows` of source `maria` (rows the snapshot logged of the table it is copying), from
/// the node's `/metrics`.
fn snapshot_rows(node: &Node) -> Option<u64> {
    let metrics = http("GET", &node.admin, "/metrics", &[], b"").ok()?.text();
    let line = metrics.lines().find(|l| l.starts_with("remix_snapshot_rows{source=\"maria\"}"))?;
    line.split_whitespace().last()?.parse::<f64>().ok().map(|v| v as u64)
}

/// A `mariadb` client session holding `LOCK TABLES <table> WRITE` until dropped: a snapshot that
/// reaches that table waits there.
struct TableLock(std::process::Child);

impl TableLock {
    fn hold(my: &MyServer, table: &str) -> TableLock {
        use std::io::{BufRead, Write};
        let mut child = std::process::Command::new(remix_mytest::binary("mariadb"))
            .arg("--no-defaults")
            .arg(format!("--socket={}", my.socket().display()))
            .args(["-uroot", "-N", "-B", "--unbuffered", "src"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run mariadb");
        let stdin = child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "LOCK TABLES `{table}` WRITE; SELECT 'locked';").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().expect("stdout")).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "locked", "LOCK TABLES {table}");
        TableLock(child)
    }
}

impl Drop for TableLock {
    fn drop(&mut self) {
        // End of input: the client exits and the server releases the lock.
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

const RESNAPSHOT_CONFIG: &str = r#"
data_dir: "${REMIX_DATA_DIR}"
admin: { listen: "${REMIX_ADMIN_ADDR}" }
models:
  row: { schema: "${REMIX_SCHEMA}", key: [id] }
  block: { schema: "${REMIX_BLOCK_SCHEMA}", key: [id] }
sources:
  - name: maria
    kind: mysql
    url: "${REMIX_MY_SOURCE}"
    snapshot: initial
    tables:
      src.items: { model: row }
      src.zblock: { model: block }
targets:
  - name: copy
    kind: mysql
    url: "${REMIX_MY_TARGET}"
    create_tables: true
    batch: { records_max: 1000, linger_ms: 20 }
    models:
      row: { table: items }
      block: { table: zblock }
"#;

/// The first snapshot attempt copies all of `items` and waits at `zblock` (locked), where it is
/// killed; rows of `items` are deleted, updated and inserted; the redone snapshot must delete the
/// deleted ones at the target (upserts alone would leave them there for good).
#[test]
fn snapshot_redone_after_kill9_deletes_rows_gone_since() {
    const ITEMS_ROWS: u64 = 5000;
    let my = MyServer::start();
    my.create_db("src");
    my.create_db("dst");
    my.sql("src", ITEMS);
    my.sql("src", "CREATE TABLE zblock (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL)");
    my.sql("src", "INSERT INTO zblock VALUES (1, 'one'), (2, 'two')");
    my.sql(
        "src",
        &format!(
            "INSERT INTO items SELECT seq, CONCAT('item ', seq), seq % 100, NULL FROM seq_1_to_{ITEMS_ROWS}"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let schema = items_schema(dir.path());
    let block_schema = schema_file(
        dir.path(),
        "block",
        &[("id", r#"{"type": "integer"}"#), ("name", r#"{"type": "string"}"#)],
    );
    let extra = [("REMIX_BLOCK_SCHEMA", block_schema.as_str())];
    let mut node = node_with(dir.path(), RESNAPSHOT_CONFIG, &my, &schema, "items", true, &extra);
    let lock = TableLock::hold(&my, "zblock");
    node.start_live();
    wait_for("the first attempt to copy items", || (snapshot_rows(&node) == Some(ITEMS_ROWS)).then_some(()));
    assert!(!node.snapshot_done("maria"), "the snapshot waits at the locked table");
    node.kill9();
    // Changes between the attempts; the first attempt logged every row of items.
    my.sql(
        "src",
        "DELETE FROM items WHERE id BETWEEN 100 AND 199; UPDATE items SET qty = -1 WHERE id BETWEEN 300 AND 310; \
         INSERT INTO items VALUES (9000001, 'new', 1, 'n')",
    );
    drop(lock);
    node.start();
    wait_for("the redone snapshot", || node.snapshot_done("maria").then_some(()));
    wait_equal(&node, &my, "items", &["id", "name", "qty", "note"]);
    wait_equal(&node, &my, "zblock", &["id", "name"]);
    let out = node.cli(&["log", "dump", "--json"]);
    let gone = stdout(&out)
        .lines()
        .filter(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            record["position"].as_str().is_some_and(|p| p.contains(":gone:")) && record["op"] == "delete"
        })
        .count();
    assert_eq!(gone, 100, "one delete per row gone between the attempts");
    node.stop();
}

/// sysbench's table (`--tables=1`, auto-increment ids 1..=N) and workload.
const SYSBENCH_ROWS: u64 = 100_000;
const SYSBENCH_KILLS_IN_SNAPSHOT: usize = 5;
const SYSBENCH_KILLS_STREAMING: usize = 7;

/// `sysbench oltp_write_only` against database `src` of `my` over its socket, with `args` after it.
fn sysbench(my: &MyServer, args: &[&str]) -> std::process::Command {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|dir| dir.join("sysbench").is_file());
    assert!(
        found,
        "sysbench is not installed: run scripts/test-servers.sh (Debian: apt-get install sysbench)"
    );
    let mut command = std::process::Command::new("sysbench");
    command
        .arg("oltp_write_only")
        .arg("--db-driver=mysql")
        .arg(format!("--mysql-socket={}", my.socket().display()))
        .args(["--mysql-user=root", "--mysql-db=src", "--tables=1"])
        .arg(format!("--table-size={SYSBENCH_ROWS}"))
        .args(args)
        .stdin(std::process::Stdio::null());
    command
}

/// Row count and an ordered hash (an MD5 per row, the MD5 of all of them in key order) of `sbtest1`
/// in `db`, and `CHECKSUM TABLE`'s figure.
fn sbtest_checksum(my: &MyServer, db: &str) -> String {
    let ordered = my.sql(
        db,
        "SET SESSION group_concat_max_len = 67108864; SELECT COUNT(*), \
         MD5(GROUP_CONCAT(MD5(CONCAT_WS('|', id, k, c, pad)) ORDER BY id SEPARATOR '')) FROM sbtest1",
    );
    let table = my.sql(db, "CHECKSUM TABLE sbtest1");
    let table = table.split('\t').nth(1).unwrap_or_default().to_owned();
    format!("{ordered} {table}")
}

/// The ids whose rows differ between the source and the target (at most 20), for a failure message.
fn sbtest_differences(my: &MyServer) -> String {
    my.sql(
        "",
        "SELECT s.id, d.id FROM src.sbtest1 s LEFT JOIN dst.sbtest1 d ON d.id = s.id \
         WHERE d.id IS NULL OR NOT (s.k <=> d.k AND s.c <=> d.c AND s.pad <=> d.pad) \
         UNION ALL SELECT NULL, d.id FROM dst.sbtest1 d LEFT JOIN src.sbtest1 s ON s.id = d.id WHERE s.id IS NULL \
         LIMIT 20",
    )
}

/// Issue 14, done-when 2: a 100k-row sysbench table copied by the snapshot while sysbench's
/// `oltp_write_only` changes it (rate-limited, two threads, from before the first start to the end),
/// `remix run` killed with SIGKILL 12 times: 5 times during the snapshot (at a random number of copied
/// rows; a few rows the killed attempt copied are deleted before the redo), 7 times while streaming.
/// Then sysbench stops and the target must equal the source row for row (ordered checksums), and no
/// streamed change is twice in the log.
#[test]
fn sysbench_with_kill9_during_snapshot_and_streaming_ends_equal() {
    let my = MyServer::start();
    my.create_db("src");
    my.create_db("dst");
    let prepared = sysbench(&my, &["prepare"]).output().expect("run sysbench prepare");
    assert!(prepared.status.success(), "sysbench prepare: {prepared:?}");
    my.sql("", "CREATE TABLE dst.sbtest1 LIKE src.sbtest1");
    let dir = tempfile::tempdir().unwrap();
    let schema = schema_file(
        dir.path(),
        "row",
        &[
            ("id", r#"{"type": "integer"}"#),
            ("k", r#"{"type": "integer"}"#),
            ("c", r#"{"type": "string"}"#),
            ("pad", r#"{"type": "string"}"#),
        ],
    );
    let mut node = node(dir.path(), &my, &schema, "sbtest1", false);
    let sysbench_out = std::fs::File::create(dir.path().join("sysbench.txt")).unwrap();
    let mut load = sysbench(&my, &["--threads=2", "--rate=200", "--time=0", "--events=0", "run"])
        .stdout(sysbench_out.try_clone().unwrap())
        .stderr(sysbench_out)
        .spawn()
        .expect("run sysbench");
    let mut rng = Rng::from_clock("sysbench_with_kill9_during_snapshot_and_streaming_ends_equal");
    let (mut in_snapshot, mut streaming, mut deleted) = (0, 0, 0);
    for iteration in 0..SYSBENCH_KILLS_IN_SNAPSHOT + SYSBENCH_KILLS_STREAMING {
        node.start_live();
        let mut copied = 0;
        if iteration < SYSBENCH_KILLS_IN_SNAPSHOT {
            // At a chunk boundary somewhere in the table (or after the snapshot, if it got there first).
            let at = rng.range(1..=(SYSBENCH_ROWS / 2000 - 1)) * 2000;
            wait_for(&format!("the snapshot to copy {at} rows"), || {
                copied = snapshot_rows(&node).unwrap_or(0);
                (copied >= at || node.snapshot_done("maria")).then_some(())
            });
        } else {
            wait_for("the snapshot", || node.snapshot_done("maria").then_some(()));
            std::thread::sleep(Duration::from_millis(rng.range(200..=1500)));
        }
        let done = node.snapshot_done("maria");
        node.kill9();
        if done {
            streaming += 1;
        } else {
            in_snapshot += 1;
            // Rows the killed attempt logged (the snapshot reads in key order), deleted before the redo.
            if copied > 10 {
                let from = rng.range(1..=copied - 5);
                my.sql("src", &format!("DELETE FROM sbtest1 WHERE id BETWEEN {from} AND {}", from + 4));
                deleted += 5;
            }
        }
    }
    node.start();
    let sysbench_ran = load.try_wait().unwrap().is_none();
    let _ = load.kill();
    let _ = load.wait();
    let sysbench_report = std::fs::read_to_string(dir.path().join("sysbench.txt")).unwrap_or_default();
    assert!(sysbench_ran && !sysbench_report.contains("FATAL"), "sysbench failed:\n{sysbench_report}");
    let source = sbtest_checksum(&my, "src");
    let mut target = String::new();
    let equal = (0..300).any(|_| {
        target = sbtest_checksum(&my, "dst");
        let equal = target == source;
        if !equal {
            std::thread::sleep(Duration::from_secs(1));
        }
        equal
    });
    assert!(
        equal,
        "the target did not converge to the source: {target} against {source}; rows that differ (source id, \
         target id):\n{}\n{}",
        sbtest_differences(&my),
        node.output()
    );
    // No streamed change twice in the log (snapshot rows repeat when a snapshot was redone).
    let out = node.cli(&["log", "dump", "--json"]);
    let (mut seen, mut gone, mut records) = (HashSet::new(), 0, 0);
    for line in stdout(&out).lines() {
        records += 1;
        if line.contains(":gone:") {
            gone += 1;
        }
        if line.contains(r#""position":"snapshot:"#) {
            continue;
        }
        let record: Value = serde_json::from_str(line).unwrap();
        let Some(position) = record["position"].as_str() else { continue };
        assert!(seen.insert(position.to_owned()), "position {position} is in the log twice");
    }
    eprintln!(
        "sysbench: {in_snapshot} kills during the snapshot ({deleted} rows deleted between attempts, {gone} \
         deletes of gone rows logged), {streaming} while streaming; {records} records in the log, {} streamed \
         changes; {source}",
        seen.len()
    );
    assert!(!seen.is_empty(), "sysbench's changes were streamed");
    node.stop();
}

/// An idle stream stays up on the server's heartbeats (no "silent" error while nothing changes for
/// many times `heartbeat_ms`); a server that stops answering altogether (SIGSTOP: the connection stays
/// open) is given up after 4 heartbeat periods and the source reconnects once it answers again, and
/// changes made after that arrive.
#[test]
fn heartbeats_keep_an_idle_stream_and_a_silent_server_is_left() {
    const SILENT: &str = "no event and no heartbeat from the server";
    let my = MyServer::start();
    my.create_db("src");
    my.create_db("dst");
    my.sql("src", ITEMS);
    my.sql("src", "INSERT INTO items SELECT seq, CONCAT('item ', seq), seq, NULL FROM seq_1_to_10");
    let dir = tempfile::tempdir().unwrap();
    let schema = items_schema(dir.path());
    let config = CONFIG.replace("    snapshot: initial\n", "    snapshot: initial\n    heartbeat_ms: 300\n");
    let mut node = node_with(dir.path(), &config, &my, &schema, "items", true, &[]);
    node.start();
    let columns = ["id", "name", "qty", "note"];
    wait_equal(&node, &my, "items", &columns);
    // Idle for ten times the silence limit (4 × 300 ms).
    std::thread::sleep(Duration::from_secs(12));
    assert!(!node.output().contains(SILENT), "an idle stream was given up:\n{}", node.output());
    let pid_file = my.data_dir().parent().unwrap().join("mariadbd.pid");
    let pid = std::fs::read_to_string(pid_file).unwrap().trim().to_owned();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill").arg(format!("-{name}")).arg(&pid).status().unwrap();
        assert!(status.success(), "kill -{name} {pid}");
    };
    signal("STOP");
    let given_up = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("the source to give up on the silent server", || {
            node.output().contains(SILENT).then_some(())
        })
    }));
    signal("CONT");
    if given_up.is_err() {
        panic!("the source did not give up on the silent server:\n{}", node.output());
    }
    my.sql(
        "src",
        "INSERT INTO items SELECT seq, 'after', seq, 'x' FROM seq_11_to_20; DELETE FROM items WHERE id = 1",
    );
    wait_equal(&node, &my, "items", &columns);
    node.stop();
}
