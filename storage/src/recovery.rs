//! Opening a log directory: what is on disk becomes a list of segments, after the cleanup that a crash
//! can require. Only the unsealed newest segment is scanned; sealed ones are trusted through their
//! checksummed index (rebuilt from the segment when missing or wrong).
//!
//! After kill -9 the page cache outlives the process: what the previous process wrote but never
//! synced (a group, a seal, a renamed-in segment, the start file) is visible but not durable. In
//! read-write mode recovery therefore fsyncs what it is about to trust (the start file before acting on
//! it, the newest segment, the log directory) before the log publishes any of it as durable.
//!
//! In read-only mode (inspection beside a running node) nothing is changed on disk: a torn or
//! in-flight tail is left alone and simply not read.
//!
//! Torn tail versus corruption ([`judge_tail`], shared with `verify` and `repair`): recovery cuts the
//! bytes after the newest segment's last complete group only when they can all belong to its one
//! unsynced write; any frame placed among them that shows a later write (a GROUP_END frame with bytes
//! after it, even when the group after it ends exactly at the end of the file; a seal; an offset or a
//! timestamp that one write cannot have there) makes them corruption, and recovery refuses to open.
//! A torn write may lose a middle sector and keep its last frame, so a complete group at the end of
//! the file is no proof by itself. The full rule is in [`crate::format`].

use crate::error::{Error, IoContext, Result};
use crate::format::{
    decode_frame, decode_frame_header, parse_file_name, segment_file_name, FileKind, FrameHeader,
    SegmentHeader, SegmentIndex, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES, START_MAGIC, WRITE_BYTES_MAX,
};
use crate::fs::{read_exact_at, read_file, write_file_atomic, Fs, FsFile, OpenMode};
use crate::scan::{scan_groups, GroupScan, Stop};
use crate::segment::{meta_from_index, Segment, SegmentMeta};
use crate::slots::SlotFile;
use crate::Paths;
use std::io;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    ReadWrite,
    ReadOnly,
}

/// The log as found on disk.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// Ascending by base offset, dense; the last one may be unsealed (or sealed: then the writer
    /// starts a new one).
    pub segments: Vec<Arc<Segment>>,
    /// The first offset the log holds (after retention).
    pub start: SlotFile,
    /// What recovery did or saw, for the operator (torn tail cut, index rebuilt, ...).
    pub notes: Vec<String>,
}

pub(crate) fn recover(fs: &dyn Fs, paths: &Paths, mode: Mode, now_ms: u64) -> Result<Recovered> {
    let mut notes = Vec::new();
    let names = fs.read_dir(&paths.log_dir).at(&paths.log_dir)?;
    if mode == Mode::ReadWrite {
        remove_stale_temp_files(fs, &paths.log_dir, &names, &mut notes)?;
    }
    let start_path = paths.log_dir.join("start");
    if mode == Mode::ReadWrite && fs.exists(&start_path) {
        // The start may be in the page cache only (kill -9, failed fsync): make it durable before
        // deleting the segments below it, or a power loss brings back a start whose segments are gone.
        fs.open(&start_path, OpenMode::ReadWrite).and_then(|file| file.sync_data()).at(&start_path)?;
    }
    let start = SlotFile::load(fs, start_path, START_MAGIC)?;
    let mut bases = segment_bases(&names, FileKind::Segment);
    drop_retained(fs, paths, mode, start.value(), &mut bases, &names, &mut notes)?;
    let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len());
    for (i, &base) in bases.iter().enumerate() {
        let last = i + 1 == bases.len();
        let segment = open_segment(fs, paths, mode, base, last, now_ms, &mut notes)?;
        if let Some(previous) = segments.last() {
            check_dense(paths, previous, &segment)?;
        }
        segments.push(Arc::new(segment));
    }
    if let (Some(first), Some(start)) = (segments.first(), start.value()) {
        if first.base_offset != start {
            return Err(Error::MissingSegment {
                dir: paths.log_dir.clone(),
                expected: start,
                found: first.base_offset,
            });
        }
    }
    if mode == Mode::ReadWrite && !segments.is_empty() {
        // After kill -9 a renamed-in segment may be named only in the page cache: make the entries
        // this open trusts durable, or a later power loss takes the segment and its records away.
        fs.sync_dir(&paths.log_dir).at(&paths.log_dir)?;
    }
    Ok(Recovered { segments, start, notes })
}

