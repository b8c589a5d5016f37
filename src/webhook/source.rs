//! The `webhook` source: `POST` of one JSON object or an array of objects to a configured route.
//!
//! Answers (SPEC section 6): 200 `{"accepted": N, "offsets": [...]}` only after the fsync that covers
//! the records; 400 malformed JSON; 401 missing and 403 wrong credentials; 404 unknown route; 413 body
//! over `body_bytes_max`; 422 with every validation error by record index (a batch is accepted or
//! refused whole: nothing of a refused batch is logged as a change, and its invalid objects are kept
//! in the DLQ with their errors so nothing is silently dropped, once while they are open); 503 with
//! `Retry-After` when the log cannot accept (disk full, shutting down, stopped).
//!
//! Retries are safe with an `Idempotency-Key` header (the whole batch) or the configured
//! `idempotency_field` (each object): a key already logged is answered with the offsets it got, even
//! after a restart (the index is rebuilt from the log). A key counts within its source and model:
//! the same key sent to routes of two models names two requests. `X-Remix-Op: delete` or the configured
//! `delete_field` turns records into deletes.

use super::config::{WebhookAuth, WebhookSource};
use crate::record::{Change, DeadLetter, FieldError, Op};
use crate::runtime::ingest::indexes::{Claim, ClaimGuard, IdempotencyKey, Landed};
use crate::runtime::ingest::remix_in::Origin;
use crate::runtime::ingest::Ingest;
use crate::runtime::ingest::{remix_in, AppendError, ChangeBatch, RemixOutcome};
use crate::runtime::serve::{counted, error};
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Seconds a 503 asks the sender to wait.
const RETRY_AFTER_SECONDS: u64 = 5;

#[derive(Debug)]
struct Route {
    source: WebhookSource,
    path: String,
    ingest: Ingest,
    requests: AtomicU64,
}

/// The routes of one webhook source, to be merged into the server of its listen address.
pub fn router(source: &WebhookSource, ingest: &Ingest) -> Router {
    let mut router = Router::new();
    for path in source.routes.keys() {
        let route = Arc::new(Route {
            source: source.clone(),
            path: path.clone(),
            ingest: ingest.clone(),
            requests: AtomicU64::new(0),
        });
        let body_limit = usize::try_from(source.body_bytes_max).unwrap_or(usize::MAX);
        let handler =
            post(move |headers: HeaderMap, body: Result<Bytes, axum::extract::rejection::BytesRejection>| {
                let route = Arc::clone(&route);
                async move { route.handle(headers, body).await }
            });
        router = router.route(path, handler.layer(DefaultBodyLimit::max(body_limit)));
    }
    router
}

fn unavailable(e: &AppendError) -> Response {
    let status = match e {
        AppendError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut response = error(status, e.to_string(), None);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert("retry-after", RETRY_AFTER_SECONDS.into());
    }
    response
}

fn accepted(offsets: Vec<u64>, duplicate: bool) -> Response {
    let mut body = json!({ "accepted": offsets.len(), "offsets": offsets });
    if duplicate {
        body["duplicate"] = true.into();
    }
    (StatusCode::OK, Json(body)).into_response()
}

/// The idempotency keys the change records of a request carry.
#[derive(Debug, Clone, Copy)]
enum Keys<'a> {
    None,
    /// The `Idempotency-Key` header: every record of the batch.
    Batch(&'a str),
    /// `idempotency_field`: object i's own value, if it has one.
    PerObject(&'a [Option<String>]),
}

impl<'a> Keys<'a> {
    fn of(self, index: usize) -> Option<&'a str> {
        match self {
            Keys::None => None,
            Keys::Batch(key) => Some(key),
            Keys::PerObject(keys) => keys[index].as_deref(),
        }
    }
}

impl Route {
    async fn handle(
        &self,
        headers: HeaderMap,
        body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    ) -> Response {
        counted(&self.source.name, self.answer(&headers, body).await)
    }

