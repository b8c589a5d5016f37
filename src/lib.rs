//! Remix: a durable data replicator. Sources produce records, which are remixed into canonical models,
//! validated, appended to the log (`remix-storage`) and acknowledged only after the fsync; every
//! target reads the log from its own cursor. See ARCHITECTURE.md for the data path and invariants.

pub mod admin;
pub mod cli;
pub mod config;
pub mod mapping;
pub mod models;
pub mod node;
pub mod pipeline;
pub mod record;
pub mod sources;
pub mod targets;
pub mod time;
