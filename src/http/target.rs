//! The `http` target: POSTs batches of changes as JSON to an arbitrary API.
//!
//! One request per batch:
//! `{"target": "<name>", "first_offset": N, "last_offset": M, "records": [{"offset", "time", "model",
//! "op", "key", "data" (upserts), "unchanged" (partial upserts)}]}`, with `Content-Type:
//! application/json`, the configured headers and `Idempotency-Key: <target>:<N>-<M>`, where `N..=M`
//! is the range of log offsets the request covers (`:g<G>` appended after the `G`-th rewind, below).
//! A 2xx means done. 408, 409 (a request with the same key still in progress), 425, 429, 5xx,
//! timeouts and connection errors are transient (retried by the worker with backoff; a `Retry-After`
//! is quoted in the error); any other status (including a redirect, which is never followed) is
//! permanent and handled by `on_error`. The target cannot tell which record of a batch the API
//! refused, so a permanent error names none (`item: None`): paused, the target shows the batch's range
//! and the API's answer; with `dead_letter` the worker sends the batch's records one at a time to find
//! it. `http://` and `https://` (rustls with the platform's trust roots).
//!
//! Exactly once per idempotency key, across crashes: after a restart the worker re-delivers from its
//! cursor and may cut batches differently, which would put records already sent under a new key. So
//! before each request the target durably records it, range and exact body, in
//! `<data_dir>/targets/<name>.inflight` (`{"first_offset":N,"last_offset":M,"body":"..."}`, with
//! `"generation":G` after a rewind), and keeps it after the 2xx. Everything before `N` was confirmed
//! (or dead-lettered) before that request was made, since the worker applies batches one at a time in
//! log order. On `open(cursor)`, a recorded request with `M > cursor` may have reached the API without
//! the cursor following: the first `apply` sends it again, byte for byte under the same key, and from
//! then on skips items at offsets up to `M` (they were in it); the rest of that batch goes out as a
//! second request with its own range and key (`<target>:<M+1>-<last>`), recorded first like any other.
//! If the API refuses the old request with a permanent error, it did not apply it, and the batch is
//! sent as usual.
//!
//! **Rewinds.** A rewind intentionally delivers again, so it forgets the request in flight and the
//! skip. Sent again as they were, the batches would carry the keys and bodies the API has already
//! answered, and an idempotent API would answer them from its cache without applying anything (a
//! rewind would repair nothing). So each rewind starts a new generation `G` (1, 2, ...), kept in the
//! same file (`{"generation":G}` right after the rewind, then beside each recorded request), and
//! the keys of generation `G > 0` are `<target>:<N>-<M>:g<G>`. A file without `generation` (as v0.1
//! wrote it) is generation 0, whose keys have no suffix: a data directory written before keeps its
//! keys, and its request in flight is resent under the key it was first sent with.

use crate::config::InvalidValue;
use crate::connector::StartError;
use crate::error_chain;
use crate::record::Op;
use crate::runtime::delivery::{Batch, Capabilities, Guarantee, Item, Target, TargetError};
use crate::runtime::state::{StateKey, StateStore};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// How much of a response body an error quotes.
const EXCERPT_CHARS: usize = 200;

/// POSTs batches; see the module docs.
#[derive(Debug)]
pub struct HttpTarget {
    name: String,
    url: reqwest::Url,
    /// The configured headers (values marked sensitive, so `Debug` does not print them).
    headers: HeaderMap,
    timeout: Duration,
    client: reqwest::Client,
    /// The request in flight (`<data_dir>/targets/<name>.inflight` in the file state store).
    journal: StateKey,
    state: Arc<dyn StateStore>,
    /// A request that may have reached the API before the node stopped: sent again first.
    resend: Option<Inflight>,
    /// Items at or before this offset were in a request confirmed since `open` (the resent one).
    sent_through: u64,
    /// How many times the target was rewound: keys of generation `G > 0` end in `:g<G>`.
    generation: u64,
}

