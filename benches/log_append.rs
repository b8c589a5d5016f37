//! Log append and read throughput, each next to an anchor measured in the same run (SPEC §9).
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bench cargo bench -p remix-storage --bench log_append`
//!
//! Records carry 300-byte payloads, so each is a 332-byte frame (32-byte header). A "group" is what is
//! written per `fdatasync`:
//!
//! - `raw`: the anchor. `write_all` of a buffer of exactly `N * 332` bytes to a file opened for append,
//!   then `File::sync_data`, in a loop. Counted as N records per sync, so both sides move the same
//!   bytes per `fdatasync`.
//! - `remix`: one `append_blocking` call of N records per group, waiting for each: the same per-group
//!   cost as the raw loop plus everything the log adds (queue, thread handoff, encoding, two CRCs per
//!   frame, index bookkeeping, completion). Building the `Vec<AppendRecord>` is the producer's work and
//!   is left out of the timing (its cost is printed in the summary).
//! - `log_append_concurrent`: group commit forming groups by itself, from 4 threads each appending one
//!   record at a time and waiting for it, and from one producer pipelining one-record calls (bounded
//!   by `queue_bytes_max`). The summary prints the average group the writer formed.
//! - `log_read`: 1M records read back through `Log::reader(1)` (from the page cache: just written).
//!
//! After criterion, a summary measures raw and remix again, alternating group by group (raw, remix,
//! raw, ...: this disk's fsync latency drifts with other load, so runs one after the other compare
//! badly), and prints one ratio line per group size, with both sides' cost per group in memory
//! without fdatasync (what the log itself adds). `REMIX_BENCH_SUMMARY=0` skips it.
//! Files go under `REMIX_BENCH_DIR`, else Cargo's target tmp dir (a real disk, not tmpfs).

use criterion::{Criterion, SamplingMode, Throughput};
use remix_storage::format::FRAME_HEADER_BYTES;
use remix_storage::fs::{LockGuard, OpenMode};
use remix_storage::{AppendRecord, Fs, FsFile, Log, LogOptions, OsFs};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const PAYLOAD_BYTES: usize = 300;
const FRAME_BYTES: usize = FRAME_HEADER_BYTES + PAYLOAD_BYTES;
const SEGMENT_BYTES: u64 = 128 * 1024 * 1024;
const GROUPS: [(&str, usize); 4] =
    [("4KiB", 4 << 10), ("64KiB", 64 << 10), ("256KiB", 256 << 10), ("1MiB", 1 << 20)];
const READ_RECORDS: u64 = 1_000_000;
const PRODUCER_THREADS: u64 = 4;

/// Records per group: as many whole frames as fit in the group size.
fn records_per_group(group_bytes: usize) -> usize {
    group_bytes / FRAME_BYTES
}

fn payload(i: usize) -> Vec<u8> {
    let mut p = vec![b'x'; PAYLOAD_BYTES];
    p[..8].copy_from_slice(&(i as u64).to_le_bytes());
    p
}

fn batch(n: usize) -> Vec<AppendRecord> {
    (0..n).map(|i| AppendRecord { kind: 1, payload: payload(i) }).collect()
}

fn bench_root() -> PathBuf {
    let root = std::env::var_os("REMIX_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("remix-bench"));
    std::fs::create_dir_all(&root).expect("create the bench dir");
    root
}

fn tempdir() -> tempfile::TempDir {
    tempdir_in(&bench_root())
}

fn tempdir_in(root: &Path) -> tempfile::TempDir {
    tempfile::Builder::new().prefix("log_append-").tempdir_in(root).expect("tempdir")
}

/// Where to measure what the log costs besides the disk: memory (tmpfs) if there is one, so no
/// writeback muddles it.
fn memory_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        bench_root()
    }
}

fn options() -> LogOptions {
    LogOptions { segment_bytes: SEGMENT_BYTES, ..LogOptions::default() }
}

/// A fresh log in its own directory (removed on drop, after the log).
struct Fixture {
    log: Log,
    counters: Arc<Counters>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::in_dir(tempdir(), true)
    }
    /// `sync: false` turns `sync_data` into a no-op: only to measure what the log costs besides the disk.
    fn in_dir(dir: tempfile::TempDir, sync: bool) -> Fixture {
        let counters = Arc::new(Counters::default());
        let fs = CountingFs { inner: OsFs, counters: Arc::clone(&counters), sync };
        let log = Log::open(Arc::new(fs), dir.path(), options()).expect("open log");
        Fixture { log, counters, _dir: dir }
    }
}

/// The raw anchor: one file opened for append.
struct Raw {
    file: File,
    buf: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Raw {
    fn new(records: usize) -> Raw {
        Raw::in_dir(tempdir(), records)
    }
    fn in_dir(dir: tempfile::TempDir, records: usize) -> Raw {
        let file =
            OpenOptions::new().create_new(true).append(true).open(dir.path().join("raw")).expect("raw file");
        Raw { file, buf: vec![0x5a; records * FRAME_BYTES], _dir: dir }
    }
    fn group(&mut self) {
        self.file.write_all(&self.buf).expect("raw write");
        self.file.sync_data().expect("raw fdatasync");
    }
}

/// Remix, one blocking append call per group; the batch is built outside the timed part.
fn remix_group(log: &Log, records: usize) -> Duration {
    let records = batch(records);
    let started = Instant::now();
    log.append_blocking(records).expect("append");
    started.elapsed()
}

fn bench_groups(c: &mut Criterion) {
    for (name, group_bytes) in GROUPS {
        let n = records_per_group(group_bytes);
        let mut group = c.benchmark_group(format!("log_append/{name}"));
        group.throughput(Throughput::Elements(n as u64));
        let mut raw = None;
        group.bench_function("raw_write_fdatasync", |b| {
            let raw = raw.get_or_insert_with(|| Raw::new(n));
            b.iter_custom(|iters| {
                let started = Instant::now();
                for _ in 0..iters {
                    raw.group();
                }
                started.elapsed()
            })
        });
        drop(raw);
        let mut fixture = None;
        group.bench_function("remix_append_blocking", |b| {
            let fixture = fixture.get_or_insert_with(Fixture::new);
            b.iter_custom(|iters| (0..iters).map(|_| remix_group(&fixture.log, n)).sum())
        });
        group.finish();
    }
}

/// `threads` threads, each appending one record at a time and waiting for it; `records` in all.
fn blocking_threads(log: &Log, threads: u64, records: u64) -> Duration {
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let mine = records / threads + u64::from(t < records % threads);
            s.spawn(move || {
                for i in 0..mine {
                    let record = AppendRecord { kind: 1, payload: payload(i as usize) };
                    log.append_blocking(vec![record]).expect("append");
                }
            });
        }
    });
    started.elapsed()
}

/// Counts completed records; `wait` blocks until `target` is reached. The callbacks run on the
/// writer thread, so `add` is one atomic add except for the last one.
#[derive(Debug)]
struct Done {
    count: AtomicU64,
    target: u64,
    reached: Mutex<bool>,
    changed: Condvar,
}

impl Done {
    fn new(target: u64) -> Done {
        Done { count: AtomicU64::new(0), target, reached: Mutex::new(false), changed: Condvar::new() }
    }
    fn add(&self, n: u64) {
        if self.count.fetch_add(n, Ordering::AcqRel) + n == self.target {
            *self.reached.lock().expect("lock") = true;
            self.changed.notify_all();
        }
    }
    fn wait(&self) {
        let mut reached = self.reached.lock().expect("lock");
        while !*reached {
            reached = self.changed.wait(reached).expect("lock");
        }
    }
}

/// One producer issuing one-record append calls without waiting; the queue bound keeps at most
/// `queue_bytes_max` in flight. Returns when all `records` are durable.
fn pipelined(log: &Log, records: u64) -> Duration {
    let done = Arc::new(Done::new(records));
    let started = Instant::now();
    for i in 0..records {
        let record = AppendRecord { kind: 1, payload: payload(i as usize) };
        let done = Arc::clone(&done);
        log.append(vec![record], move |result| {
            result.expect("append");
            done.add(1);
        })
        .expect("append");
    }
    if records > 0 {
        done.wait();
    }
    started.elapsed()
}

fn bench_concurrent(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_append_concurrent");
    group.throughput(Throughput::Elements(1));
    let mut fixture = None;
    group.bench_function("remix_4_threads_blocking_1_record", |b| {
        let fixture = fixture.get_or_insert_with(Fixture::new);
        b.iter_custom(|iters| blocking_threads(&fixture.log, PRODUCER_THREADS, iters))
    });
    let mut fixture = None;
    group.bench_function("remix_pipelined_1_record", |b| {
        let fixture = fixture.get_or_insert_with(Fixture::new);
        b.iter_custom(|iters| pipelined(&fixture.log, iters))
    });
    group.finish();
}

/// A log holding READ_RECORDS records, appended in 1 MiB groups.
fn read_fixture() -> Fixture {
    let fixture = Fixture::new();
    let n = records_per_group(1 << 20) as u64;
    let mut appended = 0;
    while appended < READ_RECORDS {
        let take = n.min(READ_RECORDS - appended);
        fixture.log.append_blocking(batch(take as usize)).expect("append");
        appended += take;
    }
    fixture
}

/// Reads the whole log; returns (records, payload bytes, elapsed).
fn read_all(log: &Log) -> (u64, u64, Duration) {
    let started = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    for record in log.reader(1).expect("reader") {
        let record = record.expect("read");
        records += 1;
        bytes += record.payload.len() as u64;
    }
    (records, bytes, started.elapsed())
}

fn bench_read(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_read");
    group.throughput(Throughput::Elements(READ_RECORDS)).sampling_mode(SamplingMode::Flat);
    let mut fixture = None;
    group.bench_function("reader_1M_records_300B", |b| {
        let fixture = fixture.get_or_insert_with(read_fixture);
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let (records, _, elapsed) = read_all(&fixture.log);
                    assert_eq!(records, READ_RECORDS);
                    elapsed
                })
                .sum()
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------------
// Summary: raw and remix alternating group by group (the disk's fsync latency drifts with other
// load, so runs one after the other compare badly), in the same run as criterion.

/// Time spent on each size.
const SUMMARY_PER_SIZE: Duration = Duration::from_secs(4);

/// Accumulates the timed part of groups.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    groups: u64,
    timed: Duration,
}

impl Tally {
    fn add(&mut self, timed: Duration) {
        self.groups += 1;
        self.timed += timed;
    }
    fn per_group(&self) -> Duration {
        self.timed / self.groups.max(1) as u32
    }
    fn records_per_second(&self, records_per_group: usize) -> f64 {
        (self.groups * records_per_group as u64) as f64 / self.timed.as_secs_f64()
    }
}

fn rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2}M", per_second / 1e6)
    } else {
        format!("{:.0}k", per_second / 1e3)
    }
}

/// What remix adds to a group when the disk costs nothing: both sides in memory (tmpfs) and without
/// fdatasync, 64 MiB each in alternating chunks. Returns the time per group of each.
fn cpu_overhead(n: usize) -> (Duration, Duration) {
    let mut raw = Raw::in_dir(tempdir_in(&memory_root()), n);
    let fixture = Fixture::in_dir(tempdir_in(&memory_root()), false);
    let groups_per_chunk = (16 << 20) / (n * FRAME_BYTES);
    let (mut raw_time, mut remix_time) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..4 {
        for _ in 0..groups_per_chunk {
            let started = Instant::now();
            raw.file.write_all(&raw.buf).expect("raw write");
            raw_time += started.elapsed();
        }
        for _ in 0..groups_per_chunk {
            remix_time += remix_group(&fixture.log, n);
        }
    }
    let groups = 4 * groups_per_chunk as u32;
    (raw_time / groups, remix_time / groups)
}

fn summary() {
    println!();
    println!(
        "== summary: {PAYLOAD_BYTES} B payloads ({FRAME_BYTES} B frames); raw and remix alternating group by \
         group for {SUMMARY_PER_SIZE:?} per size =="
    );
    println!("bench files under {}", bench_root().display());
    for (name, group_bytes) in GROUPS {
        let n = records_per_group(group_bytes);
        let mut raw = Raw::new(n);
        let fixture = Fixture::new();
        let (mut raw_tally, mut remix_tally) = (Tally::default(), Tally::default());
        let started = Instant::now();
        while started.elapsed() < SUMMARY_PER_SIZE {
            let raw_started = Instant::now();
            raw.group();
            raw_tally.add(raw_started.elapsed());
            remix_tally.add(remix_group(&fixture.log, n));
        }
        let build_started = Instant::now();
        for _ in 0..100 {
            std::hint::black_box(batch(n));
        }
        let build = build_started.elapsed() / 100;
        let (raw_rate, remix_rate) = (raw_tally.records_per_second(n), remix_tally.records_per_second(n));
        let (raw_write, remix_nosync) = cpu_overhead(n);
        println!(
            "group {name:>6}: remix {:>6} rec/s, raw {:>6} rec/s, ratio {:>3.0}%  | {n:>4} records = {:>7} B per \
             fdatasync; per group: raw {:>8.1?}, remix {:>8.1?}; in memory (tmpfs, no fdatasync): raw write {:>7.1?}, remix {:>7.1?}; \
             building the batch (not timed) {build:.1?}",
            rate(remix_rate),
            rate(raw_rate),
            100.0 * remix_rate / raw_rate,
            n * FRAME_BYTES,
            raw_tally.per_group(),
            remix_tally.per_group(),
            raw_write,
            remix_nosync,
        );
    }
    type Run = fn(&Log) -> Duration;
    let runs: [(&str, Run); 2] = [
        ("4 threads x append_blocking(1 record)", |log| blocking_threads(log, PRODUCER_THREADS, 20_000)),
        ("1 producer, pipelined 1-record appends", |log| pipelined(log, 1_000_000)),
    ];
    for (name, run) in runs {
        let fixture = Fixture::new();
        let (syncs_before, written_before) = fixture.counters.snapshot();
        let elapsed = run(&fixture.log);
        let (syncs, written) = fixture.counters.snapshot();
        let records = fixture.log.durable_offset();
        let (syncs, written) = (syncs - syncs_before, written - written_before);
        println!(
            "{name}: {} rec/s, {syncs} fdatasyncs, average group {:.1} records / {} B",
            rate(records as f64 / elapsed.as_secs_f64()),
            records as f64 / syncs.max(1) as f64,
            written / syncs.max(1)
        );
    }
    let fixture = read_fixture();
    let (records, bytes, elapsed) = read_all(&fixture.log);
    let secs = elapsed.as_secs_f64();
    println!(
        "read: {records} records via Log::reader(1) in {elapsed:.2?}: {} rec/s, {:.0} MB/s of payload, \
         {:.0} MB/s of frames (from the page cache)",
        rate(records as f64 / secs),
        bytes as f64 / secs / 1e6,
        (records * FRAME_BYTES as u64) as f64 / secs / 1e6
    );
}

// ---------------------------------------------------------------------------------------------------
// A pass-through file system that counts fdatasyncs and bytes written (to report group sizes), and
// can skip fdatasync (to measure the log's own cost).

#[derive(Debug, Default)]
struct Counters {
    syncs: AtomicU64,
    written: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> (u64, u64) {
        (self.syncs.load(Ordering::Relaxed), self.written.load(Ordering::Relaxed))
    }
}

#[derive(Debug)]
struct CountingFs {
    inner: OsFs,
    counters: Arc<Counters>,
    sync: bool,
}

#[derive(Debug)]
struct CountingFile {
    inner: Arc<dyn FsFile>,
    counters: Arc<Counters>,
    sync: bool,
}

impl FsFile for CountingFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.counters.written.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        if !self.sync {
            return Ok(());
        }
        self.inner.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
}

impl Fs for CountingFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FsFile>> {
        let inner = self.inner.open(path, mode)?;
        Ok(Arc::new(CountingFile { inner, counters: Arc::clone(&self.counters), sync: self.sync }))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.read_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        if !self.sync {
            return Ok(());
        }
        self.inner.sync_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn try_lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        self.inner.try_lock(path)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listing_or_testing = args.iter().any(|a| a == "--list" || a == "--test" || a == "--exact");
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench_groups(&mut c);
    bench_concurrent(&mut c);
    bench_read(&mut c);
    c.final_summary();
    let wanted = std::env::var("REMIX_BENCH_SUMMARY").map_or(true, |v| v != "0");
    if wanted && !listing_or_testing {
        summary();
    }
}
