//! One named test per corruption case.

use crate::support::*;
use remix_storage::verify::{repair, verify};
use remix_storage::{Error, Log, OsFs};
use std::sync::Arc;

fn reopen(dir: &std::path::Path) -> remix_storage::Result<Log> {
    Log::open(Arc::new(OsFs), dir, small_options(64 * 1024))
}

#[test]
fn stale_temp_file_is_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), 64 * 1024));
    let tmp = dir.path().join("log").join("00000000000000000099.log.tmp");
    std::fs::write(&tmp, b"half a segment").unwrap();
    let log = reopen(dir.path()).unwrap();
    assert!(!tmp.exists());
    assert!(log.recovery_notes().iter().any(|n| n.contains("stale temp file")));
}

#[test]
fn missing_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 * 1024);
    append_each(&log, 0, 2000);
    drop(log);
    let index = segment_files(dir.path())[0].with_extension("idx");
    std::fs::remove_file(&index).unwrap();
    let log = reopen(dir.path()).unwrap();
    assert!(index.exists(), "rebuilt");
    assert_records(&read_all(&log), 0);
}

#[test]
fn wrong_index_is_reported_by_verify_and_rebuilt_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 * 1024);
    append_each(&log, 0, 2000);
    drop(log);
    let segments = segment_files(dir.path());
    // The index of segment 2 put beside segment 1: valid checksums, wrong segment.
    std::fs::copy(segments[1].with_extension("idx"), segments[0].with_extension("idx")).unwrap();
    let report = verify(&OsFs, dir.path()).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].message.contains("index"));
    let log = reopen(dir.path()).unwrap();
    assert_records(&read_all(&log), 0);
    drop(log);
    assert!(verify(&OsFs, dir.path()).unwrap().problems.is_empty());
}

#[test]
fn missing_middle_segment_is_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 * 1024);
    append_each(&log, 0, 3000);
    drop(log);
    let segments = segment_files(dir.path());
    std::fs::remove_file(&segments[1]).unwrap();
    std::fs::remove_file(segments[1].with_extension("idx")).unwrap();
    match reopen(dir.path()) {
        Err(e @ Error::MissingSegment { .. }) => assert!(e.to_string().contains("missing segment"), "{e}"),
        other => panic!("expected MissingSegment, got {other:?}"),
    }
    assert!(!verify(&OsFs, dir.path()).unwrap().problems.is_empty());
}

#[test]
fn bad_checksum_in_a_sealed_segment_is_reported_and_read_fails_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 * 1024);
    append_each(&log, 0, 3000);
    drop(log);
    let first = &segment_files(dir.path())[0];
    let mut bytes = std::fs::read(first).unwrap();
    bytes[5000] ^= 0x10;
    std::fs::write(first, &bytes).unwrap();
    let report = verify(&OsFs, dir.path()).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let problem = &report.problems[0];
    assert_eq!(&problem.path, first);
    assert!(problem.position <= 5000 && problem.offset > 1, "{problem}");
    // Sealed segments are trusted through their index on open; reading the damaged record fails.
    let log = reopen(dir.path()).unwrap();
    let error = log.reader(1).unwrap().find_map(Result::err).expect("the read fails");
    match error {
        Error::Corrupt { segment, position, offset, .. } => {
            assert_eq!(&segment, first);
            assert_eq!((position, offset), (problem.position, problem.offset));
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    drop(log);
    let repaired = repair(&OsFs, dir.path(), 1).unwrap();
    assert!(repaired.quarantine.is_some());
    let log = reopen(dir.path()).unwrap();
    assert_eq!(log.durable_offset(), problem.offset - 1, "cut at the damaged record");
    assert_records(&read_all(&log), 0);
}

#[test]
fn cursor_beyond_the_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 * 1024);
    append_each(&log, 0, 10);
    log.store_cursor("dataset", 10).unwrap();
    drop(log);
    // Cut the log back behind the cursor (as an operator restoring an old copy might).
    let segment = &segment_files(dir.path())[0];
    let bytes = std::fs::read(segment).unwrap();
    std::fs::write(segment, &bytes[..64]).unwrap();
    match reopen(dir.path()) {
        Err(Error::CursorBeyondLog { target, cursor: 10, last: 0 }) => assert_eq!(target, "dataset"),
        other => panic!("expected CursorBeyondLog, got {other:?}"),
    }
}

#[test]
fn both_cursor_slots_torn_is_an_error_not_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 * 1024);
    append_each(&log, 0, 10);
    log.store_cursor("dataset", 3).unwrap();
    log.store_cursor("dataset", 5).unwrap();
    drop(log);
    let path = dir.path().join("cursors").join("dataset.cursor");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    // Slot 0 holds the newer value (sequence 2): torn, the older slot serves.
    assert_eq!(reopen(dir.path()).unwrap().cursor("dataset"), Some(3), "one torn slot: the other one serves");
    bytes[64 + 20] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    match reopen(dir.path()) {
        Err(e @ Error::SlotsTorn { .. }) => assert!(e.to_string().contains("dataset.cursor"), "{e}"),
        other => panic!("expected SlotsTorn, got {other:?}"),
    }
}
