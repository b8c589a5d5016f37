//! The `redis_streams` target: changes appended to Redis Streams with the log offset as the entry id.

pub mod config;
mod doctor;
pub mod target;
