//! `remix log verify` and `remix log repair`: a full check of every frame, offset, index and cursor,
//! and the explicit operator command that cuts corruption off (copying it to `quarantine/` first).

use crate::error::{Error, IoContext, Result};
use crate::format::{
    parse_file_name, DecodeError, FileKind, SegmentHeader, SegmentIndex, Slot, CURSOR_MAGIC,
    SEGMENT_HEADER_BYTES, START_MAGIC,
};
use crate::fs::{read_exact_at, read_file, write_file_atomic, Fs, OpenMode};
use crate::recovery::{judge_tail, Tail};
use crate::scan::scan_groups;
use crate::segment::SegmentMeta;
use crate::slots::SlotFile;
use crate::Paths;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One thing wrong with the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    /// Byte position in the file (0 for whole-file problems).
    pub position: u64,
    /// The offset expected at that position (0 where it does not apply).
    pub offset: u64,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at byte {} (offset {}): {}",
            self.path.display(),
            self.position,
            self.offset,
            self.message
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub segments: usize,
    pub records: u64,
    pub last_offset: u64,
    pub problems: Vec<Problem>,
    /// Things that are not wrong but worth knowing (an unsynced tail beside a running writer, a
    /// missing index that the next open rebuilds).
    pub notes: Vec<String>,
}

/// What the scan of one segment found.
#[derive(Debug)]
struct SegmentCheck {
    base: u64,
    path: PathBuf,
    file_len: u64,
    /// Meta up to the end of the last complete group before any bad frame.
    committed: SegmentMeta,
    /// What follows the last complete group: judged exactly as recovery judges it.
    tail: Tail,
}

/// Checks everything; never changes anything. Works beside a running node.
pub fn verify(fs: &dyn Fs, data_dir: &Path) -> Result<VerifyReport> {
    let paths = Paths::new(data_dir);
    let mut report = VerifyReport::default();
    let cursors = read_cursors(fs, &paths)?;
    let names = fs.read_dir(&paths.log_dir).at(&paths.log_dir)?;
    let bases = bases_of(&names);
    let start = match SlotFile::load(fs, paths.log_dir.join("start"), START_MAGIC) {
        Ok(slot) => slot.value(),
        Err(e) => {
            report.problems.push(Problem {
                path: paths.log_dir.join("start"),
                position: 0,
                offset: 0,
                message: e.to_string(),
            });
            None
        }
    };
    // The offset the next segment must start at; unknown after a damaged segment.
    let mut expected = Some(start.or(bases.first().copied()).unwrap_or(1));
    for (i, &base) in bases.iter().enumerate() {
        if start.is_some_and(|s| base < s) {
            report
                .notes
                .push(format!("segment {base} is below the log start and is removed on the next open"));
            continue;
        }
        let newest = i + 1 == bases.len();
        let check = check_segment(fs, &paths, base, newest, &mut report)?;
        let Some(check) = check else { continue };
        if let Some(expected) = expected.filter(|&e| e != base) {
            report.problems.push(Problem {
                path: check.path.clone(),
                position: 0,
                offset: expected,
                message: format!(
                    "offsets {expected}..{} are missing (segment starts at {base})",
                    base.max(expected + 1) - 1
                ),
            });
        }
        let problems_before = report.problems.len();
        judge_segment(fs, &check, newest, &mut report);
        report.segments += 1;
        report.records += check.committed.records;
        report.last_offset = check.committed.last_offset;
        expected = (report.problems.len() == problems_before).then_some(check.committed.last_offset + 1);
    }
    check_cursors(cursors, report.last_offset, &mut report);
    for name in names.iter().filter(|n| n.ends_with(".tmp")) {
        report.notes.push(format!(
            "stale temp file {} (removed on the next open)",
            paths.log_dir.join(name).display()
        ));
    }
    Ok(report)
}

fn bases_of(names: &[String]) -> Vec<u64> {
    let mut bases: Vec<u64> = names
        .iter()
        .filter_map(|n| parse_file_name(n))
        .filter(|(_, kind)| *kind == FileKind::Segment)
        .map(|(base, _)| base)
        .collect();
    bases.sort_unstable();
    bases
}

fn check_segment(
    fs: &dyn Fs,
    paths: &Paths,
    base: u64,
    newest: bool,
    report: &mut VerifyReport,
) -> Result<Option<SegmentCheck>> {
    let path = paths.log_dir.join(crate::format::segment_file_name(base));
    let file = fs.open(&path, OpenMode::Read).at(&path)?;
    let file_len = file.len().at(&path)?;
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    let decoded = read_exact_at(file.as_ref(), &mut header, 0)
        .map_err(|e| e.to_string())
        .and_then(|()| SegmentHeader::decode(&header).map_err(|e| e.to_string()))
        .and_then(|h| {
            if h.base_offset == base {
                Ok(h)
            } else {
                Err(format!("header base offset {}", h.base_offset))
            }
        });
    let header = match decoded {
        Ok(header) => header,
        Err(message) => {
            report.problems.push(Problem {
                path,
                position: 0,
                offset: base,
                message: format!("segment header: {message}"),
            });
            return Ok(None);
        }
    };
    let scan = scan_groups(Arc::clone(&file), header.salt, SegmentMeta::empty(base), file_len).at(&path)?;
    let tail = judge_tail(file.as_ref(), header.salt, &scan, file_len, newest).at(&path)?;
    Ok(Some(SegmentCheck { base, path, file_len, committed: scan.committed, tail }))
}

