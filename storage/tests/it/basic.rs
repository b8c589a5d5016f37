//! Append, read, roll, reopen, cursors, retention on the real file system.

use crate::support::*;
use remix_storage::{AppendRecord, Error, Log, LogView, OsFs, RetentionPolicy};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn append_then_read_back_across_rolls_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 * 1024);
    append_each(&log, 0, 3000);
    assert_eq!(log.durable_offset(), 3000);
    let records = read_all(&log);
    assert_eq!(records.len(), 3000);
    assert_records(&records, 0);
    let stat = log.stat();
    assert!(stat.segments.len() > 3, "rolled: {} segments", stat.segments.len());
    assert!(stat.segments[..stat.segments.len() - 1].iter().all(|s| s.sealed));
    log.close().unwrap();
    drop(log);
    let log = open(dir.path(), 64 * 1024);
    assert!(log.recovery_notes().is_empty(), "clean reopen: {:?}", log.recovery_notes());
    assert_eq!(log.durable_offset(), 3000);
    append_each(&log, 3000, 3100);
    let records = read_all(&log);
    assert_eq!(records.len(), 3100);
    assert_records(&records, 0);
}

#[test]
fn reader_seeks_to_any_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 * 1024);
    append_each(&log, 0, 2000);
    for from in [1u64, 2, 17, 500, 1999, 2000] {
        let records: Vec<_> = log.reader(from).unwrap().map(Result::unwrap).collect();
        assert_eq!(records.len() as u64, 2001 - from);
        assert_records(&records, from - 1);
    }
    assert!(log.reader(2001).unwrap().next().is_none());
}

#[test]
fn batch_gets_consecutive_offsets_and_readers_wake() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path(), 1024 * 1024));
    let mut reader = log.reader(1).unwrap();
    assert!(reader.try_next().unwrap().is_none());
    let writer = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            log.append_blocking((0..10).map(record).collect()).unwrap()
        })
    };
    let first = reader.next_timeout(Duration::from_secs(10)).unwrap().expect("woken by the append");
    assert_eq!(first.offset, 1);
    let appended = writer.join().unwrap();
    assert_eq!((appended.first_offset, appended.last_offset), (1, 10));
}

#[test]
fn concurrent_appenders_get_dense_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path(), 256 * 1024));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                (0..500)
                    .map(|i| log.append_blocking(vec![record(t * 1000 + i)]).unwrap().first_offset)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut offsets: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (1..=2000).collect::<Vec<_>>());
    assert_eq!(read_all(&log).len(), 2000);
}

#[test]
fn invalid_appends_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 * 1024);
    let bad_kind = log.append_blocking(vec![record(0), AppendRecord { kind: 0, payload: vec![] }]);
    assert!(matches!(bad_kind, Err(Error::InvalidKind { kind: 0 })));
    let too_big =
        AppendRecord { kind: 1, payload: vec![0; remix_storage::format::RECORD_PAYLOAD_BYTES_MAX + 1] };
    assert!(matches!(log.append_blocking(vec![too_big]), Err(Error::RecordTooLarge { .. })));
    assert_eq!(log.durable_offset(), 0, "nothing of a refused append is written");
}

#[test]
fn cursors_persist_and_never_pass_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 * 1024);
    append_each(&log, 0, 10);
    log.store_cursor("dataset", 4).unwrap();
    log.store_cursor("dataset", 7).unwrap();
    log.store_cursor("warehouse", 10).unwrap();
    assert!(matches!(
        log.store_cursor("dataset", 11),
        Err(Error::CursorBeyondLog { cursor: 11, last: 10, .. })
    ));
    assert!(matches!(log.store_cursor("../etc", 1), Err(Error::InvalidName { .. })));
    drop(log);
    let log = open(dir.path(), 64 * 1024);
    assert_eq!(log.cursor("dataset"), Some(7));
    assert_eq!(log.cursor("warehouse"), Some(10));
    assert_eq!(log.cursor("nobody"), None);
}

#[test]
fn retention_removes_applied_segments_and_reports_fallen_behind() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 * 1024);
    append_each(&log, 0, 3000);
    let segments = log.stat().segments;
    let second_last = segments[1].last_offset;
    log.store_cursor("fast", 3000).unwrap();
    log.store_cursor("slow", second_last).unwrap();
    let report = log.apply_retention(&RetentionPolicy { min_age_ms: 0, max_bytes: None }, u64::MAX).unwrap();
    assert_eq!(report.removed.len(), 2, "only what every cursor has passed");
    assert_eq!(report.first_offset, second_last + 1);
    assert!(report.fallen_behind.is_empty());
    assert!(matches!(log.reader(1), Err(Error::BelowStart { .. })));
    let budget = log.stat().segments.last().unwrap().bytes + 1;
    let report =
        log.apply_retention(&RetentionPolicy { min_age_ms: 0, max_bytes: Some(budget) }, u64::MAX).unwrap();
    assert_eq!(report.fallen_behind, vec![("slow".to_owned(), second_last)]);
    let first = log.first_offset();
    drop(log);
    let log = open(dir.path(), 64 * 1024);
    assert_eq!(log.first_offset(), first);
    let records = read_all(&log);
    assert_records(&records, first - 1);
    assert_eq!(records.last().unwrap().offset, 3000);
}

