//! The admin API (loopback by default): `/healthz`, `/readyz`, `/metrics`, and the JSON endpoints the
//! CLI uses while a node runs. Mutations need `Authorization: Bearer <admin.token>` when a token is
//! configured (required when the API listens beyond loopback).

use crate::runtime::delivery::RewindTo;
use crate::runtime::ingest::dlq;
use crate::runtime::node::NodeState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

type Shared = State<Arc<NodeState>>;

pub fn router(state: Arc<NodeState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/targets", get(targets))
        .route("/targets/{name}/pause", post(pause))
        .route("/targets/{name}/resume", post(resume))
        .route("/targets/{name}/rewind", post(rewind))
        .route("/sources/{name}/catch-up", post(source_catch_up))
        .route("/dlq", get(dlq_list))
        .route("/dlq/retry", post(dlq_retry_all))
        .route("/dlq/{id}", get(dlq_show).delete(dlq_drop))
        .route("/dlq/{id}/retry", post(dlq_retry))
        .with_state(state)
}

fn failure(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

#[allow(clippy::result_large_err)] // a ready HTTP answer, returned at once
fn authorized(state: &NodeState, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = &state.config.admin.token else { return Ok(()) };
    let given =
        headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if given == token => Ok(()),
        _ => Err(failure(
            StatusCode::UNAUTHORIZED,
            "admin token required (Authorization: Bearer <admin.token>)",
        )),
    }
}

/// `200 ready`, or `503 not ready: <what>; <what>` (the log stopped, the servers not yet or no longer
/// listening, a PostgreSQL source not connected).
async fn readyz(State(state): Shared) -> Response {
    let unready = state.not_ready();
    if unready.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", unready.join("; "))).into_response()
    }
}

