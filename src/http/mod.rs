//! The `http` target: batches POSTed to an arbitrary API.

pub mod config;
mod doctor;
pub mod target;