fn segment_bases(names: &[String], kind: FileKind) -> Vec<u64> {
    let mut bases: Vec<u64> =
        names.iter().filter_map(|n| parse_file_name(n)).filter(|(_, k)| *k == kind).map(|(b, _)| b).collect();
    bases.sort_unstable();
    bases
}

fn remove_stale_temp_files(fs: &dyn Fs, dir: &Path, names: &[String], notes: &mut Vec<String>) -> Result<()> {
    let mut removed = false;
    for name in names.iter().filter(|n| n.ends_with(".tmp")) {
        let path = dir.join(name);
        fs.remove_file(&path).at(&path)?;
        notes.push(format!("removed stale temp file {}", path.display()));
        removed = true;
    }
    if removed {
        fs.sync_dir(dir).at(dir)?;
    }
    Ok(())
}

/// Segments wholly below the recorded start were being deleted by retention when the node stopped:
/// finish the job (read-only: just skip them). Orphan index files go too.
fn drop_retained(
    fs: &dyn Fs,
    paths: &Paths,
    mode: Mode,
    start: Option<u64>,
    bases: &mut Vec<u64>,
    names: &[String],
    notes: &mut Vec<String>,
) -> Result<()> {
    let start = start.unwrap_or(0);
    let keep_from = bases.iter().rposition(|&b| b <= start).unwrap_or(0);
    let dropped: Vec<u64> = bases.drain(..keep_from).collect();
    let mut orphans: Vec<u64> = segment_bases(names, FileKind::Index);
    orphans.retain(|b| !bases.contains(b));
    if mode == Mode::ReadOnly || (dropped.is_empty() && orphans.is_empty()) {
        return Ok(());
    }
    for base in &dropped {
        let path = paths.log_dir.join(segment_file_name(*base));
        fs.remove_file(&path).at(&path)?;
        notes.push(format!("finished retention of {}", path.display()));
    }
    for base in orphans {
        let path = paths.log_dir.join(crate::format::index_file_name(base));
        fs.remove_file(&path).at(&path)?;
    }
    fs.sync_dir(&paths.log_dir).at(&paths.log_dir)
}

fn check_dense(paths: &Paths, previous: &Segment, next: &Segment) -> Result<()> {
    let meta = previous.meta();
    if !meta.sealed {
        return Err(Error::Corrupt {
            segment: previous.path.clone(),
            position: meta.bytes,
            offset: meta.last_offset + 1,
            reason: "a segment that is not the newest has no seal frame".into(),
        });
    }
    if next.base_offset != meta.last_offset + 1 {
        return Err(Error::MissingSegment {
            dir: paths.log_dir.clone(),
            expected: meta.last_offset + 1,
            found: next.base_offset,
        });
    }
    Ok(())
}

fn open_segment(
    fs: &dyn Fs,
    paths: &Paths,
    mode: Mode,
    base: u64,
    newest: bool,
    now_ms: u64,
    notes: &mut Vec<String>,
) -> Result<Segment> {
    let path = paths.log_dir.join(segment_file_name(base));
    let open_mode = if mode == Mode::ReadWrite && newest { OpenMode::ReadWrite } else { OpenMode::Read };
    let file = fs.open(&path, open_mode).at(&path)?;
    // After kill -9 the newest segment may hold writes that reached only the page cache: they are
    // made durable before the log trusts them, or a later power loss takes back what it published.
    let sync = |segment: &Segment| match open_mode {
        OpenMode::ReadWrite => segment.file().sync_data().at(&segment.path),
        _ => Ok(()),
    };
    let file_len = file.len().at(&path)?;
    let header = read_header(file.as_ref(), &path, base, file_len)?;
    let segment = Segment::new(header, path.clone(), file, SegmentMeta::empty(base));
    if let Some(index) = load_index(fs, &segment, file_len) {
        *segment.meta() = meta_from_index(&index);
        sync(&segment)?;
        release_if_sealed(&segment);
        return Ok(segment);
    }
    match scan_segment(&segment, file_len, newest)? {
        Tail::Clean => sync(&segment)?,
        // Cutting syncs the segment.
        Tail::Torn { position, reason } => {
            cut_torn_tail(fs, paths, mode, &segment, position, file_len, &reason, now_ms, notes)?;
        }
        Tail::Corrupt { position, offset, reason } => {
            return Err(Error::Corrupt { segment: path, position, offset, reason });
        }
    }
    if segment.meta().sealed && mode == Mode::ReadWrite {
        write_file_atomic(fs, &segment.index_path(), &segment.to_index().encode()).at(segment.index_path())?;
        notes.push(format!("rebuilt index {}", segment.index_path().display()));
    }
    release_if_sealed(&segment);
    Ok(segment)
}