fn judge_segment(fs: &dyn Fs, check: &SegmentCheck, newest: bool, report: &mut VerifyReport) {
    match &check.tail {
        Tail::Clean => {}
        Tail::Torn { position, reason } => report.notes.push(format!(
            "{}: {} bytes at byte {position} are not a complete group ({reason}); a running writer may be \
             mid-write, otherwise the next open cuts them as a torn tail",
            check.path.display(),
            check.file_len - position,
        )),
        Tail::Corrupt { position, offset, reason } => {
            report.problems.push(Problem {
                path: check.path.clone(),
                position: *position,
                offset: *offset,
                message: reason.clone(),
            });
            return;
        }
    }
    if !newest && !check.committed.sealed {
        report.problems.push(Problem {
            path: check.path.clone(),
            position: check.committed.bytes,
            offset: check.committed.last_offset + 1,
            message: "a segment that is not the newest has no seal frame".into(),
        });
    }
    check_index(fs, check, report);
}

fn check_index(fs: &dyn Fs, check: &SegmentCheck, report: &mut VerifyReport) {
    let path = check.path.with_file_name(crate::format::index_file_name(check.base));
    let bytes = match read_file(fs, &path) {
        Ok(bytes) => bytes,
        Err(_) if check.committed.sealed => {
            report.notes.push(format!("{}: index missing (rebuilt on the next open)", path.display()));
            return;
        }
        Err(_) => return,
    };
    let mut problem = |message: String| {
        report.problems.push(Problem { path: path.clone(), position: 0, offset: 0, message })
    };
    let index = match SegmentIndex::decode(&bytes) {
        Ok(index) => index,
        Err(e) => return problem(format!("index does not decode: {e}")),
    };
    let meta = &check.committed;
    if !meta.sealed {
        return problem("index beside an unsealed segment".into());
    }
    if index.base_offset != check.base
        || index.last_offset != meta.last_offset
        || index.segment_bytes != meta.bytes
        || index.records != meta.records
    {
        return problem(format!(
            "index disagrees with its segment (index: last offset {}, {} bytes, {} records; segment: {}, {}, {})",
            index.last_offset, index.segment_bytes, index.records, meta.last_offset, meta.bytes, meta.records
        ));
    }
    if index.entries != meta.entries {
        let wrong = index.entries.iter().zip(&meta.entries).find(|(a, b)| a != b).map(|(a, _)| *a);
        problem(match wrong {
            Some(e) => {
                format!("index entry (offset {}, byte {}) points at no such frame", e.offset, e.position)
            }
            None => {
                format!("index has {} entries, the segment needs {}", index.entries.len(), meta.entries.len())
            }
        });
    }
}

/// Reads every cursor file: `(path, value or why it is unreadable)`. Read before the segments are
/// scanned, so that beside a running node a cursor is compared with a log at least as long as the
/// one it was checked against when stored.
fn read_cursors(fs: &dyn Fs, paths: &Paths) -> Result<Vec<(PathBuf, Result<u64, DecodeError>)>> {
    let names = match fs.read_dir(&paths.cursors_dir) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&paths.cursors_dir, e)),
    };
    let mut cursors = Vec::new();
    for name in names.iter().filter(|n| n.ends_with(".cursor")) {
        let path = paths.cursors_dir.join(name);
        let bytes = read_file(fs, &path).at(&path)?;
        let value = Slot::decode_file(&bytes, &CURSOR_MAGIC).map(|slot| slot.value);
        cursors.push((path, value));
    }
    Ok(cursors)
}

fn check_cursors(
    cursors: Vec<(PathBuf, Result<u64, DecodeError>)>,
    last_offset: u64,
    report: &mut VerifyReport,
) {
    for (path, value) in cursors {
        match value {
            Err(e) => report.problems.push(Problem {
                path,
                position: 0,
                offset: 0,
                message: format!("both slots torn or invalid: {e}"),
            }),
            Ok(value) if value > last_offset => report.problems.push(Problem {
                path,
                position: 0,
                offset: value,
                message: format!("cursor {value} is beyond the log's last offset {last_offset}"),
            }),
            Ok(_) => {}
        }
    }
}

/// What `repair` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    pub actions: Vec<String>,
    /// Where the removed bytes were copied.
    pub quarantine: Option<PathBuf>,
}

