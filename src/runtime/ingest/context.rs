//! Sources: where records come from. Every source turns its input into change records through remix
//! in and validation, appends them through the [`crate::runtime::ingest::Appender`], and acknowledges its
//! sender only once the append is durable.

use super::{Appender, Indexes};
use crate::config::Config;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What every source needs from the node.
#[derive(Debug, Clone)]
pub struct SourceContext {
    pub config: Arc<Config>,
    pub appender: Appender,
    /// The dead-letter log's appender.
    pub dlq: Appender,
    pub indexes: Arc<Indexes>,
    pub logged: Arc<Logged>,
}

/// How many change records each source has logged since the node started (the status display's
/// rates).
#[derive(Debug, Default)]
pub struct Logged {
    counts: BTreeMap<String, AtomicU64>,
}

impl Logged {
    pub fn new(config: &Config) -> Logged {
        Logged { counts: config.sources.iter().map(|s| (s.name().to_owned(), AtomicU64::new(0))).collect() }
    }

    /// `records` more were logged (durably) for `source`.
    pub fn add(&self, source: &str, records: u64) {
        if let Some(count) = self.counts.get(source) {
            count.fetch_add(records, Ordering::Relaxed);
        }
    }

    pub fn get(&self, source: &str) -> u64 {
        self.counts.get(source).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}
