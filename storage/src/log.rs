//! The log: open (with recovery), append (through the writer thread), read, cursors, retention.

use crate::error::{Error, IoContext, Result};
use crate::format::{
    BATCH_BYTES_MAX, CURSOR_MAGIC, FRAME_HEADER_BYTES, KIND_USER_MAX, RECORD_PAYLOAD_BYTES_MAX,
    SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
};
use crate::fs::{Fs, LockGuard};
use crate::reader::LogReader;
use crate::recovery::{recover, Mode};
use crate::scan::{scan_groups, Stop};
use crate::segment::{create_segment, Segment};
use crate::slots::{check_name, cursor_path, SlotFile};
use crate::writer::Writer;
use crate::Paths;
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// Sealed segments whose files stay open after a read, at most (each unsealed segment holds its
/// own besides): far below common descriptor limits however many segments the log keeps.
pub const SEALED_FILES_OPEN_MAX: usize = 64;

/// Milliseconds since the Unix epoch; injectable for tests.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    })
}

/// Options of a log opened for writing.
#[derive(Clone)]
pub struct LogOptions {
    /// A segment is sealed and a new one started once it holds this many bytes (it may exceed it by
    /// one group). Between SEGMENT_BYTES_MIN and SEGMENT_BYTES_MAX.
    pub segment_bytes: u64,
    /// Bytes of encoded records that may wait for the writer; `append` blocks beyond it.
    pub queue_bytes_max: usize,
    pub clock: Clock,
    /// Called on the writer thread after every durable group (keep it cheap: metrics).
    pub observer: Option<GroupObserver>,
}

/// What one group commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupStats {
    pub records: usize,
    pub bytes: usize,
    /// Time in `write`, then in `fdatasync`.
    pub write_micros: u64,
    pub sync_micros: u64,
}

pub type GroupObserver = Arc<dyn Fn(&GroupStats) + Send + Sync>;

impl std::fmt::Debug for LogOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogOptions")
            .field("segment_bytes", &self.segment_bytes)
            .field("queue_bytes_max", &self.queue_bytes_max)
            .finish_non_exhaustive()
    }
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: 128 * 1024 * 1024,
            queue_bytes_max: 8 * 1024 * 1024,
            clock: system_clock(),
            observer: None,
        }
    }
}

/// One record to append: a user kind (1..=127) and opaque bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendRecord {
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// Where an append call's records landed; all of them are durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub first_offset: u64,
    pub last_offset: u64,
    pub timestamp_ms: u64,
}

pub(crate) type Completion = Box<dyn FnOnce(Result<Appended>) + Send>;

pub(crate) struct Request {
    pub records: Vec<AppendRecord>,
    pub bytes: usize,
    pub done: Completion,
}

#[derive(Default)]
pub(crate) struct Queue {
    requests: VecDeque<Request>,
    bytes: usize,
    closing: bool,
    stopped: Option<String>,
}

/// State shared by the log handle, the writer thread and readers.
pub(crate) struct Shared {
    pub fs: Arc<dyn Fs>,
    pub paths: Paths,
    pub options: LogOptions,
    queue: Mutex<Queue>,
    work: Condvar,
    room: Condvar,
    pub segments: RwLock<Vec<Arc<Segment>>>,
    durable_offset: AtomicU64,
    pub start_offset: AtomicU64,
    durable_lock: Mutex<()>,
    durable_changed: Condvar,
    /// The sealed segments whose files readers opened, oldest first (see [`Shared::segment_file`]).
    sealed_open: Mutex<VecDeque<Weak<Segment>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn new(
        fs: Arc<dyn Fs>,
        paths: Paths,
        options: LogOptions,
        segments: Vec<Arc<Segment>>,
        start: u64,
    ) -> Shared {
        let durable = segments.last().map_or(start.max(1) - 1, |s| s.meta().last_offset);
        Shared {
            fs,
            paths,
            options,
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            room: Condvar::new(),
            segments: RwLock::new(segments),
            durable_offset: AtomicU64::new(durable),
            start_offset: AtomicU64::new(start),
            durable_lock: Mutex::new(()),
            durable_changed: Condvar::new(),
            sealed_open: Mutex::new(VecDeque::new()),
        }
    }

