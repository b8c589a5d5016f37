//! Truncation at every byte and single-bit flips in the tail, on the real file system.

use crate::support::*;
use remix_storage::{Error, Log, OsFs};
use std::path::Path;
use std::sync::Arc;

/// Builds a log of `n` one-record groups in `dir` and returns the newest segment's bytes.
fn build(dir: &Path, n: u64) -> (std::path::PathBuf, Vec<u8>) {
    let log = open(dir, 1024 * 1024);
    append_each(&log, 0, n);
    drop(log);
    let segment = segment_files(dir).pop().unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    (segment, bytes)
}

/// Frame end positions of the records in `bytes` (one per record, in order).
fn frame_ends(bytes: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut at = 64;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 32 + len;
        ends.push(at);
    }
    ends
}

#[test]
fn truncating_at_every_byte_recovers_exactly_the_whole_records_before_the_cut() {
    let source = tempfile::tempdir().unwrap();
    let (segment, bytes) = build(source.path(), 12);
    let ends = frame_ends(&bytes);
    let name = segment.file_name().unwrap().to_owned();
    for cut in 64..=bytes.len() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("log")).unwrap();
        std::fs::write(dir.path().join("log").join(&name), &bytes[..cut]).unwrap();
        let log = Log::open(Arc::new(OsFs), dir.path(), small_options(1024 * 1024))
            .expect("opens after truncation");
        let whole = ends.iter().filter(|&&end| end <= cut).count();
        let records = read_all(&log);
        assert_eq!(records.len(), whole, "cut at byte {cut}");
        assert_records(&records, 0);
        // The log continues at the next offset after a cut.
        assert_eq!(log.append_blocking(vec![record(whole as u64)]).unwrap().first_offset, whole as u64 + 1);
        drop(log);
        let quarantined = std::fs::read_dir(dir.path().join("quarantine")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(
            quarantined,
            usize::from(cut != ends.iter().copied().filter(|&e| e <= cut).max().unwrap_or(64))
        );
    }
}

/// Every record here was acknowledged. A flip in any record but the last is corruption: the group
/// after it shows that a later write followed, so the damaged one was synced (a flip in a frame header
/// is corrected for that judgement). A flip in the last group cannot be told from a torn last write,
/// so that group alone is cut.
#[test]
fn every_single_bit_flip_is_refused_before_the_last_group_and_cut_in_it_never_misread() {
    let source = tempfile::tempdir().unwrap();
    let (segment, bytes) = build(source.path(), 6);
    let name = segment.file_name().unwrap().to_owned();
    let ends = frame_ends(&bytes);
    let last_start = ends[ends.len() - 2];
    for bit in 64 * 8..bytes.len() * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("log")).unwrap();
        std::fs::write(dir.path().join("log").join(&name), &flipped).unwrap();
        // The damaged record: its index, frame start and offset.
        let damaged = ends.iter().position(|&end| end > bit / 8).unwrap();
        let start = if damaged == 0 { 64 } else { ends[damaged - 1] };
        match Log::open(Arc::new(OsFs), dir.path(), small_options(1024 * 1024)) {
            Ok(log) => {
                assert!(start == last_start, "bit {bit}: damage to offset {} was cut", damaged + 1);
                let records = read_all(&log);
                assert_eq!(records.len(), 5, "bit {bit}: only the damaged last record is cut");
                assert_records(&records, 0);
            }
            Err(Error::Corrupt { position, offset, .. }) => {
                assert!(start < last_start, "bit {bit}: damage to the last group was refused");
                assert_eq!((position, offset), (start as u64, damaged as u64 + 1), "bit {bit}");
            }
            Err(e) => panic!("bit {bit}: unexpected error {e}"),
        }
    }
}
