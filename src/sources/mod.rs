//! Sources: where records come from. Every source turns its input into change records through remix
//! in and validation, appends them through the [`crate::pipeline::Appender`], and acknowledges its
//! sender only once the append is durable.

pub mod postgres;
pub mod stripe;
pub mod webhook;

use crate::config::Config;
use crate::pipeline::{Appender, Indexes};
use std::sync::Arc;

/// What every source needs from the node.
#[derive(Debug, Clone)]
pub struct SourceContext {
    pub config: Arc<Config>,
    pub appender: Appender,
    /// The dead-letter log's appender.
    pub dlq: Appender,
    pub indexes: Arc<Indexes>,
}
