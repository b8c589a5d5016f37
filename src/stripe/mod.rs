//! Stripe: the `stripe` source (webhooks and the Events API) and the `stripe` target (objects through
//! the API), with the API client they share.

pub mod api;
pub mod catch_up;
pub mod config;
pub mod events;
pub mod order;
pub mod signature;
pub mod source;
pub mod target;
