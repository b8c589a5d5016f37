//! Torn tail versus corruption in the newest segment, on the real file system: recovery, `verify` and
//! `repair` judge alike; damage to a synced group is refused even when the group after it ends exactly
//! at the end of the file; a torn last write is cut even when a lost middle sector leaves its last
//! frame intact.

use crate::support::*;
use remix_storage::verify::{repair, verify};
use remix_storage::{AppendRecord, Error, Log, OsFs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const SEGMENT_BYTES: u64 = 1024 * 1024;
const SECTOR: usize = 512;

fn reopen(dir: &Path) -> remix_storage::Result<Log> {
    Log::open(Arc::new(OsFs), dir, small_options(SEGMENT_BYTES))
}

/// One frame of a segment file: where it starts and ends, and its offset.
#[derive(Debug, Clone, Copy)]
struct Frame {
    start: usize,
    end: usize,
    offset: u64,
}

/// The frames of an intact segment file, in order.
fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut at = 64;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let offset = u64::from_le_bytes(bytes[at + 16..at + 24].try_into().unwrap());
        frames.push(Frame { start: at, end: at + 32 + len, offset });
        at += 32 + len;
    }
    frames
}

/// A log of `n` one-record groups (offsets 1..=n, each acknowledged): its only segment and its bytes.
fn build(dir: &Path, n: u64) -> (PathBuf, Vec<u8>) {
    let log = open(dir, SEGMENT_BYTES);
    append_each(&log, 0, n);
    drop(log);
    let segment = segment_files(dir).pop().unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    (segment, bytes)
}

/// Writes `bytes` as the only segment of a fresh data directory.
fn data_dir_with(name: &std::ffi::OsStr, bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("log")).unwrap();
    std::fs::write(dir.path().join("log").join(name), bytes).unwrap();
    dir
}

fn quarantined(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir.join("quarantine")) else { return Vec::new() };
    entries.map(|e| e.unwrap().path()).collect()
}

/// Asserts that opening refuses with corruption at `frame`, changing nothing, and that `verify`
/// reports the same place as its only problem.
fn assert_refused_and_reported(dir: &Path, segment: &Path, frame: Frame) -> String {
    let before = std::fs::read(segment).unwrap();
    let error = match reopen(dir) {
        Err(e) => e,
        Ok(log) => panic!("expected Corrupt at {frame:?}, opened with notes {:?}", log.recovery_notes()),
    };
    match &error {
        Error::Corrupt { segment: at, position, offset, .. } => {
            let found = (at.as_path(), *position, *offset);
            assert_eq!(found, (segment, frame.start as u64, frame.offset), "{error}");
        }
        other => panic!("expected Corrupt at {frame:?}, got {other}"),
    }
    assert_eq!(std::fs::read(segment).unwrap(), before, "a refused open changes nothing");
    assert!(quarantined(dir).is_empty(), "a refused open quarantines nothing");
    let report = verify(&OsFs, dir).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?} {:?}", report.problems, report.notes);
    let problem = &report.problems[0];
    let found = (problem.path.as_path(), problem.position, problem.offset);
    assert_eq!(found, (segment, frame.start as u64, frame.offset), "{problem}");
    error.to_string()
}

/// Asserts that `repair` cuts the segment at `frame` (copying the rest to quarantine/), after which
/// the log opens with the records before it, verifies clean and continues at `frame`'s offset.
fn assert_repair_cuts_at(dir: &Path, segment: &Path, frame: Frame) {
    let before = std::fs::read(segment).unwrap();
    let repaired = repair(&OsFs, dir, 7).unwrap();
    let quarantine = repaired.quarantine.expect("repair quarantines the cut bytes");
    let copies: Vec<PathBuf> = std::fs::read_dir(&quarantine).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(std::fs::read(&copies[0]).unwrap(), before[frame.start..], "the cut bytes are kept");
    assert_eq!(std::fs::read(segment).unwrap(), before[..frame.start]);
    let report = verify(&OsFs, dir).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let log = reopen(dir).unwrap();
    assert_eq!(log.durable_offset(), frame.offset - 1);
    assert_records(&read_all(&log), 0);
    let next = log.append_blocking(vec![record(frame.offset - 1)]).unwrap();
    assert_eq!(next.first_offset, frame.offset);
}

