//! MariaDB and MySQL: the `mysql` source (row-based binary log with a consistent initial snapshot,
//! positions stored in the log) and the `mysql` target (multi-row upserts with the cursor in the same
//! transaction). One client crate, `mysql_async` (rustls), for both directions and `remix doctor`.

pub mod config;
pub mod conn;
mod doctor;
pub mod source;
pub mod target;
pub mod types;

/// A value or table plan the MySQL connector refuses; the message names the column, the type and
/// the value or field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

impl From<String> for Refusal {
    fn from(message: String) -> Refusal {
        Refusal(message)
    }
}

impl From<&str> for Refusal {
    fn from(message: &str) -> Refusal {
        Refusal(message.to_owned())
    }
}
