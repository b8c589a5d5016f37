//! The `webhook` source: records POSTed as JSON to configured routes.

pub mod config;
pub mod source;
