//! The `blackhole` target: reads, remixes and counts every record, then drops it. For measuring a
//! source and the log without a real target's cost, and for dry runs of a pipeline's models and
//! mappings. Like vector's sink of the same name.

pub mod config;
pub mod target;
