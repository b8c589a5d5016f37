//! Crash tests of the PostgreSQL source: `kill -9` of `remix run` at random points during the initial
//! snapshot and during streaming, while a writer keeps changing the source tables. After every kill,
//! and while the node runs, the slot's `confirmed_flush_lsn` must not have passed what the log holds;
//! at the end the dataset equals the source tables and the log holds no change twice.
//!
//! What "passed" means, and how it is checked. On the next `START_REPLICATION` the server skips every
//! transaction whose commit LSN is below the slot's `confirmed_flush_lsn` (Remix confirms a commit's
//! *end* LSN once its records are durable, or a keepalive position when idle). So the invariant is:
//! every transaction on the replicated tables with commit LSN < `confirmed_flush_lsn` is in the log,
//! whole: either inside the completed initial snapshot (commit LSN below its consistent point, the LSN
//! in the `snapshot:<lsn>:...` positions) or streamed (records at positions `<commit LSN>:0` ..
//! `<commit LSN>:<n-1>` for its n changes). The ground truth, every such transaction's exact commit LSN
//! and number of changes, comes from a second logical slot (`truth`, pgoutput, on a publication of the
//! same tables) that the test reads with `pg_logical_slot_get_binary_changes`: a Begin message carries
//! its commit LSN. The reads go in this order: the source state file (is the snapshot done?), the
//! slot's `confirmed_flush_lsn`, the log, then the truth slot (which has every transaction flushed by
//! then). Everything confirmed at the first read was durable then, so is in the log read later, and
//! the truth slot knows every transaction the log can hold: the check is sound while the node runs.
//! While the snapshot is not done, the check does not apply: the next start drops the slot and redoes
//! the snapshot with a new one.

use crate::pg_source::{dataset_state, insert_rows, pg_node, shop_server, source_state};
use crate::support::*;
use remix::postgres::conn::{format_lsn, parse_lsn};
use remix::postgres::pgoutput::{self, Message};
use remix_pgtest::{psql_conninfo, PgServer};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Rows per table before the first start (the snapshot copies 2 × this many).
const INITIAL_ROWS: u64 = 15_000;
/// Kills during the snapshot, then kills during streaming.
const SNAPSHOT_KILLS: usize = 5;
const STREAMING_KILLS: usize = 11;

/// Every transaction on the replicated tables since the truth slot was created: commit LSN → number of
/// changes (one per inserted, updated or deleted row, one per truncated table).
#[derive(Debug, Default)]
struct Truth {
    transactions: BTreeMap<u64, u64>,
}

impl Truth {
    fn create(server: &PgServer) -> Truth {
        server.psql("shop", "CREATE PUBLICATION truth FOR TABLE customers, orders");
        server.psql("shop", "SELECT pg_create_logical_replication_slot('truth', 'pgoutput')");
        Truth::default()
    }

    /// Consumes what the truth slot has decoded since the last read.
    fn read(&mut self, server: &PgServer) {
        let out = server.psql(
            "shop",
            "SELECT encode(data, 'hex') FROM pg_logical_slot_get_binary_changes('truth', NULL, NULL, \
               'proto_version', '1', 'publication_names', 'truth')",
        );
        let mut current: Option<(u64, u64)> = None;
        for line in out.lines().filter(|l| !l.is_empty()) {
            let bytes = hex(line);
            match pgoutput::decode(&bytes).expect("a pgoutput message from the truth slot") {
                Message::Begin { final_lsn, .. } => current = Some((final_lsn, 0)),
                Message::Insert { .. } | Message::Update { .. } | Message::Delete { .. } => {
                    current.as_mut().expect("a change inside a transaction").1 += 1;
                }
                Message::Truncate { relations, .. } => {
                    current.as_mut().expect("a truncate inside a transaction").1 += relations.len() as u64;
                }
                Message::Commit { commit_lsn, .. } => {
                    let (lsn, changes) = current.take().expect("a commit after a begin");
                    assert_eq!(lsn, commit_lsn);
                    if changes > 0 {
                        self.transactions.insert(lsn, changes);
                    }
                }
                _ => {}
            }
        }
        assert!(current.is_none(), "the truth slot returned half a transaction");
    }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
}

