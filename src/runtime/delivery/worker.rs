//! One worker per target: read from the cursor, remix out, batch, rate-limit, apply with retries,
//! then advance the cursor. Control (pause, resume, rewind) arrives on a bounded channel.
//!
//! Invariants: the cursor is stored only after the target confirmed the batch (`Ok` from `apply`);
//! items of one key reach the target in log order; a target's failure only ever stops its own worker.

use super::collapse::collapse;
use super::state::TargetState;
use super::{Batch, Fields, Item, Target, TargetError};
use crate::config::{OnError, RateLimit, TargetCommon, TruncatePolicy};
use crate::mapping::Mapping;
use crate::record::{ChangeBody, DeadLetter, FieldError, Op, KIND_DEAD_LETTER};
use crate::runtime::ingest::{Appender, Indexes};
use governor::Quota;
use remix_storage::{AppendRecord, Log, LogReader, Record};
use serde::Serialize;
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How long a worker waits for the first record of a batch before looking at its commands again.
const IDLE_POLL_MS: u64 = 250;
/// Backoff for transient errors: doubles from the base to the cap, with full jitter.
const BACKOFF_BASE_MS: u64 = 100;
const BACKOFF_MAX_MS: u64 = 30_000;
/// Control commands waiting for a worker.
const COMMANDS_MAX: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Paused,
    Retrying,
    Failed,
}

impl RunState {
    const ALL: [RunState; 4] = [RunState::Running, RunState::Paused, RunState::Retrying, RunState::Failed];

    /// The name `remix target list` and the `state` label of `remix_target_state` show.
    fn label(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Retrying => "retrying",
            RunState::Failed => "failed",
        }
    }
}

/// Sets `remix_target_state{target, state}`: 1 for the target's state, 0 for the others.
fn publish_state(target: &str, state: RunState) {
    for s in RunState::ALL {
        let value = if s == state { 1.0 } else { 0.0 };
        metrics::gauge!("remix_target_state", "target" => target.to_owned(), "state" => s.label()).set(value);
    }
}

/// What `remix target list` shows of a target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetStatus {
    pub name: String,
    pub kind: String,
    pub state: RunState,
    pub cursor: u64,
    pub lag_records: u64,
    pub lag_seconds: f64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewindTo {
    Offset(u64),
    /// Milliseconds since the epoch: re-deliver every record at least this recent.
    Time(u64),
    Start,
}

#[derive(Debug)]
enum Command {
    Pause(oneshot::Sender<()>),
    Resume(oneshot::Sender<()>),
    Rewind(RewindTo, oneshot::Sender<Result<u64, String>>),
}

#[derive(Debug, Clone)]
struct Shared {
    state: RunState,
    cursor: u64,
    last_error: Option<String>,
    /// Timestamp of the oldest record not yet applied, while there is one.
    pending_since_ms: Option<u64>,
}

/// The node's handle on a running worker.
#[derive(Debug, Clone)]
pub struct TargetHandle {
    pub name: String,
    pub kind: &'static str,
    shared: Arc<Mutex<Shared>>,
    commands: mpsc::Sender<Command>,
    log: Arc<Log>,
}

impl TargetHandle {
    pub fn status(&self) -> TargetStatus {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let lag_records = self.log.durable_offset().saturating_sub(shared.cursor);
        // A worker that is not reading (paused, failed) knows no pending record: ask the log for the
        // oldest one not applied yet, so a waiting backlog never shows as 0 seconds of lag.
        let pending_since = match (lag_records, shared.pending_since_ms) {
            (0, _) => None,
            (_, Some(since)) => Some(since),
            (_, None) => self
                .log
                .reader(shared.cursor + 1)
                .and_then(|mut reader| reader.try_next())
                .ok()
                .flatten()
                .map(|record| record.timestamp_ms),
        };
        let lag_seconds =
            pending_since.map_or(0.0, |since| crate::time::now_ms().saturating_sub(since) as f64 / 1000.0);
        TargetStatus {
            name: self.name.clone(),
            kind: self.kind.to_owned(),
            state: shared.state,
            cursor: shared.cursor,
            lag_records,
            lag_seconds,
            last_error: shared.last_error.clone(),
        }
    }

