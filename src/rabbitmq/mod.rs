//! The `rabbitmq` target: changes published to a durable topic exchange with publisher confirms.

pub mod config;
mod doctor;
pub mod target;