    /// A segment's open file for reading: an unsealed segment's own; a sealed one's, opened if need
    /// be, and kept open for at most [`SEALED_FILES_OPEN_MAX`] sealed segments at a time (the least
    /// recently opened let go of theirs first; a reader in the middle of one keeps its handle).
    pub(crate) fn segment_file(&self, segment: &Arc<Segment>) -> Result<Arc<dyn crate::fs::FsFile>> {
        if let Some(file) = segment.cached_file() {
            return Ok(file);
        }
        let file = self.fs.open(&segment.path, crate::fs::OpenMode::Read).at(&segment.path)?;
        segment.keep_file(Arc::clone(&file));
        let mut open = lock(&self.sealed_open);
        open.push_back(Arc::downgrade(segment));
        while open.len() > SEALED_FILES_OPEN_MAX {
            if let Some(oldest) = open.pop_front().and_then(|s| s.upgrade()) {
                oldest.release_file();
            }
        }
        Ok(file)
    }

    pub(crate) fn durable_offset(&self) -> u64 {
        self.durable_offset.load(Ordering::Acquire)
    }

    pub(crate) fn publish_durable(&self, offset: u64) {
        assert!(offset >= self.durable_offset(), "the durable offset never goes back");
        let _guard = lock(&self.durable_lock);
        self.durable_offset.store(offset, Ordering::Release);
        self.durable_changed.notify_all();
    }

