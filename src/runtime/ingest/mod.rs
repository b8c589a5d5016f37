//! The ingest half of the data path: remix in, validation, the DLQ, idempotency, and appending to the
//! log with acknowledgement only after the fsync.

pub mod appender;
pub mod budget;
pub mod checkpoint;
pub mod context;
pub mod dlq;
pub mod indexes;
pub mod remix_in;
pub mod resnapshot;
pub mod superseded;

pub use appender::{AppendError, Appender};
pub use budget::{MemoryBudget, NoRoom, Reservation};
pub use context::{ChangeBatch, ChangeFold, DeadLetters, Ingest, Logged};
pub use indexes::{DlqEntry, Indexes};
pub use remix_in::{remix_in, RemixOutcome};
