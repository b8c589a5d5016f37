//! The writer: the one thread that owns the tail of the log.
//!
//! Group commit: each cycle takes everything queued (up to GROUP_BYTES_MAX, at least one append call),
//! encodes it, writes it with one write and one `fdatasync`, then publishes the new durable offset and
//! completes the waiters. There is no artificial delay: while one group is being synced the next one
//! queues up, so the group size adapts to the load.
//!
//! Failure policy: a failed write because the disk is full (ENOSPC) is undone (the file is cut back to
//! its previous length), its append calls get [`Error::NoSpace`], and the writer goes on with the next
//! group. Any other failed write, and every failed `fdatasync`, is fatal: the writer stops, every
//! waiting and later append gets [`Error::Stopped`], and recovery runs when the log is reopened. A
//! failed fsync is never retried (the kernel may have dropped the dirty pages).

use crate::error::{is_enospc, Error, Result};
use crate::format::{encode_frame, set_group_end, FLAG_GROUP_END, GROUP_BYTES_MAX, KIND_SEAL};
use crate::fs::write_file_atomic;
use crate::log::{Completion, Request, Shared};
use crate::segment::{create_segment, Segment};
use std::sync::Arc;

/// The write buffer's capacity kept between groups: room for the largest group of small appends.
const BUF_KEPT_BYTES_MAX: usize = GROUP_BYTES_MAX * 4;

/// Why a group (or a roll) did not complete.
enum Failure {
    NoSpace,
    Fatal(String),
}

type Outcome<T> = std::result::Result<T, Failure>;

pub(crate) struct Writer {
    shared: Arc<Shared>,
    active: Arc<Segment>,
    next_offset: u64,
    last_timestamp_ms: u64,
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new(shared: Arc<Shared>, active: Arc<Segment>, last_timestamp_ms: u64) -> Writer {
        let next_offset = active.meta().last_offset + 1;
        Writer {
            shared,
            active,
            next_offset,
            last_timestamp_ms,
            buf: Vec::with_capacity(GROUP_BYTES_MAX * 2),
        }
    }

    pub(crate) fn run(mut self) {
        while let Some(group) = self.shared.take_group() {
            let outcome = self.write_group(&group);
            let stop = match outcome {
                Ok(ranges) => {
                    complete(group, |i| Ok(ranges[i]));
                    self.maybe_roll().err()
                }
                Err(Failure::NoSpace) => {
                    complete(group, |_| Err(Error::NoSpace));
                    None
                }
                Err(failure) => {
                    // Stop first, so that whoever gets this error already finds the log stopped.
                    let reason = describe(&failure);
                    self.shared.stop(reason.clone());
                    complete(group, |_| Err(Error::Stopped { reason: reason.clone() }));
                    return;
                }
            };
            if let Some(failure) = stop.filter(|f| matches!(f, Failure::Fatal(_))) {
                self.shared.stop(describe(&failure));
                return;
            }
        }
    }

    /// Writes one group durably and returns each append call's offset range.
    fn write_group(&mut self, group: &[Request]) -> Outcome<Vec<crate::Appended>> {
        self.ensure_active()?;
        let timestamp_ms = (self.shared.options.clock)().max(self.last_timestamp_ms);
        let salt = self.active.salt;
        let position = self.active.meta().bytes;
        self.buf.clear();
        let mut frames = Vec::new();
        let mut ranges = Vec::with_capacity(group.len());
        let mut offset = self.next_offset;
        for request in group {
            let first_offset = offset;
            for record in &request.records {
                let at = self.buf.len();
                encode_frame(&mut self.buf, salt, record.kind, 0, offset, timestamp_ms, &record.payload);
                frames.push((offset, position + at as u64, (self.buf.len() - at) as u64));
                offset += 1;
            }
            ranges.push(crate::Appended { first_offset, last_offset: offset - 1, timestamp_ms });
        }
        let last_frame_at = (frames.last().expect("a group holds records").1 - position) as usize;
        set_group_end(&mut self.buf[last_frame_at..], salt);
        let (write_micros, sync_micros) = self.write_durably(position)?;
        if let Some(observer) = &self.shared.options.observer {
            observer(&crate::log::GroupStats {
                records: frames.len(),
                bytes: self.buf.len(),
                write_micros,
                sync_micros,
            });
        }
        let mut meta = self.active.meta();
        for &(offset, at, bytes) in &frames {
            meta.push_record(offset, at, timestamp_ms, bytes);
        }
        drop(meta);
        self.next_offset = offset;
        self.last_timestamp_ms = timestamp_ms;
        self.shared.publish_durable(offset - 1);
        // A large append call's buffer is not kept for the groups after it.
        if self.buf.capacity() > BUF_KEPT_BYTES_MAX {
            self.buf = Vec::with_capacity(GROUP_BYTES_MAX * 2);
        }
        Ok(ranges)
    }