async fn metrics(State(state): Shared) -> Response {
    let stat = state.engine.stat();
    metrics::gauge!("remix_log_durable_offset").set(stat.durable_offset as f64);
    metrics::gauge!("remix_log_first_offset").set(stat.first_offset as f64);
    metrics::gauge!("remix_log_bytes").set(stat.bytes as f64);
    metrics::gauge!("remix_log_segments").set(stat.segments.len() as f64);
    for target in &state.targets {
        let status = target.status();
        metrics::gauge!("remix_target_lag_records", "target" => status.name.clone())
            .set(status.lag_records as f64);
        metrics::gauge!("remix_target_lag_seconds", "target" => status.name.clone()).set(status.lag_seconds);
        metrics::gauge!("remix_target_cursor", "target" => status.name).set(status.cursor as f64);
    }
    metrics::gauge!("remix_dlq_size").set(state.indexes().dead_letters().len() as f64);
    ([("content-type", "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

async fn targets(State(state): Shared) -> Response {
    Json(state.targets.iter().map(|t| t.status()).collect::<Vec<_>>()).into_response()
}

async fn control(
    state: &NodeState,
    headers: &HeaderMap,
    name: &str,
) -> Result<crate::runtime::delivery::TargetHandle, Response> {
    authorized(state, headers)?;
    state.target(name).cloned().ok_or_else(|| failure(StatusCode::NOT_FOUND, format!("no target '{name}'")))
}

async fn pause(State(state): Shared, headers: HeaderMap, Path(name): Path<String>) -> Response {
    let target = match control(&state, &headers, &name).await {
        Ok(target) => target,
        Err(response) => return response,
    };
    match target.pause().await {
        Ok(()) => Json(target.status()).into_response(),
        Err(e) => failure(StatusCode::CONFLICT, e),
    }
}

async fn resume(State(state): Shared, headers: HeaderMap, Path(name): Path<String>) -> Response {
    let target = match control(&state, &headers, &name).await {
        Ok(target) => target,
        Err(response) => return response,
    };
    match target.resume().await {
        Ok(()) => Json(target.status()).into_response(),
        Err(e) => failure(StatusCode::CONFLICT, e),
    }
}

/// `{"to_offset": N}`, `{"to_time": "2026-11-24T10:00:00Z"}` or `{"to_start": true}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewindRequest {
    pub to_offset: Option<u64>,
    pub to_time: Option<String>,
    #[serde(default)]
    pub to_start: bool,
}

impl RewindRequest {
    pub fn parse(&self) -> Result<RewindTo, crate::config::InvalidValue> {
        use crate::config::InvalidValue;
        match (self.to_offset, &self.to_time, self.to_start) {
            (Some(offset), None, false) => Ok(RewindTo::Offset(offset)),
            (None, Some(time), false) => crate::time::parse_rfc3339(time)
                .map(|ms| RewindTo::Time(ms.max(0) as u64))
                .map_err(|e| InvalidValue(format!("to_time: {e}"))),
            (None, None, true) => Ok(RewindTo::Start),
            _ => Err(InvalidValue("give exactly one of to_offset, to_time, to_start".into())),
        }
    }
}

async fn rewind(
    State(state): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    Json(request): Json<RewindRequest>,
) -> Response {
    let target = match control(&state, &headers, &name).await {
        Ok(target) => target,
        Err(response) => return response,
    };
    let to = match request.parse() {
        Ok(to) => to,
        Err(e) => return failure(StatusCode::BAD_REQUEST, e),
    };
    match target.rewind(to).await {
        Ok(cursor) => Json(json!({ "name": name, "cursor": cursor })).into_response(),
        Err(e) => failure(StatusCode::CONFLICT, e),
    }
}

async fn dlq_list(State(state): Shared) -> Response {
    Json(state.indexes().dead_letters().iter().map(dlq::entry_json).collect::<Vec<_>>()).into_response()
}

async fn dlq_show(State(state): Shared, Path(id): Path<u64>) -> Response {
    match state.indexes().dead_letter(id) {
        Some(entry) => Json(dlq::entry_json(&entry)).into_response(),
        None => failure(StatusCode::NOT_FOUND, format!("no open dead letter with id {id}")),
    }
}

fn dlq_failure(e: dlq::DlqError) -> Response {
    match e {
        dlq::DlqError::NotFound(_) => failure(StatusCode::NOT_FOUND, e),
        dlq::DlqError::Other(_) => failure(StatusCode::CONFLICT, e),
    }
}

async fn dlq_retry(State(state): Shared, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    if let Err(response) = authorized(&state, &headers) {
        return response;
    }
    match dlq::retry(&state.ingest, id).await {
        Ok(retried) => Json(retried).into_response(),
        Err(e) => dlq_failure(e),
    }
}

async fn dlq_retry_all(State(state): Shared, headers: HeaderMap) -> Response {
    if let Err(response) = authorized(&state, &headers) {
        return response;
    }
    let ids: Vec<u64> = state.indexes().dead_letters().iter().map(|e| e.id).collect();
    let retried = dlq::retry_many(&state.ingest, &ids).await;
    let results: Vec<_> = ids
        .iter()
        .zip(retried)
        .map(|(id, r)| match r {
            Ok(retried) => serde_json::to_value(retried).expect("serializable"),
            Err(e) => json!({ "id": id, "result": "error", "error": e.to_string() }),
        })
        .collect();
    Json(results).into_response()
}

async fn dlq_drop(State(state): Shared, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    if let Err(response) = authorized(&state, &headers) {
        return response;
    }
    match dlq::drop_entry(&state.ingest, id).await {
        Ok(()) => Json(json!({ "id": id, "result": "dropped" })).into_response(),
        Err(e) => dlq_failure(e),
    }
}

/// Runs a Stripe source's catch-up through the Events API and answers its report when it is done.
async fn source_catch_up(State(state): Shared, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Err(response) = authorized(&state, &headers) {
        return response;
    }
    let Some(catch_up) = state.sources.iter().find(|s| s.name == name).and_then(|s| s.catch_up.clone())
    else {
        return failure(StatusCode::NOT_FOUND, format!("no source '{name}' that catches up"));
    };
    match catch_up().await {
        Ok(report) => Json(report).into_response(),
        Err(e) => failure(StatusCode::BAD_GATEWAY, e),
    }
}