    /// Waits until the durable offset is at least `offset`, the timeout passes, or the log stops.
    pub(crate) fn wait_durable(&self, offset: u64, timeout: Duration) -> u64 {
        let deadline = std::time::Instant::now() + timeout;
        let mut guard = lock(&self.durable_lock);
        loop {
            let durable = self.durable_offset();
            let now = std::time::Instant::now();
            if durable >= offset || now >= deadline || self.stopped().is_some() {
                return durable;
            }
            guard =
                self.durable_changed.wait_timeout(guard, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    pub(crate) fn stopped(&self) -> Option<String> {
        lock(&self.queue).stopped.clone()
    }

    pub(crate) fn push_segment(&self, segment: Arc<Segment>) {
        let mut segments = self.segments.write().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = segments.last() {
            assert_eq!(last.meta().last_offset + 1, segment.base_offset, "segments are dense");
        }
        segments.push(segment);
    }

    /// Blocks until there is work; `None` once the log is closing and the queue is drained.
    pub(crate) fn take_group(&self) -> Option<Vec<Request>> {
        let mut queue = lock(&self.queue);
        while queue.requests.is_empty() {
            if queue.closing {
                return None;
            }
            queue = self.work.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
        let mut group = Vec::new();
        let mut bytes = 0;
        while let Some(request) = queue.requests.front() {
            if !group.is_empty() && bytes + request.bytes > crate::format::GROUP_BYTES_MAX {
                break;
            }
            bytes += request.bytes;
            group.push(queue.requests.pop_front().expect("front exists"));
        }
        queue.bytes -= bytes;
        self.room.notify_all();
        Some(group)
    }

    /// Marks the log stopped and fails everything queued.
    pub(crate) fn stop(&self, reason: String) {
        let requests: Vec<Request> = {
            let mut queue = lock(&self.queue);
            queue.stopped = Some(reason.clone());
            queue.bytes = 0;
            queue.requests.drain(..).collect()
        };
        self.room.notify_all();
        for request in requests {
            (request.done)(Err(Error::Stopped { reason: reason.clone() }));
        }
        let _guard = lock(&self.durable_lock);
        self.durable_changed.notify_all();
    }

    fn enqueue(&self, request: Request) -> Result<()> {
        let mut queue = lock(&self.queue);
        loop {
            if let Some(reason) = &queue.stopped {
                return Err(Error::Stopped { reason: reason.clone() });
            }
            if queue.closing {
                return Err(Error::Closed);
            }
            if queue.bytes == 0 || queue.bytes + request.bytes <= self.options.queue_bytes_max {
                break;
            }
            queue = self.room.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
        queue.bytes += request.bytes;
        queue.requests.push_back(request);
        self.work.notify_one();
        Ok(())
    }
}

/// The log, opened for writing by this process (which holds the data directory's lock).
///
/// `append` may be called from any number of threads; the records of one call get consecutive offsets
/// and survive a crash all together or not at all. Readers see a record only once it is durable.
pub struct Log {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    cursors: Mutex<BTreeMap<String, SlotFile>>,
    start: Mutex<SlotFile>,
    notes: Vec<String>,
    _lock: Box<dyn LockGuard>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("data_dir", &self.shared.paths.data_dir).finish_non_exhaustive()
    }
}

impl Log {
    /// Opens (creating if needed) the log in `data_dir`: takes the lock, runs recovery, checks the
    /// cursors, and starts the writer thread.
    pub fn open(fs: Arc<dyn Fs>, data_dir: &Path, options: LogOptions) -> Result<Log> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&options.segment_bytes) {
            return Err(Error::InvalidOption(format!(
                "segment_bytes {} is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                options.segment_bytes
            )));
        }
        let paths = Paths::new(data_dir);
        for dir in [&paths.data_dir, &paths.log_dir, &paths.cursors_dir] {
            fs.create_dir_all(dir).at(dir)?;
        }
        let lock = lock_data_dir(fs.as_ref(), &paths)?;
        let now_ms = (options.clock)();
        let recovered = recover(fs.as_ref(), &paths, Mode::ReadWrite, now_ms)?;
        let mut segments = recovered.segments;
        let start = recovered.start.value().or(segments.first().map(|s| s.base_offset)).unwrap_or(1);
        if segments.is_empty() {
            segments.push(Arc::new(create_segment(fs.as_ref(), &paths.log_dir, start, now_ms)?));
        }
        let active = Arc::clone(segments.last().expect("at least one segment"));
        let last_timestamp_ms = segments.iter().map(|s| s.meta().last_timestamp_ms).max().unwrap_or(0);
        let cursors = load_cursors(fs.as_ref(), &paths, active.meta().last_offset)?;
        if !cursors.is_empty() {
            // A cursor file created just before a kill -9 may be named only in the page cache.
            fs.sync_dir(&paths.cursors_dir).at(&paths.cursors_dir)?;
        }
        let shared = Arc::new(Shared::new(fs, paths, options, segments, start));
        let writer = Writer::new(Arc::clone(&shared), active, last_timestamp_ms);
        let handle = std::thread::Builder::new()
            .name("remix-log-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| Error::io(&shared.paths.log_dir, e))?;
        Ok(Log {
            shared,
            writer: Mutex::new(Some(handle)),
            cursors: Mutex::new(cursors),
            start: Mutex::new(recovered.start),
            notes: recovered.notes,
            _lock: lock,
        })
    }

    /// What recovery did on open (torn tail cut, index rebuilt, ...), for the operator.
    pub fn recovery_notes(&self) -> &[String] {
        &self.notes
    }

    pub fn data_dir(&self) -> &Path {
        &self.shared.paths.data_dir
    }

    /// Queues records for appending; `done` is called (on the writer thread, so keep it short) once
    /// they are durable, or with the reason they are not. Blocks while the queue is full. An error
    /// returned here means `done` will not be called.
    pub fn append(
        &self,
        records: Vec<AppendRecord>,
        done: impl FnOnce(Result<Appended>) + Send + 'static,
    ) -> Result<()> {
        let bytes = check_records(&records)?;
        if records.is_empty() {
            let durable = self.durable_offset();
            done(Ok(Appended { first_offset: durable + 1, last_offset: durable, timestamp_ms: 0 }));
            return Ok(());
        }
        self.shared.enqueue(Request { records, bytes, done: Box::new(done) })
    }

    /// Appends and waits until the records are durable.
    pub fn append_blocking(&self, records: Vec<AppendRecord>) -> Result<Appended> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        self.append(records, move |result| {
            let _ = sender.send(result);
        })?;
        receiver.recv().unwrap_or(Err(Error::Closed))
    }

    /// The last offset that is durable (0 when the log has never held a record).
    pub fn durable_offset(&self) -> u64 {
        self.shared.durable_offset()
    }

    /// The first offset the log still holds (retention removes older ones).
    pub fn first_offset(&self) -> u64 {
        self.shared.start_offset.load(Ordering::Acquire)
    }

    /// Waits until `offset` is durable or `timeout` passes; returns the durable offset.
    pub fn wait_durable(&self, offset: u64, timeout: Duration) -> u64 {
        self.shared.wait_durable(offset, timeout)
    }

    /// Why the writer stopped, if it did; appends fail from then on and the log must be reopened.
    pub fn stopped(&self) -> Option<String> {
        self.shared.stopped()
    }

    /// A reader positioned at `from` (which must be at least `first_offset()`).
    pub fn reader(&self, from: u64) -> Result<LogReader> {
        LogReader::new(Arc::clone(&self.shared), from)
    }

    /// The offset `target` has applied up to (0: nothing yet), or `None` if it has no cursor.
    pub fn cursor(&self, target: &str) -> Option<u64> {
        lock(&self.cursors).get(target).and_then(SlotFile::value)
    }

    /// Every cursor, by target name.
    pub fn cursors(&self) -> BTreeMap<String, u64> {
        lock(&self.cursors).iter().filter_map(|(name, slot)| Some((name.clone(), slot.value()?))).collect()
    }

    /// Durably records that `target` has applied everything up to `offset`. The offset may go back
    /// (a rewind) but never beyond the durable log.
    pub fn store_cursor(&self, target: &str, offset: u64) -> Result<()> {
        check_name(target)?;
        let last = self.durable_offset();
        if offset > last {
            return Err(Error::CursorBeyondLog { target: target.to_owned(), cursor: offset, last });
        }
        let mut cursors = lock(&self.cursors);
        let slot = cursors.entry(target.to_owned()).or_insert_with(|| {
            SlotFile::new(cursor_path(&self.shared.paths.cursors_dir, target), CURSOR_MAGIC)
        });
        slot.store(self.shared.fs.as_ref(), offset, (self.shared.options.clock)())
    }

    /// Removes a target's cursor file (the target is gone from the configuration).
    pub fn remove_cursor(&self, target: &str) -> Result<()> {
        check_name(target)?;
        let mut cursors = lock(&self.cursors);
        if let Some(slot) = cursors.remove(target) {
            self.shared.fs.remove_file(&slot.path).at(&slot.path)?;
            self.shared.fs.sync_dir(&self.shared.paths.cursors_dir).at(&self.shared.paths.cursors_dir)?;
        }
        Ok(())
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub(crate) fn start_slot(&self) -> MutexGuard<'_, SlotFile> {
        lock(&self.start)
    }

    /// Stops accepting appends, writes what is queued, and stops the writer thread.
    pub fn close(&self) -> Result<()> {
        lock(&self.shared.queue).closing = true;
        self.shared.work.notify_all();
        self.shared.room.notify_all();
        if let Some(handle) = lock(&self.writer).take() {
            let _ = handle.join();
        }
        match self.shared.stopped() {
            Some(reason) => Err(Error::Stopped { reason }),
            None => Ok(()),
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Validates an append call and returns its encoded size.
fn check_records(records: &[AppendRecord]) -> Result<usize> {
    let mut bytes = 0usize;
    for record in records {
        if record.kind == 0 || record.kind > KIND_USER_MAX {
            return Err(Error::InvalidKind { kind: record.kind });
        }
        if record.payload.len() > RECORD_PAYLOAD_BYTES_MAX {
            return Err(Error::RecordTooLarge { bytes: record.payload.len(), max: RECORD_PAYLOAD_BYTES_MAX });
        }
        bytes += FRAME_HEADER_BYTES + record.payload.len();
    }
    if bytes > BATCH_BYTES_MAX {
        return Err(Error::BatchTooLarge { bytes, max: BATCH_BYTES_MAX });
    }
    Ok(bytes)
}

/// Reads every cursor file; a torn one or one beyond the log is an error.
/// Takes the data directory's lock (`Error::Locked` while another process holds it).
pub(crate) fn lock_data_dir(fs: &dyn Fs, paths: &Paths) -> Result<Box<dyn LockGuard>> {
    fs.try_lock(&paths.lock).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => Error::Locked { path: paths.data_dir.clone() },
        _ => Error::io(&paths.lock, e),
    })
}

/// Holds a data directory's lock without opening the log, for changes beside it that a node
/// must read whole at its start (a target's pause or pending rewind): while this is held, no node
/// starts; once it is dropped, a node that starts sees the change.
pub struct DataDirLock {
    _guard: Box<dyn LockGuard>,
}

impl std::fmt::Debug for DataDirLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataDirLock")
    }
}

impl DataDirLock {
    pub fn take(fs: &dyn Fs, data_dir: &Path) -> Result<DataDirLock> {
        let paths = Paths::new(data_dir);
        fs.create_dir_all(&paths.data_dir).at(&paths.data_dir)?;
        Ok(DataDirLock { _guard: lock_data_dir(fs, &paths)? })
    }
}

pub(crate) fn load_cursors(
    fs: &dyn Fs,
    paths: &Paths,
    last_offset: u64,
) -> Result<BTreeMap<String, SlotFile>> {
    let mut cursors = BTreeMap::new();
    let names = match fs.read_dir(&paths.cursors_dir) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(cursors),
        Err(e) => return Err(Error::io(&paths.cursors_dir, e)),
    };
    for name in names {
        let Some(target) = name.strip_suffix(".cursor") else { continue };
        let slot = SlotFile::load(fs, cursor_path(&paths.cursors_dir, target), CURSOR_MAGIC)?;
        if let Some(cursor) = slot.value().filter(|&c| c > last_offset) {
            return Err(Error::CursorBeyondLog { target: target.to_owned(), cursor, last: last_offset });
        }
        cursors.insert(target.to_owned(), slot);
    }
    Ok(cursors)
}

