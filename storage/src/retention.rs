//! Retention: deleting whole sealed segments that every target has applied (once old enough), or the
//! oldest ones when the log is over its byte budget, reporting targets that fell behind.
//!
//! Crash-safe order: the new start offset is recorded durably first, then the files are unlinked, then
//! the directory is fsynced. Recovery deletes segments wholly below the recorded start, so a crash in
//! between only leaves work that the next open finishes.

use crate::error::{IoContext, Result};
use crate::log::Log;
use std::path::PathBuf;
use std::sync::Arc;

/// When sealed segments may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionPolicy {
    /// A segment every cursor has passed is deleted once its newest record is this old.
    pub min_age_ms: u64,
    /// Beyond this many bytes the oldest sealed segments are deleted even if a target still needs
    /// them; such targets are reported in [`RetentionReport::fallen_behind`].
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetentionReport {
    pub removed: Vec<PathBuf>,
    pub first_offset: u64,
    /// Targets whose cursor is now below the log's start, with their cursor: they cannot continue
    /// without a rewind (reading on fails with `BelowStart`).
    pub fallen_behind: Vec<(String, u64)>,
}

impl Log {
    /// Retention held back by every cursor on disk.
    pub fn apply_retention(&self, policy: &RetentionPolicy, now_ms: u64) -> Result<RetentionReport> {
        let cursors = self.cursors();
        self.retain(policy, now_ms, cursors)
    }

    /// Retention held back by the cursors of `targets` only: a target without a cursor yet holds
    /// everything (it will read from the start), and the cursor of a target that is no longer
    /// configured holds nothing (else removing a target would stop retention for good).
    pub fn apply_retention_for(
        &self,
        policy: &RetentionPolicy,
        now_ms: u64,
        targets: &[String],
    ) -> Result<RetentionReport> {
        let on_disk = self.cursors();
        let cursors = targets.iter().map(|t| (t.clone(), on_disk.get(t).copied().unwrap_or(0))).collect();
        self.retain(policy, now_ms, cursors)
    }

    /// Retention held back by `cursors` as given (a state store other than the cursor files keeps
    /// them); as [`Log::apply_retention_for`], a target without a cursor passes 0.
    pub fn apply_retention_with(
        &self,
        policy: &RetentionPolicy,
        now_ms: u64,
        cursors: std::collections::BTreeMap<String, u64>,
    ) -> Result<RetentionReport> {
        self.retain(policy, now_ms, cursors)
    }

    fn retain(
        &self,
        policy: &RetentionPolicy,
        now_ms: u64,
        cursors: std::collections::BTreeMap<String, u64>,
    ) -> Result<RetentionReport> {
        let shared = Arc::clone(self.shared());
        let mut start_slot = self.start_slot();
        let lowest_cursor = cursors.values().copied().min().unwrap_or(u64::MAX);
        let segments = shared.segments.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut total: u64 = segments.iter().map(|s| s.meta().bytes).sum();
        let mut remove = 0;
        for segment in &segments[..segments.len().saturating_sub(1)] {
            let meta = segment.meta().clone();
            let applied_and_old = meta.last_offset <= lowest_cursor
                && now_ms.saturating_sub(meta.last_timestamp_ms) >= policy.min_age_ms;
            let over_budget = policy.max_bytes.is_some_and(|max| total > max);
            if !meta.sealed || !(applied_and_old || over_budget) {
                break;
            }
            total -= meta.bytes;
            remove += 1;
        }
        let mut report = RetentionReport { first_offset: self.first_offset(), ..Default::default() };
        if remove == 0 {
            report.fallen_behind = fallen_behind(cursors, report.first_offset);
            return Ok(report);
        }
        let new_start = segments[remove].base_offset;
        start_slot.store(shared.fs.as_ref(), new_start, now_ms)?;
        shared.start_offset.store(new_start, std::sync::atomic::Ordering::Release);
        shared.segments.write().unwrap_or_else(|e| e.into_inner()).drain(..remove);
        for segment in &segments[..remove] {
            shared.fs.remove_file(&segment.path).at(&segment.path)?;
            let index = segment.index_path();
            if shared.fs.exists(&index) {
                shared.fs.remove_file(&index).at(&index)?;
            }
            report.removed.push(segment.path.clone());
        }
        shared.fs.sync_dir(&shared.paths.log_dir).at(&shared.paths.log_dir)?;
        report.first_offset = new_start;
        report.fallen_behind = fallen_behind(cursors, new_start);
        Ok(report)
    }
}

/// The cursors below the log's start: their targets cannot continue without a rewind.
fn fallen_behind(cursors: std::collections::BTreeMap<String, u64>, start: u64) -> Vec<(String, u64)> {
    cursors.into_iter().filter(|&(_, cursor)| cursor + 1 < start).collect()
}
