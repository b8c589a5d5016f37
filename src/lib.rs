//! Remix: a durable data replicator. Sources produce records, which are remixed into canonical models,
//! validated, appended to the log (`remix-storage`) and acknowledged only after the fsync; every
//! target reads the log from its own cursor. See ARCHITECTURE.md for the data path and invariants.

pub mod cli;
pub mod record;
pub mod time;
