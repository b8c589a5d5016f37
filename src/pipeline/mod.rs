//! The ingest half of the data path: remix in, validation, the DLQ, idempotency, and appending to the
//! log with acknowledgement only after the fsync.

pub mod dlq;
pub mod indexes;
pub mod ingest;
pub mod remix_in;
pub mod superseded;

pub use indexes::{DlqEntry, Indexes};
pub use ingest::{AppendError, Appender};
pub use remix_in::{remix_in, RemixOutcome};
