//! The `nats` target: changes published to NATS JetStream, deduplicated by message id and resumed
//! after the last message the stream holds.

pub mod config;
mod doctor;
pub mod target;