    async fn send<R>(&self, make: impl FnOnce(oneshot::Sender<R>) -> Command) -> anyhow::Result<R> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| anyhow::anyhow!("target '{}' has stopped", self.name))?;
        answer.await.map_err(|_| anyhow::anyhow!("target '{}' has stopped", self.name))
    }

    pub async fn pause(&self) -> anyhow::Result<()> {
        self.send(Command::Pause).await
    }

    pub async fn resume(&self) -> anyhow::Result<()> {
        self.send(Command::Resume).await
    }

    /// Rewinds and returns the offset the target was rewound to (its cursor).
    pub async fn rewind(&self, to: RewindTo) -> anyhow::Result<u64> {
        self.send(|reply| Command::Rewind(to, reply)).await?.map_err(|e| anyhow::anyhow!(e))
    }
}

/// What a worker needs besides its target.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    pub log: Arc<Log>,
    /// The dead-letter log's appender.
    pub dlq: Appender,
    pub indexes: Arc<Indexes>,
    pub data_dir: PathBuf,
    pub shutdown: watch::Receiver<bool>,
}

/// Starts the worker of one target.
pub fn spawn<T: Target>(
    target: T,
    kind: &'static str,
    start: crate::connector::TargetStart<'_>,
) -> (TargetHandle, tokio::task::JoinHandle<()>) {
    let crate::connector::TargetStart { config, common, worker: context } = start;
    let outputs: BTreeMap<String, Mapping> = config
        .target(&common.name)
        .map(|t| {
            t.outputs().into_iter().map(|(model, mapping)| (model.to_owned(), mapping.clone())).collect()
        })
        .unwrap_or_default();
    let (commands, receiver) = mpsc::channel(COMMANDS_MAX);
    let cursor = context.log.cursor(&common.name).unwrap_or(0);
    let state = RunState::Running;
    let shared = Arc::new(Mutex::new(Shared { state, cursor, last_error: None, pending_since_ms: None }));
    // Published from the start: a target that never changes state has its series too.
    publish_state(&common.name, state);
    let handle = TargetHandle {
        name: common.name.clone(),
        kind,
        shared: Arc::clone(&shared),
        commands,
        log: Arc::clone(&context.log),
    };
    let limiter = common.rate_limit.map(Limiter::new);
    let worker =
        Worker { target, common, outputs, context, shared, commands: receiver, limiter, paused: false };
    let task = tokio::spawn(worker.run());
    (handle, task)
}

/// The target's rate limit: a token bucket of `burst` objects refilled at `records_per_second`.
#[derive(Debug)]
struct Limiter {
    governor: governor::DefaultDirectRateLimiter,
    /// The bucket's size: one wait asks for at most this many tokens (governor refuses more).
    burst: NonZeroU32,
}

impl Limiter {
    fn new(limit: RateLimit) -> Limiter {
        let per_second =
            NonZeroU32::new(limit.records_per_second.clamp(1, u32::MAX as u64) as u32).expect("clamped");
        let burst = NonZeroU32::new(limit.burst.clamp(1, u32::MAX as u64) as u32).expect("clamped");
        Limiter {
            governor: governor::RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
            burst,
        }
    }

    /// Returns when `objects` more objects may go to the target, waiting for at most the burst at
    /// a time.
    async fn until_ready(&self, objects: usize) {
        let mut left = u32::try_from(objects).expect("a batch holds fewer than 2^32 objects");
        while left > 0 {
            let chunk = NonZeroU32::new(left.min(self.burst.get())).expect("non-zero");
            self.governor.until_n_ready(chunk).await.expect("a wait asks for at most the burst");
            left -= chunk.get();
        }
    }
}

