//! The writer's failure policy on `SimFs`: a full disk refuses an append whole and the writer goes on
//! once space returns; a failed fsync stops the log for good (never retried) and a reopen recovers
//! everything acknowledged.

use crate::support::{payload, record, small_options};
use remix_storage::sim::SimFs;
use remix_storage::verify::verify;
use remix_storage::{AppendRecord, Error, Log, Record};
use std::path::Path;
use std::sync::Arc;

const DIR: &str = "/data";

fn open(fs: &SimFs, segment_bytes: u64) -> Log {
    Log::open(Arc::new(fs.clone()), Path::new(DIR), small_options(segment_bytes)).expect("open log")
}

fn read_all(log: &Log) -> Vec<Record> {
    log.reader(log.first_offset()).unwrap().map(Result::unwrap).collect()
}

/// A record whose payload is `len` bytes derived from `i`.
fn sized(i: u64, len: usize) -> AppendRecord {
    let mut bytes = payload(i);
    bytes.resize(len, i as u8);
    AppendRecord { kind: 1 + (i % 100) as u8, payload: bytes }
}

/// Checks that the log holds exactly `expected`, from offset 1.
fn assert_holds(log: &Log, expected: &[AppendRecord]) {
    let records = read_all(log);
    assert_eq!(records.len(), expected.len(), "record count");
    for (n, (record, want)) in records.iter().zip(expected).enumerate() {
        assert_eq!(record.offset, n as u64 + 1);
        assert_eq!((record.kind, &record.payload), (want.kind, &want.payload), "offset {}", n + 1);
    }
}

/// Every segment file is exactly as long as the log believes: no half frame, no half seal.
fn assert_no_partial_write(fs: &SimFs, log: &Log) {
    for segment in log.stat().segments {
        let on_disk = fs.file_bytes(&segment.path).expect("segment exists").len() as u64;
        assert_eq!(on_disk, segment.bytes, "{} holds bytes beyond its last group", segment.path.display());
    }
}

/// Power loss in many ways: every one keeps exactly `expected` (and verify is clean).
fn assert_survives_power_loss(fs: &SimFs, expected: &[AppendRecord]) {
    for seed in 0..16 {
        let copy = fs.fork();
        copy.crash(seed);
        // Recovery copies a torn tail to quarantine/ before cutting it: that needs space.
        copy.set_space_bytes(None);
        let log = open(&copy, 64 * 1024);
        assert_holds(&log, expected);
        drop(log);
        let report = verify(&copy, Path::new(DIR)).unwrap();
        assert!(report.problems.is_empty(), "seed {seed}: {:?}", report.problems);
    }
}

#[test]
fn disk_full_refuses_the_append_whole_and_the_writer_resumes() {
    let fs = SimFs::new();
    let log = open(&fs, 1024 * 1024);
    let mut expected: Vec<AppendRecord> = (0..10).map(record).collect();
    for r in &expected {
        log.append_blocking(vec![r.clone()]).unwrap();
    }
    fs.set_space_bytes(Some(fs.used_bytes() + 3000));
    let batch: Vec<AppendRecord> = (10..13).map(|i| sized(i, 2000)).collect();
    match log.append_blocking(batch.clone()) {
        Err(Error::NoSpace) => {}
        other => panic!("expected NoSpace, got {other:?}"),
    }
    assert!(log.stopped().is_none(), "a full disk does not stop the log");
    assert_eq!(log.durable_offset(), 10);
    assert_holds(&log, &expected);
    assert_no_partial_write(&fs, &log);
    assert_survives_power_loss(&fs, &expected);

    // What still fits is written, at the offset the refused append would have had.
    let small = sized(20, 100);
    assert_eq!(log.append_blocking(vec![small.clone()]).unwrap().first_offset, 11);
    expected.push(small);
    match log.append_blocking(batch.clone()) {
        Err(Error::NoSpace) => {}
        other => panic!("still full: expected NoSpace, got {other:?}"),
    }

    fs.set_space_bytes(None);
    let appended = log.append_blocking(batch.clone()).unwrap();
    assert_eq!((appended.first_offset, appended.last_offset), (12, 14));
    expected.extend(batch);
    assert_holds(&log, &expected);
    log.close().unwrap();
    assert_no_partial_write(&fs, &log);
    drop(log);
    assert_survives_power_loss(&fs, &expected);
    let log = open(&fs, 1024 * 1024);
    assert!(log.recovery_notes().is_empty(), "nothing to cut: {:?}", log.recovery_notes());
    assert_holds(&log, &expected);
}

