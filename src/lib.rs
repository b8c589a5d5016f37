//! Remix: a durable data replicator. Sources produce records, which are remixed into canonical models,
//! validated, appended to the log (`remix-storage`) and acknowledged only after the fsync; every
//! target reads the log from its own cursor. See ARCHITECTURE.md for the data path and invariants.

pub mod cli;
pub mod config;
pub mod connector;
pub mod mapping;
pub mod models;
pub mod record;
pub mod registry;
pub mod runtime;
pub mod time;
pub mod util;

// Connectors: one folder per system, each behind its cargo feature (the webhook source is always in).
#[cfg(feature = "blackhole")]
pub mod blackhole;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "jsonl")]
pub mod jsonl;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "object_store")]
pub mod object_store;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "stripe")]
pub mod stripe;
pub mod webhook;

pub use util::error_chain;

/// Installs the process-wide TLS crypto provider (rustls with `ring`) once. Every `reqwest` client is
/// built after it: without a provider, building a client panics (reqwest's `rustls-no-provider`).
pub fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: a provider is installed already (by an embedding program), which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