/// The log opened read-only beside (or without) a running node: a snapshot of what was durable at
/// open time, plus what `refresh` finds later. Changes nothing on disk and takes no lock.
pub struct LogView {
    shared: Arc<Shared>,
    cursors: BTreeMap<String, u64>,
    notes: Vec<String>,
}

impl std::fmt::Debug for LogView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogView").field("data_dir", &self.shared.paths.data_dir).finish_non_exhaustive()
    }
}

impl LogView {
    pub fn open(fs: Arc<dyn Fs>, data_dir: &Path) -> Result<LogView> {
        let paths = Paths::new(data_dir);
        let recovered = recover(fs.as_ref(), &paths, Mode::ReadOnly, 0)?;
        let segments = recovered.segments;
        let start = recovered.start.value().or(segments.first().map(|s| s.base_offset)).unwrap_or(1);
        let last = segments.last().map_or(start - 1, |s| s.meta().last_offset);
        // A writer may advance a cursor past what this snapshot holds: no error here, that is the
        // node's check.
        let cursors = load_cursors(fs.as_ref(), &paths, u64::MAX)?
            .into_iter()
            .filter_map(|(name, slot)| Some((name, slot.value()?)))
            .collect();
        let shared = Arc::new(Shared::new(fs, paths, LogOptions::default(), segments, start));
        debug_assert_eq!(shared.durable_offset(), last);
        Ok(LogView { shared, cursors, notes: recovered.notes })
    }