/// A request as recorded before it is sent.
#[derive(Debug, Clone, PartialEq)]
struct Inflight {
    first_offset: u64,
    last_offset: u64,
    /// The exact request body.
    body: String,
    /// The rewind generation it belongs to (its key's suffix).
    generation: u64,
}

/// `<name>.inflight` as stored: the request last recorded (none right after a rewind) and the rewind
/// generation, left out while 0 so that the file is as v0.1 wrote it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct InflightFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    generation: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct Body<'a> {
    target: &'a str,
    first_offset: u64,
    last_offset: u64,
    records: Vec<OutRecord<'a>>,
}

#[derive(Serialize)]
struct OutRecord<'a> {
    offset: u64,
    time: String,
    model: &'a str,
    op: Op,
    key: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a crate::runtime::delivery::Fields>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    unchanged: &'a [String],
}

impl HttpTarget {
    pub fn new(
        config: &crate::http::config::HttpTarget,
        state: Arc<dyn StateStore>,
    ) -> Result<HttpTarget, StartError> {
        let name = &config.common.name;
        let refuse = |message: String| StartError { kind: "http target", name: name.clone(), message };
        let url = reqwest::Url::parse(&config.url).map_err(|e| refuse(format!("url: {e}")))?;
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(refuse(format!("url scheme '{other}' is not http or https"))),
        }
        crate::install_tls_provider();
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| refuse(format!("HTTP client: {}", error_chain(&e))))?;
        Ok(HttpTarget {
            name: name.clone(),
            url,
            headers: header_map(&config.headers).map_err(|e| refuse(e.0))?,
            timeout: config.timeout,
            client,
            journal: StateKey::TargetJournal { target: name.clone(), name: "inflight" },
            state,
            resend: None,
            sent_through: 0,
            generation: 0,
        })
    }

    /// The request for `items`, covering the offsets `first..=last`.
    fn request(&self, first: u64, last: u64, items: &[&Item]) -> Result<Inflight, TargetError> {
        let records = items
            .iter()
            .map(|item| OutRecord {
                offset: item.offset,
                time: crate::time::format_ms(item.timestamp_ms),
                model: &item.model,
                op: item.op,
                key: &item.key,
                data: item.data.as_ref(),
                unchanged: &item.unchanged,
            })
            .collect();
        let body = Body { target: &self.name, first_offset: first, last_offset: last, records };
        let body = serde_json::to_string(&body)
            .map_err(|e| TargetError::permanent(None, format!("cannot serialize: {e}")).caused_by(e))?;
        Ok(Inflight { first_offset: first, last_offset: last, body, generation: self.generation })
    }

    /// Durably records `request` as in flight.
    async fn record(&self, request: &Inflight) -> Result<(), TargetError> {
        let file = InflightFile {
            first_offset: Some(request.first_offset),
            last_offset: Some(request.last_offset),
            body: Some(request.body.clone()),
            generation: request.generation,
        };
        self.store(&file).await
    }

    /// Durably replaces the in-flight record with `file`.
    async fn store(&self, file: &InflightFile) -> Result<(), TargetError> {
        let bytes = serde_json::to_vec(file).expect("an in-flight record serializes");
        self.state
            .store(&self.journal, bytes)
            .await
            .map_err(|e| TargetError::transient(format!("http: {e}")).caused_by(e))
    }

    /// Sends `request` under its idempotency key.
    async fn post(&self, request: &Inflight) -> Result<(), TargetError> {
        let key = match request.generation {
            0 => format!("{}:{}-{}", self.name, request.first_offset, request.last_offset),
            g => format!("{}:{}-{}:g{g}", self.name, request.first_offset, request.last_offset),
        };
        let mut headers = self.headers.clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let value = HeaderValue::from_str(&key).map_err(|e| {
            TargetError::permanent(None, format!("idempotency key '{key}' is not a valid header value: {e}"))
        })?;
        headers.insert(IDEMPOTENCY_KEY, value);
        let sent =
            self.client.post(self.url.clone()).headers(headers).body(request.body.clone()).send().await;
        match sent {
            Ok(response) => outcome(response).await,
            Err(e) if e.is_timeout() => {
                Err(TargetError::transient(format!("POST {} timed out after {:?}", self.url, self.timeout)))
            }
            Err(e) => Err(TargetError::transient(format!("POST {}: {}", self.url, error_chain(&e)))),
        }
    }

    /// Sends the request left in flight by the previous run, if any.
    async fn resend(&mut self) -> Result<(), TargetError> {
        let Some(request) = self.resend.clone() else { return Ok(()) };
        match self.post(&request).await {
            Ok(()) => self.sent_through = request.last_offset,
            Err(TargetError::Permanent { message, .. }) => {
                let name = &self.name;
                tracing::warn!(target = %name, "the API refused the request left in flight: {message}");
            }
            Err(error) => return Err(error),
        }
        self.resend = None;
        Ok(())
    }
}

