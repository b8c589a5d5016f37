//! The `http` target through the suite, against an imitation of an idempotent API: it applies the
//! records of each new `Idempotency-Key` (upserts merge partial records, deletes, truncates) and
//! answers a key it has already answered 2xx from its cache without applying anything, as Stripe and
//! the IETF Idempotency-Key draft specify; a key reused with a different body is refused (422).
//!
//! Checked: the API's objects equal the model state; every request's key names its offset range
//! (`sink:<first>-<last>`, with `:g<N>` after the N-th rewind); no offset is delivered under two keys
//! (within one delivery, i.e. between rewinds); the de-duplicated sequence of delivered records
//! equals the log (offset, time, model, op, key, data, unchanged). Unreachable: a [`Gate`] in front of
//! the API, closed. Permanent error: the API answers 400 to a batch holding the poisoned account,
//! naming its offset in the body (the target cannot tell which record of a batch an API refused).

use super::cases;
use super::gate::Gate;
use super::model::{canonical, normalize, offset, ModelState};
use super::{Adapter, History, Rewound, State, TargetSpec, TARGET};
use crate::support::Node;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

const TOKEN: &str = "conformance-token";

/// One request the API received.
#[derive(Debug, Clone)]
struct Request {
    key: String,
    body: String,
    status: u16,
    /// Applied (a new key), not answered from the cache.
    applied: bool,
    epoch: usize,
}

#[derive(Debug, Default)]
struct Api {
    requests: Vec<Request>,
    /// Keys answered 2xx -> their body.
    answered: HashMap<String, String>,
    /// (model, canonical key) -> object.
    objects: BTreeMap<(String, String), Value>,
    poison: Option<String>,
    epoch: usize,
}

impl Api {
    fn handle(&mut self, authorization: Option<&str>, key: &str, body: String) -> (u16, Value) {
        let (status, answer, applied) = self.answer(authorization, key, &body);
        let epoch = self.epoch;
        self.requests.push(Request { key: key.to_owned(), body, status, applied, epoch });
        (status, answer)
    }

    fn answer(&mut self, authorization: Option<&str>, key: &str, body: &str) -> (u16, Value, bool) {
        if authorization != Some(&format!("Bearer {TOKEN}")) {
            return (401, json!({"error": "missing or wrong bearer token"}), false);
        }
        if let Some(first) = self.answered.get(key) {
            return if first == body {
                (200, json!({"replayed": true}), false)
            } else {
                (422, json!({"error": format!("Idempotency-Key {key} was used with another body")}), false)
            };
        }
        let Ok(request) = serde_json::from_str::<Value>(body) else {
            return (400, json!({"error": "the body is not JSON"}), false);
        };
        let records = request["records"].as_array().cloned().unwrap_or_default();
        if let Some(marker) = &self.poison {
            if let Some(bad) = records.iter().find(|r| r["data"]["name"] == marker.as_str()) {
                let message =
                    format!("record at offset {} refused: name {marker} is not allowed", bad["offset"]);
                return (400, json!({"error": message}), false);
            }
        }
        for record in &records {
            let model = record["model"].as_str().unwrap_or_default().to_owned();
            let id = (model.clone(), canonical(&record["key"]));
            match record["op"].as_str() {
                Some("upsert") => {
                    let mut object = record["data"].clone();
                    let previous = self.objects.get(&id);
                    for field in record["unchanged"].as_array().into_iter().flatten() {
                        let field = field.as_str().unwrap_or_default();
                        if let Some(value) = previous.and_then(|p| p.get(field)) {
                            object[field] = value.clone();
                        }
                    }
                    self.objects.insert(id, object);
                }
                Some("delete") => {
                    self.objects.remove(&id);
                }
                Some("truncate") => self.objects.retain(|(m, _), _| *m != model),
                _ => return (400, json!({"error": format!("bad record {record}")}), false),
            }
        }
        self.answered.insert(key.to_owned(), body.to_owned());
        (200, json!({"accepted": records.len()}), true)
    }
}

