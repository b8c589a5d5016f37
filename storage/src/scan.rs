//! Sequential, buffered decoding of the frames of one segment file.

use crate::format::{decode_frame_header, DecodeError, FrameHeader, FRAME_HEADER_BYTES};
use crate::fs::FsFile;
use crate::segment::SegmentMeta;
use std::io;
use std::sync::Arc;

/// Bytes read from the file at a time (more when one frame is larger).
const SCAN_CHUNK_BYTES: usize = 256 * 1024;

/// What the scanner found at its position.
#[derive(Debug)]
pub(crate) enum Scanned {
    /// A valid frame at `position`; its payload is [`Scanner::payload`] until the next call.
    Frame { position: u64, header: FrameHeader },
    /// The scan reached `end` exactly at a frame boundary.
    End,
    /// Bytes at `position` are not a valid frame (torn or corrupt: the caller decides which).
    Bad { position: u64, error: DecodeError },
}

/// Reads frames one after another from `position` up to `end` (exclusive), checking both checksums.
pub(crate) struct Scanner {
    file: Arc<dyn FsFile>,
    salt: u64,
    end: u64,
    position: u64,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    buf_start: u64,
    payload: std::ops::Range<usize>,
}

impl Scanner {
    pub(crate) fn new(file: Arc<dyn FsFile>, salt: u64, position: u64, end: u64) -> Scanner {
        Scanner { file, salt, end, position, buf: Vec::new(), buf_start: position, payload: 0..0 }
    }

    pub(crate) fn position(&self) -> u64 {
        self.position
    }

    /// Moves the end of the readable range (the durable length of a growing segment).
    pub(crate) fn set_end(&mut self, end: u64) {
        assert!(end >= self.end, "the durable length never shrinks under a reader");
        self.end = end;
    }

    /// The payload of the frame last returned.
    pub(crate) fn payload(&self) -> &[u8] {
        &self.buf[self.payload.clone()]
    }

    pub(crate) fn next_frame(&mut self) -> io::Result<Scanned> {
        let position = self.position;
        if position >= self.end {
            return Ok(Scanned::End);
        }
        let available = self.fill(position, FRAME_HEADER_BYTES)?;
        if available < FRAME_HEADER_BYTES {
            let error = DecodeError::Truncated { needed: FRAME_HEADER_BYTES, available };
            return Ok(Scanned::Bad { position, error });
        }
        let at = (position - self.buf_start) as usize;
        let header = match decode_frame_header(&self.buf[at..], self.salt) {
            Ok(header) => header,
            Err(error) => return Ok(Scanned::Bad { position, error }),
        };
        let needed = header.frame_bytes();
        let available = self.fill(position, needed)?;
        if available < needed {
            return Ok(Scanned::Bad { position, error: DecodeError::Truncated { needed, available } });
        }
        let at = (position - self.buf_start) as usize;
        let payload = at + FRAME_HEADER_BYTES..at + needed;
        if crate::format::crc32(&self.buf[payload.clone()]) != header.payload_crc {
            return Ok(Scanned::Bad { position, error: DecodeError::PayloadChecksum });
        }
        self.payload = payload;
        self.position = position + needed as u64;
        Ok(Scanned::Frame { position, header })
    }

    /// Makes `needed` bytes from `position` available in `buf` if the file has them before `end`;
    /// returns how many are available.
    fn fill(&mut self, position: u64, needed: usize) -> io::Result<usize> {
        let have = (self.buf_start + self.buf.len() as u64).saturating_sub(position) as usize;
        if position >= self.buf_start && have >= needed {
            return Ok(have);
        }
        let want = needed.max(SCAN_CHUNK_BYTES).min((self.end - position) as usize);
        self.buf.clear();
        self.buf.resize(want, 0);
        self.buf_start = position;
        let mut filled = 0;
        while filled < want {
            match self.file.read_at(&mut self.buf[filled..], position + filled as u64)? {
                0 => break,
                n => filled += n,
            }
        }
        self.buf.truncate(filled);
        Ok(filled)
    }
}

/// Why a group scan stopped before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Bytes that do not decode as a frame: a tear or corruption, the caller decides. `offset` is the
    /// one a record at `position` would have.
    Bad { position: u64, offset: u64, error: DecodeError },
    /// A valid frame in the wrong place (wrong offset, or after the seal): always corruption.
    Misplaced { position: u64, expected: u64, reason: String },
}

impl Stop {
    pub(crate) fn position(&self) -> u64 {
        match self {
            Stop::Bad { position, .. } | Stop::Misplaced { position, .. } => *position,
        }
    }

    /// The offset a record at [`Stop::position`] would have.
    pub(crate) fn offset(&self) -> u64 {
        match self {
            Stop::Bad { offset, .. } => *offset,
            Stop::Misplaced { expected, .. } => *expected,
        }
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Bad { position, error, .. } => write!(f, "bad frame at byte {position}: {error}"),
            Stop::Misplaced { reason, .. } => f.write_str(reason),
        }
    }
}

/// What [`scan_groups`] found.
#[derive(Debug)]
pub(crate) struct GroupScan {
    /// The segment's meta as of the end of its last complete group (a group is written whole or not
    /// at all, so only complete groups count).
    pub committed: SegmentMeta,
    /// The first bad or misplaced frame, if the scan met one.
    pub stop: Option<Stop>,
}

/// Scans frames from the end of `meta` (a segment's known, complete prefix) to `end`, extending it by
/// every complete group.
pub(crate) fn scan_groups(
    file: Arc<dyn FsFile>,
    salt: u64,
    mut meta: SegmentMeta,
    end: u64,
) -> io::Result<GroupScan> {
    let mut scanner = Scanner::new(file, salt, meta.bytes, end);
    // The committed state without cloning the index entries on every group.
    let mut committed = (meta.clone_without_entries(), meta.entries.len());
    let stop = loop {
        let (position, header) = match scanner.next_frame()? {
            Scanned::End => break None,
            Scanned::Bad { position, error } => {
                break Some(Stop::Bad { position, offset: meta.last_offset + 1, error })
            }
            Scanned::Frame { position, header } => (position, header),
        };
        let expected = if header.is_seal() { meta.last_offset } else { meta.last_offset + 1 };
        if header.offset != expected || meta.sealed {
            let reason =
                format!("frame has offset {}, expected {expected} (or follows the seal)", header.offset);
            break Some(Stop::Misplaced { position, expected: meta.last_offset + 1, reason });
        }
        if header.is_seal() {
            meta.sealed = true;
            meta.bytes = position + header.frame_bytes() as u64;
        } else {
            meta.push_record(header.offset, position, header.timestamp_ms, header.frame_bytes() as u64);
        }
        if header.is_group_end() {
            committed = (meta.clone_without_entries(), meta.entries.len());
        }
    };
    let (mut result, entries) = committed;
    meta.entries.truncate(entries);
    result.entries = meta.entries;
    Ok(GroupScan { committed: result, stop })
}