/// A sealed segment is reopened when read (see `Shared::segment_file`).
fn release_if_sealed(segment: &Segment) {
    if segment.meta().sealed {
        segment.release_file();
    }
}

pub(crate) fn read_header(
    file: &dyn crate::fs::FsFile,
    path: &Path,
    base: u64,
    file_len: u64,
) -> Result<SegmentHeader> {
    let corrupt =
        |reason: String| Error::Corrupt { segment: path.to_owned(), position: 0, offset: base, reason };
    if file_len < SEGMENT_HEADER_BYTES as u64 {
        return Err(corrupt(format!("segment header truncated ({file_len} bytes)")));
    }
    let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
    read_exact_at(file, &mut bytes, 0).at(path)?;
    let header = SegmentHeader::decode(&bytes).map_err(|e| corrupt(format!("segment header: {e}")))?;
    if header.base_offset != base {
        return Err(corrupt(format!(
            "header says base offset {}, file name says {base}",
            header.base_offset
        )));
    }
    Ok(header)
}

/// The segment's index if it exists, decodes, and matches the segment; `None` means "scan instead".
fn load_index(fs: &dyn Fs, segment: &Segment, file_len: u64) -> Option<SegmentIndex> {
    let bytes = read_file(fs, &segment.index_path()).ok()?;
    let index = SegmentIndex::decode(&bytes).ok()?;
    let matches = index.base_offset == segment.base_offset
        && index.salt == segment.salt
        && index.segment_bytes == file_len
        && index.last_offset + 1 >= index.base_offset
        && index.entries.first().is_none_or(|e| e.offset == index.base_offset);
    matches.then_some(index)
}

/// Scans every frame of the segment into its meta (up to its last complete group) and judges what
/// follows.
fn scan_segment(segment: &Segment, file_len: u64, newest: bool) -> Result<Tail> {
    let empty = SegmentMeta::empty(segment.base_offset);
    let scan = scan_groups(segment.file(), segment.salt, empty, file_len).at(&segment.path)?;
    let tail = judge_tail(segment.file().as_ref(), segment.salt, &scan, file_len, newest).at(&segment.path)?;
    *segment.meta() = scan.committed;
    Ok(tail)
}

/// What follows a segment's last complete group, as [`judge_tail`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Nothing: the file ends with a complete group, the seal, or the segment header.
    Clean,
    /// The bytes from `position` (the end of the last complete group) to the end of the file can all
    /// be the newest segment's last write, unsynced and torn: recovery cuts them, copied to
    /// `quarantine/` first (read-only: leaves them unread); `verify` notes them.
    Torn { position: u64, reason: String },
    /// Corruption at `position`, where a record of offset `offset` was due: recovery refuses to open,
    /// `verify` reports a problem, `repair` cuts the segment at its last complete group.
    Corrupt { position: u64, offset: u64, reason: String },
}