    /// Writes `buf` at `position` of the active segment and syncs it.
    fn write_durably(&mut self, position: u64) -> Outcome<(u64, u64)> {
        let file = &self.active.file();
        let started = std::time::Instant::now();
        if let Err(e) = file.write_all_at(&self.buf, position) {
            if !is_enospc(&e) {
                return Err(Failure::Fatal(format!("write to {}: {e}", self.active.path.display())));
            }
            return match file.set_len(position) {
                Ok(()) => Err(Failure::NoSpace),
                Err(e) => Err(Failure::Fatal(format!(
                    "undo a partial write to {}: {e}",
                    self.active.path.display()
                ))),
            };
        }
        let written = std::time::Instant::now();
        file.sync_data()
            .map_err(|e| Failure::Fatal(format!("fdatasync of {}: {e}", self.active.path.display())))?;
        let micros = |d: std::time::Duration| d.as_micros() as u64;
        Ok((micros(written - started), micros(written.elapsed())))
    }

    /// Seals the active segment once it reached `segment_bytes`, and starts the next one.
    fn maybe_roll(&mut self) -> Outcome<()> {
        let (bytes, records, last_offset) = {
            let meta = self.active.meta();
            (meta.bytes, meta.records, meta.last_offset)
        };
        if bytes < self.shared.options.segment_bytes || records == 0 {
            return Ok(());
        }
        let timestamp_ms = (self.shared.options.clock)().max(self.last_timestamp_ms);
        self.buf.clear();
        encode_frame(
            &mut self.buf,
            self.active.salt,
            KIND_SEAL,
            FLAG_GROUP_END,
            last_offset,
            timestamp_ms,
            &[],
        );
        self.write_durably(bytes)?;
        {
            let mut meta = self.active.meta();
            meta.sealed = true;
            meta.bytes = bytes + self.buf.len() as u64;
        }
        let index_path = self.active.index_path();
        match write_file_atomic(self.shared.fs.as_ref(), &index_path, &self.active.to_index().encode()) {
            Ok(()) => {}
            // The index is an accelerator: recovery rebuilds a missing one from the segment.
            Err(e) if is_enospc(&e) => {
                let _ = self.shared.fs.remove_file(&crate::fs::tmp_path(&index_path));
            }
            Err(e) => return Err(Failure::Fatal(format!("write {}: {e}", index_path.display()))),
        }
        match self.ensure_active() {
            Err(Failure::NoSpace) => Ok(()), // retried before the next group
            other => other,
        }
    }

    /// Makes sure the active segment is writable: after a seal, creates the next segment.
    fn ensure_active(&mut self) -> Outcome<()> {
        if !self.active.meta().sealed {
            return Ok(());
        }
        let now_ms = (self.shared.options.clock)();
        let segment = match create_segment(
            self.shared.fs.as_ref(),
            &self.shared.paths.log_dir,
            self.next_offset,
            now_ms,
        ) {
            Ok(segment) => Arc::new(segment),
            Err(Error::Io { source, .. }) if is_enospc(&source) => return Err(Failure::NoSpace),
            Err(e) => return Err(Failure::Fatal(e.to_string())),
        };
        self.shared.push_segment(Arc::clone(&segment));
        let sealed = std::mem::replace(&mut self.active, segment);
        sealed.release_file();
        Ok(())
    }
}

fn describe(failure: &Failure) -> String {
    match failure {
        Failure::NoSpace => "no space left on device".to_owned(),
        Failure::Fatal(reason) => reason.clone(),
    }
}

fn complete(group: Vec<Request>, result: impl Fn(usize) -> Result<crate::Appended>) {
    for (i, request) in group.into_iter().enumerate() {
        let done: Completion = request.done;
        done(result(i));
    }
}
