//! The `stripe` source: Stripe webhooks, verified, deduplicated by event id, routed by object type,
//! and a catch-up through the Events API for what was missed while the node was down.
//!
//! **Webhooks** (`POST <path>` on the source's `listen` address, shared with the other sources that
//! name it). The `Stripe-Signature` header is verified as Stripe specifies ([`signature`]); a missing
//! or wrong signature, an expired timestamp or a body that is not an event is answered 400 with the
//! reason. A genuine event is answered 200 only after the fsync that covers what it became:
//! - routed by `data.object.object` (`customer`, `checkout.session`) to the model bound in `objects`,
//!   remixed and validated; `*.deleted` events become deletes;
//! - logged as one change record with `position` `<event id>@<created>[.<updated>]` and
//!   `idempotency_key` `stripe:<event id>`, which is how an event already logged is recognised (also
//!   after a restart: the index is rebuilt from the log) and answered 200 again without a second
//!   record;
//! - an object type without a binding: 200 and `remix_stripe_events_ignored_total`, nothing logged;
//! - an object that does not remix or validate: a dead letter (its event stays recognised while the
//!   letter is open), then 200, since Stripe would otherwise retry it for days;
//! - an event older than the newest one logged for the same model key: 200, nothing logged
//!   ([`order`] documents the rule);
//! - the log cannot accept (disk full, shutting down), or the ingest memory budget has no room for
//!   the request within its wait (a burst; the body is read only once it has room): 503 with
//!   `Retry-After`, and Stripe retries.
//!
//! **Catch-up** ([`catch_up`]): at start (when the log holds an event of this source) and on demand
//! (`remix source catch-up NAME`), the Events API is read from a little before the newest event the
//! log holds, oldest first, and every event goes the same way as a webhook.

use super::config::StripeSource;
use super::events::{self, Event};
use super::order::{self, Entered, Gate};
use super::{api, catch_up, signature};
use crate::record::{Change, DeadLetter};
use crate::runtime::ingest::indexes::{Claim, ClaimGuard, IdempotencyKey};
use crate::runtime::ingest::remix_in::Origin;
use crate::runtime::ingest::{remix_in, AppendError, RemixOutcome};
use crate::runtime::ingest::{ChangeBatch, Ingest};
use crate::runtime::serve::read_body;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Seconds a 503 asks Stripe to wait.
const RETRY_AFTER_SECONDS: u64 = 5;
/// Stripe's event bodies are small; anything beyond this is not an event.
const BODY_BYTES_MAX: u64 = 4 << 20;
/// Timeout of one call to the Stripe API.
const API_TIMEOUT: Duration = Duration::from_secs(30);
/// `newest_created` before any event is known.
const NONE: i64 = i64::MIN;

/// What a Stripe source keeps from the log: built before the log is scanned at start, fed every
/// change record of the scan ([`StripeState::observe`]).
#[derive(Debug)]
pub struct StripeState {
    source: StripeSource,
    gate: Gate,
    /// The newest `created` among the events logged by this source.
    newest_created: AtomicI64,
}

impl StripeState {
    pub fn new(source: &StripeSource) -> Arc<StripeState> {
        Arc::new(StripeState {
            source: source.clone(),
            gate: Gate::default(),
            newest_created: AtomicI64::new(NONE),
        })
    }

    pub fn name(&self) -> &str {
        &self.source.name
    }
}

impl crate::connector::LogFold for StripeState {
    /// One change record of the log (any source; others are ignored).
    fn observe(&self, change: &Change) {
        if change.source != self.source.name {
            return;
        }
        if let Some((_, order)) = events::parse_position(&change.position) {
            self.gate.observe(gate_key(&change.model, &change.key), order);
            self.newest_created.fetch_max(order.created, Ordering::Relaxed);
        }
    }

    fn save(&self) -> Value {
        json!({ "newest_created": self.newest_created(), "gate": self.gate.entries() })
    }

    fn restore(&self, saved: &Value) -> Result<(), crate::connector::FoldError> {
        #[derive(serde::Deserialize)]
        struct Saved {
            newest_created: Option<i64>,
            gate: Vec<(String, order::Order)>,
        }
        let saved: Saved = serde_json::from_value(saved.clone())
            .map_err(|e| crate::connector::FoldError(format!("stripe source {}: {e}", self.source.name)))?;
        if let Some(created) = saved.newest_created {
            self.newest_created.fetch_max(created, Ordering::Relaxed);
        }
        for (key, order) in saved.gate {
            self.gate.observe(key, order);
        }
        Ok(())
    }
}

impl StripeState {
    /// The newest `created` (Unix seconds) of the events this source logged, if any.
    pub fn newest_created(&self) -> Option<i64> {
        Some(self.newest_created.load(Ordering::Relaxed)).filter(|&c| c != NONE)
    }
}

