//! The live status of `remix run`: on a terminal, one line per source and target redrawn in place
//! (indicatif); otherwise a progress line in the log every `PROGRESS_LINE_SECONDS`.

use crate::node::NodeState;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

const TERMINAL_REFRESH_MS: u64 = 1000;
const PROGRESS_LINE_SECONDS: u64 = 30;

#[derive(Debug)]
pub struct StatusDisplay {
    bars: Option<(MultiProgress, ProgressBar, Vec<ProgressBar>)>,
    last_offset: u64,
    last_time: std::time::Instant,
}

impl Default for StatusDisplay {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusDisplay {
    pub fn new() -> StatusDisplay {
        let bars = std::io::stderr().is_terminal().then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let log = multi.add(ProgressBar::new_spinner());
            log.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
            (multi, log, Vec::new())
        });
        StatusDisplay { bars, last_offset: 0, last_time: std::time::Instant::now() }
    }

    pub fn interval_ms(&self) -> u64 {
        if self.bars.is_some() {
            TERMINAL_REFRESH_MS
        } else {
            PROGRESS_LINE_SECONDS * 1000
        }
    }

    pub fn update(&mut self, state: &NodeState) {
        let durable = state.log.durable_offset();
        let elapsed = self.last_time.elapsed().as_secs_f64().max(0.001);
        let rate = durable.saturating_sub(self.last_offset) as f64 / elapsed;
        self.last_offset = durable;
        self.last_time = std::time::Instant::now();
        let log_line = format!(
            "log: durable offset {durable}, {rate:.0} records/s in, DLQ {}",
            state.indexes.dead_letters().len()
        );
        let source_lines = state.sources.iter().map(|source| {
            let s = source.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let error = s.last_error.map(|e| format!(" — {e}")).unwrap_or_default();
            let snapshot = if s.state == "snapshot" {
                format!(", {} snapshot rows", s.snapshot_rows)
            } else {
                String::new()
            };
            format!(
                "source {} (postgres): {}, confirmed {}{snapshot}{error}",
                source.name, s.state, s.confirmed_lsn
            )
        });
        let target_lines: Vec<String> = source_lines
            .chain(state.targets.iter().map(|t| {
                let s = t.status();
                let error = s.last_error.map(|e| format!(" — {e}")).unwrap_or_default();
                format!(
                    "target {} ({}): {:?}, cursor {}, lag {} records / {:.1}s{error}",
                    s.name, s.kind, s.state, s.cursor, s.lag_records, s.lag_seconds
                )
            }))
            .collect();
        match &mut self.bars {
            Some((multi, log, targets)) => {
                log.set_message(log_line);
                log.tick();
                while targets.len() < target_lines.len() {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(ProgressStyle::with_template("  {msg}").expect("valid template"));
                    targets.push(bar);
                }
                for (bar, line) in targets.iter().zip(target_lines) {
                    bar.set_message(line);
                }
            }
            None => {
                tracing::info!("{log_line}");
                for line in target_lines {
                    tracing::info!("{line}");
                }
            }
        }
    }

    pub fn finish(&mut self) {
        if let Some((_, log, targets)) = &self.bars {
            log.finish_and_clear();
            for bar in targets {
                bar.finish_and_clear();
            }
        }
    }
}