/// The disk fills up at every possible point around a roll (the last group, the seal, the index, the
/// next segment's creation): appends fail with NoSpace or succeed, the log never stops, and once
/// space returns it goes on with dense offsets and a clean, sealed segment chain.
#[test]
fn disk_full_around_a_roll_never_leaves_a_half_frame() {
    for extra in (0..900).step_by(12) {
        let fs = SimFs::new();
        let log = open(&fs, 64 * 1024);
        let mut expected = Vec::new();
        let mut i = 0;
        while log.stat().segments[0].bytes < 64 * 1024 - 3000 {
            let r = sized(i, 1000);
            log.append_blocking(vec![r.clone()]).unwrap();
            expected.push(r);
            i += 1;
        }
        fs.set_space_bytes(Some(fs.used_bytes() + 2500 + extra));
        for _ in 0..4 {
            let r = sized(i, 1200);
            i += 1;
            match log.append_blocking(vec![r.clone()]) {
                Ok(appended) => {
                    assert_eq!(appended.first_offset, expected.len() as u64 + 1, "extra {extra}");
                    expected.push(r);
                }
                Err(Error::NoSpace) => {}
                Err(e) => panic!("extra {extra}: {e}"),
            }
        }
        assert!(log.stopped().is_none(), "extra {extra}: a full disk does not stop the log");
        fs.set_space_bytes(None);
        for _ in 0..3 {
            let r = sized(i, 1200);
            i += 1;
            assert_eq!(log.append_blocking(vec![r.clone()]).unwrap().first_offset, expected.len() as u64 + 1);
            expected.push(r);
        }
        log.close().unwrap();
        assert_no_partial_write(&fs, &log);
        let segments = log.stat().segments;
        assert!(segments.len() >= 2, "extra {extra}: rolled");
        assert!(segments[..segments.len() - 1].iter().all(|s| s.sealed), "extra {extra}");
        drop(log);
        let report = verify(&fs, Path::new(DIR)).unwrap();
        assert!(report.problems.is_empty(), "extra {extra}: {:?}", report.problems);
        let log = open(&fs, 64 * 1024);
        assert!(
            !log.recovery_notes().iter().any(|n| n.contains("torn")),
            "extra {extra}: {:?}",
            log.recovery_notes()
        );
        assert_holds(&log, &expected);
        drop(log);
        if extra % 120 == 0 {
            assert_survives_power_loss(&fs, &expected);
        }
    }
}

#[test]
fn failed_fsync_stops_the_log_and_is_never_retried() {
    let fs = SimFs::new();
    let log = open(&fs, 1024 * 1024);
    let expected: Vec<AppendRecord> = (0..5).map(record).collect();
    for r in &expected {
        log.append_blocking(vec![r.clone()]).unwrap();
    }
    fs.fail_next_sync();
    match log.append_blocking(vec![record(5)]) {
        Err(Error::Stopped { reason }) => assert!(reason.contains("fdatasync"), "{reason}"),
        other => panic!("expected Stopped, got {other:?}"),
    }
    assert!(log.stopped().is_some());
    assert_eq!(log.durable_offset(), 5, "the failed group is not durable");
    assert_holds(&log, &expected);

    // Nothing is written, synced or retried any more: later appends are refused at once.
    let ops = fs.mutating_ops();
    assert!(matches!(log.append(vec![record(6)], |_| panic!("never called")), Err(Error::Stopped { .. })));
    assert!(matches!(log.append_blocking(vec![record(7)]), Err(Error::Stopped { .. })));
    assert!(matches!(log.close(), Err(Error::Stopped { .. })));
    assert_eq!(fs.mutating_ops(), ops, "the writer touched the disk after it stopped");
    drop(log);

    // Power loss: the failed group may or may not be there, everything acknowledged is.
    for seed in 0..16 {
        let copy = fs.fork();
        copy.crash(seed);
        let log = open(&copy, 1024 * 1024);
        let records = read_all(&log);
        assert!(records.len() == 5 || records.len() == 6, "seed {seed}: {} records", records.len());
        let mut with_failed = expected.clone();
        with_failed.push(record(5));
        assert_holds(&log, &with_failed[..records.len()]);
        assert_eq!(log.append_blocking(vec![record(9)]).unwrap().first_offset, records.len() as u64 + 1);
    }
}

/// After a failed fsync the process restarts without power loss: the unsynced group is still in the
/// page cache. Whatever the reopened log shows as durable must stay so through a later power loss.
#[test]
fn reopen_after_failed_fsync_makes_what_it_shows_durable() {
    let fs = SimFs::new();
    let log = open(&fs, 1024 * 1024);
    let mut expected: Vec<AppendRecord> = (0..5).map(record).collect();
    for r in &expected {
        log.append_blocking(vec![r.clone()]).unwrap();
    }
    fs.fail_next_sync();
    assert!(matches!(log.append_blocking(vec![record(5)]), Err(Error::Stopped { .. })));
    drop(log);
    fs.kill();
    let log = open(&fs, 1024 * 1024);
    let shown = log.durable_offset();
    assert!(shown == 5 || shown == 6);
    if shown == 6 {
        expected.push(record(5));
    }
    assert_holds(&log, &expected);
    // A target applies everything shown and stores its cursor there.
    log.store_cursor("target", shown).unwrap();
    drop(log);
    for seed in 0..16 {
        let copy = fs.fork();
        copy.crash(seed);
        let log = open(&copy, 1024 * 1024);
        assert_holds(&log, &expected);
        assert_eq!(log.cursor("target"), Some(shown));
    }
}
