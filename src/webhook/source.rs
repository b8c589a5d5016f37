//! The `webhook` source: `POST` of one JSON object or an array of objects to a configured route.
//!
//! Answers (SPEC section 6): 200 `{"accepted": N, "offsets": [...]}` only after the fsync that covers
//! the records; 400 malformed JSON; 401 missing and 403 wrong credentials; 404 unknown route; 413 body
//! over `body_bytes_max`; 422 with every validation error by record index (a batch is accepted or
//! refused whole: nothing of a refused batch is logged as a change, and its invalid objects are kept
//! in the DLQ with their errors so nothing is silently dropped, once while they are open); 503 with
//! `Retry-After` when the log cannot accept (disk full, shutting down, stopped) or the ingest memory
//! budget has no room for the request within its wait (then nothing of it was read past its headers,
//! and nothing of it is logged or dead-lettered).
//!
//! A request reserves room in the budget for its body and what it becomes before it reads the body;
//! the body is then parsed one object at a time, each object remixed, validated and encoded into its
//! log record as it comes ([`super::encode`]), and the records are appended as one atomic group only
//! when every object passed.
//!
//! Retries are safe with an `Idempotency-Key` header (the whole batch) or the configured
//! `idempotency_field` (each object): a key already logged is answered with the offsets it got, even
//! after a restart (the index is rebuilt from the log). A key counts within its source and model:
//! the same key sent to routes of two models names two requests. `X-Remix-Op: delete` or the configured
//! `delete_field` turns records into deletes.

use super::config::{WebhookAuth, WebhookSource};
use super::encode::{encode, Encoded, Invalid, KeyOf, Pass, Stop};
use crate::record::{DeadLetter, Op};
use crate::runtime::ingest::budget::Reservation;
use crate::runtime::ingest::indexes::{Claim, ClaimGuard, IdempotencyKey, Landed};
use crate::runtime::ingest::{AppendError, ChangeBatch, Ingest};
use crate::runtime::serve::{counted, error, no_room, read_body};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Seconds a 503 asks the sender to wait when the log cannot accept.
const RETRY_AFTER_SECONDS: u64 = 5;
/// Bodies at least this large are parsed and encoded on a blocking thread, off the server's threads.
const BLOCKING_BODY_BYTES_MIN: usize = 256 << 10;

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
        // The body is read by the handler, within `body_bytes_max`, once it has room in the budget.
        let handler = post(move |headers: HeaderMap, body: Body| {
            let route = Arc::clone(&route);
            async move { counted(&route.source.name, route.answer(headers, body).await) }
        });
        router = router.route(path, handler);
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

fn stopped(stop: Stop) -> Response {
    match stop {
        Stop::Body(e) => error(StatusCode::BAD_REQUEST, e.to_string(), None),
        Stop::NoRoom(e) => no_room(&e),
        Stop::NeedRoom(_) => unreachable!("handled by the pass's caller"),
    }
}

fn accepted(offsets: Vec<u64>, duplicate: bool) -> Response {
    let mut body = json!({ "accepted": offsets.len(), "offsets": offsets });
    if duplicate {
        body["duplicate"] = true.into();
    }
    (StatusCode::OK, Json(body)).into_response()
}

