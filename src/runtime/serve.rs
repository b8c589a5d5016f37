//! The HTTP servers of the sources that receive requests (webhook, stripe): one server per listen
//! address, shared by the sources that name it, and the answers they have in common.

use crate::runtime::ingest::budget::{self, MemoryBudget, NoRoom, Reservation};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
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

/// Why a request body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyRefused {
    /// Over the source's limit (HTTP 413).
    #[error("body over the limit of {0} bytes")]
    TooLarge(u64),
    /// The connection failed while the body was read (HTTP 400).
    #[error("reading the body: {0}")]
    Read(String),
    /// No room in the ingest memory budget within its wait (HTTP 503).
    #[error(transparent)]
    NoRoom(#[from] NoRoom),
}

impl BodyRefused {
    /// The answer: 413, 400, or 503 with `Retry-After`.
    pub fn response(&self) -> Response {
        match self {
            BodyRefused::TooLarge(_) => error(StatusCode::PAYLOAD_TOO_LARGE, self.to_string(), None),
            BodyRefused::Read(_) => error(StatusCode::BAD_REQUEST, self.to_string(), None),
            BodyRefused::NoRoom(e) => no_room(e),
        }
    }
}

/// 503 with `Retry-After`: no room in the ingest memory budget.
pub fn no_room(e: &NoRoom) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None);
    response.headers_mut().insert("retry-after", budget::RETRY_AFTER_SECONDS.into());
    response
}

/// Reads a request body of at most `limit` bytes, having reserved room in the ingest memory budget
/// for it and for what it becomes ([`budget::BODY_EXPANSION`] times its length) first; a body of
/// unknown length reserves as it arrives. The reservation is the caller's to grow or shrink.
pub async fn read_body(
    memory: &MemoryBudget,
    headers: &HeaderMap,
    body: Body,
    limit: u64,
) -> Result<(Bytes, Reservation), BodyRefused> {
    use futures_util::StreamExt;
    let length =
        headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if length.is_some_and(|length| length > limit) {
        return Err(BodyRefused::TooLarge(limit));
    }
    let cost = |bytes: u64| bytes.saturating_mul(budget::BODY_EXPANSION);
    let mut reservation = memory.reserve(cost(length.unwrap_or(0))).await?;
    let mut buffer = bytes::BytesMut::with_capacity(length.unwrap_or(0) as usize);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyRefused::Read(e.to_string()))?;
        let read = (buffer.len() + chunk.len()) as u64;
        if read > limit {
            return Err(BodyRefused::TooLarge(limit));
        }
        reservation.grow_to(cost(read)).await?;
        buffer.extend_from_slice(&chunk);
    }
    Ok((buffer.freeze(), reservation))
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