/// What the log holds of the source, from `remix log dump --json`, read incrementally: a complete
/// record that a reader saw stays in the log (a kill -9 loses no written bytes, and recovery cuts only
/// an incomplete tail).
#[derive(Debug, Default)]
struct Logged {
    /// The next offset to read.
    next: u64,
    positions: HashSet<String>,
    /// Consistent points of the snapshots in the log (one per attempt).
    snapshot_lsns: BTreeSet<u64>,
    /// Streamed changes: commit LSN → ordinals.
    streamed: BTreeMap<u64, BTreeSet<u64>>,
}

impl Logged {
    /// Reads what was appended since the last read; fails the test when a position is there twice.
    fn read(&mut self, node: &Node) {
        let from = self.next.to_string();
        let out = node.cli(&["log", "dump", "--json", "--from", &from]);
        assert!(out.status.success(), "remix log dump: {out:?}");
        for line in stdout(&out).lines() {
            let record: Value = serde_json::from_str(line).expect("a JSON line");
            self.next = record["offset"].as_u64().expect("an offset") + 1;
            let Some(position) = record["position"].as_str() else { continue };
            assert!(self.positions.insert(position.to_owned()), "position {position} is in the log twice");
            if let Some(rest) = position.strip_prefix("snapshot:") {
                let lsn = rest.split(':').next().expect("snapshot:<lsn>:...");
                self.snapshot_lsns.insert(parse_lsn(lsn).expect("an LSN"));
            } else {
                let (lsn, ordinal) = position.split_once(':').expect("<commit LSN>:<ordinal>");
                let lsn = parse_lsn(lsn).expect("an LSN");
                self.streamed.entry(lsn).or_default().insert(ordinal.parse().expect("an ordinal"));
            }
        }
    }
}

fn confirmed_flush_lsn(server: &PgServer) -> Option<u64> {
    let text = server.psql(
        "shop",
        "SELECT coalesce(confirmed_flush_lsn::text, '') FROM pg_replication_slots WHERE slot_name = 'remix_shop'",
    );
    (!text.is_empty()).then(|| parse_lsn(&text).expect("an LSN"))
}

/// The streamed transactions at or after `snapshot` and before `upto` that the log does not hold whole:
/// (commit LSN, changes, changes logged).
fn not_logged(truth: &Truth, logged: &Logged, snapshot: u64, upto: u64) -> Vec<(u64, u64, usize)> {
    let mut missing = Vec::new();
    for (&lsn, &changes) in truth.transactions.range(snapshot..upto.max(snapshot)) {
        let got = logged.streamed.get(&lsn).map_or(0, BTreeSet::len);
        if got as u64 != changes {
            missing.push((lsn, changes, got));
        }
    }
    missing
}

/// The invariant of the module docs. Returns whether it applied (the snapshot was done).
fn check_confirmed(
    node: &Node,
    server: &PgServer,
    truth: &mut Truth,
    logged: &mut Logged,
    when: &str,
) -> bool {
    let done = node.snapshot_done("shop_db");
    let confirmed = confirmed_flush_lsn(server);
    logged.read(node);
    truth.read(server);
    // Every streamed change in the log is one the source made (no made-up or shifted positions).
    for (lsn, ordinals) in &logged.streamed {
        let changes = truth.transactions.get(lsn).unwrap_or_else(|| {
            panic!(
                "{when}: the log has changes of a transaction at {} that the source never committed",
                format_lsn(*lsn)
            )
        });
        assert!(
            ordinals.iter().all(|o| o < changes),
            "{when}: ordinals {ordinals:?} at {} but {changes} changes",
            format_lsn(*lsn)
        );
    }
    let (true, Some(confirmed)) = (done, confirmed) else { return false };
    let snapshot = *logged.snapshot_lsns.last().expect("the completed snapshot's rows are in the log");
    assert!(
        confirmed >= snapshot,
        "{when}: confirmed_flush_lsn {} is behind the snapshot's consistent point {}",
        format_lsn(confirmed),
        format_lsn(snapshot)
    );
    let missing = not_logged(truth, logged, snapshot, confirmed);
    if let Some(&(lsn, changes, got)) = missing.first() {
        panic!(
            "{when}: confirmed_flush_lsn {} passed {} transactions the log does not hold whole; the first \
             committed at {} with {changes} changes, {got} of them in the log",
            format_lsn(confirmed),
            missing.len(),
            format_lsn(lsn)
        );
    }
    true
}