fn gate_key(model: &str, key: &Value) -> String {
    format!("{model} {key}")
}

/// What became of one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Logged {
        offset: u64,
    },
    /// Logged before (or dead-lettered and still open): nothing appended.
    Duplicate {
        offset: Option<u64>,
    },
    /// No binding for the object type.
    Ignored,
    /// Older than the newest event logged for the key.
    Stale,
    DeadLettered {
        id: u64,
    },
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Logged { .. } => "logged",
            Outcome::Duplicate { .. } => "duplicate",
            Outcome::Ignored => "ignored",
            Outcome::Stale => "stale",
            Outcome::DeadLettered { .. } => "dead_lettered",
        }
    }
}

/// A running Stripe source: its webhook route, its catch-up, and the processing they share.
#[derive(Debug, Clone)]
pub struct StripeHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Arc<StripeState>,
    ingest: Ingest,
    api: Option<api::Api>,
    /// One catch-up at a time.
    catching_up: tokio::sync::Mutex<()>,
    /// Event ids whose object is in the DLQ (not a change record, so not in the idempotency index).
    dead_lettered: Mutex<HashSet<String>>,
}

impl StripeHandle {
    pub fn new(state: Arc<StripeState>, ingest: Ingest) -> Result<StripeHandle, api::ApiError> {
        let source = &state.source;
        let api = match &source.api_key {
            Some(key) => Some(api::Api::new(&source.api_base, key, API_TIMEOUT)?),
            None => None,
        };
        let dead_lettered = ingest
            .indexes()
            .dead_letters()
            .into_iter()
            .filter(|entry| entry.letter.source == source.name)
            .filter_map(|entry| events::parse_position(&entry.letter.position).map(|(id, _)| id.to_owned()))
            .collect();
        let inner = Inner {
            state,
            ingest,
            api,
            catching_up: tokio::sync::Mutex::new(()),
            dead_lettered: Mutex::new(dead_lettered),
        };
        Ok(StripeHandle { inner: Arc::new(inner) })
    }

    pub fn name(&self) -> &str {
        self.inner.state.name()
    }

    pub fn state(&self) -> &Arc<StripeState> {
        &self.inner.state
    }

    fn source(&self) -> &StripeSource {
        &self.inner.state.source
    }

    /// The webhook route, to be merged into the server of the source's listen address.
    pub fn router(&self) -> Router {
        let handle = self.clone();
        let handler = axum::routing::post(move |headers: HeaderMap, body: Body| {
            let handle = handle.clone();
            async move { handle.webhook(headers, body).await }
        });
        Router::new().route(&self.source().path, handler)
    }

    async fn webhook(&self, headers: HeaderMap, body: Body) -> Response {
        crate::runtime::serve::counted(self.name(), self.answer(&headers, body).await)
    }