impl Route {
    async fn answer(self: &Arc<Self>, headers: HeaderMap, body: Body) -> Response {
        let memory = self.ingest.memory();
        let (body, mut reservation) =
            match read_body(memory, &headers, body, self.source.body_bytes_max).await {
                Ok(read) => read,
                Err(refused) => return refused.response(),
            };
        if let Some(response) = self.check_auth(&headers, &body) {
            return response;
        }
        let header_op = match headers.get("x-remix-op").map(|v| v.to_str().unwrap_or("")) {
            None | Some("upsert") => Ok(Op::Upsert),
            Some("delete") => Ok(Op::Delete),
            Some(other) => Err(format!("X-Remix-Op must be upsert or delete, not '{other}'")),
        };
        let header_op = match header_op {
            Ok(op) => op,
            // A malformed body is reported first, as the body is read before the header.
            Err(message) => {
                let walked = super::body::for_each_object(&body, &mut |_, _| true);
                let message = walked.err().map_or(message, |e| e.to_string());
                return error(StatusCode::BAD_REQUEST, message, None);
            }
        };
        let batch_key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (request, keys) = match (&batch_key, &self.source.idempotency_field) {
            (Some(key), _) => (key.clone(), KeyOf::Batch(key.clone())),
            (None, Some(field)) => (self.request_id(), KeyOf::Field(field.clone())),
            (None, None) => (self.request_id(), KeyOf::None),
        };
        let binding = self.source.routes[&self.path].clone();
        let pass = Pass {
            source: self.source.name.clone(),
            binding,
            op: header_op,
            delete_field: self.source.delete_field.clone(),
            request,
            keys,
            select: None,
        };
        let encoded = match self.pass(&pass, &body, &mut reservation).await {
            Ok(encoded) => encoded,
            Err(stop) => return stopped(stop),
        };
        match batch_key {
            Some(key) => self.with_batch_key(key, pass, body, encoded, reservation).await,
            None if matches!(pass.keys, KeyOf::Field(_)) => {
                self.with_field_keys(pass, body, encoded, reservation).await
            }
            None => {
                if !encoded.invalid.is_empty() {
                    return self.refuse(encoded, &pass.request).await;
                }
                drop(body);
                reservation.shrink_to(encoded.held_bytes());
                self.log_batch(encoded, Vec::new()).await.0
            }
        }
    }