/// The dataset's final state must be the source tables'; reports the first differences.
fn assert_dataset_is_source(node: &Node, server: &PgServer) {
    for (model, rows) in source_state(server) {
        let got = dataset_state(&node.dataset_dir, &model);
        let missing: Vec<_> = rows.iter().filter(|(k, v)| got.get(*k) != Some(*v)).take(3).collect();
        let extra: Vec<_> = got.iter().filter(|(k, _)| !rows.contains_key(*k)).take(3).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{model}: the dataset has {} objects, the source {}; source rows missing or different: \
             {missing:?}; objects the source does not have: {extra:?}",
            got.len(),
            rows.len()
        );
    }
}

/// With the writer stopped and the node running: the log gets every transaction, the dataset the
/// source's state; after a clean stop the confirmed position holds too, and the log verifies.
fn assert_all_arrive_once(node: &mut Node, server: &PgServer, truth: &mut Truth, logged: &mut Logged) {
    wait_for("the log to hold every transaction", || {
        let done = node.snapshot_done("shop_db");
        logged.read(node);
        truth.read(server);
        let snapshot = logged.snapshot_lsns.last().copied().filter(|_| done)?;
        not_logged(truth, logged, snapshot, u64::MAX).is_empty().then_some(())
    });
    node.wait_caught_up("dataset");
    assert_dataset_is_source(node, server);
    node.stop();
    wait_slot_released(server);
    assert!(check_confirmed(node, server, truth, logged, "after the last stop"));
    node.verify_log();
}

/// Waits until no walsender holds the slot (after a kill, its last status update has been applied).
fn wait_slot_released(server: &PgServer) {
    wait_for("the slot to be released", || {
        let active =
            server.psql("shop", "SELECT active FROM pg_replication_slots WHERE slot_name = 'remix_shop'");
        (active != "t").then_some(())
    });
}

/// Transactions against the source until `stop`: inserts, updates of one row or of many, deletes; a
/// pause of up to `pause_ms_max` after each.
fn writer(dsn: String, stop: Arc<AtomicBool>, seed: u64, pause_ms_max: u64) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut rng = Rng::new(seed);
        let mut next_id = 1_000_000u64;
        let mut transactions = 0;
        while !stop.load(Ordering::Relaxed) {
            transactions += 1;
            let id = rng.range(1..=INITIAL_ROWS);
            let sql = match rng.range(0..=4) {
                0 | 1 => {
                    next_id += 3;
                    format!(
                        "INSERT INTO customers SELECT i, 'w' || i || '@example.com', 'Writer ' || i, timestamptz '2026-11-24 10:00:00+00' \
                           FROM generate_series({0}, {0} + 2) i;
                         INSERT INTO orders SELECT i, i, i % 1000, 'pending' FROM generate_series({0}, {0} + 2) i;",
                        next_id - 3
                    )
                }
                2 => format!(
                    "UPDATE orders SET amount_cents = amount_cents + 1, status = 'paid' WHERE id = {id};
                     UPDATE customers SET email = 'u{transactions}@example.com' WHERE id = {id};"
                ),
                3 => format!(
                    "UPDATE customers SET full_name = 'Renamed {transactions}' WHERE id % 1000 = {};",
                    transactions % 1000
                ),
                _ => {
                    format!("DELETE FROM orders WHERE id = {id}; DELETE FROM customers WHERE id = {id} + 1;")
                }
            };
            psql_conninfo(&dsn, &sql, None).unwrap_or_else(|e| panic!("writer: {e}\nSQL: {sql}"));
            std::thread::sleep(Duration::from_millis(rng.range(0..=pause_ms_max)));
        }
        transactions
    })
}

