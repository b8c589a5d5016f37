//! Helpers shared by the storage tests.

use remix_storage::{AppendRecord, Log, LogOptions, OsFs, Record};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub fn payload(i: u64) -> Vec<u8> {
    let len = (i * 37 % 200) as usize + 1;
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

pub fn record(i: u64) -> AppendRecord {
    AppendRecord { kind: 1 + (i % 3) as u8, payload: payload(i) }
}

/// Options with small segments and a clock that ticks 1 ms per call, starting at 1_000_000.
pub fn small_options(segment_bytes: u64) -> LogOptions {
    let now = Arc::new(AtomicU64::new(1_000_000));
    LogOptions {
        segment_bytes,
        clock: Arc::new(move || now.fetch_add(1, Ordering::Relaxed)),
        ..LogOptions::default()
    }
}

pub fn open(dir: &Path, segment_bytes: u64) -> Log {
    Log::open(Arc::new(OsFs), dir, small_options(segment_bytes)).expect("open log")
}

/// Appends records `from..to`, one append call each.
pub fn append_each(log: &Log, from: u64, to: u64) {
    for i in from..to {
        let appended = log.append_blocking(vec![record(i)]).expect("append");
        assert_eq!(appended.first_offset, i + 1, "offsets are dense from 1");
    }
}

pub fn read_all(log: &Log) -> Vec<Record> {
    log.reader(log.first_offset()).expect("reader").map(|r| r.expect("record")).collect()
}

/// Checks that `records` are exactly records `first..first+len` as appended by `append_each`.
pub fn assert_records(records: &[Record], first: u64) {
    for (n, record) in records.iter().enumerate() {
        let i = first + n as u64;
        assert_eq!(record.offset, i + 1);
        assert_eq!(record.kind, 1 + (i % 3) as u8, "kind of offset {}", i + 1);
        assert_eq!(record.payload, payload(i), "payload of offset {}", i + 1);
    }
}

pub fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}