impl Target for HttpTarget {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            collapse: false,
            guarantee: Guarantee::IdempotencyKeys,
            batch_records_max: 100_000,
            batch_records_default: 500,
        }
    }

    async fn open(&mut self, cursor: u64) -> Result<u64, TargetError> {
        let stored = self.state.load(&self.journal).await;
        let stored = stored.map_err(|e| TargetError::transient(format!("http: {e}")).caused_by(e))?;
        let (generation, recorded) = read_inflight(&self.journal, stored)?;
        self.generation = generation;
        self.resend = recorded.filter(|request| request.last_offset > cursor);
        self.sent_through = 0;
        Ok(cursor)
    }

    async fn apply(&mut self, batch: &Batch) -> Result<(), TargetError> {
        self.resend().await?;
        let first = batch.first_offset.max(self.sent_through.saturating_add(1));
        let items: Vec<&Item> = batch.items.iter().filter(|item| item.offset >= first).collect();
        if items.is_empty() {
            return Ok(());
        }
        let request = self.request(first, batch.last_offset, &items)?;
        self.record(&request).await?;
        self.post(&request).await
    }

    async fn rewind(&mut self, offset: u64) -> Result<u64, TargetError> {
        // The new generation replaces the request in flight, durably before the worker stores the
        // rewound cursor: nothing is sent again under a key the API may have answered already.
        let generation = self.generation + 1;
        self.store(&InflightFile { generation, ..InflightFile::default() }).await?;
        self.generation = generation;
        self.resend = None;
        self.sent_through = 0;
        Ok(offset)
    }
}

/// The configured headers, checked, with their values marked sensitive.
fn header_map(headers: &std::collections::BTreeMap<String, String>) -> Result<HeaderMap, InvalidValue> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| InvalidValue(format!("header name '{name}': {e}")))?;
        if header == IDEMPOTENCY_KEY {
            return Err(InvalidValue("the Idempotency-Key header is set by Remix".into()));
        }
        let mut value = HeaderValue::from_str(value)
            .map_err(|e| InvalidValue(format!("value of header '{name}': {e}")))?;
        value.set_sensitive(true);
        map.append(header, value);
    }
    Ok(map)
}

/// What a response means for the batch.
async fn outcome(response: reqwest::Response) -> Result<(), TargetError> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let text = response.text().await.unwrap_or_default();
    let mut message = format!("HTTP {}: {}", status.as_u16(), crate::util::excerpt(&text, EXCERPT_CHARS));
    let transient = matches!(status.as_u16(), 408 | 409 | 425 | 429) || status.is_server_error();
    if !transient {
        return Err(TargetError::Permanent { item: None, message, source: None });
    }
    if let Some(after) = retry_after {
        message.push_str(&format!(" (Retry-After: {after})"));
    }
    Err(TargetError::transient(message))
}