#[test]
fn retention_for_the_configured_targets_ignores_others_and_waits_for_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 * 1024);
    append_each(&log, 0, 3000);
    let policy = RetentionPolicy { min_age_ms: 0, max_bytes: None };
    log.store_cursor("kept", 3000).unwrap();
    log.store_cursor("removed", 1).unwrap();
    // A configured target without a cursor yet holds everything.
    let targets = ["kept".to_owned(), "added".to_owned()];
    let report = log.apply_retention_for(&policy, u64::MAX, &targets).unwrap();
    assert!(report.removed.is_empty(), "{report:?}");
    // The cursor of a target that is no longer configured holds nothing.
    let report = log.apply_retention_for(&policy, u64::MAX, &targets[..1]).unwrap();
    assert!(!report.removed.is_empty());
    assert_eq!(log.stat().segments.len(), 1, "every sealed segment went: {report:?}");
    assert!(report.fallen_behind.is_empty(), "{report:?}");
    assert_eq!(log.cursors().get("removed"), Some(&1), "the file stays: only retention ignores it");
}

#[test]
fn retention_waits_for_min_age() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 * 1024);
    append_each(&log, 0, 1000);
    log.store_cursor("t", 1000).unwrap();
    let report =
        log.apply_retention(&RetentionPolicy { min_age_ms: 1_000_000, max_bytes: None }, 1_500_000).unwrap();
    assert!(report.removed.is_empty());
}

#[test]
fn view_reads_beside_a_running_writer() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 * 1024);
    append_each(&log, 0, 1500);
    let view = LogView::open(Arc::new(OsFs), dir.path()).unwrap();
    assert_eq!(view.durable_offset(), 1500);
    let records: Vec<_> = view.reader(1).unwrap().map(Result::unwrap).collect();
    assert_records(&records, 0);
    assert_eq!(view.stat().records, 1500);
}

#[test]
fn lock_already_held_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _log = open(dir.path(), 64 * 1024);
    let second = Log::open(Arc::new(OsFs), dir.path(), small_options(64 * 1024));
    assert!(matches!(second, Err(Error::Locked { .. })), "{second:?}");
}

#[test]
fn offset_at_time_finds_first_record_not_older() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 * 1024);
    let a = log.append_blocking(vec![record(0)]).unwrap();
    let b = log.append_blocking(vec![record(1)]).unwrap();
    assert!(b.timestamp_ms > a.timestamp_ms);
    assert_eq!(log.offset_at_time(0).unwrap(), 1);
    assert_eq!(log.offset_at_time(b.timestamp_ms).unwrap(), 2);
    assert_eq!(log.offset_at_time(b.timestamp_ms + 1).unwrap(), 3);
}

/// Files under `dir` this process holds open (other tests run beside this one in the process).
fn open_files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

#[test]
fn sealed_segments_do_not_each_hold_a_file_open() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let log = open(&dir, 64 * 1024);
    for group in 0..500u64 {
        log.append_blocking((group * 300..(group + 1) * 300).map(record).collect()).unwrap();
    }
    let segments = log.stat().segments.len();
    assert!(segments > 2 * remix_storage::SEALED_FILES_OPEN_MAX, "{segments} segments");
    let bound = remix_storage::SEALED_FILES_OPEN_MAX + 8; // + the active segment, lock and slot files
    assert!(open_files_under(&dir) < 8, "after the writes: {}", open_files_under(&dir));
    let records = read_all(&log);
    assert_eq!(records.len(), 150_000);
    assert_records(&records, 0);
    assert!(open_files_under(&dir) <= bound, "after a full read: {}", open_files_under(&dir));
    log.close().unwrap();
    drop(log);
    // Recovery opens every segment once, and keeps only the newest open.
    let log = open(&dir, 64 * 1024);
    assert!(open_files_under(&dir) < 8, "after reopening: {}", open_files_under(&dir));
    let records = read_all(&log);
    assert_records(&records, 0);
    assert!(open_files_under(&dir) <= bound, "after a full read: {}", open_files_under(&dir));
    // A view does the same.
    let view = LogView::open(Arc::new(OsFs), &dir).unwrap();
    let records: Vec<_> = view.reader(1).unwrap().map(Result::unwrap).collect();
    assert_eq!(records.len(), 150_000);
    assert!(open_files_under(&dir) <= 2 * bound, "with a view: {}", open_files_under(&dir));
}