/// Cuts the log at its first problem: the bytes from there on (the rest of that segment and every
/// later segment) are copied to `quarantine/repair-<time>/` and removed; wrong index files are
/// removed (rebuilt on open); cursors beyond the new end are lowered to it; torn cursor files are
/// removed (their targets start over, which idempotent targets absorb). Refused while a node holds
/// the lock.
pub fn repair(fs: &dyn Fs, data_dir: &Path, now_ms: u64) -> Result<RepairReport> {
    let paths = Paths::new(data_dir);
    let _lock = crate::log::lock_data_dir(fs, &paths)?;
    let report = verify(fs, data_dir)?;
    let mut out = RepairReport::default();
    let quarantine = paths.quarantine_dir.join(format!("repair-{now_ms}"));
    let names = fs.read_dir(&paths.log_dir).at(&paths.log_dir)?;
    let bases = bases_of(&names);
    let segment_problem = report
        .problems
        .iter()
        .find(|p| parse_file_name(&file_name(&p.path)).is_some_and(|(_, k)| k == FileKind::Segment));
    if let Some(problem) = segment_problem {
        let base = parse_file_name(&file_name(&problem.path)).expect("segment name").0;
        let cut = cut_position(fs, &paths, base)?;
        fs.create_dir_all(&quarantine).at(&quarantine)?;
        out.quarantine = Some(quarantine.clone());
        for &later in bases.iter().filter(|&&b| b >= base) {
            let from = if later == base { cut } else { 0 };
            quarantine_segment(fs, &paths, later, from, &quarantine, &mut out)?;
        }
    }
    for problem in &report.problems {
        let name = file_name(&problem.path);
        if parse_file_name(&name).is_some_and(|(_, k)| k == FileKind::Index) && fs.exists(&problem.path) {
            fs.remove_file(&problem.path).at(&problem.path)?;
            out.actions.push(format!("removed wrong index {}", problem.path.display()));
        }
    }
    fs.sync_dir(&paths.log_dir).at(&paths.log_dir)?;
    repair_cursors(fs, &paths, now_ms, &mut out)?;
    Ok(out)
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Where to cut a segment: after its last complete group before the first bad frame (0: the header
/// itself is bad, the whole file goes).
fn cut_position(fs: &dyn Fs, paths: &Paths, base: u64) -> Result<u64> {
    let mut scratch = VerifyReport::default();
    // Only the position is needed: judged as an older segment, the tail is not read again.
    Ok(match check_segment(fs, paths, base, false, &mut scratch)? {
        Some(check) => check.committed.bytes,
        None => 0,
    })
}

fn quarantine_segment(
    fs: &dyn Fs,
    paths: &Paths,
    base: u64,
    from: u64,
    quarantine: &Path,
    out: &mut RepairReport,
) -> Result<()> {
    let path = paths.log_dir.join(crate::format::segment_file_name(base));
    let file = fs.open(&path, OpenMode::ReadWrite).at(&path)?;
    let len = file.len().at(&path)?;
    let mut bytes = vec![0u8; (len - from.min(len)) as usize];
    read_exact_at(file.as_ref(), &mut bytes, from).at(&path)?;
    let copy = quarantine.join(format!("{}.from-{from}", file_name(&path)));
    write_file_atomic(fs, &copy, &bytes).at(&copy)?;
    let index = path.with_file_name(crate::format::index_file_name(base));
    if fs.exists(&index) {
        fs.remove_file(&index).at(&index)?;
    }
    if from == 0 {
        fs.remove_file(&path).at(&path)?;
        out.actions.push(format!("moved {} to {}", path.display(), copy.display()));
    } else {
        file.set_len(from).at(&path)?;
        file.sync_data().at(&path)?;
        out.actions.push(format!(
            "cut {} at byte {from}; {} bytes copied to {}",
            path.display(),
            bytes.len(),
            copy.display()
        ));
    }
    Ok(())
}

fn repair_cursors(fs: &dyn Fs, paths: &Paths, now_ms: u64, out: &mut RepairReport) -> Result<()> {
    let after = verify(fs, &paths.data_dir)?;
    for problem in after.problems.iter().filter(|p| p.path.starts_with(&paths.cursors_dir)) {
        let target = file_name(&problem.path).trim_end_matches(".cursor").to_owned();
        match SlotFile::load(fs, problem.path.clone(), CURSOR_MAGIC) {
            Ok(mut slot) => {
                slot.store(fs, after.last_offset, now_ms)?;
                out.actions.push(format!(
                    "lowered cursor '{target}' to the log's last offset {}",
                    after.last_offset
                ));
            }
            Err(_) => {
                fs.remove_file(&problem.path).at(&problem.path)?;
                fs.sync_dir(&paths.cursors_dir).at(&paths.cursors_dir)?;
                out.actions.push(format!("removed torn cursor '{target}' (the target starts over)"));
            }
        }
    }
    Ok(())
}