/// Torn tail versus corruption: the one judgement recovery, `verify` and `repair` share, for a
/// segment `scan` (of `file`, `file_len` bytes long) covered up to its last complete group, which
/// ended at byte P with offset L. The rule (see "Limits and invariants" in [`crate::format`]):
///
/// The writer writes a group with one write, syncs it, and only then writes the next; a seal is a
/// write of its own and nothing follows it in its segment. So at most one write is unsynced: the
/// last one of the newest segment, which starts at P. A power loss may keep any of its 512-byte
/// sectors and lose the others (lost ones read as zeros or are missing at the end), so a torn write
/// can show valid frames after a damaged one, even its GROUP_END frame at the very end of the file.
/// The bytes from P are therefore a torn tail only if they can all belong to that one write: frames
/// at increasing positions with offsets L+1, L+2, ..., one timestamp, only the last flagged
/// GROUP_END, and nothing after it. They are corruption if the segment is not the newest, is sealed,
/// a scanned frame is misplaced, they are more than WRITE_BYTES_MAX, or a frame placed among them
/// (see [`placed_frames`]) contradicts that: it is flagged GROUP_END and bytes follow it (a later
/// write followed, so this one was synced; this holds when the later group ends exactly at the end
/// of the file too), it is a seal, its offset cannot be that of a frame of the write at its
/// position, or its timestamp differs from another's.
pub(crate) fn judge_tail(
    file: &dyn FsFile,
    salt: u64,
    scan: &GroupScan,
    file_len: u64,
    newest: bool,
) -> io::Result<Tail> {
    let committed = &scan.committed;
    let from = committed.bytes;
    let (position, offset, what) = match &scan.stop {
        Some(Stop::Misplaced { position, expected, reason }) => {
            return Ok(Tail::Corrupt { position: *position, offset: *expected, reason: reason.clone() });
        }
        Some(stop) => (stop.position(), stop.offset(), stop.to_string()),
        None if from >= file_len => return Ok(Tail::Clean),
        None => (from, committed.last_offset + 1, "incomplete last group".to_owned()),
    };
    let corrupt = |reason: String| Ok(Tail::Corrupt { position, offset, reason });
    if !newest {
        return corrupt(format!("{what}; only the newest segment can end in an unsynced write"));
    }
    if committed.sealed {
        return corrupt(format!("{what}, after the seal frame (nothing follows a seal)"));
    }
    let tail_bytes = file_len - from;
    if tail_bytes > WRITE_BYTES_MAX as u64 {
        return corrupt(format!("{what}, {tail_bytes} bytes before the end of the file"));
    }
    let bytes = read_up_to(file, from, file_len)?;
    let placed = placed_frames(&bytes, salt, committed.last_offset + 1);
    match contradiction(&placed, bytes.len(), from, committed.last_offset + 1) {
        Some(why) => corrupt(format!("{what}; {why}")),
        None => Ok(Tail::Torn { position: from, reason: what }),
    }
}

/// The bytes of `file` from `from` to `to`, fewer if it is shorter by now (a running writer cuts a
/// write that found the disk full back).
fn read_up_to(file: &dyn FsFile, from: u64, to: u64) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; (to - from) as usize];
    let mut filled = 0;
    while filled < bytes.len() {
        match file.read_at(&mut bytes[filled..], from + filled as u64)? {
            0 => break,
            n => filled += n,
        }
    }
    bytes.truncate(filled);
    Ok(bytes)
}

/// A frame whose place in the tail is known: at byte `at` of it (P + `at` in the file).
#[derive(Debug)]
struct Placed {
    at: usize,
    header: FrameHeader,
}

/// Every frame that can be placed in `tail` (the bytes after the last complete group, whose first
/// frame would have `first_offset`): the chain of frame headers from its start, where each header's
/// length gives the next frame's position (a header is read as written if one flipped bit makes it
/// valid: see [`header_as_written`]; the payload need not be valid), as far as headers decode with
/// the offsets due; then, from where that chain breaks, every whole valid frame (both checksums, so
/// not there by chance) found at any byte position, each followed by its own chain. In position
/// order.
fn placed_frames(tail: &[u8], salt: u64, first_offset: u64) -> Vec<Placed> {
    let mut placed = Vec::new();
    let mut at = follow_chain(tail, salt, 0, first_offset, &mut placed);
    while at + FRAME_HEADER_BYTES <= tail.len() {
        match decode_frame(&tail[at..], salt) {
            Ok((header, _)) => {
                placed.push(Placed { at, header });
                at = follow_chain(tail, salt, at + header.frame_bytes(), header.offset + 1, &mut placed);
            }
            Err(_) => at += 1,
        }
    }
    placed
}

/// Places the frames whose headers decode one after another from `at`, the first due to carry
/// `offset` (a seal repeats the offset before it); returns where the chain breaks.
fn follow_chain(tail: &[u8], salt: u64, mut at: usize, mut offset: u64, placed: &mut Vec<Placed>) -> usize {
    while let Some(header) = tail.get(at..).and_then(|b| header_as_written(b, salt)) {
        let due = if header.is_seal() { header.offset + 1 == offset } else { header.offset == offset };
        if !due {
            break;
        }
        placed.push(Placed { at, header });
        at += header.frame_bytes();
        offset += 1;
    }
    at
}