struct Worker<T: Target> {
    target: T,
    common: TargetCommon,
    outputs: BTreeMap<String, Mapping>,
    context: WorkerContext,
    shared: Arc<Mutex<Shared>>,
    commands: mpsc::Receiver<Command>,
    limiter: Option<Limiter>,
    paused: bool,
}

/// How a wait ended.
enum Woken {
    Shutdown,
    Command(Command),
    Timeout,
}

impl<T: Target> Worker<T> {
    fn name(&self) -> &str {
        &self.common.name
    }

    fn set(&self, state: RunState, error: Option<String>) {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.state = state;
        if error.is_some() || state == RunState::Running {
            shared.last_error = error.or(shared.last_error.take().filter(|_| state != RunState::Running));
        }
        drop(shared);
        publish_state(&self.common.name, state);
    }

    fn cursor(&self) -> u64 {
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).cursor
    }

    async fn run(mut self) {
        let Some(mut reader) = self.start().await else { return };
        loop {
            match self.step(reader).await {
                Some(next) => reader = next,
                None => return,
            }
        }
    }

    /// Opens the target, settles the cursor, carries out a pending rewind. `None`: shut down.
    async fn start(&mut self) -> Option<LogReader> {
        let local = self.cursor();
        let mut opened = None;
        let mut attempt = 0;
        while opened.is_none() {
            match self.target.open(local).await {
                Ok(cursor) => opened = Some(cursor),
                Err(error) => {
                    if !self.back_off(&mut attempt, error).await {
                        return None;
                    }
                }
            }
        }
        let cursor = self.first_cursor(opened.expect("opened"));
        let durable = self.context.log.durable_offset();
        if cursor > durable {
            let error =
                format!("the target has applied up to offset {cursor}, beyond the log's end {durable}");
            self.set(RunState::Failed, Some(error));
            self.wait_forever().await;
            return None;
        }
        if let Err(e) = self.store_cursor(cursor).await {
            self.set(RunState::Failed, Some(e.to_string()));
            return None;
        }
        let state = TargetState::load(&self.context.data_dir, self.name()).unwrap_or_default();
        self.paused = state.paused;
        if let Some(to) = state.rewind_to {
            if let Err(e) = self.rewind(RewindTo::Offset(to)).await {
                self.set(RunState::Failed, Some(e));
            }
        }
        if self.paused {
            self.set(RunState::Paused, None);
        }
        self.reader_at(self.cursor() + 1).await
    }

    /// The cursor to start from, given the target's own. A target that has never applied anything
    /// (cursor 0, no cursor file) on a log whose start retention has moved begins at that start:
    /// the records before it are gone for every target added from now on. A target that had a
    /// cursor and fell behind is not moved: it fails until it is rewound (nothing skipped silently).
    fn first_cursor(&self, cursor: u64) -> u64 {
        let first_offset = self.context.log.first_offset();
        if cursor > 0 || first_offset <= 1 || self.context.log.cursor(self.name()).is_some() {
            return cursor;
        }
        tracing::warn!(target = %self.name(), first_offset,
            "a new target starts at the log's first offset: retention removed the {} records before it",
            first_offset - 1);
        first_offset - 1
    }

    async fn reader_at(&mut self, from: u64) -> Option<LogReader> {
        loop {
            match self.context.log.reader(from) {
                Ok(reader) => return Some(reader),
                Err(e) => {
                    self.set(RunState::Failed, Some(format!("{e}; rewind the target to continue")));
                    match self.wait(None).await {
                        Woken::Shutdown => return None,
                        Woken::Command(command) => self.handle(command).await,
                        Woken::Timeout => {}
                    }
                    if self.cursor() + 1 != from {
                        return self.context.log.reader(self.cursor() + 1).ok();
                    }
                }
            }
        }
    }

    /// Waits for a command, shutdown, or the timeout.
    async fn wait(&mut self, timeout: Option<Duration>) -> Woken {
        let mut shutdown = self.context.shutdown.clone();
        if *shutdown.borrow() {
            return Woken::Shutdown;
        }
        let sleep = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(86_400)));
        tokio::select! {
            _ = shutdown.changed() => Woken::Shutdown,
            command = self.commands.recv() => command.map_or(Woken::Shutdown, Woken::Command),
            () = sleep => Woken::Timeout,
        }
    }

    async fn wait_forever(&mut self) {
        while let Woken::Command(command) = self.wait(None).await {
            self.handle(command).await;
        }
    }

    /// One turn of the loop: commands, then one batch. `None`: shut down.
    async fn step(&mut self, mut reader: LogReader) -> Option<LogReader> {
        while let Ok(command) = self.commands.try_recv() {
            let before = self.cursor();
            self.handle(command).await;
            if self.cursor() != before {
                reader.seek(self.cursor() + 1).ok()?;
            }
        }
        if *self.context.shutdown.borrow() {
            return None;
        }
        if self.paused {
            match self.wait(None).await {
                Woken::Shutdown => return None,
                Woken::Command(command) => {
                    self.handle(command).await;
                    return self.reader_at(self.cursor() + 1).await;
                }
                Woken::Timeout => return Some(reader),
            }
        }
        let (reader, records) = match self.read(reader).await {
            Ok(read) => read,
            Err(e) => {
                self.set(RunState::Failed, Some(e.to_string()));
                self.wait_forever().await;
                return None;
            }
        };
        if records.is_empty() {
            self.shared.lock().unwrap_or_else(|e| e.into_inner()).pending_since_ms = None;
            return Some(reader);
        }
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).pending_since_ms =
            Some(records[0].timestamp_ms);
        if !self.deliver(records).await {
            // Shut down, or rewound/paused mid-delivery: continue from the cursor.
            if *self.context.shutdown.borrow() {
                return None;
            }
            return self.reader_at(self.cursor() + 1).await;
        }
        Some(reader)
    }

    /// Reads up to `records_max` durable records, waiting briefly for the first and at most the
    /// linger time for the rest.
    async fn read(&self, mut reader: LogReader) -> remix_storage::Result<(LogReader, Vec<Record>)> {
        let records_max = self.common.batch.records_max;
        let linger = self.common.batch.linger;
        tokio::task::spawn_blocking(move || {
            let mut records = Vec::new();
            let first = reader.next_timeout(Duration::from_millis(IDLE_POLL_MS))?;
            let Some(first) = first else { return Ok((reader, records)) };
            records.push(first);
            let deadline = std::time::Instant::now() + linger;
            while records.len() < records_max {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match reader.try_next()? {
                    Some(record) => records.push(record),
                    None if left.is_zero() => break,
                    None => match reader.next_timeout(left)? {
                        Some(record) => records.push(record),
                        None => break,
                    },
                }
            }
            Ok((reader, records))
        })
        .await
        .expect("the read task does not panic")
    }

    /// Remixes and applies one run of records, then stores the cursor. `false` if interrupted.
    async fn deliver(&mut self, records: Vec<Record>) -> bool {
        let first_offset = records[0].offset;
        let last_offset = records.last().expect("non-empty").offset;
        let mut items = Vec::with_capacity(records.len());
        let mut rejected = Vec::new();
        for record in &records {
            match self.remix_out(record) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => {}
                Err((item, errors)) => rejected.push((item, errors)),
            }
        }
        for (change, errors) in rejected {
            let message =
                errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect::<Vec<_>>().join("; ");
            // With `pause`, a resume re-reads the record: remix out fails the same way until the
            // configuration is fixed (a restart) or the target is rewound past it; nothing is skipped.
            if !self.permanent_failure(&change, message).await || self.common.on_error == OnError::Pause {
                return false;
            }
        }
        if T::COLLAPSE {
            items = collapse(items);
        }
        let batch = Batch { first_offset, last_offset, items };
        if !self.rate_limit(batch.items.len()).await {
            return false;
        }
        if !self.apply_with_retries(batch).await {
            return false;
        }
        metrics::counter!("remix_target_delivered_total", "target" => self.common.name.clone())
            .increment(records.len() as u64);
        match self.store_cursor(last_offset).await {
            Ok(()) => true,
            Err(e) => {
                self.set(RunState::Failed, Some(e.to_string()));
                false
            }
        }
    }

    /// The item for this target, `None` when the record is not for it, or the change and its
    /// remix-out errors.
    #[allow(clippy::result_large_err)] // the error path is rare and short-lived
    fn remix_out(&self, record: &Record) -> Result<Option<Item>, (Item, Vec<FieldError>)> {
        let Some(change) = ChangeBody::decode(record.kind, &record.payload) else { return Ok(None) };
        let Some(mapping) = self.outputs.get(&change.model) else { return Ok(None) };
        if change.op == Op::Truncate && self.common.truncate == TruncatePolicy::Ignore {
            return Ok(None);
        }
        let ChangeBody { model, op, key, data, unchanged, .. } = change;
        let mut errors = Vec::new();
        let mut note = |e: Vec<crate::mapping::MappingError>| {
            errors.extend(
                e.into_iter().map(|e| FieldError { path: format!("/{}", e.field), message: e.message }),
            )
        };
        let key = match op {
            Op::Truncate => serde_json::Value::Null,
            _ if mapping.is_identity() => key,
            _ => match mapping.apply_key(&key) {
                Ok(mapped) => serde_json::Value::Object(mapped),
                Err(e) => {
                    note(e);
                    key
                }
            },
        };
        let data = match (op, data) {
            (Op::Upsert, Some(raw)) if mapping.is_identity() => Some(Fields::Raw(raw)),
            (Op::Upsert, Some(raw)) => {
                let input = serde_json::Value::Object(Fields::Raw(raw).into_map());
                match mapping.apply_partial(&input, &unchanged) {
                    Ok(mapped) => Some(Fields::Map(mapped)),
                    Err(e) => {
                        note(e);
                        let serde_json::Value::Object(data) = input else {
                            unreachable!("built as an object")
                        };
                        Some(Fields::Map(data))
                    }
                }
            }
            _ => None,
        };
        let item = Item {
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
            unchanged: mapping.map_field_names(&unchanged),
            model,
            op,
            key,
            data,
        };
        if errors.is_empty() {
            Ok(Some(item))
        } else {
            Err((item, errors))
        }
    }

    /// Waits until the rate limit lets `objects` more objects go to the target. `false`: interrupted
    /// by shutdown.
    async fn rate_limit(&mut self, objects: usize) -> bool {
        let Some(limiter) = &self.limiter else { return true };
        let mut shutdown = self.context.shutdown.clone();
        tokio::select! {
            () = limiter.until_ready(objects) => true,
            _ = shutdown.changed() => false,
        }
    }

    /// Applies until `Ok`, retrying transient errors forever and following `on_error` for permanent
    /// ones. `false`: interrupted by shutdown, rewind or pause.
    async fn apply_with_retries(&mut self, mut batch: Batch) -> bool {
        let mut attempt = 0;
        loop {
            if batch.items.is_empty() {
                return true;
            }
            match self.target.apply(&batch).await {
                Ok(()) => {
                    if attempt > 0
                        || self.shared.lock().unwrap_or_else(|e| e.into_inner()).state != RunState::Running
                    {
                        self.set(RunState::Running, None);
                    }
                    return true;
                }
                Err(error @ TargetError::Transient(_)) => {
                    if !self.back_off(&mut attempt, error).await {
                        return false;
                    }
                }
                Err(TargetError::Permanent { item, message }) => {
                    metrics::counter!("remix_target_errors_total", "target" => self.common.name.clone())
                        .increment(1);
                    match (self.common.on_error, item) {
                        (OnError::DeadLetter, Some(i)) if i < batch.items.len() => {
                            let item = batch.items.remove(i);
                            if !self.permanent_failure(&item, message).await {
                                return false;
                            }
                        }
                        (OnError::DeadLetter, _) if batch.items.len() > 1 => {
                            return self.apply_one_by_one(batch).await
                        }
                        _ => {
                            // The record at fault when the target can tell (shown while paused);
                            // otherwise the error names the batch, not a record it cannot blame.
                            let at = item.filter(|&i| i < batch.items.len());
                            let item = batch.items[at.unwrap_or(0)].clone();
                            let failed = match at {
                                None if batch.items.len() > 1 => {
                                    let (first, last) = (batch.first_offset, batch.last_offset);
                                    let error = format!("offsets {first}-{last} (batch): {message}");
                                    self.failed(&item, error, message).await
                                }
                                _ => self.permanent_failure(&item, message).await,
                            };
                            if !failed {
                                return false;
                            }
                            if self.common.on_error == OnError::DeadLetter {
                                batch.items.remove(0);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Finds the items at fault by applying them one at a time (dead_letter mode).
    async fn apply_one_by_one(&mut self, batch: Batch) -> bool {
        for item in batch.items {
            let single = Batch { first_offset: item.offset, last_offset: item.offset, items: vec![item] };
            if !Box::pin(self.apply_with_retries(single)).await {
                return false;
            }
        }
        true
    }

    /// A permanent failure of `item`: dead-letter it, or pause until resumed (then `true`: retry).
    async fn permanent_failure(&mut self, item: &Item, message: String) -> bool {
        let error = format!("offset {} ({} {}): {message}", item.offset, item.model, item.key);
        self.failed(item, error, message).await
    }

    /// [`Self::permanent_failure`], with `error` as the target's `last_error`.
    async fn failed(&mut self, item: &Item, error: String, message: String) -> bool {
        match self.common.on_error {
            OnError::DeadLetter => {
                self.set(RunState::Running, Some(error.clone()));
                self.dead_letter(item, message).await
            }
            OnError::Pause => {
                self.set(RunState::Paused, Some(error));
                let before = self.cursor();
                loop {
                    match self.wait(None).await {
                        Woken::Shutdown => return false,
                        Woken::Command(command) => {
                            let resume = matches!(command, Command::Resume(_));
                            self.handle(command).await;
                            if self.cursor() != before || self.paused {
                                return false;
                            }
                            if resume {
                                return true;
                            }
                        }
                        Woken::Timeout => {}
                    }
                }
            }
        }
    }

    async fn dead_letter(&mut self, item: &Item, message: String) -> bool {
        let letter = DeadLetter {
            source: self.common.name.clone(),
            position: item.offset.to_string(),
            model: item.model.clone(),
            route: format!("target:{}", self.common.name),
            errors: vec![FieldError { path: String::new(), message }],
            input: serde_json::json!({"op": item.op, "key": item.key, "data": item.data, "offset": item.offset}),
            op: Some(item.op),
        };
        let payload = serde_json::to_vec(&letter).expect("serializable");
        match self.context.dlq.append(vec![AppendRecord { kind: KIND_DEAD_LETTER, payload }]).await {
            Ok(appended) => {
                let entry = crate::runtime::ingest::DlqEntry {
                    id: appended.first_offset,
                    time_ms: appended.timestamp_ms,
                    letter,
                };
                self.context.indexes.add_dead_letter(entry);
                true
            }
            Err(e) => {
                let error = TargetError::Transient(format!("cannot write the dead letter: {e}"));
                let mut attempt = 0;
                self.back_off(&mut attempt, error).await
                    && Box::pin(self.dead_letter(item, String::new())).await
            }
        }
    }

    /// Sleeps for the next backoff step in state `retrying`. `false`: shutdown or a command that
    /// changes the position arrived.
    async fn back_off(&mut self, attempt: &mut u32, error: TargetError) -> bool {
        metrics::counter!("remix_target_errors_total", "target" => self.common.name.clone()).increment(1);
        let cap = BACKOFF_BASE_MS.saturating_mul(1 << (*attempt).min(16)).min(BACKOFF_MAX_MS);
        let delay = jitter(cap);
        *attempt += 1;
        self.set(RunState::Retrying, Some(error.to_string()));
        tracing::warn!(target = %self.common.name, attempt = *attempt, delay_ms = delay, "{error}");
        let before = self.cursor();
        match self.wait(Some(Duration::from_millis(delay))).await {
            Woken::Shutdown => false,
            Woken::Timeout => true,
            Woken::Command(command) => {
                self.handle(command).await;
                self.cursor() == before && !self.paused
            }
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Pause(reply) => {
                self.paused = true;
                self.persist_paused();
                self.set(RunState::Paused, None);
                let _ = reply.send(());
            }
            Command::Resume(reply) => {
                self.paused = false;
                self.persist_paused();
                self.set(RunState::Running, None);
                let _ = reply.send(());
            }
            Command::Rewind(to, reply) => {
                let result = self.rewind(to).await;
                let _ = reply.send(result);
            }
        }
    }

    fn persist_paused(&self) {
        let mut state = TargetState::load(&self.context.data_dir, self.name()).unwrap_or_default();
        state.paused = self.paused;
        if let Err(e) = state.store(&self.context.data_dir, self.name()) {
            tracing::error!(target = %self.name(), "cannot persist the paused state: {e}");
        }
    }

    async fn rewind(&mut self, to: RewindTo) -> Result<u64, String> {
        let log = &self.context.log;
        let offset = match to {
            RewindTo::Offset(offset) => offset.min(log.durable_offset()),
            RewindTo::Start => log.first_offset().saturating_sub(1),
            RewindTo::Time(ms) => log.offset_at_time(ms).map_err(|e| e.to_string())?.saturating_sub(1),
        };
        let offset = offset.max(log.first_offset().saturating_sub(1));
        let effective = self.target.rewind(offset).await.map_err(|e| e.to_string())?;
        self.store_cursor(effective).await.map_err(|e| e.to_string())?;
        let mut state = TargetState::load(&self.context.data_dir, self.name()).unwrap_or_default();
        if state.rewind_to.take().is_some() {
            state.store(&self.context.data_dir, self.name()).map_err(|e| e.to_string())?;
        }
        if self.shared.lock().unwrap_or_else(|e| e.into_inner()).state == RunState::Failed {
            self.set(if self.paused { RunState::Paused } else { RunState::Running }, None);
        }
        tracing::info!(target = %self.name(), offset = effective, "rewound");
        Ok(effective)
    }

    async fn store_cursor(&self, offset: u64) -> anyhow::Result<()> {
        let log = Arc::clone(&self.context.log);
        let name = self.common.name.clone();
        tokio::task::spawn_blocking(move || log.store_cursor(&name, offset)).await??;
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.cursor = offset;
        let lag = self.context.log.durable_offset().saturating_sub(offset);
        metrics::gauge!("remix_target_lag_records", "target" => self.common.name.clone()).set(lag as f64);
        Ok(())
    }
}

/// A uniformly random delay in `[cap/2, cap]` milliseconds.
fn jitter(cap_ms: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    let half = cap_ms / 2;
    half + hasher.finish() % (cap_ms - half + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_batch_larger_than_the_burst_waits_for_its_tokens() {
        // 1,000/s with a burst of 5: 5 objects go at once, the next 45 need at least 45 ms of refill.
        // (A wait for more than the burst used to fail at once and let the batch through.)
        let limiter = Limiter::new(RateLimit { records_per_second: 1000, burst: 5 });
        let started = Instant::now();
        limiter.until_ready(50).await;
        assert!(started.elapsed() >= Duration::from_millis(44), "took {:?}", started.elapsed());
        // The bucket is empty now: even one more object waits.
        assert!(limiter.governor.check().is_err());
    }
}