    pub fn durable_offset(&self) -> u64 {
        self.shared.durable_offset()
    }
    pub fn first_offset(&self) -> u64 {
        self.shared.start_offset.load(Ordering::Acquire)
    }
    pub fn cursors(&self) -> &BTreeMap<String, u64> {
        &self.cursors
    }
    pub fn notes(&self) -> &[String] {
        &self.notes
    }
    pub fn reader(&self, from: u64) -> Result<LogReader> {
        LogReader::new(Arc::clone(&self.shared), from)
    }
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Picks up what a running writer made durable since the view was opened (complete groups in the
    /// newest segment, new segments); readers of this view then see it. Returns the new durable offset.
    pub fn refresh(&self) -> Result<u64> {
        let shared = &self.shared;
        loop {
            let newest = shared.segments.read().unwrap_or_else(|e| e.into_inner()).last().cloned();
            if let Some(segment) = &newest {
                if !segment.meta().sealed {
                    let file_len = segment.file().len().at(&segment.path)?;
                    let meta = segment.meta().clone();
                    let scan = scan_groups(segment.file(), segment.salt, meta, file_len).at(&segment.path)?;
                    if let Some(Stop::Misplaced { position, expected, reason }) = scan.stop {
                        let path = segment.path.clone();
                        return Err(Error::Corrupt { segment: path, position, offset: expected, reason });
                    }
                    let sealed = scan.committed.sealed;
                    *segment.meta() = scan.committed;
                    if !sealed {
                        break;
                    }
                    segment.release_file();
                }
            }
            let next_base = newest.map_or(self.first_offset(), |s| s.meta().last_offset + 1);
            let path = shared.paths.log_dir.join(crate::format::segment_file_name(next_base));
            if !shared.fs.exists(&path) {
                break;
            }
            let file = shared.fs.open(&path, crate::fs::OpenMode::Read).at(&path)?;
            let file_len = file.len().at(&path)?;
            let header = crate::recovery::read_header(file.as_ref(), &path, next_base, file_len)?;
            let segment = Segment::new(header, path, file, crate::segment::SegmentMeta::empty(next_base));
            shared.push_segment(Arc::new(segment));
        }
        let durable =
            shared.segments.read().unwrap_or_else(|e| e.into_inner()).last().map(|s| s.meta().last_offset);
        if let Some(durable) = durable.filter(|&d| d > shared.durable_offset()) {
            shared.publish_durable(durable);
        }
        Ok(shared.durable_offset())
    }
}
