//! Catch-up through the Events API (`GET /v1/events`): the events Stripe created while the node was
//! down, or whose webhooks never arrived, oldest first.
//!
//! The list is newest first. The catch-up starts [`OVERLAP_SECONDS`] before the newest event the log
//! holds (webhooks arrive out of order, so an older event may still be missing), or with everything
//! Stripe still keeps (30 days) when the log holds none. It first pages back with `created[gte]` and
//! `starting_after` to the oldest page of that range, keeping only the current page, then walks
//! forward with `ending_before=<newest id seen>` until no page is left, processing every page oldest
//! event first. So memory stays at one page, and the log's newest `created` never runs ahead of an
//! event not yet logged (a catch-up interrupted half-way starts again early enough). Every event goes
//! through the same path as a webhook: events already logged are skipped by id, older states never
//! overwrite newer ones. Rate-limit answers (429) are waited out as `Retry-After` asks; other
//! transient failures are retried a few times with backoff, then the catch-up stops with an error
//! (the next one starts over).

use super::api::{Api, ApiError};
use super::events::Event;
use super::source::{Outcome, StripeHandle};
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

/// Events per page (Stripe's maximum).
pub const PAGE_LIMIT: usize = 100;
/// How far before the newest logged event a catch-up starts.
pub const OVERLAP_SECONDS: i64 = 600;
/// Attempts of one page request that fails transiently (besides 429s, which are waited out).
const ATTEMPTS_MAX: u32 = 6;

/// What a catch-up did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub source: String,
    /// The `created[gte]` it started from (Unix seconds), `None` for everything Stripe keeps.
    pub since: Option<i64>,
    pub pages: u64,
    pub events: u64,
    pub logged: u64,
    pub duplicates: u64,
    pub stale: u64,
    pub ignored: u64,
    pub dead_lettered: u64,
    /// Listed events that are not events Remix can read (skipped, with a warning each).
    pub malformed: u64,
}

impl Report {
    pub fn summary(&self) -> String {
        format!(
            "{} events in {} pages: {} logged, {} already logged, {} stale, {} ignored (no binding), {} dead-lettered, {} malformed",
            self.events, self.pages, self.logged, self.duplicates, self.stale, self.ignored, self.dead_lettered, self.malformed
        )
    }
}

/// Why a catch-up stopped (what it logged before stays logged).
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    #[error("source '{0}': no api_key configured, so no catch-up through the Events API")]
    NoApiKey(String),
    #[error("the Events API failed: {0}")]
    Api(#[from] ApiError),
    #[error("{0}")]
    Listing(String),
    #[error(transparent)]
    Append(#[from] crate::runtime::ingest::AppendError),
}

#[derive(Debug)]
struct Page {
    data: Vec<Value>,
    has_more: bool,
}

impl Page {
    fn id(&self, index: usize) -> Result<String, CatchUpError> {
        self.data[index]
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| CatchUpError::Listing("an event in the list has no id".into()))
    }
}

pub(super) async fn run(
    handle: &StripeHandle,
    api: &Api,
    newest: Option<i64>,
) -> Result<Report, CatchUpError> {
    let since = newest.map(|created| created.saturating_sub(OVERLAP_SECONDS));
    let mut report = Report { source: handle.name().to_owned(), since, ..Report::default() };
    let mut back = format!("/v1/events?limit={PAGE_LIMIT}");
    if let Some(since) = since {
        back.push_str(&format!("&created[gte]={since}"));
    }
    let mut page = fetch(api, &back, &mut report).await?;
    while page.has_more && !page.data.is_empty() {
        let oldest = page.id(page.data.len() - 1)?;
        page = fetch(
            api,
            &format!("{back}&starting_after={}", super::api::percent_encode(&oldest)),
            &mut report,
        )
        .await?;
    }
    loop {
        if page.data.is_empty() {
            break;
        }
        for event in page.data.iter().rev() {
            process(handle, event, &mut report).await?;
        }
        let newest = page.id(0)?;
        let forward =
            format!("/v1/events?limit={PAGE_LIMIT}&ending_before={}", super::api::percent_encode(&newest));
        page = fetch(api, &forward, &mut report).await?;
    }
    Ok(report)
}

async fn process(handle: &StripeHandle, value: &Value, report: &mut Report) -> Result<(), CatchUpError> {
    report.events += 1;
    let event = match Event::parse(value) {
        Ok(event) => event,
        Err(message) => {
            report.malformed += 1;
            tracing::warn!(source = %handle.name(), "catch-up: skipping a listed event: {message}");
            return Ok(());
        }
    };
    match handle.process(&event).await? {
        Outcome::Logged { .. } => report.logged += 1,
        Outcome::Duplicate { .. } => report.duplicates += 1,
        Outcome::Stale => report.stale += 1,
        Outcome::Ignored => report.ignored += 1,
        Outcome::DeadLettered { .. } => report.dead_lettered += 1,
    }
    Ok(())
}

async fn fetch(api: &Api, path: &str, report: &mut Report) -> Result<Page, CatchUpError> {
    let mut attempt = 0;
    let body = loop {
        attempt += 1;
        match api.get(path).await {
            Ok(body) => break body,
            Err(e) if e.is_transient() && attempt < ATTEMPTS_MAX => {
                let delay = Duration::from_millis(250 << attempt.min(8));
                tracing::warn!(path, attempt, delay_ms = delay.as_millis() as u64, "catch-up: {e}");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(CatchUpError::Api(e)),
        }
    };
    report.pages += 1;
    let data = match body.get("data") {
        Some(Value::Array(data)) => data.clone(),
        _ => return Err(CatchUpError::Listing(format!("GET {path}: the answer is not a list of events"))),
    };
    let has_more = body.get("has_more").and_then(Value::as_bool).unwrap_or(false);
    Ok(Page { data, has_more })
}
