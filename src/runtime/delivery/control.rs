//! A worker's control: commands (pause, resume, rewind) and waits that a command or shutdown ends,
//! the persisted control state, and the cursor.

use super::handle::{Command, RewindError, RewindTo, RunState};
use super::worker::{Woken, Worker};
use super::Target;
use crate::runtime::state::{load_control, store_control, StateError};
use std::time::Duration;

impl<T: Target> Worker<T> {
    /// Waits for a command, shutdown, or the timeout.
    pub(super) async fn wait(&mut self, timeout: Option<Duration>) -> Woken {
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

    pub(super) async fn wait_forever(&mut self) {
        while let Woken::Command(command) = self.wait(None).await {
            self.handle(command).await;
        }
    }

    pub(super) async fn handle(&mut self, command: Command) {
        match command {
            Command::Pause(reply) => {
                self.paused = true;
                self.persist_paused().await;
                self.set(RunState::Paused, None);
                let _ = reply.send(());
            }
            Command::Resume(reply) => {
                self.paused = false;
                self.persist_paused().await;
                self.set(RunState::Running, None);
                let _ = reply.send(());
            }
            Command::Rewind(to, reply) => {
                let result = self.rewind(to).await;
                let _ = reply.send(result);
            }
        }
    }

    async fn persist_paused(&self) {
        let store = self.context.state.as_ref();
        let result = async {
            let mut control = load_control(store, self.name()).await?;
            control.paused = self.paused;
            store_control(store, self.name(), &control).await
        };
        if let Err(e) = result.await {
            tracing::error!(target = %self.name(), "cannot persist the paused state: {e}");
        }
    }

    pub(super) async fn rewind(&mut self, to: RewindTo) -> Result<u64, RewindError> {
        let engine = std::sync::Arc::clone(&self.context.engine);
        let offset = match to {
            RewindTo::Offset(offset) => offset.min(engine.durable_offset()),
            RewindTo::Start => engine.first_offset().saturating_sub(1),
            RewindTo::Time(ms) => engine.offset_at_time(ms).await?.saturating_sub(1),
        };
        let offset = offset.max(engine.first_offset().saturating_sub(1));
        let effective = self.target.rewind(offset).await?;
        self.store_cursor(effective).await?;
        self.applied_through = effective;
        let store = self.context.state.as_ref();
        let mut control = load_control(store, self.name()).await?;
        if control.rewind_to.take().is_some() {
            store_control(store, self.name(), &control).await?;
        }
        if self.shared.lock().unwrap_or_else(|e| e.into_inner()).state == RunState::Failed {
            self.set(if self.paused { RunState::Paused } else { RunState::Running }, None);
        }
        tracing::info!(target = %self.name(), offset = effective, "rewound");
        Ok(effective)
    }

    /// Durably stores the cursor (only after the target confirmed everything up to it).
    pub(super) async fn store_cursor(&self, offset: u64) -> Result<(), StateError> {
        self.context.state.store_cursor(&self.common.name, offset).await?;
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.cursor = offset;
        let lag = self.context.engine.durable_offset().saturating_sub(offset);
        metrics::gauge!("remix_target_lag_records", "target" => self.common.name.clone()).set(lag as f64);
        Ok(())
    }
}
