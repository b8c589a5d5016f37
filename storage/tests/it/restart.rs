//! kill -9 followed, later, by power loss, on `SimFs`: the page cache outlives the process, so a
//! restarted log sees writes and directory entries that are not durable yet. Whatever the restarted
//! log then trusts and acknowledges must survive the power loss. Named regressions of the bugs the
//! model test found, plus a sweep of the moment of death over every file operation of a workload.

use crate::support::{payload, small_options};
use remix_storage::sim::SimFs;
use remix_storage::verify::verify;
use remix_storage::{AppendRecord, Error, Log, RetentionPolicy};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

const DIR: &str = "/data";
const SEGMENT_BYTES: u64 = 64 * 1024;

fn open(fs: &SimFs) -> remix_storage::Result<Log> {
    Log::open(Arc::new(fs.clone()), Path::new(DIR), small_options(SEGMENT_BYTES))
}

/// The record at `offset`: 3000 bytes, so that a segment holds about 21.
fn record_at(offset: u64) -> AppendRecord {
    let mut bytes = payload(offset);
    bytes.resize(3000, offset as u8);
    AppendRecord { kind: 1 + (offset % 100) as u8, payload: bytes }
}

/// What the log acknowledged.
#[derive(Debug, Default, Clone)]
struct Acked {
    durable: u64,
    cursors: BTreeMap<String, u64>,
}

/// Appends one record at a time until `to`, stopping at the first failure.
fn append_until(log: &Log, acked: &mut Acked, to: u64) -> bool {
    while acked.durable < to {
        match log.append_blocking(vec![record_at(acked.durable + 1)]) {
            Ok(appended) => {
                assert_eq!(appended.first_offset, acked.durable + 1);
                acked.durable = appended.last_offset;
            }
            Err(_) => return false,
        }
    }
    true
}

fn store(log: &Log, acked: &mut Acked, target: &str, offset: u64) -> bool {
    let ok = log.store_cursor(target, offset).is_ok();
    if ok {
        acked.cursors.insert(target.to_owned(), offset);
    }
    ok
}

/// Rolls three times, creates two cursor files, and removes the first two segments by retention (the
/// first retention creates the start file, the second overwrites a slot of it).
fn workload(log: &Log, acked: &mut Acked) {
    let retention = || log.apply_retention(&RetentionPolicy::default(), u64::MAX).is_ok();
    let _ = append_until(log, acked, 30)
        && store(log, acked, "a", 25)
        && retention()
        && append_until(log, acked, 50)
        && store(log, acked, "b", 45)
        && store(log, acked, "a", 45)
        && retention()
        && append_until(log, acked, 70);
}

/// Checks the log holds every acknowledged record and cursor.
fn check(log: &Log, acked: &Acked, what: &str) {
    assert!(
        log.durable_offset() >= acked.durable,
        "{what}: durable {} < {}",
        log.durable_offset(),
        acked.durable
    );
    for record in log.reader(log.first_offset()).unwrap() {
        let record = record.unwrap();
        let want = record_at(record.offset);
        assert!(
            record.kind == want.kind && record.payload == want.payload,
            "{what}: record {}",
            record.offset
        );
    }
    for (target, &value) in &acked.cursors {
        let stored = log.cursor(target).unwrap_or_else(|| panic!("{what}: cursor {target} lost"));
        assert!(stored >= value, "{what}: cursor {target} at {stored}, acknowledged {value}");
    }
}

/// The process dies at every mutating file operation of the workload in turn; it restarts (the page
/// cache survives), acknowledges more appends and cursor stores, and then the power fails.
#[test]
fn kill_at_every_operation_then_power_loss_keeps_what_the_restarted_log_acknowledged() {
    let total = {
        let fs = SimFs::new();
        let log = open(&fs).unwrap();
        let before = fs.mutating_ops();
        workload(&log, &mut Acked::default());
        fs.mutating_ops() - before
    };
    for k in 0..total + 2 {
        let fs = SimFs::new();
        let log = open(&fs).unwrap();
        fs.set_ops_left(Some(k));
        let mut acked = Acked::default();
        workload(&log, &mut acked);
        drop(log);
        fs.kill();
        let log = open(&fs).unwrap_or_else(|e| panic!("k {k}: reopen after kill: {e}"));
        check(&log, &acked, &format!("k {k} after kill"));
        // The restarted node goes on: more appends, and a cursor at the end of what it sees (into the
        // existing file: creating one would sync the directory and hide a missing sync of its own).
        let mut after = Acked { durable: log.durable_offset(), cursors: acked.cursors.clone() };
        assert!(append_until(&log, &mut after, log.durable_offset() + 3), "k {k}: append after restart");
        let end = after.durable;
        assert!(store(&log, &mut after, "a", end), "k {k}: cursor");
        drop(log);
        for seed in 0..3 {
            let copy = fs.fork();
            copy.crash(k * 7 + seed);
            let log =
                open(&copy).unwrap_or_else(|e| panic!("k {k} seed {seed}: reopen after power loss: {e}"));
            check(&log, &after, &format!("k {k} seed {seed} after power loss"));
            drop(log);
            let report = verify(&copy, Path::new(DIR)).unwrap();
            assert!(report.problems.is_empty(), "k {k} seed {seed}: {:?}", report.problems);
        }
    }
}

/// Regression: the writer used to complete the failed group's appends with `Stopped` before marking
/// the log stopped, so a caller reacting to that error could still get a new append accepted.
#[test]
fn whoever_sees_stopped_finds_the_log_stopped() {
    let fs = SimFs::new();
    let log = Arc::new(open(&fs).unwrap());
    log.append_blocking(vec![record_at(1)]).unwrap();
    fs.fail_next_sync();
    let (sender, receiver) = std::sync::mpsc::channel();
    let retry = Arc::new(Mutex::new(None));
    {
        let (log, retry) = (Arc::clone(&log), Arc::clone(&retry));
        log.clone()
            .append(vec![record_at(2)], move |result| {
                if matches!(result, Err(Error::Stopped { .. })) {
                    // React at once, as a webhook handler retrying the request would.
                    let stopped = log.stopped().is_some();
                    let again = log.append(vec![record_at(2)], |_| {});
                    *retry.lock().unwrap() = Some((stopped, again.err().map(|e| e.to_string())));
                }
                let _ = sender.send(result.is_ok());
            })
            .unwrap();
    }
    assert!(!receiver.recv().unwrap(), "the append failed");
    let (stopped, again) = retry.lock().unwrap().take().expect("the callback saw Stopped");
    assert!(stopped, "log.stopped() is None when an append fails with Stopped");
    assert!(again.is_some_and(|e| e.contains("stopped")), "an append accepted after Stopped");
}

/// Regression: retention that removed nothing reported no fallen-behind targets, even with a cursor
/// below the log's start.
#[test]
fn every_retention_reports_the_targets_below_the_start() {
    let fs = SimFs::new();
    let log = open(&fs).unwrap();
    let mut acked = Acked::default();
    assert!(append_until(&log, &mut acked, 70));
    log.store_cursor("slow", 2).unwrap();
    let budget = RetentionPolicy { min_age_ms: 0, max_bytes: Some(SEGMENT_BYTES) };
    let report = log.apply_retention(&budget, u64::MAX).unwrap();
    assert!(!report.removed.is_empty());
    assert_eq!(report.fallen_behind, vec![("slow".to_owned(), 2)]);
    let report = log.apply_retention(&budget, u64::MAX).unwrap();
    assert!(report.removed.is_empty(), "nothing more to remove");
    assert_eq!(report.fallen_behind, vec![("slow".to_owned(), 2)], "still behind");
}