#[test]
fn kill9_during_snapshot_and_streaming_never_confirms_past_the_log() {
    let mut rng = Rng::from_clock("pg_crash");
    let server = shop_server();
    insert_rows(&server, 1, INITIAL_ROWS + 1);
    let mut truth = Truth::create(&server);
    let mut logged = Logged::default();
    let dir = tempfile::tempdir().unwrap();
    let mut node = pg_node(dir.path(), &server);
    let stop = Arc::new(AtomicBool::new(false));
    let writing = writer(server.dsn("shop"), Arc::clone(&stop), rng.next(), 20);

    let (mut in_snapshot, mut in_stream, mut checked_running) = (0, 0, 0);
    for iteration in 0..SNAPSHOT_KILLS + STREAMING_KILLS {
        // Not waiting for the source to connect: a kill may come before the slot exists, too.
        node.start_live();
        if iteration < SNAPSHOT_KILLS {
            std::thread::sleep(Duration::from_millis(rng.range(0..=1200)));
        } else {
            wait_for("the initial snapshot to be done", || node.snapshot_done("shop_db").then_some(()));
            std::thread::sleep(Duration::from_millis(rng.range(0..=600)));
            let when = format!("iteration {iteration}, while running");
            checked_running += usize::from(check_confirmed(&node, &server, &mut truth, &mut logged, &when));
            std::thread::sleep(Duration::from_millis(rng.range(0..=800)));
        }
        node.kill9();
        if node.snapshot_done("shop_db") {
            in_stream += 1;
        } else {
            in_snapshot += 1;
        }
        wait_slot_released(&server);
        check_confirmed(
            &node,
            &server,
            &mut truth,
            &mut logged,
            &format!("iteration {iteration}, after kill -9"),
        );
    }
    stop.store(true, Ordering::Relaxed);
    let transactions = writing.join().expect("the writer");

    // Restart: everything arrives, once.
    node.start();
    assert_all_arrive_once(&mut node, &server, &mut truth, &mut logged);
    eprintln!(
        "pg_crash: {in_snapshot} kills during the snapshot, {in_stream} during streaming, {checked_running} checks \
         while running; {transactions} writer transactions, {} snapshot attempts, {} records",
        logged.snapshot_lsns.len(),
        logged.positions.len()
    );
}

/// The replication connection dropped (the walsender terminated) while changes stream in, again and
/// again: the source reconnects and resumes from the slot; an append that was in flight when the
/// connection broke still lands, and the changes it held, sent again, are not logged twice.
#[test]
fn connection_loss_while_streaming_logs_each_change_once() {
    let mut rng = Rng::from_clock("pg_crash connection loss");
    let server = shop_server();
    insert_rows(&server, 1, 1001);
    let mut truth = Truth::create(&server);
    let mut logged = Logged::default();
    let dir = tempfile::tempdir().unwrap();
    let mut node = pg_node(dir.path(), &server);
    node.start();
    wait_for("the initial snapshot to be done", || node.snapshot_done("shop_db").then_some(()));
    let stop = Arc::new(AtomicBool::new(false));
    let writing = writer(server.dsn("shop"), Arc::clone(&stop), rng.next(), 0);
    for round in 0..8 {
        wait_for("the source to stream", || {
            let active =
                server.psql("shop", "SELECT active FROM pg_replication_slots WHERE slot_name = 'remix_shop'");
            (active == "t").then_some(())
        });
        std::thread::sleep(Duration::from_millis(rng.range(100..=400)));
        server.psql(
            "shop",
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'remix_shop'",
        );
        check_confirmed(&node, &server, &mut truth, &mut logged, &format!("round {round}, after the drop"));
    }
    stop.store(true, Ordering::Relaxed);
    writing.join().expect("the writer");
    assert_all_arrive_once(&mut node, &server, &mut truth, &mut logged);
}
