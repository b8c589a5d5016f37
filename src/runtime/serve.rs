//! The HTTP servers of the sources that receive requests (webhook, stripe): one server per listen
//! address, shared by the sources that name it, and the answers they have in common.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// An error answer: `{"error": message, ...extra}`.
pub fn error(status: StatusCode, message: impl Into<String>, extra: Option<(&str, Value)>) -> Response {
    let mut body = json!({ "error": message.into() });
    if let Some((key, value)) = extra {
        body[key] = value;
    }
    (status, Json(body)).into_response()
}

/// `response`, counted in `remix_webhook_requests_total` by source and status.
pub fn counted(source: &str, response: Response) -> Response {
    let status = response.status().as_u16().to_string();
    metrics::counter!("remix_webhook_requests_total", "source" => source.to_owned(), "status" => status)
        .increment(1);
    response
}

/// Why a server did not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {source}")]
pub struct ServeError {
    pub address: String,
    #[source]
    pub source: std::io::Error,
}

/// One server per address for the routers of the sources that listen there; unknown paths get 404
/// with a JSON error.
pub async fn serve_routers(
    routers: Vec<(String, axum::Router)>,
    shutdown: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, ServeError> {
    let mut by_address: BTreeMap<String, axum::Router> = BTreeMap::new();
    for (address, router) in routers {
        let merged = by_address.remove(&address).unwrap_or_default().merge(router);
        by_address.insert(address, merged);
    }
    let mut servers = Vec::new();
    for (address, router) in by_address {
        let router = router.fallback(|uri: axum::http::Uri| async move {
            let body = json!({ "error": format!("no route {}", uri.path()) });
            (StatusCode::NOT_FOUND, Json(body))
        });
        servers.push(serve(&address, router, shutdown.clone()).await?);
    }
    Ok(servers)
}

/// Serves `router` on `address` until `shutdown` turns true (then gracefully: requests in flight get
/// their answers).
pub async fn serve(
    address: &str,
    router: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, ServeError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ServeError { address: address.to_owned(), source })?;
    tracing::info!("listening on {address}");
    Ok(tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
            tracing::error!("server error: {e}");
        }
    }))
}
