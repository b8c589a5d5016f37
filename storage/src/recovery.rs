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

use crate::error::{Error, IoContext, Result};
use crate::format::{
    parse_file_name, segment_file_name, FileKind, SegmentHeader, SegmentIndex, SEGMENT_HEADER_BYTES,
    START_MAGIC, WRITE_BYTES_MAX,
};
use crate::fs::{read_exact_at, read_file, write_file_atomic, Fs, OpenMode};
use crate::scan::{scan_groups, Stop};
use crate::segment::{meta_from_index, Segment, SegmentMeta};
use crate::slots::SlotFile;
use crate::Paths;
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
    let tail = scan_segment(&segment, file_len)?;
    match tail {
        Tail::Clean => sync(&segment)?,
        // Cutting syncs the segment.
        Tail::Torn { position, reason } if newest => {
            cut_torn_tail(fs, paths, mode, &segment, position, file_len, &reason, now_ms, notes)?;
        }
        Tail::Torn { position, reason } => {
            let offset = segment.meta().last_offset + 1;
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

#[derive(Debug)]
enum Tail {
    Clean,
    /// Bytes from `position` are not part of the log: a torn write (if within the newest segment's
    /// last write) or corruption (anywhere else).
    Torn {
        position: u64,
        reason: String,
    },
}

/// Scans every frame of the segment into its meta. Stops at the first bad frame and decides whether
/// it can be a torn write; corruption is returned as an error.
fn scan_segment(segment: &Segment, file_len: u64) -> Result<Tail> {
    let empty = SegmentMeta::empty(segment.base_offset);
    let scan = scan_groups(segment.file(), segment.salt, empty, file_len).at(&segment.path)?;
    if let Some(Stop::Misplaced { position, expected, reason }) = scan.stop {
        return Err(Error::Corrupt { segment: segment.path.clone(), position, offset: expected, reason });
    }
    let torn_at = scan.committed.bytes;
    *segment.meta() = scan.committed;
    if torn_at == file_len {
        return Ok(Tail::Clean);
    }
    let reason = scan.stop.map_or_else(|| "incomplete last group".to_owned(), |stop| stop.to_string());
    classify_tail(segment, torn_at, file_len, reason)
}

/// A bad region at `torn_at` is a torn tail only if it could be the last, unsynced write: within
/// WRITE_BYTES_MAX of the end, and not followed by a complete group with more bytes after it (the
/// writer never starts a write before the previous one is synced).
fn classify_tail(segment: &Segment, torn_at: u64, file_len: u64, reason: String) -> Result<Tail> {
    let corrupt = |why: String| Error::Corrupt {
        segment: segment.path.clone(),
        position: torn_at,
        offset: segment.meta().last_offset + 1,
        reason: why,
    };
    if file_len - torn_at > WRITE_BYTES_MAX as u64 {
        return Err(corrupt(format!("{reason}, {} bytes before the end of the file", file_len - torn_at)));
    }
    if let Some(later) = synced_group_after(segment, torn_at, file_len)? {
        return Err(corrupt(format!(
            "{reason}; a complete group at byte {later} follows it, so it was synced"
        )));
    }
    Ok(Tail::Torn { position: torn_at, reason })
}

/// Looks at every byte position after `from` for a valid GROUP_END frame that has bytes after it.
fn synced_group_after(segment: &Segment, from: u64, file_len: u64) -> Result<Option<u64>> {
    let len = (file_len - from) as usize;
    let mut bytes = vec![0u8; len];
    read_exact_at(segment.file().as_ref(), &mut bytes, from).at(&segment.path)?;
    for at in 1..len {
        let Ok((header, _)) = crate::format::decode_frame(&bytes[at..], segment.salt) else { continue };
        if header.is_group_end() && at + header.frame_bytes() < len {
            return Ok(Some(from + at as u64));
        }
    }
    Ok(None)
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
