//! The live status of `remix run`: on a terminal, one line per source and target redrawn in place
//! (indicatif); otherwise a progress line in the log every `PROGRESS_LINE_SECONDS`.

use crate::runtime::node::NodeState;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;

const TERMINAL_REFRESH_MS: u64 = 1000;
const PROGRESS_LINE_SECONDS: u64 = 30;

/// One line of the display: a source or a target, with a progress bar while a snapshot copies.
#[derive(Debug)]
struct Line {
    text: String,
    /// Rows copied and the estimate of the table being copied.
    progress: Option<(u64, u64)>,
}

/// A line's bar, and whether it has the progress style.
type LineBar = (ProgressBar, bool);

#[derive(Debug)]
pub struct StatusDisplay {
    bars: Option<(MultiProgress, ProgressBar, Vec<LineBar>)>,
    last_offset: u64,
    /// Each source's logged records and each target's cursor at the last update, for rates.
    last_counts: HashMap<String, u64>,
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
        StatusDisplay {
            bars,
            last_offset: 0,
            last_counts: HashMap::new(),
            last_time: std::time::Instant::now(),
        }
    }

    pub fn interval_ms(&self) -> u64 {
        if self.bars.is_some() {
            TERMINAL_REFRESH_MS
        } else {
            PROGRESS_LINE_SECONDS * 1000
        }
    }

    pub fn update(&mut self, state: &NodeState) {
        let durable = state.engine.durable_offset();
        let elapsed_seconds = self.last_time.elapsed().as_secs_f64().max(0.001);
        let rate = durable.saturating_sub(self.last_offset) as f64 / elapsed_seconds;
        self.last_offset = durable;
        self.last_time = std::time::Instant::now();
        let log_line = format!(
            "log: durable offset {durable}, {rate:.0} records/s in, DLQ {}",
            state.indexes().dead_letters().len()
        );
        let mut lines: Vec<Line> = Vec::new();
        for source in &state.config.sources {
            let logged = state.logged().get(source.name());
            let rate = self.rate(format!("source {}", source.name()), logged, elapsed_seconds);
            let connected = state.sources.iter().find(|h| h.name == source.name() && h.status.is_some());
            lines.push(match (connected, source.listen()) {
                (Some(handle), _) => source_line(handle, rate),
                (None, listen) => Line {
                    text: format!(
                        "source {} ({}): listening on {}, {rate:.0} records/s, {logged} logged since the start",
                        source.name(),
                        source.kind(),
                        listen.as_deref().unwrap_or("-")
                    ),
                    progress: None,
                },
            });
        }
        for t in &state.targets {
            let s = t.status();
            let rate = self.rate(format!("target {}", s.name), s.cursor, elapsed_seconds);
            let error = s.last_error.map(|e| format!(" — {e}")).unwrap_or_default();
            let text = format!(
                "target {} ({}): {:?}, cursor {}, {rate:.0} records/s, lag {} records / {:.1}s{error}",
                s.name, s.kind, s.state, s.cursor, s.lag_records, s.lag_seconds
            );
            lines.push(Line { text, progress: None });
        }
        match &mut self.bars {
            Some((multi, log, bars)) => {
                log.set_message(log_line);
                log.tick();
                while bars.len() < lines.len() {
                    bars.push((multi.add(ProgressBar::new_spinner()), true));
                }
                for ((bar, progress_style), line) in bars.iter_mut().zip(lines) {
                    show(bar, progress_style, line);
                }
            }
            None => {
                tracing::info!("{log_line}");
                for line in lines {
                    tracing::info!("{}", line.text);
                }
            }
        }
    }

    /// Records per second of the counter `name`, now at `count`.
    fn rate(&mut self, name: String, count: u64, elapsed_seconds: f64) -> f64 {
        let before = self.last_counts.insert(name, count).unwrap_or(count);
        count.saturating_sub(before) as f64 / elapsed_seconds
    }

    pub fn finish(&mut self) {
        if let Some((_, log, bars)) = &self.bars {
            log.finish_and_clear();
            for (bar, _) in bars {
                bar.finish_and_clear();
            }
        }
    }
}

fn source_line(source: &crate::runtime::node::SourceHandle, rate: f64) -> Line {
    let s = source.status().unwrap_or_default();
    let error = s.last_error.map(|e| format!(" — {e}")).unwrap_or_default();
    if s.state == "snapshot" {
        let text =
            format!("source {} ({}): snapshot of {}{error}", source.name, source.kind, s.snapshot_table);
        // The estimate is the planner's: the bar must not end before the copy does.
        let length = s.snapshot_rows_estimate.max(s.snapshot_rows).max(1);
        return Line { text, progress: Some((s.snapshot_rows, length)) };
    }
    let text = format!(
        "source {} ({}): {}, {rate:.0} records/s, confirmed {}{error}",
        source.name, source.kind, s.state, s.confirmed_position
    );
    Line { text, progress: None }
}

/// Draws `line` on `bar`: a progress bar with rate and ETA while it has progress, a plain line
/// otherwise (`progress_style` tracks which style the bar has).
fn show(bar: &ProgressBar, progress_style: &mut bool, line: Line) {
    match line.progress {
        Some((position, length)) => {
            if !*progress_style {
                bar.set_style(
                    ProgressStyle::with_template(
                        "  {msg} [{bar:30}] {human_pos}/{human_len} rows, {per_sec}, ETA {eta}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar.reset();
                *progress_style = true;
            }
            bar.set_length(length);
            bar.set_position(position);
        }
        None if *progress_style => {
            bar.set_style(ProgressStyle::with_template("  {msg}").expect("valid template"));
            *progress_style = false;
        }
        None => {}
    }
    bar.set_message(line.text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_a_progress_bar_and_then_a_line_again() {
        let bar = ProgressBar::hidden();
        let mut progress_style = true;
        show(&bar, &mut progress_style, Line { text: "source s: starting".into(), progress: None });
        assert!(!progress_style);
        let line = Line { text: "source s: snapshot of public.t".into(), progress: Some((50, 200)) };
        show(&bar, &mut progress_style, line);
        assert!(progress_style);
        assert_eq!((bar.position(), bar.length()), (50, Some(200)));
        assert_eq!(bar.message(), "source s: snapshot of public.t");
        show(&bar, &mut progress_style, Line { text: "source s: streaming".into(), progress: None });
        assert!(!progress_style);
        assert_eq!(bar.message(), "source s: streaming");
    }
}