    /// Runs `pass` over `body`: a large body on a blocking thread (waiting there for more room when it
    /// needs it), a small one here (growing first and running again when it needs more room).
    async fn pass(&self, pass: &Pass, body: &Bytes, reservation: &mut Reservation) -> Result<Encoded, Stop> {
        let model = Arc::clone(self.ingest.model(&pass.binding.model));
        if body.len() < BLOCKING_BODY_BYTES_MIN {
            loop {
                let reserved = reservation.bytes();
                let mut grow =
                    |bytes: u64| if bytes <= reserved { Ok(reserved) } else { Err(Stop::NeedRoom(bytes)) };
                match encode(pass, &model, body, reserved, &mut grow) {
                    Err(Stop::NeedRoom(bytes)) => reservation.grow_to(bytes).await.map_err(Stop::NoRoom)?,
                    done => return done,
                }
            }
        }
        let (pass, body) = (pass.clone(), body.clone());
        let mut held = std::mem::replace(reservation, self.ingest.memory().empty());
        let runtime = tokio::runtime::Handle::current();
        let (held, encoded) = tokio::task::spawn_blocking(move || {
            let reserved = held.bytes();
            let mut grow = |bytes: u64| {
                held.grow_to_blocking(bytes, &runtime).map(|()| held.bytes()).map_err(Stop::NoRoom)
            };
            let encoded = encode(&pass, &model, &body, reserved, &mut grow);
            (held, encoded)
        })
        .await
        .expect("the pass does not panic");
        *reservation = held;
        encoded
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

    fn request_id(&self) -> String {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        format!("req-{}-{n}", crate::time::now_ms())
    }

    /// The key in this route's scope (see [`IdempotencyKey`]).
    fn scoped(&self, key: &str) -> IdempotencyKey {
        IdempotencyKey::new(&self.source.name, &self.source.routes[&self.path].model, key)
    }

    async fn with_batch_key(
        &self,
        key: String,
        pass: Pass,
        body: Bytes,
        encoded: Encoded,
        mut reservation: Reservation,
    ) -> Response {
        let guard = match self.ingest.claim(&self.scoped(&key)).await {
            Claim::Done(landed) => {
                return accepted((landed.first_offset..=landed.last_offset).collect(), true)
            }
            Claim::Proceed(guard) => guard,
        };
        if !encoded.invalid.is_empty() {
            return self.refuse(encoded, &pass.request).await;
        }
        drop(body);
        reservation.shrink_to(encoded.held_bytes());
        self.log_batch(encoded, vec![guard]).await.0
    }

    async fn with_field_keys(
        &self,
        mut pass: Pass,
        body: Bytes,
        encoded: Encoded,
        mut reservation: Reservation,
    ) -> Response {
        // The batch is validated whole, with the sender's indexes, before any key is looked at.
        if !encoded.invalid.is_empty() {
            return self.refuse(encoded, &pass.request).await;
        }
        let objects = encoded.objects;
        let keys = &encoded.keys;
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
        let mut fresh = 0;
        let mut select: Vec<Option<usize>> = Vec::with_capacity(objects);
        let mut slot: Vec<Result<usize, u64>> = Vec::with_capacity(objects);
        for key in keys {
            match key {
                Some(key) if done.contains_key(key) => {
                    slot.push(Err(done[key].first_offset));
                    select.push(None);
                }
                Some(key) if first_of_key.contains_key(key.as_str()) => {
                    slot.push(Ok(first_of_key[key.as_str()]));
                    select.push(None);
                }
                _ => {
                    if let Some(key) = key {
                        first_of_key.insert(key, fresh);
                    }
                    slot.push(Ok(fresh));
                    select.push(Some(fresh));
                    fresh += 1;
                }
            }
        }
        let encoded = if fresh == objects {
            encoded
        } else {
            // The records to log are not those of the first pass (their positions count only the
            // objects logged): encode those again.
            drop(encoded);
            reservation.shrink_to(body.len() as u64);
            pass.select = Some(select);
            match self.pass(&pass, &body, &mut reservation).await {
                Ok(encoded) => encoded,
                Err(stop) => return stopped(stop),
            }
        };
        drop(body);
        reservation.shrink_to(encoded.held_bytes());
        let (response, landed) = self.log_batch(encoded, guards).await;
        if landed.is_none() && fresh > 0 {
            return response;
        }
        if fresh == objects {
            return response;
        }
        let offsets = slot.into_iter().map(|s| match s {
            Err(offset) => offset,
            Ok(i) => landed.expect("logged").first_offset + i as u64,
        });
        accepted(offsets.collect(), false)
    }

    /// Logs a batch whole, holding the claims of its idempotency keys until it is durable. Returns
    /// the answer and, when logged, where.
    async fn log_batch(&self, encoded: Encoded, guards: Vec<ClaimGuard>) -> (Response, Option<Landed>) {
        let mut batch: ChangeBatch = encoded.batch;
        if batch.is_empty() {
            return (accepted(Vec::new(), false), None);
        }
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
    async fn refuse(&self, encoded: Encoded, request: &str) -> Response {
        let model = self.source.routes[&self.path].model.clone();
        let objects = encoded.objects;
        let errors: Vec<Value> = encoded
            .invalid
            .iter()
            .flat_map(|invalid| {
                let index = invalid.index;
                invalid
                    .errors
                    .iter()
                    .map(move |e| json!({"index": index, "path": e.path, "message": e.message}))
            })
            .collect();
        let count = encoded.invalid.len();
        let letters: Vec<DeadLetter> = encoded
            .invalid
            .into_iter()
            .map(|Invalid { index, errors, input, op }| DeadLetter {
                source: self.source.name.clone(),
                position: format!("{request}:{index}"),
                model: model.clone(),
                route: self.path.clone(),
                errors,
                input,
                op: Some(op),
            })
            // A repeat of a refused request: its objects are in the DLQ already.
            .filter(|letter| self.ingest.dead_letters().indexes().open_dead_letter_like(letter).is_none())
            .collect();
        if let Err(e) = self.ingest.dead_letters().append(letters).await {
            return unavailable(&e);
        }
        let message = format!("{count} of {objects} records are invalid; nothing was accepted");
        error(StatusCode::UNPROCESSABLE_ENTITY, message, Some(("errors", Value::Array(errors))))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