/// The frame header at the start of `b` as it was written: as it is if it decodes, else with the one
/// bit flipped whose flip makes it decode. The header checksum (CRC-32 over 36 bytes, salt included)
/// has a Hamming distance of 5 at this length, so a header with one flipped bit has exactly one valid
/// header one bit away, the one written, and a header with two or three flipped bits has none.
fn header_as_written(b: &[u8], salt: u64) -> Option<FrameHeader> {
    let b = b.get(..FRAME_HEADER_BYTES)?;
    if let Ok(header) = decode_frame_header(b, salt) {
        return Some(header);
    }
    let mut copy = [0u8; FRAME_HEADER_BYTES];
    copy.copy_from_slice(b);
    (0..FRAME_HEADER_BYTES * 8).find_map(|bit| {
        copy[bit / 8] ^= 1 << (bit % 8);
        let header = decode_frame_header(&copy, salt).ok();
        copy[bit / 8] ^= 1 << (bit % 8);
        header
    })
}

/// Why the `placed` frames of a tail of `len` bytes (from byte `from`, its first frame due to have
/// `first_offset`) cannot all be of one write starting there, if they cannot.
fn contradiction(placed: &[Placed], len: usize, from: u64, first_offset: u64) -> Option<String> {
    let byte = |p: &Placed| from + p.at as u64;
    for p in placed {
        let end = p.at + p.header.frame_bytes();
        if p.header.is_group_end() && end < len {
            return Some(format!(
                "the frame at byte {} (offset {}) ends a write (GROUP_END) and {} bytes follow it: a later \
                 write, so the bad frame was synced",
                byte(p),
                p.header.offset,
                len - end
            ));
        }
    }
    if let Some(p) = placed.iter().find(|p| p.header.is_seal()) {
        return Some(format!(
            "a seal frame follows at byte {}: a later write, so the bad frame was synced",
            byte(p)
        ));
    }
    // Each frame of the write needs at least a header's bytes, after the frames before it.
    let (mut end, mut last) = (0, first_offset - 1);
    for p in placed {
        let offset = p.header.offset;
        let room = (p.at.saturating_sub(end) / FRAME_HEADER_BYTES) as u64;
        if p.at < end || offset <= last || offset - last - 1 > room {
            return Some(format!(
                "the frame at byte {} has offset {offset}, which no frame there of one write of offsets \
                 {first_offset}.. from byte {from} can have",
                byte(p)
            ));
        }
        (end, last) = (p.at + p.header.frame_bytes(), offset);
    }
    let first = placed.first()?;
    let other = placed.iter().find(|p| p.header.timestamp_ms != first.header.timestamp_ms)?;
    Some(format!(
        "the frames at bytes {} and {} have different timestamps ({} and {} ms), and the frames of one write \
         share one: a later write, so the bad frame was synced",
        byte(first),
        byte(other),
        first.header.timestamp_ms,
        other.header.timestamp_ms
    ))
}

#[allow(clippy::too_many_arguments)]
fn cut_torn_tail(
    fs: &dyn Fs,
    paths: &Paths,
    mode: Mode,
    segment: &Segment,
    position: u64,
    file_len: u64,
    reason: &str,
    now_ms: u64,
    notes: &mut Vec<String>,
) -> Result<()> {
    if mode == Mode::ReadOnly {
        notes.push(format!(
            "{}: unsynced or torn tail of {} bytes at byte {position} not read",
            segment.path.display(),
            file_len - position
        ));
        return Ok(());
    }
    let mut bytes = vec![0u8; (file_len - position) as usize];
    read_exact_at(segment.file().as_ref(), &mut bytes, position).at(&segment.path)?;
    let name = format!("{}.{position}.{now_ms}.torn", segment_file_name(segment.base_offset));
    let quarantined = paths.quarantine_dir.join(name);
    fs.create_dir_all(&paths.quarantine_dir).at(&paths.quarantine_dir)?;
    write_file_atomic(fs, &quarantined, &bytes).at(&quarantined)?;
    segment.file().set_len(position).at(&segment.path)?;
    segment.file().sync_data().at(&segment.path)?;
    notes.push(format!(
        "cut a torn tail of {} bytes at byte {position} of {} ({reason}); copied to {}",
        file_len - position,
        segment.path.display(),
        quarantined.display()
    ));
    Ok(())
}
