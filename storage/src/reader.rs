//! Reading the log from any offset, never past the durable offset.

use crate::error::{Error, IoContext, Result};
use crate::log::Shared;
use crate::scan::{Scanned, Scanner};
use crate::segment::Segment;
use std::sync::Arc;
use std::time::Duration;

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub timestamp_ms: u64,
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// Iterates over durable records from an offset. A reader keeps its segment open, so retention
/// removing that segment does not disturb it; moving to a removed segment is an error
/// ([`Error::BelowStart`]), never a silent skip.
pub struct LogReader {
    shared: Arc<Shared>,
    next_offset: u64,
    current: Option<(Arc<Segment>, Scanner)>,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader").field("next_offset", &self.next_offset).finish_non_exhaustive()
    }
}

impl LogReader {
    pub(crate) fn new(shared: Arc<Shared>, from: u64) -> Result<LogReader> {
        let reader = LogReader { shared, next_offset: from.max(1), current: None };
        reader.check_start()?;
        Ok(reader)
    }

    /// The offset the next record will have.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Repositions the reader.
    pub fn seek(&mut self, offset: u64) -> Result<()> {
        self.next_offset = offset.max(1);
        self.current = None;
        self.check_start()
    }

    fn check_start(&self) -> Result<()> {
        let first = self.shared.start_offset.load(std::sync::atomic::Ordering::Acquire);
        if self.next_offset < first {
            return Err(Error::BelowStart { offset: self.next_offset, first });
        }
        Ok(())
    }

    /// The next durable record, or `None` when the reader has caught up.
    pub fn try_next(&mut self) -> Result<Option<Record>> {
        if self.next_offset > self.shared.durable_offset() {
            return Ok(None);
        }
        loop {
            if self.current.as_ref().is_none_or(|(segment, _)| !holds(segment, self.next_offset)) {
                self.open_segment()?;
            }
            let (segment, scanner) = self.current.as_mut().expect("segment opened");
            scanner.set_end(segment.meta().bytes);
            let position = scanner.position();
            let corrupt = |reason: String| Error::Corrupt {
                segment: segment.path.clone(),
                position,
                offset: self.next_offset,
                reason,
            };
            match scanner.next_frame().at(&segment.path)? {
                Scanned::Frame { header, .. } if header.is_seal() => self.current = None,
                Scanned::Frame { header, .. } if header.offset < self.next_offset => {}
                Scanned::Frame { header, .. } if header.offset == self.next_offset => {
                    self.next_offset += 1;
                    let payload = scanner.payload().to_vec();
                    let record = Record {
                        offset: header.offset,
                        timestamp_ms: header.timestamp_ms,
                        kind: header.kind,
                        payload,
                    };
                    return Ok(Some(record));
                }
                Scanned::Frame { header, .. } => {
                    return Err(corrupt(format!(
                        "frame has offset {}, expected {}",
                        header.offset, self.next_offset
                    )))
                }
                Scanned::Bad { error, .. } => return Err(corrupt(error.to_string())),
                Scanned::End => return Err(corrupt("durable record missing from its segment".into())),
            }
        }
    }

    /// The next record, waiting up to `timeout` for one to become durable.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Record>> {
        if let Some(record) = self.try_next()? {
            return Ok(Some(record));
        }
        self.shared.wait_durable(self.next_offset, timeout);
        if let Some(reason) = self.shared.stopped() {
            if self.next_offset > self.shared.durable_offset() {
                return Err(Error::Stopped { reason });
            }
        }
        self.try_next()
    }

    fn open_segment(&mut self) -> Result<()> {
        self.check_start()?;
        let segment = {
            let segments = self.shared.segments.read().unwrap_or_else(|e| e.into_inner());
            let i = segments.partition_point(|s| s.base_offset <= self.next_offset);
            match i.checked_sub(1).map(|i| &segments[i]) {
                Some(segment) if holds(segment, self.next_offset) => Arc::clone(segment),
                _ => {
                    let first = segments.first().map_or(1, |s| s.base_offset);
                    return Err(Error::BelowStart { offset: self.next_offset, first });
                }
            }
        };
        let (position, end) = {
            let meta = segment.meta();
            (meta.seek(self.next_offset), meta.bytes)
        };
        let file = self.shared.segment_file(&segment)?;
        let scanner = Scanner::new(file, segment.salt, position, end);
        self.current = Some((segment, scanner));
        Ok(())
    }
}

fn holds(segment: &Segment, offset: u64) -> bool {
    offset >= segment.base_offset && offset <= segment.meta().last_offset
}

impl Iterator for LogReader {
    type Item = Result<Record>;
    /// Yields durable records until caught up.
    fn next(&mut self) -> Option<Self::Item> {
        self.try_next().transpose()
    }
}