/// Bug: recovery refused this log, but `verify` printed "ok" and `repair` found nothing to repair.
#[test]
fn bad_frame_followed_by_a_later_group_is_refused_reported_by_verify_and_cut_by_repair() {
    let source = tempfile::tempdir().unwrap();
    let (segment, mut bytes) = build(source.path(), 4);
    let frames = frames(&bytes);
    bytes[frames[1].start + 40] ^= 0x04; // a payload bit of offset 2; offsets 3 and 4 follow
    let dir = data_dir_with(segment.file_name().unwrap(), &bytes);
    let segment = segment_files(dir.path()).pop().unwrap();
    assert_refused_and_reported(dir.path(), &segment, frames[1]);
    assert_repair_cuts_at(dir.path(), &segment, frames[1]);
}

/// Bug: the group of offset 3 ends exactly at the end of the file, so recovery took the damaged,
/// acknowledged offset 2 for a torn tail, cut offsets 2 and 3, and reused offset 2.
#[test]
fn bit_flip_in_an_acknowledged_record_followed_only_by_the_last_group_is_refused() {
    let source = tempfile::tempdir().unwrap();
    let (segment, mut bytes) = build(source.path(), 3);
    let frames = frames(&bytes);
    assert_eq!(frames[2].end, bytes.len());
    bytes[frames[1].start + 40] ^= 0x04;
    let dir = data_dir_with(segment.file_name().unwrap(), &bytes);
    let segment = segment_files(dir.path()).pop().unwrap();
    let message = assert_refused_and_reported(dir.path(), &segment, frames[1]);
    assert!(message.contains("payload checksum"), "{message}");
    assert_repair_cuts_at(dir.path(), &segment, frames[1]);
}

/// The same with the damage in the frame header of offset 2 (its GROUP_END flag then unreadable as
/// is): one flipped bit is corrected for the judgement, so the group still shows it ended.
#[test]
fn bit_flip_in_the_header_of_an_acknowledged_record_before_the_last_group_is_refused() {
    let source = tempfile::tempdir().unwrap();
    let (segment, bytes) = build(source.path(), 3);
    let frames = frames(&bytes);
    for byte in 0..32 {
        let mut flipped = bytes.clone();
        flipped[frames[1].start + byte] ^= 0x20;
        let dir = data_dir_with(segment.file_name().unwrap(), &flipped);
        let segment = segment_files(dir.path()).pop().unwrap();
        assert_refused_and_reported(dir.path(), &segment, frames[1]);
    }
}

/// A frame that ended a write (GROUP_END) can be told apart from the frames of a later write even
/// when its header is destroyed: the frames of one write carry one timestamp.
#[test]
fn a_destroyed_group_end_header_is_refused_when_the_timestamps_tell_two_writes() {
    let source = tempfile::tempdir().unwrap();
    let log = open(source.path(), SEGMENT_BYTES);
    append_each(&log, 0, 1);
    log.append_blocking((1..4).map(record).collect()).unwrap(); // offsets 2..=4, one group
    append_each(&log, 4, 5); // offset 5, the last group, a later timestamp
    drop(log);
    let segment = segment_files(source.path()).pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let frames = frames(&bytes);
    let group_end = frames[3];
    bytes[group_end.start..group_end.start + 32].fill(0xA5);
    let dir = data_dir_with(segment.file_name().unwrap(), &bytes);
    let segment = segment_files(dir.path()).pop().unwrap();
    let message = assert_refused_and_reported(dir.path(), &segment, group_end);
    assert!(message.contains("timestamp"), "{message}");
    assert_repair_cuts_at(dir.path(), &segment, frames[1]);
}

