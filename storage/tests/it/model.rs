//! Model-based test of the log: random workloads of appends (some waited for, some left in flight),
//! cursor stores, retention, process death at an arbitrary file operation, full disks, failed fsyncs,
//! power loss and kill -9, run on the real `Log` over `SimFs` and checked against an in-memory model
//! after every reopen (and at every `Sync` while the log runs).
//!
//! Invariants checked:
//! - every acknowledged append survives with identical kinds and payloads, at the offsets it was given;
//!   so does everything a reopened log showed (after kill -9 it may show unacknowledged appends that
//!   reached the page cache: a later power loss must not take them back);
//! - what survives is a prefix, in offset order, of the append calls made (each whole or not at all); a
//!   call refused with `NoSpace` (only ever while the disk has a space limit) never appears, and appends
//!   succeed again once the limit is lifted; a running log shows only acknowledged appends;
//! - offsets are dense from the log's first offset to its durable offset;
//! - once an append failed with `Stopped`, every later one does too, until a reopen;
//! - a cursor never exceeds the durable offset, and after a crash holds its last acknowledged value or
//!   one stored after it whose store did not complete;
//! - the first offset only moves through retention, which removes a segment a cursor still needs only
//!   when `max_bytes` forces it, and then reports exactly the cursors that fell behind;
//! - recovery always succeeds after a crash (also when the process dies during recovery itself), and
//!   `verify` finds no problem afterwards.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use remix_storage::sim::SimFs;
use remix_storage::verify::verify;
use remix_storage::{
    AppendRecord, Appended, Error, Log, LogOptions, Record, RetentionPolicy, RetentionReport, SegmentInfo,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const SEGMENT_BYTES: u64 = 64 * 1024;
const DATA_DIR: &str = "/data";
const TARGETS: [&str; 3] = ["alpha", "beta", "gamma"];
/// Payload bytes that identify a record: its append call's id and its index in the call.
const ID_BYTES: usize = 12;
const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
enum Op {
    /// One append call of records `(kind, payload length)`; `wait` waits for its outcome.
    Append {
        records: Vec<(u8, usize)>,
        wait: bool,
    },
    /// Waits for every append in flight, then checks the running log against the model.
    Sync,
    /// Stores a cursor at `share`/255 of the durable offset, or just beyond it.
    StoreCursor {
        target: usize,
        share: u8,
        beyond: bool,
    },
    Retention {
        min_age: bool,
        max_bytes: Option<u64>,
    },
    /// The process dies at its `n + 1`th next mutating file operation.
    Die(u64),
    /// Only this many more bytes fit on the disk; `None` lifts the limit.
    Space(Option<u64>),
    FailNextSync,
    /// Closes the log, loses power (or kills the process: the page cache survives), and reopens,
    /// possibly dying during the first recovery attempt.
    Reopen {
        power_loss: bool,
        seed: u64,
        die_in_open: Option<u64>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let records = prop::collection::vec((1u8..=127, 0usize..12_000), 1..5);
    prop_oneof![
        12 => (records, any::<bool>()).prop_map(|(records, wait)| Op::Append { records, wait }),
        2 => Just(Op::Sync),
        3 => (0..TARGETS.len(), any::<u8>(), prop::bool::weighted(0.1))
            .prop_map(|(target, share, beyond)| Op::StoreCursor { target, share, beyond }),
        2 => (any::<bool>(), prop::option::of(0u64..300_000))
            .prop_map(|(min_age, max_bytes)| Op::Retention { min_age, max_bytes }),
        2 => (0u64..60).prop_map(Op::Die),
        2 => prop::option::weighted(0.6, 0u64..100_000).prop_map(Op::Space),
        1 => Just(Op::FailNextSync),
        3 => (any::<bool>(), any::<u64>(), prop::option::weighted(0.25, 0u64..40))
            .prop_map(|(power_loss, seed, die_in_open)| Op::Reopen { power_loss, seed, die_in_open }),
    ]
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(256),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("tests/regressions/model.txt"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn log_matches_model_across_crashes(ops in prop::collection::vec(op(), 1..80)) {
        let mut harness = Harness::new();
        for op in ops {
            harness.apply(op);
        }
        harness.reopen(false, 0, None);
        harness.reopen(true, 1, None);
    }
}

/// A payload that names its append call and index, with filler derived from both.
fn payload(id: u64, index: usize, len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(ID_BYTES + len);
    bytes.extend_from_slice(&id.to_le_bytes());
    bytes.extend_from_slice(&(index as u32).to_le_bytes());
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index as u64;
    bytes.extend((0..len).map(|_| {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (x >> 56) as u8
    }));
    bytes
}

fn id_of(payload: &[u8]) -> Option<(u64, u32)> {
    let id = u64::from_le_bytes(payload.get(0..8)?.try_into().ok()?);
    let index = u32::from_le_bytes(payload.get(8..12)?.try_into().ok()?);
    Some((id, index))
}

/// How an append call ended, as its callback reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ok(Appended),
    NoSpace,
    Stopped,
    Other(String),
}

impl From<remix_storage::Result<Appended>> for Outcome {
    fn from(result: remix_storage::Result<Appended>) -> Outcome {
        match result {
            Ok(appended) => Outcome::Ok(appended),
            Err(Error::NoSpace) => Outcome::NoSpace,
            Err(Error::Stopped { .. }) => Outcome::Stopped,
            Err(e) => Outcome::Other(e.to_string()),
        }
    }
}

#[derive(Default)]
struct Outcomes {
    by_id: Mutex<BTreeMap<u64, Outcome>>,
    changed: Condvar,
}

impl Outcomes {
    fn set(&self, id: u64, outcome: Outcome) {
        let previous = self.by_id.lock().unwrap().insert(id, outcome);
        assert!(previous.is_none(), "append {id} completed twice");
        self.changed.notify_all();
    }

    fn get(&self, id: u64) -> Option<Outcome> {
        self.by_id.lock().unwrap().get(&id).cloned()
    }

    fn wait_all(&self, ids: impl Iterator<Item = u64> + Clone) {
        let deadline = Instant::now() + WAIT;
        let mut by_id = self.by_id.lock().unwrap();
        while let Some(id) = ids.clone().find(|id| !by_id.contains_key(id)) {
            let now = Instant::now();
            assert!(now < deadline, "append {id} never completed");
            by_id = self.changed.wait_timeout(by_id, deadline - now).unwrap().0;
        }
    }
}

/// One append call made since the model last knew the log's contents for sure.
#[derive(Debug)]
struct Attempt {
    id: u64,
    records: Vec<AppendRecord>,
    /// `append` accepted it (its callback runs); otherwise it was refused at once.
    enqueued: bool,
    /// The disk had a space limit when it was made (or got one before it completed).
    may_run_out_of_space: bool,
}

#[derive(Debug, Default)]
struct CursorModel {
    /// The value of the last store that returned Ok.
    acked: Option<u64>,
    /// Values stored after it whose store failed: any of them may have reached the disk.
    unacked: BTreeSet<u64>,
}

impl CursorModel {
    fn allows(&self, value: Option<u64>) -> bool {
        value == self.acked || value.is_some_and(|v| self.unacked.contains(&v))
    }
}

/// What the log must hold.
#[derive(Debug)]
struct Model {
    /// The first offset as of the last retention that returned Ok (1 before any).
    first: u64,
    /// Other first offsets: the start a failed retention wrote may still take effect at the next open,
    /// until a later retention records a new start durably.
    first_candidates: BTreeSet<u64>,
    /// The last offset known durable, and every record known up to it (from `first` on).
    end: u64,
    records: BTreeMap<u64, (u8, Vec<u8>)>,
    cursors: BTreeMap<String, CursorModel>,
}

struct Harness {
    fs: SimFs,
    clock: Arc<AtomicU64>,
    log: Option<Log>,
    next_id: u64,
    attempts: Vec<Attempt>,
    outcomes: Arc<Outcomes>,
    model: Model,
    space_limited: bool,
}

impl Harness {
    fn new() -> Harness {
        let mut harness = Harness {
            fs: SimFs::new(),
            clock: Arc::new(AtomicU64::new(1_000_000)),
            log: None,
            next_id: 0,
            attempts: Vec::new(),
            outcomes: Arc::default(),
            model: Model {
                first: 1,
                first_candidates: BTreeSet::new(),
                end: 0,
                records: BTreeMap::new(),
                cursors: BTreeMap::new(),
            },
            space_limited: false,
        };
        harness.log = Some(harness.open().expect("open a new log"));
        harness
    }

    fn options(&self) -> LogOptions {
        let clock = Arc::clone(&self.clock);
        LogOptions {
            segment_bytes: SEGMENT_BYTES,
            clock: Arc::new(move || clock.fetch_add(1, Ordering::Relaxed)),
            ..LogOptions::default()
        }
    }

    fn open(&self) -> remix_storage::Result<Log> {
        Log::open(Arc::new(self.fs.clone()), Path::new(DATA_DIR), self.options())
    }

    fn log(&self) -> &Log {
        self.log.as_ref().expect("the log is open")
    }

    fn apply(&mut self, op: Op) {
        if std::env::var_os("REMIX_MODEL_TRACE").is_some() {
            eprintln!("op {op:?} (durable {:?})", self.log.as_ref().map(Log::durable_offset));
        }
        match op {
            Op::Append { records, wait } => self.append(&records, wait),
            Op::Sync => self.sync(),
            Op::StoreCursor { target, share, beyond } => self.store_cursor(TARGETS[target], share, beyond),
            Op::Retention { min_age, max_bytes } => {
                let min_age_ms = if min_age { u64::MAX } else { 0 };
                self.retention(RetentionPolicy { min_age_ms, max_bytes });
            }
            Op::Die(n) if !self.fs.is_stopped() => self.fs.set_ops_left(Some(n)),
            Op::Die(_) => {}
            Op::Space(extra) => {
                self.space_limited = extra.is_some();
                if self.space_limited {
                    self.attempts.iter_mut().for_each(|a| a.may_run_out_of_space = true);
                }
                self.fs.set_space_bytes(extra.map(|extra| self.fs.used_bytes() + extra));
            }
            Op::FailNextSync => self.fs.fail_next_sync(),
            Op::Reopen { power_loss, seed, die_in_open } => self.reopen(power_loss, seed, die_in_open),
        }
    }

    fn append(&mut self, specs: &[(u8, usize)], wait: bool) {
        let id = self.next_id;
        self.next_id += 1;
        let records: Vec<AppendRecord> = specs
            .iter()
            .enumerate()
            .map(|(i, &(kind, len))| AppendRecord { kind, payload: payload(id, i, len) })
            .collect();
        let log = self.log();
        let stopped_before = log.stopped().is_some();
        let outcomes = Arc::clone(&self.outcomes);
        let result = log.append(records.clone(), move |result| outcomes.set(id, result.into()));
        let enqueued = match result {
            Ok(()) => {
                assert!(!stopped_before, "append {id} accepted after the log stopped");
                true
            }
            Err(Error::Stopped { .. }) => {
                assert!(log.stopped().is_some(), "Stopped returned but the log does not say it stopped");
                false
            }
            Err(e) => panic!("append {id} refused: {e}"),
        };
        let may_run_out_of_space = self.space_limited;
        self.attempts.push(Attempt { id, records, enqueued, may_run_out_of_space });
        if wait && enqueued {
            self.outcomes.wait_all(std::iter::once(id));
            if self.outcomes.get(id) == Some(Outcome::Stopped) {
                assert!(self.log().stopped().is_some(), "append {id} got Stopped from a running log");
            }
        }
    }

    fn wait_in_flight(&self) {
        let ids = self.attempts.iter().filter(|a| a.enqueued).map(|a| a.id);
        self.outcomes.wait_all(ids);
    }

    /// Waits for the appends in flight and checks the running log (unless the process died: then
    /// nothing can be read until the crash).
    fn sync(&mut self) {
        self.wait_in_flight();
        if let Some(Outcome::Other(reason)) = self
            .attempts
            .iter()
            .find_map(|a| self.outcomes.get(a.id).filter(|o| matches!(o, Outcome::Other(_))))
        {
            panic!("an append failed with an unexpected error: {reason}");
        }
        if !self.fs.is_stopped() {
            self.check(false);
        }
    }

    fn store_cursor(&mut self, target: &str, share: u8, beyond: bool) {
        let log = self.log.as_ref().expect("open");
        let durable = log.durable_offset();
        let offset =
            if beyond { durable + 1 + u64::from(share % 4) } else { durable * u64::from(share) / 255 };
        let result = log.store_cursor(target, offset);
        let after = log.durable_offset();
        let cursor = self.model.cursors.entry(target.to_owned()).or_default();
        match result {
            Ok(()) => {
                assert!(offset <= after, "cursor {target} stored at {offset}, beyond the durable {after}");
                assert_eq!(log.cursor(target), Some(offset));
                cursor.acked = Some(offset);
                cursor.unacked.clear();
            }
            Err(Error::CursorBeyondLog { cursor: c, last, .. }) => {
                assert!(beyond && c == offset && last < offset, "refused cursor {offset} (durable {last})");
            }
            Err(_) => {
                cursor.unacked.insert(offset);
            }
        }
    }

    fn retention(&mut self, policy: RetentionPolicy) {
        self.sync();
        if self.fs.is_stopped() {
            return;
        }
        let log = self.log.as_ref().expect("open");
        let cursors = log.cursors();
        let lowest = cursors.values().copied().min().unwrap_or(u64::MAX);
        let first = log.first_offset();
        let before = log.stat().segments;
        let now_ms = u64::MAX;
        // The writer may still be sealing the last segment and starting the next: retention may see
        // either state, so both answers are accepted.
        let expected: BTreeSet<u64> = [before.clone(), after_roll(&before)]
            .iter()
            .map(|segments| retention_start(segments, first, lowest, &policy, now_ms))
            .collect();
        match log.apply_retention(&policy, now_ms) {
            Ok(report) => self.check_retention(&report, &before, &cursors, &policy, &expected),
            Err(_) => {
                // Died or ran out of space midway: the new start may or may not be recorded.
                self.model.first_candidates.extend(before.iter().map(|s| s.base_offset));
                self.model.first_candidates.extend(expected);
            }
        }
    }

    fn check_retention(
        &mut self,
        report: &RetentionReport,
        before: &[SegmentInfo],
        cursors: &BTreeMap<String, u64>,
        policy: &RetentionPolicy,
        expected: &BTreeSet<u64>,
    ) {
        let start = report.first_offset;
        assert!(expected.contains(&start), "retention to {start}, expected one of {expected:?}: {report:?}");
        assert_eq!(self.log().first_offset(), start);
        for segment in before.iter().filter(|s| s.base_offset < start) {
            let needed = cursors.values().any(|&c| c < segment.last_offset);
            assert!(
                !needed || policy.max_bytes.is_some(),
                "segment {} removed while a cursor needs it ({cursors:?}), without max_bytes",
                segment.base_offset
            );
            assert!(segment.sealed, "an unsealed segment was removed");
        }
        let fallen: Vec<(String, u64)> =
            cursors.iter().filter(|&(_, &c)| c + 1 < start).map(|(t, &c)| (t.clone(), c)).collect();
        assert_eq!(report.fallen_behind, fallen, "fallen_behind");
        self.model.first = start;
        if !report.removed.is_empty() {
            // A new start is recorded durably; until then a failed retention's start write may still
            // be in the page cache and take effect at the next open.
            self.model.first_candidates.clear();
            self.model.records.retain(|&offset, _| offset >= start);
        }
        let reader = self.log().reader(start - 1);
        assert!(start == 1 || matches!(reader, Err(Error::BelowStart { .. })), "{reader:?}");
    }

    /// Closes the log, crashes, reopens and checks everything.
    fn reopen(&mut self, power_loss: bool, seed: u64, die_in_open: Option<u64>) {
        drop(self.log.take());
        // The writer thread is joined: every append call has its outcome.
        self.wait_in_flight();
        let crash = |fs: &SimFs, seed: u64| if power_loss { fs.crash(seed) } else { fs.kill() };
        crash(&self.fs, seed);
        if let Some(ops) = die_in_open {
            self.fs.set_ops_left(Some(ops));
            match self.open() {
                Ok(log) => {
                    assert!(!self.fs.is_stopped(), "open succeeded although the process died during it");
                    self.log = Some(log);
                }
                Err(e) => {
                    assert!(self.fs.is_stopped() || self.space_limited, "open failed: {e}");
                    crash(&self.fs, seed.rotate_left(17));
                }
            }
        }
        if self.log.is_none() {
            self.log = Some(match self.open() {
                Ok(log) => log,
                Err(Error::Io { source, .. }) if self.space_limited && source.raw_os_error() == Some(28) => {
                    // Recovery may need space (quarantine, index): the operator frees some.
                    self.fs.set_space_bytes(None);
                    self.space_limited = false;
                    self.open().expect("open after freeing space")
                }
                Err(e) => panic!("recovery failed after a crash: {e}"),
            });
        }
        if std::env::var_os("REMIX_MODEL_TRACE").is_some() {
            let log = self.log();
            eprintln!(
                "reopened: durable {} first {} notes {:?}",
                log.durable_offset(),
                log.first_offset(),
                log.recovery_notes()
            );
            eprintln!(
                "segments {:?}",
                log.stat()
                    .segments
                    .iter()
                    .map(|s| (s.base_offset, s.last_offset, s.bytes, s.sealed))
                    .collect::<Vec<_>>()
            );
        }
        self.check(true);
        let report = verify(&self.fs, Path::new(DATA_DIR)).expect("verify runs");
        assert!(report.problems.is_empty(), "verify after reopen: {:?}", report.problems);
    }

    /// Checks the log against the model, then learns what it holds. `reopened`: right after recovery
    /// (unacknowledged appends may have survived); otherwise the log is running and shows exactly the
    /// acknowledged ones.
    fn check(&mut self, reopened: bool) {
        let log = self.log.as_ref().expect("open");
        let (first, durable) = (log.first_offset(), log.durable_offset());
        assert!(
            first == self.model.first || self.model.first_candidates.contains(&first),
            "first offset {first}, expected {} or one of {:?}",
            self.model.first,
            self.model.first_candidates
        );
        let mut records = Vec::new();
        for record in log.reader(first).expect("reader at the first offset") {
            match record {
                Ok(record) => records.push(record),
                Err(e) if !reopened && self.fs.is_stopped() => {
                    drop(e); // the process died under the reader (the writer was still rolling)
                    return;
                }
                Err(e) => panic!("read failed: {e}"),
            }
        }
        for (i, record) in records.iter().enumerate() {
            assert_eq!(record.offset, first + i as u64, "offsets are dense from the first offset");
        }
        assert_eq!(first + records.len() as u64, durable + 1, "records up to the durable offset");
        assert!(durable >= self.model.end, "durable offset {durable} below the known {}", self.model.end);
        for (&offset, (kind, payload)) in self.model.records.range(first..) {
            let record = &records[(offset - first) as usize];
            assert_eq!((record.kind, &record.payload), (*kind, payload), "record {offset} changed");
        }
        let new_from = (self.model.end + 1).max(first);
        let new = &records[(new_from - first) as usize..];
        let consumed = self.match_attempts(new, reopened);
        for record in new {
            self.model.records.insert(record.offset, (record.kind, record.payload.clone()));
        }
        self.model.end = durable;
        if reopened {
            self.attempts.clear();
        } else {
            // What was not written is gone; an append that failed fatally may still surface on reopen.
            let outcomes = &self.outcomes;
            self.attempts.retain(|a| {
                !consumed.contains(&a.id)
                    && a.enqueued
                    && !matches!(outcomes.get(a.id), Some(Outcome::NoSpace | Outcome::Ok(_)))
            });
        }
        let log = self.log.as_ref().expect("open");
        let cursors = log.cursors();
        for (target, &value) in &cursors {
            assert!(value <= durable, "cursor {target} at {value} beyond the durable offset {durable}");
            assert!(self.model.cursors.contains_key(target), "unknown cursor {target}");
        }
        for (target, model) in &self.model.cursors {
            let value = cursors.get(target).copied();
            assert!(model.allows(value), "cursor {target} is {value:?}, model {model:?}");
        }
    }

    /// Matches the records after the known end against the append calls made since, in order: they
    /// must be a prefix of them (skipping refused calls), each call whole. Returns the matched ids.
    fn match_attempts(&self, new: &[Record], reopened: bool) -> BTreeSet<u64> {
        let mut rest = new;
        let mut consumed = BTreeSet::new();
        let mut lost: Option<u64> = None;
        for attempt in &self.attempts {
            let outcome = self.outcomes.get(attempt.id);
            let here = rest.first().and_then(|r| id_of(&r.payload)).is_some_and(|(id, _)| id == attempt.id);
            if outcome == Some(Outcome::NoSpace) {
                assert!(
                    attempt.may_run_out_of_space,
                    "append {} got NoSpace without a space limit",
                    attempt.id
                );
            }
            if !attempt.enqueued || outcome == Some(Outcome::NoSpace) {
                assert!(!here, "append {} was refused ({outcome:?}) but is in the log", attempt.id);
                continue;
            }
            if !here || lost.is_some() {
                lost.get_or_insert(attempt.id);
                if let Some(Outcome::Ok(appended)) = outcome {
                    panic!("acknowledged append {} ({appended:?}) is lost", attempt.id);
                }
                continue;
            }
            let n = attempt.records.len();
            assert!(rest.len() >= n, "append {} is cut: {} of {n} records", attempt.id, rest.len());
            for (i, (record, want)) in rest.iter().zip(&attempt.records).enumerate() {
                assert_eq!(
                    (record.kind, &record.payload),
                    (want.kind, &want.payload),
                    "record {i} of append {} at offset {}",
                    attempt.id,
                    record.offset
                );
            }
            match outcome {
                Some(Outcome::Ok(appended)) => {
                    assert_eq!(
                        (appended.first_offset, appended.last_offset),
                        (rest[0].offset, rest[n - 1].offset)
                    )
                }
                other => assert!(reopened, "the running log shows append {} that got {other:?}", attempt.id),
            }
            consumed.insert(attempt.id);
            rest = &rest[n..];
        }
        if let Some(record) = rest.first() {
            panic!(
                "record {} ({:?}) does not continue the prefix of append calls (first lost: {lost:?})",
                record.offset,
                id_of(&record.payload)
            );
        }
        consumed
    }
}

/// The segments as they are once the writer finished rolling the last one (if it was due).
fn after_roll(segments: &[SegmentInfo]) -> Vec<SegmentInfo> {
    let mut segments = segments.to_vec();
    let Some(last) = segments.last_mut() else { return segments };
    let due = !last.sealed && last.records > 0 && last.bytes >= SEGMENT_BYTES;
    if !(due || last.sealed) {
        return segments;
    }
    if due {
        last.sealed = true;
        last.bytes += 32;
    }
    let base = last.last_offset + 1;
    segments.push(SegmentInfo {
        path: Default::default(),
        base_offset: base,
        last_offset: base - 1,
        records: 0,
        bytes: 64,
        sealed: false,
        first_timestamp_ms: 0,
        last_timestamp_ms: 0,
    });
    segments
}

/// The reference rule: the oldest sealed segments go (never the newest) while every cursor has passed
/// them and they are old enough, or while the log is over its byte budget.
fn retention_start(
    segments: &[SegmentInfo],
    first: u64,
    lowest_cursor: u64,
    policy: &RetentionPolicy,
    now_ms: u64,
) -> u64 {
    let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
    let mut start = first;
    for (i, segment) in segments.iter().enumerate().take(segments.len().saturating_sub(1)) {
        let applied_and_old = segment.last_offset <= lowest_cursor
            && now_ms.saturating_sub(segment.last_timestamp_ms) >= policy.min_age_ms;
        let over_budget = policy.max_bytes.is_some_and(|max| total > max);
        if !segment.sealed || !(applied_and_old || over_budget) {
            break;
        }
        total -= segment.bytes;
        start = segments[i + 1].base_offset;
    }
    start
}
