//! One segment file in memory: its identity, its open handle and what is known of its contents.
//!
//! An unsealed segment (the one being written, or the newest one a view reads) always holds its file
//! open. A sealed one holds it only while it is among the most recently read (see
//! `Shared::segment_file`): a log of thousands of segments does not take thousands of descriptors.

use crate::error::{IoContext, Result};
use crate::format::{
    index_file_name, segment_file_name, IndexEntry, SegmentHeader, SegmentIndex, INDEX_INTERVAL_BYTES,
    SEGMENT_HEADER_BYTES,
};
use crate::fs::{tmp_path, Fs, FsFile, OpenMode};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// What is known of a segment's contents. For the active segment the writer updates it after each
/// durable group; readers never look past `bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentMeta {
    /// Last record offset; `base_offset - 1` while empty.
    pub last_offset: u64,
    /// Durable length of the file in bytes (header and seal included).
    pub bytes: u64,
    pub records: u64,
    pub sealed: bool,
    pub first_timestamp_ms: u64,
    pub last_timestamp_ms: u64,
    /// Sparse index, ascending; the first record is always present.
    pub entries: Vec<IndexEntry>,
}

impl SegmentMeta {
    pub(crate) fn empty(base_offset: u64) -> SegmentMeta {
        SegmentMeta {
            last_offset: base_offset - 1,
            bytes: SEGMENT_HEADER_BYTES as u64,
            records: 0,
            sealed: false,
            first_timestamp_ms: 0,
            last_timestamp_ms: 0,
            entries: Vec::new(),
        }
    }

    /// A copy without the index entries (cheap, for checkpoints during a scan).
    pub(crate) fn clone_without_entries(&self) -> SegmentMeta {
        SegmentMeta { entries: Vec::new(), ..*self }
    }

    /// Accounts for one record frame of `frame_bytes` at `position`.
    pub(crate) fn push_record(&mut self, offset: u64, position: u64, timestamp_ms: u64, frame_bytes: u64) {
        assert_eq!(offset, self.last_offset + 1, "offsets are dense");
        assert_eq!(position, self.bytes, "frames are contiguous");
        let due = self.entries.last().is_none_or(|e| position - e.position >= INDEX_INTERVAL_BYTES);
        if due {
            self.entries.push(IndexEntry { offset, position });
        }
        if self.records == 0 {
            self.first_timestamp_ms = timestamp_ms;
        }
        self.records += 1;
        self.last_offset = offset;
        self.last_timestamp_ms = timestamp_ms;
        self.bytes = position + frame_bytes;
    }

    /// Position of the indexed frame at or before `offset` (the segment must hold `offset`).
    pub(crate) fn seek(&self, offset: u64) -> u64 {
        let i = self.entries.partition_point(|e| e.offset <= offset);
        if i == 0 {
            SEGMENT_HEADER_BYTES as u64
        } else {
            self.entries[i - 1].position
        }
    }
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: u64,
    pub salt: u64,
    pub path: PathBuf,
    file: Mutex<Option<Arc<dyn FsFile>>>,
    meta: Mutex<SegmentMeta>,
}

impl Segment {
    pub(crate) fn new(
        header: SegmentHeader,
        path: PathBuf,
        file: Arc<dyn FsFile>,
        meta: SegmentMeta,
    ) -> Segment {
        Segment {
            base_offset: header.base_offset,
            salt: header.salt,
            path,
            file: Mutex::new(Some(file)),
            meta: Mutex::new(meta),
        }
    }

    /// The open file of a segment that holds it: always an unsealed one.
    pub(crate) fn file(&self) -> Arc<dyn FsFile> {
        self.cached_file().expect("an unsealed segment keeps its file open")
    }

    /// The open file, if the segment holds one.
    pub(crate) fn cached_file(&self) -> Option<Arc<dyn FsFile>> {
        self.file.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Keeps `file` (just opened) as this segment's open file.
    pub(crate) fn keep_file(&self, file: Arc<dyn FsFile>) {
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
    }

    /// Lets go of the open file of a sealed segment (readers that have it keep their handle).
    pub(crate) fn release_file(&self) {
        assert!(self.meta().sealed, "only a sealed segment lets go of its file");
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub(crate) fn meta(&self) -> MutexGuard<'_, SegmentMeta> {
        self.meta.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        self.path.with_file_name(index_file_name(self.base_offset))
    }

    pub(crate) fn to_index(&self) -> SegmentIndex {
        let meta = self.meta();
        SegmentIndex {
            base_offset: self.base_offset,
            salt: self.salt,
            last_offset: meta.last_offset,
            segment_bytes: meta.bytes,
            records: meta.records,
            first_timestamp_ms: meta.first_timestamp_ms,
            last_timestamp_ms: meta.last_timestamp_ms,
            entries: meta.entries.clone(),
        }
    }
}

pub(crate) fn meta_from_index(index: &SegmentIndex) -> SegmentMeta {
    SegmentMeta {
        last_offset: index.last_offset,
        bytes: index.segment_bytes,
        records: index.records,
        sealed: true,
        first_timestamp_ms: index.first_timestamp_ms,
        last_timestamp_ms: index.last_timestamp_ms,
        entries: index.entries.clone(),
    }
}

/// Creates a new, empty segment durably: header into a temp file, fsync, rename, directory fsync.
pub(crate) fn create_segment(fs: &dyn Fs, dir: &Path, base_offset: u64, now_ms: u64) -> Result<Segment> {
    let path = dir.join(segment_file_name(base_offset));
    let tmp = tmp_path(&path);
    let header = SegmentHeader { base_offset, salt: random_u64(), created_ms: now_ms };
    if fs.exists(&tmp) {
        fs.remove_file(&tmp).at(&tmp)?;
    }
    let file = fs.open(&tmp, OpenMode::CreateNew).at(&tmp)?;
    let written = file.write_all_at(&header.encode(), 0).and_then(|()| file.sync_data());
    if let Err(e) = written {
        let _ = fs.remove_file(&tmp);
        return Err(crate::Error::io(&tmp, e));
    }
    fs.rename(&tmp, &path).at(&path)?;
    fs.sync_dir(dir).at(dir)?;
    Ok(Segment::new(header, path, file, SegmentMeta::empty(base_offset)))
}

/// A random 64-bit value from the standard library's randomly seeded hasher (no extra dependency).
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    hasher.finish()
}
