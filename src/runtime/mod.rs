//! The runtime every connector plugs into: ingest (remix in, validation, the DLQ, idempotency, appends
//! acknowledged after the fsync), delivery (one worker per target), and the node that wires them.

pub mod admin;
pub mod delivery;
pub mod engine;
pub mod ingest;
pub mod node;
pub mod open;
pub mod serve;
pub mod state;
pub mod status;
