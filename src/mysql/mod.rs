//! MariaDB and MySQL: the `mysql` source (row-based binary log with a consistent initial snapshot,
//! positions stored in the log) and the `mysql` target (multi-row upserts with the cursor in the same
//! transaction). One client crate, `mysql_async` (rustls), for both directions and `remix doctor`.

pub mod config;
pub mod conn;
mod doctor;
pub mod source;
pub mod target;
pub mod types;
