//! `remix-storage`: the durable, segmented, checksummed write-ahead log at the heart of Remix, with
//! per-target cursors, crash recovery, retention and verification.
//!
//! This crate knows nothing of sources, targets, JSON Schema or async runtimes: it stores opaque
//! records (a kind byte and a payload) at dense offsets starting at 1. The on-disk format and its
//! invariants are specified in [`format`].
//!
//! ```no_run
//! use remix_storage::{AppendRecord, Log, LogOptions, OsFs};
//! use std::sync::Arc;
//! let log = Log::open(Arc::new(OsFs), "remix-data".as_ref(), LogOptions::default())?;
//! let appended = log.append_blocking(vec![AppendRecord { kind: 1, payload: b"{}".to_vec() }])?;
//! for record in log.reader(appended.first_offset)? {
//!     println!("{}: {} bytes", record?.offset, 2);
//! }
//! log.store_cursor("dataset", appended.last_offset)?;
//! # Ok::<(), remix_storage::Error>(())
//! ```

pub mod error;
pub mod format;
pub mod fs;
mod log;
mod reader;
mod recovery;
mod retention;
mod scan;
mod segment;
pub mod sim;
mod slots;
mod stat;
pub mod verify;
mod writer;

pub use error::{Error, Result};
pub use fs::{Fs, FsFile, OsFs};
pub use log::{
    system_clock, AppendRecord, Appended, Clock, DataDirLock, GroupObserver, GroupStats, Log, LogOptions,
    LogView, SEALED_FILES_OPEN_MAX,
};
pub use reader::{LogReader, Record};
pub use retention::{RetentionPolicy, RetentionReport};
pub use stat::{LogStat, SegmentInfo};

use std::path::{Path, PathBuf};

/// Where everything lives inside a data directory (see [`format`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub data_dir: PathBuf,
    pub log_dir: PathBuf,
    pub cursors_dir: PathBuf,
    pub quarantine_dir: PathBuf,
    pub lock: PathBuf,
}

impl Paths {
    pub fn new(data_dir: &Path) -> Paths {
        Paths {
            data_dir: data_dir.to_owned(),
            log_dir: data_dir.join("log"),
            cursors_dir: data_dir.join("cursors"),
            quarantine_dir: data_dir.join("quarantine"),
            lock: data_dir.join("LOCK"),
        }
    }
}
