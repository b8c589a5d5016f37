//! PostgreSQL: the `postgres` source (logical replication over the streaming replication protocol
//! with `pgoutput`, a consistent initial snapshot, acknowledgement only of what the log holds
//! durably) and the `postgres` target (batched upserts with the cursor in the same transaction).

pub mod config;
pub mod conn;
mod doctor;
pub mod fast;
pub mod pgoutput;
pub mod snapshot;
pub mod source;
mod stream;
pub mod target;
pub mod tls;
pub mod types;