    async fn answer(
        &self,
        headers: &HeaderMap,
        body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    ) -> Response {
        let body = match body {
            Ok(body) => body,
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                let message = format!("body over the limit of {} bytes", self.source.body_bytes_max);
                return error(StatusCode::PAYLOAD_TOO_LARGE, message, None);
            }
            Err(rejection) => return error(rejection.status(), rejection.body_text(), None),
        };
        if let Some(response) = self.check_auth(headers, &body) {
            return response;
        }
        let objects = match parse_body(&body) {
            Ok(objects) => objects,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string(), None),
        };
        let header_op = match headers.get("x-remix-op").map(|v| v.to_str().unwrap_or("")) {
            None | Some("upsert") => Op::Upsert,
            Some("delete") => Op::Delete,
            Some(other) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("X-Remix-Op must be upsert or delete, not '{other}'"),
                    None,
                )
            }
        };
        let batch_key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
        match batch_key {
            Some(key) => self.with_batch_key(key, objects, header_op).await,
            None => self.with_field_keys(objects, header_op).await,
        }
    }

    /// 401 without credentials, 403 with wrong ones; `None` when the request may pass.
    fn check_auth(&self, headers: &HeaderMap, body: &[u8]) -> Option<Response> {
        match &self.source.auth {
            WebhookAuth::None => None,
            WebhookAuth::Bearer { token } => {
                let given = headers.get("authorization").and_then(|v| v.to_str().ok());
                let Some(given) = given.and_then(|v| v.strip_prefix("Bearer ")) else {
                    return Some(error(
                        StatusCode::UNAUTHORIZED,
                        "missing `Authorization: Bearer <token>`",
                        None,
                    ));
                };
                (!constant_time_eq(given.as_bytes(), token.as_bytes()))
                    .then(|| error(StatusCode::FORBIDDEN, "wrong bearer token", None))
            }
            WebhookAuth::Hmac { secret, header } => {
                let Some(given) = headers.get(header.as_str()).and_then(|v| v.to_str().ok()) else {
                    return Some(error(
                        StatusCode::UNAUTHORIZED,
                        format!("missing signature header {header}"),
                        None,
                    ));
                };
                let hex = given.strip_prefix("sha256=").unwrap_or(given);
                let valid = crate::util::decode_hex(hex).is_some_and(|signature| {
                    let mut mac =
                        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
                    mac.update(body);
                    mac.verify_slice(&signature).is_ok()
                });
                (!valid).then(|| {
                    error(StatusCode::FORBIDDEN, format!("wrong HMAC-SHA256 signature in {header}"), None)
                })
            }
        }
    }

    fn op_of(&self, object: &Value, header_op: Op) -> Op {
        let flagged = self.source.delete_field.as_ref().and_then(|f| object.get(f)).is_some_and(|v| {
            matches!(v, Value::Bool(true)) || v.as_str().is_some_and(|s| s == "delete" || s == "true")
        });
        if flagged {
            Op::Delete
        } else {
            header_op
        }
    }

    /// Remixes every object; `Err` carries every error by index (and the objects for the DLQ).
    fn remix_all(
        &self,
        objects: &[Value],
        header_op: Op,
        request: &str,
        keys: Keys<'_>,
    ) -> Result<Vec<Change>, Vec<(usize, Vec<FieldError>)>> {
        let binding = &self.source.routes[&self.path];
        let model = self.ingest.model(&binding.model);
        let mut changes = Vec::with_capacity(objects.len());
        let mut invalid = Vec::new();
        for (index, object) in objects.iter().enumerate() {
            let origin = Origin {
                source: &self.source.name,
                position: format!("{request}:{index}"),
                idempotency_key: keys.of(index),
            };
            match remix_in(binding, model, object, self.op_of(object, header_op), origin) {
                RemixOutcome::Valid(change) => changes.push(change),
                RemixOutcome::Invalid(errors) => invalid.push((index, errors)),
            }
        }
        if invalid.is_empty() {
            Ok(changes)
        } else {
            Err(invalid)
        }
    }

    fn request_id(&self) -> String {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        format!("req-{}-{n}", crate::time::now_ms())
    }

    /// The key in this route's scope (see [`IdempotencyKey`]).
    fn scoped(&self, key: &str) -> IdempotencyKey {
        IdempotencyKey::new(&self.source.name, &self.source.routes[&self.path].model, key)
    }

    async fn with_batch_key(&self, key: String, objects: Vec<Value>, header_op: Op) -> Response {
        let guard = match self.ingest.claim(&self.scoped(&key)).await {
            Claim::Done(landed) => {
                return accepted((landed.first_offset..=landed.last_offset).collect(), true)
            }
            Claim::Proceed(guard) => guard,
        };
        self.log_batch(&objects, header_op, &key, Keys::Batch(&key), vec![guard]).await.0
    }

    async fn with_field_keys(&self, objects: Vec<Value>, header_op: Op) -> Response {
        let request = self.request_id();
        let Some(field) = &self.source.idempotency_field else {
            return self.log_batch(&objects, header_op, &request, Keys::None, Vec::new()).await.0;
        };
        // The batch is validated whole, with the sender's indexes, before any key is looked at.
        if let Err(invalid) = self.remix_all(&objects, header_op, &request, Keys::None) {
            return self.refuse(&objects, invalid, header_op, &request).await;
        }
        let keys: Vec<Option<String>> = objects
            .iter()
            .map(|o| o.get(field).map(|k| k.as_str().map_or_else(|| k.to_string(), str::to_owned)))
            .collect();
        let mut claimed: Vec<String> = keys.iter().flatten().cloned().collect();
        claimed.sort();
        claimed.dedup();
        let mut done = std::collections::HashMap::new();
        let mut guards = Vec::new();
        for key in &claimed {
            match self.ingest.claim(&self.scoped(key)).await {
                Claim::Done(landed) => {
                    done.insert(key.clone(), landed);
                }
                Claim::Proceed(guard) => guards.push(guard),
            }
        }
        // Logged: objects without a key, and the first object of each key not logged before (a key
        // repeated inside the request is a retry too). `slot[i]`: where object i's offset comes from.
        let mut first_of_key: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        let mut fresh: Vec<Value> = Vec::new();
        let mut fresh_keys: Vec<Option<String>> = Vec::new();
        let mut slot: Vec<Result<usize, u64>> = Vec::with_capacity(objects.len());
        for (object, key) in objects.iter().zip(&keys) {
            match key {
                Some(key) if done.contains_key(key) => slot.push(Err(done[key].first_offset)),
                Some(key) if first_of_key.contains_key(key.as_str()) => {
                    slot.push(Ok(first_of_key[key.as_str()]))
                }
                _ => {
                    if let Some(key) = key {
                        first_of_key.insert(key, fresh.len());
                    }
                    slot.push(Ok(fresh.len()));
                    fresh.push(object.clone());
                    fresh_keys.push(key.clone());
                }
            }
        }
        let (response, landed) =
            self.log_batch(&fresh, header_op, &request, Keys::PerObject(&fresh_keys), guards).await;
        if landed.is_none() && !fresh.is_empty() {
            return response;
        }
        if fresh.len() == objects.len() {
            return response;
        }
        let offsets = slot.into_iter().map(|s| match s {
            Err(offset) => offset,
            Ok(i) => landed.expect("logged").first_offset + i as u64,
        });
        accepted(offsets.collect(), false)
    }

    /// Remixes, validates and logs a batch whole, holding the claims of its idempotency keys until
    /// it is durable. Returns the answer and, when logged, where.
    async fn log_batch(
        &self,
        objects: &[Value],
        header_op: Op,
        request: &str,
        keys: Keys<'_>,
        guards: Vec<ClaimGuard>,
    ) -> (Response, Option<Landed>) {
        if objects.is_empty() {
            return (accepted(Vec::new(), false), None);
        }
        let changes = match self.remix_all(objects, header_op, request, keys) {
            Ok(changes) => changes,
            Err(invalid) => return (self.refuse(objects, invalid, header_op, request).await, None),
        };
        let mut batch = ChangeBatch::new();
        changes.iter().for_each(|change| batch.push(change));
        guards.into_iter().for_each(|guard| batch.hold(guard));
        match self.ingest.append(&self.source.name, batch).await {
            Ok(appended) => {
                let landed =
                    Landed { first_offset: appended.first_offset, last_offset: appended.last_offset };
                (accepted((appended.first_offset..=appended.last_offset).collect(), false), Some(landed))
            }
            Err(e) => (unavailable(&e), None),
        }
    }

    /// 422 with every error; the invalid objects go to the DLQ (durably) first.
    async fn refuse(
        &self,
        objects: &[Value],
        invalid: Vec<(usize, Vec<FieldError>)>,
        header_op: Op,
        request: &str,
    ) -> Response {
        let model = self.source.routes[&self.path].model.clone();
        let letters: Vec<DeadLetter> = invalid
            .iter()
            .map(|(index, errors)| DeadLetter {
                source: self.source.name.clone(),
                position: format!("{request}:{index}"),
                model: model.clone(),
                route: self.path.clone(),
                errors: errors.clone(),
                input: objects[*index].clone(),
                op: Some(self.op_of(&objects[*index], header_op)),
            })
            // A repeat of a refused request: its objects are in the DLQ already.
            .filter(|letter| self.ingest.dead_letters().indexes().open_dead_letter_like(letter).is_none())
            .collect();
        if let Err(e) = self.ingest.dead_letters().append(letters).await {
            return unavailable(&e);
        }
        let errors: Vec<Value> = invalid
            .iter()
            .flat_map(|(index, errors)| {
                errors.iter().map(move |e| json!({"index": index, "path": e.path, "message": e.message}))
            })
            .collect();
        let message =
            format!("{} of {} records are invalid; nothing was accepted", invalid.len(), objects.len());
        error(StatusCode::UNPROCESSABLE_ENTITY, message, Some(("errors", Value::Array(errors))))
    }
}

/// Why a body is not one object or an array of objects (a 400).
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("malformed JSON: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("expected a JSON object or an array of objects, got {0}")]
    NotObjects(&'static str),
    #[error("element {index} is {kind}, not an object")]
    NotAnObject { index: usize, kind: &'static str },
}

/// One object or an array of objects.
fn parse_body(body: &[u8]) -> Result<Vec<Value>, BodyError> {
    let value: Value = serde_json::from_slice(body)?;
    let objects = match value {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        other => return Err(BodyError::NotObjects(kind(&other))),
    };
    if let Some(index) = objects.iter().position(|o| !o.is_object()) {
        return Err(BodyError::NotAnObject { index, kind: kind(&objects[index]) });
    }
    Ok(objects)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
