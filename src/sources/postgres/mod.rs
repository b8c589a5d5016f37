//! The `postgres` source: logical replication over the streaming replication protocol with
//! `pgoutput`, a consistent initial snapshot, and acknowledgement to the server only of what the log
//! holds durably.

pub mod conn;
pub mod fast;
pub mod pgoutput;
pub mod snapshot;
pub mod source;
mod stream;
pub mod tls;
pub mod types;