/// A valid frame misplaced after the last group (a copy of it): recovery refused it, `verify` only
/// noted it.
#[test]
fn misplaced_frame_in_the_tail_is_refused_and_reported() {
    let source = tempfile::tempdir().unwrap();
    let (segment, mut bytes) = build(source.path(), 3);
    let frames = frames(&bytes);
    let copy = bytes[frames[2].start..frames[2].end].to_vec();
    bytes.extend_from_slice(&copy);
    let dir = data_dir_with(segment.file_name().unwrap(), &bytes);
    let segment = segment_files(dir.path()).pop().unwrap();
    let misplaced = Frame { start: frames[2].end, end: bytes.len(), offset: 4 };
    assert_refused_and_reported(dir.path(), &segment, misplaced);
    assert_repair_cuts_at(dir.path(), &segment, misplaced);
}

/// Nothing follows a seal in its segment: bytes after it are never a torn write.
#[test]
fn bytes_after_the_seal_of_the_newest_segment_are_refused_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 * 1024);
    let mut n = 0;
    while segment_files(dir.path()).len() < 2 {
        append_each(&log, n, n + 1);
        n += 1;
    }
    drop(log);
    // Make the sealed segment the newest (the test drops the one after it), then add bytes after its seal.
    let newest = segment_files(dir.path()).pop().unwrap();
    let next_offset: u64 = newest.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    std::fs::remove_file(&newest).unwrap();
    let sealed = segment_files(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&sealed).unwrap();
    let end = bytes.len();
    bytes.extend_from_slice(&[0; 100]);
    std::fs::write(&sealed, &bytes).unwrap();
    let frame = Frame { start: end, end: bytes.len(), offset: next_offset };
    assert_refused_and_reported(dir.path(), &sealed, frame);
}

/// A torn last write under a disk that may persist the sectors of one write in any order: whatever
/// single sector of the last group is lost, and wherever the file ends after it, the bytes from the
/// group's start are one write's and are cut, never refused; the acknowledged groups before it stay.
#[test]
fn torn_group_with_a_lost_middle_sector_is_cut_not_refused() {
    let source = tempfile::tempdir().unwrap();
    let log = open(source.path(), SEGMENT_BYTES);
    append_each(&log, 0, 5);
    log.append_blocking(
        (5..21).map(|i| AppendRecord { kind: 1, payload: vec![0x5A ^ i as u8; 230] }).collect(),
    )
    .unwrap();
    drop(log);
    let segment = segment_files(source.path()).pop().unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    let group_start = frames(&bytes)[5].start;
    let name = segment.file_name().unwrap().to_owned();
    let mut cases = 0;
    for lost in (group_start / SECTOR..bytes.len().div_ceil(SECTOR)).map(|s| s * SECTOR) {
        let mut torn = bytes.clone();
        let lost_end = (lost + SECTOR).min(torn.len());
        torn[lost.max(group_start)..lost_end].fill(0);
        let ends = (lost_end.div_ceil(SECTOR)..bytes.len().div_ceil(SECTOR)).map(|s| s * SECTOR);
        for end in ends.chain([bytes.len()]).filter(|&end| end <= bytes.len()) {
            let dir = data_dir_with(&name, &torn[..end]);
            let report = verify(&OsFs, dir.path()).unwrap();
            assert!(report.problems.is_empty(), "lost {lost}, end {end}: {:?}", report.problems);
            let log = reopen(dir.path()).unwrap_or_else(|e| panic!("lost {lost}, end {end}: {e}"));
            assert_eq!(log.durable_offset(), 5, "lost {lost}, end {end}");
            assert_records(&read_all(&log), 0);
            assert!(log.recovery_notes().iter().any(|n| n.contains("torn tail")), "lost {lost}, end {end}");
            assert_eq!(quarantined(dir.path()).len(), 1);
            cases += 1;
        }
    }
    assert!(cases > 20, "{cases}");
}
