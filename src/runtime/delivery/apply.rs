//! Applying a batch: rate limit, retries of transient errors with backoff (state `retrying`), and
//! `on_error` for permanent ones (pause until resumed, or move the item at fault to the DLQ).

use super::backoff::Backoff;
use super::collapse::collapse;
use super::handle::{Command, RunState};
use super::worker::{Woken, Worker};
use super::{Batch, Item, Target, TargetError};
use crate::config::OnError;
use crate::record::{DeadLetter, FieldError};
use crate::runtime::engine::Record;
use std::time::Duration;

impl<T: Target> Worker<T> {
    /// Remixes and applies one run of records, then stores the cursor. `false` if interrupted.
    pub(super) async fn deliver(&mut self, records: Vec<Record>) -> bool {
        let first_offset = records[0].offset;
        let last_offset = records.last().expect("non-empty").offset;
        let mut items = Vec::with_capacity(records.len());
        let mut rejected = Vec::new();
        for record in &records {
            match super::remix_out::remix_out(&self.outputs, self.common.truncate, record) {
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
        if self.target.capabilities().collapse {
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
        self.applied_through = last_offset;
        match self.store_cursor(self.durable_through()).await {
            Ok(()) => true,
            Err(e) => {
                self.set(RunState::Failed, Some(e.to_string()));
                false
            }
        }
    }

    /// The offset the cursor may reach: what was applied, below anything the target still holds.
    pub(super) fn durable_through(&self) -> u64 {
        match self.target.held_from() {
            Some(first) => self.applied_through.min(first.saturating_sub(1)).max(self.cursor()),
            None => self.applied_through.max(self.cursor()),
        }
    }

    /// Gives a target that holds items a chance to seal them by age while the log is quiet, then
    /// advances the cursor over what it made durable.
    pub(super) async fn idle(&mut self) {
        if self.target.held_from().is_none() {
            return;
        }
        match self.target.idle().await {
            Ok(()) => {
                let through = self.durable_through();
                if through > self.cursor() {
                    if let Err(e) = self.store_cursor(through).await {
                        self.set(RunState::Failed, Some(e.to_string()));
                    }
                }
                if self.shared.lock().unwrap_or_else(|e| e.into_inner()).state == RunState::Retrying {
                    self.set(RunState::Running, None);
                }
            }
            Err(error) => {
                metrics::counter!("remix_target_errors_total", "target" => self.common.name.clone())
                    .increment(1);
                tracing::warn!(target = %self.common.name, "{error}");
                self.set(RunState::Retrying, Some(error.to_string()));
            }
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
        let mut backoff = Backoff::default();
        loop {
            if batch.items.is_empty() {
                return true;
            }
            match self.target.apply(&batch).await {
                Ok(()) => {
                    if backoff.attempt() > 0
                        || self.shared.lock().unwrap_or_else(|e| e.into_inner()).state != RunState::Running
                    {
                        self.set(RunState::Running, None);
                    }
                    return true;
                }
                Err(error @ TargetError::Transient { .. }) => {
                    if !self.back_off(&mut backoff, error).await {
                        return false;
                    }
                }
                Err(TargetError::Permanent { item, message, .. }) => {
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

    /// Writes `item` to the DLQ with `message`, retrying (with backoff, keeping the message) while
    /// the DLQ's log cannot accept it. `false`: interrupted by shutdown, rewind or pause.
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
        let mut backoff = Backoff::default();
        loop {
            match self.context.dead_letters.append(vec![letter.clone()]).await {
                Ok(_) => return true,
                Err(e) => {
                    let error = TargetError::transient(format!("cannot write the dead letter: {e}"));
                    if !self.back_off(&mut backoff, error).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Sleeps for the next backoff step in state `retrying`. `false`: shutdown or a command that
    /// changes the position arrived.
    pub(super) async fn back_off(&mut self, backoff: &mut Backoff, error: TargetError) -> bool {
        metrics::counter!("remix_target_errors_total", "target" => self.common.name.clone()).increment(1);
        let delay = backoff.next_delay_ms();
        self.set(RunState::Retrying, Some(error.to_string()));
        tracing::warn!(target = %self.common.name, attempt = backoff.attempt(), delay_ms = delay, "{error}");
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
}
