//! The storage crate's one error type.

use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the log. Messages name the file, byte position and offset where
/// they apply, so an operator can act on them without reading code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("data directory {} is locked by another process (is a node running?)", path.display())]
    Locked { path: PathBuf },
    #[error(
        "corruption in segment {} at byte {position} (offset {offset}): {reason}; \
         run `remix log verify`, and `remix log repair` to cut it off",
        segment.display()
    )]
    Corrupt { segment: PathBuf, position: u64, offset: u64, reason: String },
    #[error(
        "missing segment: offsets {expected} to {} are not in {} (the next segment starts at {found})",
        found - 1, dir.display()
    )]
    MissingSegment { dir: PathBuf, expected: u64, found: u64 },
    #[error("cursor '{target}' is at offset {cursor}, beyond the log's last durable offset {last}")]
    CursorBeyondLog { target: String, cursor: u64, last: u64 },
    #[error("{}: both slots are torn or invalid ({reason}); the file cannot be trusted", path.display())]
    SlotsTorn { path: PathBuf, reason: String },
    #[error("offset {offset} is below the log's first offset {first} (removed by retention)")]
    BelowStart { offset: u64, first: u64 },
    #[error("offset {offset} is beyond the log's last durable offset {last}")]
    BeyondEnd { offset: u64, last: u64 },
    #[error("the log stopped after a fatal error and must be reopened (recovery runs on open): {reason}")]
    Stopped { reason: String },
    #[error("no space left on device: nothing of this append was written; retry when space returns")]
    NoSpace,
    #[error("append of {bytes} encoded bytes exceeds the batch limit of {max} bytes")]
    BatchTooLarge { bytes: usize, max: usize },
    #[error("record payload of {bytes} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { bytes: usize, max: usize },
    #[error("invalid record kind {kind} (user kinds are 1..=127)")]
    InvalidKind { kind: u8 },
    #[error("invalid name '{name}': use letters, digits, '_' and '-'")]
    InvalidName { name: String },
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error("the log is closed")]
    Closed,
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }

    /// Whether this is a disk-full condition that clears by itself when space returns.
    pub fn is_no_space(&self) -> bool {
        matches!(self, Error::NoSpace)
    }
}

pub(crate) fn is_enospc(e: &io::Error) -> bool {
    e.raw_os_error() == Some(28) || e.kind() == io::ErrorKind::StorageFull
}

/// Adds the path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