#[derive(Debug)]
pub struct Http {
    api: Arc<Mutex<Api>>,
    gate: Gate,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Http {
    pub fn new(_root: &Path) -> Http {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let api: Arc<Mutex<Api>> = Arc::default();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let upstream = listener.local_addr().unwrap().to_string();
        let shared = Arc::clone(&api);
        let handler = move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let api = Arc::clone(&shared);
            async move {
                let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let key = header("idempotency-key").unwrap_or_default();
                let body = String::from_utf8_lossy(&body).into_owned();
                let (status, answer) =
                    api.lock().unwrap().handle(header("authorization").as_deref(), &key, body);
                (axum::http::StatusCode::from_u16(status).unwrap(), axum::Json(answer))
            }
        };
        let router = axum::Router::new().route("/ingest", axum::routing::post(handler));
        runtime.spawn(async move { axum::serve(listener, router).await.unwrap() });
        Http { api, gate: Gate::start(&upstream), runtime: Some(runtime) }
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Whether an idempotency key is `range`, or `range:g<N>` (the `N`-th rewind's generation).
fn names_range(key: &str, range: &str) -> bool {
    match key.strip_prefix(range) {
        Some("") => true,
        Some(suffix) => {
            suffix.strip_prefix(":g").is_some_and(|n| !n.starts_with('0') && n.parse::<u64>().is_ok())
        }
        None => false,
    }
}

/// A log record as the http target sends it.
fn as_sent(record: &Value) -> Value {
    let mut sent = json!({"offset": record["offset"], "time": record["time"], "model": record["model"],
        "op": record["op"], "key": record.get("key").cloned().unwrap_or(Value::Null)});
    if record["op"] == "upsert" {
        sent["data"] = record["data"].clone();
    }
    if let Some(unchanged) = record.get("unchanged") {
        sent["unchanged"] = unchanged.clone();
    }
    normalize(&sent)
}

impl Adapter for Http {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn history(&self) -> Option<Rewound> {
        Some(Rewound::Redelivered)
    }

    fn target_yaml(&self, spec: &TargetSpec) -> String {
        format!(
            "{}    url: \"http://{}/ingest\"\n    headers: {{ Authorization: \"Bearer {TOKEN}\" }}\n    timeout: 5s\n    models: {{ account: {{}}, item: {{}}, line: {{}} }}\n",
            spec.common_yaml("http"),
            self.gate.addr
        )
    }

    fn expected_state(&self, state: &ModelState) -> State {
        state.iter().map(|(id, object)| (id.clone(), normalize(&Value::Object(object.clone())))).collect()
    }

    fn read_state(&self, _node: &Node) -> Result<State, String> {
        let api = self.api.lock().unwrap();
        Ok(api.objects.iter().map(|(id, object)| (id.clone(), normalize(object))).collect())
    }

    fn expected_history(&self, records: &[Value]) -> History {
        History::from([("feed".to_owned(), records.iter().map(as_sent).collect())])
    }

    fn read_history(&self, _node: &Node) -> Result<History, String> {
        let api = self.api.lock().unwrap();
        let mut bodies: HashMap<&str, &str> = HashMap::new();
        for r in &api.requests {
            let body: Value =
                serde_json::from_str(&r.body).map_err(|e| format!("a body is not JSON: {e}"))?;
            let range = format!("{TARGET}:{}-{}", body["first_offset"], body["last_offset"]);
            if !names_range(&r.key, &range) {
                return Err(format!("idempotency key {} does not name the body's range {range}", r.key));
            }
            if bodies.insert(&r.key, &r.body).is_some_and(|first| first != r.body) {
                return Err(format!("two different bodies under idempotency key {}", r.key));
            }
        }
        let mut keys_of: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
        let mut feed = Vec::new();
        let mut seen = BTreeSet::new();
        let delivered =
            api.requests.iter().filter(|r| r.epoch == api.epoch && (200..300).contains(&r.status));
        for r in delivered {
            let body: Value = serde_json::from_str(&r.body).unwrap();
            for record in body["records"].as_array().into_iter().flatten() {
                keys_of.entry(offset(record)).or_default().insert(&r.key);
                if seen.insert(offset(record)) {
                    feed.push(normalize(record));
                }
            }
        }
        if let Some((offset, keys)) = keys_of.iter().find(|(_, keys)| keys.len() > 1) {
            return Err(format!("offset {offset} was delivered under several idempotency keys: {keys:?}"));
        }
        let applied = api.requests.iter().filter(|r| r.applied).count();
        eprintln!(
            "http: {} requests, {applied} applied, {} delivered records",
            api.requests.len(),
            feed.len()
        );
        Ok(History::from([("feed".to_owned(), feed)]))
    }

    fn new_epoch(&mut self) {
        self.api.lock().unwrap().epoch += 1;
    }

    fn damage(&mut self, _node: &Node) -> String {
        let mut api = self.api.lock().unwrap();
        let lost = api.objects.len();
        api.objects.clear();
        format!(
            "the API lost its {lost} objects (restored from an empty backup); its idempotency cache is kept"
        )
    }

    fn set_reachable(&mut self, _node: &Node, reachable: bool) {
        if reachable {
            self.gate.open();
        } else {
            self.gate.close();
        }
    }

    fn poison(&mut self, marker: Option<&str>) -> Result<(), &'static str> {
        self.api.lock().unwrap().poison = marker.map(str::to_owned);
        Ok(())
    }
}

#[test]
fn mixed_changes() {
    cases::mixed_changes(Http::new);
}

#[test]
fn kill9_during_delivery() {
    cases::kill9_during_delivery(Http::new);
}

#[test]
fn rewind_to_start_repairs() {
    cases::rewind_to_start_repairs(Http::new);
}

#[test]
fn rewind_to_middle() {
    cases::rewind_to_middle(Http::new);
}

#[test]
fn per_key_order_under_collapse() {
    cases::per_key_order_under_collapse(Http::new);
}

#[test]
fn permanent_error_pauses() {
    cases::permanent_error_pauses(Http::new);
}

#[test]
fn permanent_error_dead_letters() {
    cases::permanent_error_dead_letters(Http::new);
}

#[test]
fn server_down() {
    cases::server_down(Http::new);
}

#[test]
fn truncate_applied() {
    cases::truncate_applied(Http::new);
}

#[test]
fn truncate_ignored() {
    cases::truncate_ignored(Http::new);
}
