//! The `jsonl` target: dataset files on local disk.

pub mod config;
pub mod target;