    async fn answer(&self, headers: &HeaderMap, body: Body) -> Response {
        // Held until the event is answered: its body, and what it becomes.
        let memory = self.inner.ingest.memory();
        let (body, _reservation) = match read_body(memory, headers, body, BODY_BYTES_MAX).await {
            Ok(read) => read,
            Err(refused) => return refused.response(),
        };
        let source = self.source();
        let header = headers.get("stripe-signature").map(|v| v.to_str().unwrap_or(""));
        let now = (crate::time::now_ms() / 1000) as i64;
        if let Err(e) = signature::verify(header, &body, &source.signing_secret, source.tolerance, now) {
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
        let value: Value = match serde_json::from_slice(&body) {
            Ok(value) => value,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
        };
        let event = match Event::parse(&value) {
            Ok(event) => event,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        };
        match self.process(&event).await {
            Ok(outcome) => {
                let mut body = json!({"received": true, "event": event.id, "outcome": outcome.label()});
                match outcome {
                    Outcome::Logged { offset } | Outcome::Duplicate { offset: Some(offset) } => {
                        body["offset"] = offset.into()
                    }
                    Outcome::DeadLettered { id } => body["dead_letter"] = id.into(),
                    _ => {}
                }
                (StatusCode::OK, Json(body)).into_response()
            }
            Err(e) => {
                let status = match e {
                    AppendError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                    _ => StatusCode::SERVICE_UNAVAILABLE,
                };
                let mut response = error(status, e.to_string());
                response.headers_mut().insert("retry-after", RETRY_AFTER_SECONDS.into());
                response
            }
        }
    }

    /// Processes one genuine event (from a webhook or the Events API). `Err`: nothing was logged,
    /// the sender should retry.
    pub async fn process(&self, event: &Event) -> Result<Outcome, AppendError> {
        let outcome = self.process_inner(event).await;
        if let Ok(outcome) = &outcome {
            let source = self.name().to_owned();
            metrics::counter!("remix_stripe_events_total", "source" => source.clone(), "outcome" => outcome.label())
                .increment(1);
            if *outcome == Outcome::Ignored {
                metrics::counter!("remix_stripe_events_ignored_total", "source" => source, "object" => event.object_type.clone())
                    .increment(1);
            }
        }
        outcome
    }

    async fn process_inner(&self, event: &Event) -> Result<Outcome, AppendError> {
        let Some(binding) = self.source().objects.get(&event.object_type) else {
            return Ok(Outcome::Ignored);
        };
        let key = event.idempotency_key();
        let scoped = IdempotencyKey::new(self.name(), &binding.model, &key);
        match self.inner.ingest.claim(&scoped).await {
            Claim::Done(landed) => Ok(Outcome::Duplicate { offset: Some(landed.first_offset) }),
            // The key lands with the change (when one is logged), else it is released.
            Claim::Proceed(guard) => self.claimed(event, &key, guard).await,
        }
    }

    fn dead_lettered(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.inner.dead_lettered.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// With the event's idempotency key claimed.
    async fn claimed(&self, event: &Event, key: &str, guard: ClaimGuard) -> Result<Outcome, AppendError> {
        let ingest = &self.inner.ingest;
        let source = self.source();
        if self.dead_lettered().contains(&event.id) {
            return Ok(Outcome::Duplicate { offset: None });
        }
        let Some(binding) = source.objects.get(&event.object_type) else { return Ok(Outcome::Ignored) };
        let model = ingest.model(&binding.model);
        let origin = Origin { source: &source.name, position: event.position(), idempotency_key: Some(key) };
        let change = match remix_in(binding, model, &event.object, event.op(), origin) {
            RemixOutcome::Valid(change) => change,
            RemixOutcome::Invalid(errors) => {
                let letter = DeadLetter {
                    source: source.name.clone(),
                    position: event.position(),
                    model: binding.model.clone(),
                    route: event.object_type.clone(),
                    errors,
                    input: event.object.clone(),
                    op: Some(event.op()),
                };
                let id = ingest.dead_letters().append(vec![letter]).await?[0];
                self.dead_lettered().insert(event.id.clone());
                tracing::warn!(source = %source.name, event = %event.id, dead_letter = id,
                    "a Stripe {} object is invalid: dead-lettered", event.object_type);
                return Ok(Outcome::DeadLettered { id });
            }
        };
        let pass = match self
            .inner
            .state
            .gate
            .enter(&gate_key(&change.model, &change.key), event.order())
            .await
        {
            Entered::Stale { newest } => {
                tracing::info!(source = %source.name, event = %event.id, created = event.created,
                    newest_created = newest.created, "an older Stripe event than the one logged for its key: not logged");
                return Ok(Outcome::Stale);
            }
            Entered::Newer(pass) => pass,
        };
        let mut batch = ChangeBatch::new();
        batch.push(&change);
        batch.hold(guard);
        // The state follows the log's order (what the start-up checkpoint keeps).
        let (state, logged) = (Arc::clone(&self.inner.state), change.clone());
        batch.then(move |_| crate::connector::LogFold::observe(state.as_ref(), &logged));
        let appended = ingest.append(&source.name, batch).await?;
        pass.commit();
        self.inner.state.newest_created.fetch_max(event.created, Ordering::Relaxed);
        Ok(Outcome::Logged { offset: appended.first_offset })
    }

    /// Reads the Events API from a little before the newest event logged (everything Stripe still
    /// has when none is), oldest first. One catch-up at a time: a second waits for the first.
    pub async fn catch_up(&self) -> Result<catch_up::Report, catch_up::CatchUpError> {
        let _one = self.inner.catching_up.lock().await;
        let Some(api) = &self.inner.api else {
            return Err(catch_up::CatchUpError::NoApiKey(self.name().to_owned()));
        };
        catch_up::run(self, api, self.inner.state.newest_created()).await
    }

    /// The catch-up at start, in the background until done or shut down: only when an API key is
    /// configured and the log holds an event of this source.
    pub fn spawn_catch_up_at_start(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let handle = self.clone();
        if handle.inner.api.is_none() || handle.inner.state.newest_created().is_none() {
            return;
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => {}
                result = handle.catch_up() => match result {
                    Ok(report) => tracing::info!(source = %handle.name(), "catch-up done: {}", report.summary()),
                    Err(e) => tracing::error!(source = %handle.name(), "catch-up failed: {}", crate::error_chain(&e)),
                },
            }
        });
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    crate::runtime::serve::error(status, message, None)
}
