//! The `webhook` source: records POSTed as JSON to configured routes.

pub mod body;
pub mod config;
pub mod encode;
pub mod source;

#[cfg(test)]
mod tests;
