//! The `object_store` target: datasets on object storage (S3 and S3-compatible stores, Google Cloud
//! Storage, Azure Blob, local files) as Parquet or JSONL shards with manifests, named by the log
//! offsets they hold. See `target.rs` for the exactly-once argument, `shard.rs` for the encoding,
//! `columns.rs` for the Arrow schema derived from a model's JSON Schema.

pub mod columns;
pub mod config;
pub mod doctor;
pub mod export;
pub mod manifest;
pub mod shard;
pub mod store;
pub mod target;
pub mod upload;