/// The rewind generation and the request recorded in flight, if any (none without a record).
fn read_inflight(key: &StateKey, stored: Option<Vec<u8>>) -> Result<(u64, Option<Inflight>), TargetError> {
    // A record that does not parse is not guessed at: the target waits until it is fixed.
    let invalid = |e: String| TargetError::transient(format!("http: {key}: {e}"));
    let Some(bytes) = stored else { return Ok((0, None)) };
    let file: InflightFile = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    let InflightFile { first_offset, last_offset, body, generation } = file;
    let request = match (first_offset, last_offset, body) {
        (Some(first_offset), Some(last_offset), Some(body)) => {
            Some(Inflight { first_offset, last_offset, body, generation })
        }
        (None, None, None) => None,
        _ => return Err(invalid("first_offset, last_offset and body go together".into())),
    };
    Ok((generation, request))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file state store of a data directory, without a log (no cursors needed here).
    fn state_store(dir: &std::path::Path) -> Arc<dyn StateStore> {
        Arc::new(crate::runtime::state::FileStateStore::offline(dir))
    }
    use crate::config::{BatchConfig, OnError, TargetCommon, TruncatePolicy};
    use axum::extract::State;
    use axum::http::StatusCode;
    use serde_json::json;
    use std::collections::{BTreeMap, VecDeque};
    use std::sync::{Arc, Mutex};

    /// A request the test server received.
    #[derive(Debug, Clone)]
    struct Received {
        headers: axum::http::HeaderMap,
        body: String,
    }

    impl Received {
        fn key(&self) -> &str {
            self.headers.get(IDEMPOTENCY_KEY).and_then(|v| v.to_str().ok()).unwrap_or("")
        }

        fn json(&self) -> Value {
            serde_json::from_str(&self.body).unwrap()
        }

        fn offsets(&self) -> Vec<u64> {
            self.json()["records"].as_array().unwrap().iter().map(|r| r["offset"].as_u64().unwrap()).collect()
        }
    }

    /// One scripted answer: status, body, delay before answering.
    type Answer = (u16, &'static str, Duration);

    #[derive(Clone, Default)]
    struct Server {
        received: Arc<Mutex<Vec<Received>>>,
        script: Arc<Mutex<VecDeque<Answer>>>,
    }

    impl Server {
        async fn start() -> (Server, String) {
            let server = Server::default();
            let app =
                axum::Router::new().route("/hook", axum::routing::post(answer)).with_state(server.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/hook", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            (server, url)
        }

        fn then(&self, status: u16, body: &'static str) {
            self.script.lock().unwrap().push_back((status, body, Duration::ZERO));
        }

        fn received(&self) -> Vec<Received> {
            self.received.lock().unwrap().clone()
        }

        fn keys(&self) -> Vec<String> {
            self.received().iter().map(|r| r.key().to_owned()).collect()
        }
    }

    async fn answer(
        State(server): State<Server>,
        headers: axum::http::HeaderMap,
        body: String,
    ) -> (StatusCode, [(&'static str, &'static str); 1], &'static str) {
        server.received.lock().unwrap().push(Received { headers, body });
        let next = server.script.lock().unwrap().pop_front();
        let (status, text, delay) = next.unwrap_or((200, "ok", Duration::ZERO));
        tokio::time::sleep(delay).await;
        (StatusCode::from_u16(status).unwrap(), [("retry-after", "7")], text)
    }

    fn config(url: &str) -> crate::http::config::HttpTarget {
        crate::http::config::HttpTarget {
            common: TargetCommon {
                name: "hook".into(),
                rate_limit: None,
                batch: BatchConfig { records_max: Some(100), linger: Duration::ZERO },
                on_error: OnError::Pause,
                truncate: TruncatePolicy::Apply,
            },
            url: url.into(),
            headers: BTreeMap::from([("X-Api-Key".to_owned(), "secret".to_owned())]),
            timeout: Duration::from_secs(5),
            models: BTreeMap::new(),
        }
    }

    fn upsert(offset: u64) -> Item {
        Item {
            offset,
            timestamp_ms: 1_700_000_000_000 + offset,
            model: "order".into(),
            source: "s".into(),
            op: Op::Upsert,
            key: json!({"id": offset}),
            data: json!({"id": offset, "total": offset * 10})
                .as_object()
                .cloned()
                .map(crate::runtime::delivery::Fields::Map),
            unchanged: Vec::new(),
        }
    }

    /// Items at offsets 1..=20, except multiples of 3 (records for other targets).
    fn history() -> Vec<Item> {
        (1..=20).filter(|o| o % 3 != 0).map(upsert).collect()
    }

    fn batch(first: u64, last: u64) -> Batch {
        let items = history().into_iter().filter(|i| (first..=last).contains(&i.offset)).collect();
        Batch { first_offset: first, last_offset: last, items }
    }

    async fn opened(url: &str, data_dir: &std::path::Path, cursor: u64) -> HttpTarget {
        let mut target = HttpTarget::new(&config(url), state_store(data_dir)).unwrap();
        assert_eq!(target.open(cursor).await.unwrap(), cursor);
        target
    }

    #[tokio::test]
    async fn posts_the_batch_with_its_key_and_headers() {
        let (server, url) = Server::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let mut target = opened(&url, tmp.path(), 0).await;
        let partial = Item {
            data: json!({"id": 1, "total": 5})
                .as_object()
                .cloned()
                .map(crate::runtime::delivery::Fields::Map),
            unchanged: vec!["note".into()],
            ..upsert(2)
        };
        let delete = Item { op: Op::Delete, data: None, ..upsert(3) };
        let truncate = Item { op: Op::Truncate, data: None, key: Value::Null, ..upsert(5) };
        let items = vec![upsert(1), partial, delete, truncate];
        target.apply(&Batch { first_offset: 1, last_offset: 6, items }).await.unwrap();
        let received = server.received();
        assert_eq!(received.len(), 1);
        let headers = &received[0].headers;
        assert_eq!(received[0].key(), "hook:1-6");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-api-key"], "secret");
        let time = |o: u64| crate::time::format_ms(1_700_000_000_000 + o);
        let expected = json!({"target": "hook", "first_offset": 1, "last_offset": 6, "records": [
            {"offset": 1, "time": time(1), "model": "order", "op": "upsert", "key": {"id": 1},
                "data": {"id": 1, "total": 10}},
            {"offset": 2, "time": time(2), "model": "order", "op": "upsert", "key": {"id": 2},
                "data": {"id": 1, "total": 5}, "unchanged": ["note"]},
            {"offset": 3, "time": time(3), "model": "order", "op": "delete", "key": {"id": 3}},
            {"offset": 5, "time": time(5), "model": "order", "op": "truncate", "key": null},
        ]});
        assert_eq!(received[0].json(), expected);
        assert!(time(1).starts_with("2023-11-14T"), "{}", time(1));
    }

    #[tokio::test]
    async fn server_errors_are_transient_and_retried_under_the_same_key() {
        let (server, url) = Server::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let mut target = opened(&url, tmp.path(), 0).await;
        server.then(500, "database\n  down");
        server.then(429, "slow down");
        match target.apply(&batch(1, 4)).await {
            Err(TargetError::Transient { message, .. }) => {
                assert!(message.starts_with("HTTP 500: database down"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        match target.apply(&batch(1, 4)).await {
            Err(TargetError::Transient { message, .. }) => {
                assert!(message.contains("Retry-After: 7"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        target.apply(&batch(1, 4)).await.unwrap();
        assert_eq!(server.keys(), ["hook:1-4"; 3]);
        let bodies: Vec<String> = server.received().into_iter().map(|r| r.body).collect();
        assert!(bodies.iter().all(|b| b == &bodies[0]));
    }

    #[tokio::test]
    async fn client_errors_are_permanent() {
        let (server, url) = Server::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let mut target = opened(&url, tmp.path(), 0).await;
        server.then(400, "{\"error\": \"bad total\"}");
        let error = target.apply(&batch(1, 4)).await.unwrap_err();
        assert!(matches!(&error, TargetError::Permanent { item: None, .. }), "{error:?}");
        assert_eq!(error.message(), "HTTP 400: {\"error\": \"bad total\"}");
        server.then(302, "");
        assert!(matches!(target.apply(&batch(1, 4)).await, Err(TargetError::Permanent { .. })));
    }

    #[tokio::test]
    async fn timeouts_and_unreachable_servers_are_transient() {
        let (server, url) = Server::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let mut config = config(&url);
        config.timeout = Duration::from_millis(200);
        let mut target = HttpTarget::new(&config, state_store(tmp.path())).unwrap();
        target.open(0).await.unwrap();
        server.script.lock().unwrap().push_back((200, "late", Duration::from_secs(2)));
        match target.apply(&batch(1, 4)).await {
            Err(TargetError::Transient { message, .. }) => {
                assert!(message.contains("timed out"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let mut target = opened(&format!("http://{closed}/hook"), tmp.path(), 0).await;
        assert!(matches!(target.apply(&batch(1, 4)).await, Err(TargetError::Transient { .. })));
    }

    #[tokio::test]
    async fn a_restart_resends_the_request_in_flight_under_the_same_key() {
        let (server, url) = Server::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let mut target = opened(&url, tmp.path(), 0).await;
        target.apply(&batch(1, 7)).await.unwrap();
        drop(target);
        // The node died before storing cursor 7; the worker now cuts 1..=3, 4..=5, 6..=12.
        let mut target = opened(&url, tmp.path(), 0).await;
        for (first, last) in [(1, 3), (4, 5), (6, 12)] {
            target.apply(&batch(first, last)).await.unwrap();
        }
        let received = server.received();
        assert_eq!(server.keys(), ["hook:1-7", "hook:1-7", "hook:8-12"]);
        assert_eq!(received[1].body, received[0].body, "the resent request is identical");
        assert_eq!(received[0].offsets(), [1, 2, 4, 5, 7]);
        assert_eq!(received[2].offsets(), [8, 10, 11]);
        assert_eq!(received[2].json()["first_offset"], 8);
        // Cursor 12 stored: nothing is resent.
        let mut target = opened(&url, tmp.path(), 12).await;
        target.apply(&batch(13, 20)).await.unwrap();
        assert_eq!(server.keys()[3..], ["hook:13-20"]);
    }

    #[tokio::test]
    async fn a_restart_inside_a_larger_batch_resends_then_sends_the_rest() {
        let (server, url) = Server::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let mut target = opened(&url, tmp.path(), 0).await;
        target.apply(&batch(1, 4)).await.unwrap();
        server.then(503, "");
        assert!(target.apply(&batch(5, 8)).await.is_err());
        drop(target);
        // Cursor 4 was stored; 5..=8 failed (or got lost) before the restart.
        let mut target = opened(&url, tmp.path(), 4).await;
        server.then(503, "");
        assert!(target.apply(&batch(5, 20)).await.is_err(), "the resend fails first");
        target.apply(&batch(5, 20)).await.unwrap();
        let keys = server.keys();
        assert_eq!(keys, ["hook:1-4", "hook:5-8", "hook:5-8", "hook:5-8", "hook:9-20"]);
        assert_eq!(server.received()[4].offsets(), [10, 11, 13, 14, 16, 17, 19, 20]);
    }

    #[tokio::test]
    async fn a_refused_resend_is_delivered_anew() {
        let (server, url) = Server::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let mut target = opened(&url, tmp.path(), 0).await;
        server.then(422, "no");
        assert!(target.apply(&batch(1, 4)).await.is_err());
        let mut target = opened(&url, tmp.path(), 0).await;
        server.then(422, "still no");
        target.apply(&batch(1, 8)).await.unwrap();
        assert_eq!(server.keys(), ["hook:1-4", "hook:1-4", "hook:1-8"]);
    }

    #[tokio::test]
    async fn a_rewind_forgets_the_request_in_flight_and_starts_a_key_generation() {
        let (server, url) = Server::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("targets/hook.inflight");
        let mut target = opened(&url, tmp.path(), 0).await;
        target.apply(&batch(1, 7)).await.unwrap();
        let recorded: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let fields: Vec<&String> = recorded.as_object().unwrap().keys().collect();
        assert_eq!(fields, ["body", "first_offset", "last_offset"], "generation 0 writes the v0.1 format");
        let mut target = opened(&url, tmp.path(), 0).await;
        assert_eq!(target.rewind(0).await.unwrap(), 0);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), r#"{"generation":1}"#);
        // 1..=7 is not resent: the rewind forgot it; 1..=12 goes under a key the API has not answered.
        target.apply(&batch(1, 12)).await.unwrap();
        let recorded: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(recorded["generation"], 1, "{recorded}");
        // The generation outlives a restart; the request in flight is resent under its own key.
        let mut target = opened(&url, tmp.path(), 0).await;
        target.apply(&batch(1, 3)).await.unwrap();
        target.rewind(0).await.unwrap();
        target.apply(&batch(1, 3)).await.unwrap();
        let mut target = opened(&url, tmp.path(), 3).await;
        target.apply(&batch(4, 5)).await.unwrap();
        let keys = server.keys();
        assert_eq!(keys, ["hook:1-7", "hook:1-12:g1", "hook:1-12:g1", "hook:1-3:g2", "hook:4-5:g2"]);
        let received = server.received();
        assert_eq!(received[2].body, received[1].body, "the resent request is identical");
        assert_eq!(received[3].offsets(), [1, 2]);
    }

    #[tokio::test]
    async fn a_v0_1_request_in_flight_is_resent_under_its_key() {
        let (server, url) = Server::start().await;
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("targets")).unwrap();
        let body = r#"{"target":"hook","first_offset":4,"last_offset":5,"records":[]}"#;
        let file = json!({"first_offset": 4, "last_offset": 5, "body": body}).to_string();
        std::fs::write(tmp.path().join("targets/hook.inflight"), file).unwrap();
        let mut target = opened(&url, tmp.path(), 3).await;
        target.apply(&batch(4, 8)).await.unwrap();
        assert_eq!(server.keys(), ["hook:4-5", "hook:6-8"]);
        assert_eq!(server.received()[0].body, body);
        // A torn combination is refused rather than guessed at.
        std::fs::write(tmp.path().join("targets/hook.inflight"), r#"{"first_offset":4,"generation":2}"#)
            .unwrap();
        let mut target = HttpTarget::new(&config(&url), state_store(tmp.path())).unwrap();
        assert!(matches!(target.open(0).await, Err(TargetError::Transient { .. })));
    }

    #[test]
    fn other_schemes_and_bad_headers_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        HttpTarget::new(&config("https://api.example.com/hook"), state_store(tmp.path()))
            .expect("https is supported");
        let error =
            HttpTarget::new(&config("ftp://api.example.com/hook"), state_store(tmp.path())).unwrap_err();
        assert!(error.to_string().contains("is not http or https"), "{error}");
        let mut bad = config("http://127.0.0.1:1/hook");
        bad.headers.insert("Idempotency-Key".into(), "x".into());
        assert!(HttpTarget::new(&bad, state_store(tmp.path())).is_err());
        let mut bad = config("http://127.0.0.1:1/hook");
        bad.headers.insert("X-Bad".into(), "line\nbreak".into());
        assert!(HttpTarget::new(&bad, state_store(tmp.path())).is_err());
        let target = HttpTarget::new(&config("http://127.0.0.1:1/hook"), state_store(tmp.path())).unwrap();
        assert!(!format!("{target:?}").contains("secret"), "header values stay out of Debug");
    }
}
