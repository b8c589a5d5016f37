//! Summaries of the log for operators (`remix log ls`, `remix log stat`) and time lookups.

use crate::error::Result;
use crate::log::{Log, LogView, Shared};
use std::path::PathBuf;
use std::sync::Arc;

/// One segment as `remix log ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub path: PathBuf,
    pub base_offset: u64,
    /// `base_offset - 1` while empty.
    pub last_offset: u64,
    pub records: u64,
    pub bytes: u64,
    pub sealed: bool,
    pub first_timestamp_ms: u64,
    pub last_timestamp_ms: u64,
}

/// The whole log as `remix log stat` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStat {
    pub first_offset: u64,
    pub last_offset: u64,
    pub durable_offset: u64,
    pub records: u64,
    pub bytes: u64,
    pub segments: Vec<SegmentInfo>,
}

fn stat(shared: &Shared) -> LogStat {
    let segments: Vec<SegmentInfo> = shared
        .segments
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|s| {
            let meta = s.meta();
            SegmentInfo {
                path: s.path.clone(),
                base_offset: s.base_offset,
                last_offset: meta.last_offset,
                records: meta.records,
                bytes: meta.bytes,
                sealed: meta.sealed,
                first_timestamp_ms: meta.first_timestamp_ms,
                last_timestamp_ms: meta.last_timestamp_ms,
            }
        })
        .collect();
    let durable_offset = shared.durable_offset();
    LogStat {
        first_offset: shared.start_offset.load(std::sync::atomic::Ordering::Acquire),
        last_offset: durable_offset,
        durable_offset,
        records: segments.iter().map(|s| s.records).sum(),
        bytes: segments.iter().map(|s| s.bytes).sum(),
        segments,
    }
}

/// The first offset whose record is at least `time_ms` old (for rewinds to a time): the durable
/// offset + 1 if every record is older.
fn offset_at_time(shared: &Arc<Shared>, time_ms: u64) -> Result<u64> {
    let durable = shared.durable_offset();
    let candidate = shared
        .segments
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|s| {
            let meta = s.meta();
            meta.records > 0 && meta.last_timestamp_ms >= time_ms
        })
        .map(|s| s.base_offset);
    let Some(base) = candidate else { return Ok(durable + 1) };
    let mut reader = crate::reader::LogReader::new(Arc::clone(shared), base)?;
    while let Some(record) = reader.try_next()? {
        if record.timestamp_ms >= time_ms {
            return Ok(record.offset);
        }
    }
    Ok(durable + 1)
}

impl Log {
    pub fn stat(&self) -> LogStat {
        stat(self.shared())
    }
    pub fn offset_at_time(&self, time_ms: u64) -> Result<u64> {
        offset_at_time(self.shared(), time_ms)
    }
}

impl LogView {
    pub fn stat(&self) -> LogStat {
        stat(self.shared())
    }
    pub fn offset_at_time(&self, time_ms: u64) -> Result<u64> {
        offset_at_time(self.shared(), time_ms)
    }
}
