//! Remix: a durable data replicator. Sources produce records, which are remixed into canonical models,
//! validated, appended to the log (`remix-storage`) and acknowledged only after the fsync; every
//! target reads the log from its own cursor. See ARCHITECTURE.md for the data path and invariants.

pub mod admin;
pub mod cli;
pub mod config;
pub mod mapping;
pub mod models;
pub mod node;
pub mod pipeline;
pub mod record;
pub mod sources;
pub mod targets;
pub mod time;

/// Installs the process-wide TLS crypto provider (rustls with `ring`) once. Every `reqwest` client is
/// built after it: without a provider, building a client panics (reqwest's `rustls-no-provider`).
pub fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: a provider is installed already (by an embedding program), which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An error and its causes, `: `-separated (tokio-postgres and reqwest put the interesting part in
/// the causes).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
