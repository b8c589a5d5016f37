//! A local imitation of the parts of Stripe's API the stripe target uses: customers and products
//! (create, update, delete, search by metadata), form-encoded bodies (an empty value unsets a field),
//! bearer authentication, and idempotency keys as Stripe keeps them (a key answered 2xx is answered
//! again from the cache; the same key with other parameters is a 400 `idempotency_error`). It can
//! refuse one customer name (400, as Stripe refuses an invalid parameter).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

pub const API_KEY: &str = "sk_test_conformance";

/// An object's fields as form keys (`email`, `metadata[remix_id]`) and values.
pub type Fields = BTreeMap<String, String>;

/// A request to an object endpoint and its answer.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub key: Option<String>,
    pub status: u16,
    pub replayed: bool,
}

#[derive(Debug, Default)]
pub struct Account {
    /// Collection (`customers`, `products`) -> id -> fields.
    pub objects: BTreeMap<String, BTreeMap<String, Fields>>,
    pub requests: Vec<Seen>,
    created: u64,
    /// Idempotency key -> (fingerprint, status, answer), for answers 2xx.
    idempotent: HashMap<String, (String, u16, Value)>,
    /// A customer `name` refused with 400.
    pub poison: Option<String>,
    /// The next this many searches are answered 503 (a transient error).
    pub fail_searches: usize,
}

pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => out.push(b),
                    Err(_) => out.extend_from_slice(&bytes[i..i + 3]),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_form(text: &str) -> Fields {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn error(status: u16, kind: &str, message: &str) -> (u16, Value) {
    (status, json!({"error": {"type": kind, "message": message}}))
}

impl Account {
    fn object(&self, collection: &str, id: &str) -> Value {
        let object = if collection == "customers" { "customer" } else { "product" };
        json!({"id": id, "object": object, "fields": self.objects[collection][id]})
    }

    /// Answers one authenticated request; `true`: from the idempotency cache.
    fn answer(
        &mut self,
        method: &str,
        path: &str,
        query: &str,
        form: &str,
        key: Option<&str>,
    ) -> (u16, Value, bool) {
        let fresh = |(status, answer): (u16, Value)| (status, answer, false);
        let parts: Vec<String> = path.trim_start_matches('/').split('/').map(percent_decode).collect();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let collection = match parts.get(1).copied() {
            Some(c @ ("customers" | "products")) if parts[0] == "v1" => c.to_owned(),
            _ => return fresh(error(404, "invalid_request_error", "Unrecognized request URL")),
        };
        if method == "GET" && parts.get(2) == Some(&"search") {
            if self.fail_searches > 0 {
                self.fail_searches -= 1;
                return fresh(error(503, "api_error", "The search service is temporarily unavailable"));
            }
            return fresh(
                self.search(&collection, &parse_form(query).get("query").cloned().unwrap_or_default()),
            );
        }
        let fingerprint = format!("{method} {path} {form}");
        if let (Some(key), "POST") = (key, method) {
            if let Some((first, status, answer)) = self.idempotent.get(key) {
                if *first != fingerprint {
                    let message = "Keys for idempotent requests can only be used with the same parameters \
                                   they were first used with";
                    return fresh(error(400, "idempotency_error", message));
                }
                return (*status, answer.clone(), true);
            }
        }
        let answer = self.execute(method, &collection, parts.get(2).copied(), form);
        if let (Some(key), "POST", 200..=299) = (key, method, answer.0) {
            self.idempotent.insert(key.to_owned(), (fingerprint, answer.0, answer.1.clone()));
        }
        fresh(answer)
    }

    fn execute(&mut self, method: &str, collection: &str, id: Option<&str>, form: &str) -> (u16, Value) {
        let mut fields = parse_form(form);
        if let (Some(marker), "customers") = (&self.poison, collection) {
            if fields.get("name") == Some(marker) {
                return error(
                    400,
                    "invalid_request_error",
                    &format!("Invalid name: {marker} is not allowed"),
                );
            }
        }
        let objects = self.objects.entry(collection.to_owned()).or_default();
        match (method, id) {
            ("POST", None) => {
                let id = match fields.remove("id") {
                    Some(id) if objects.contains_key(&id) => {
                        return error(400, "invalid_request_error", &format!("Object {id} already exists"))
                    }
                    Some(id) => id,
                    None => {
                        self.created += 1;
                        format!("cus_{}", self.created)
                    }
                };
                fields.retain(|_, v| !v.is_empty());
                objects.insert(id.clone(), fields);
                (200, self.object(collection, &id))
            }
            ("POST", Some(id)) => match objects.get_mut(id) {
                Some(object) => {
                    for (k, v) in fields {
                        if v.is_empty() {
                            object.remove(&k);
                        } else {
                            object.insert(k, v);
                        }
                    }
                    (200, self.object(collection, id))
                }
                None => error(404, "invalid_request_error", &format!("No such object: '{id}'")),
            },
            ("DELETE", Some(id)) => match objects.remove(id) {
                Some(_) => (200, json!({"id": id, "deleted": true})),
                None => error(404, "invalid_request_error", &format!("No such object: '{id}'")),
            },
            _ => error(404, "invalid_request_error", "Unrecognized request URL"),
        }
    }

    /// `metadata['remix_id']:'7'` (quotes in the value escaped with a backslash).
    fn search(&self, collection: &str, query: &str) -> (u16, Value) {
        let Some((field, value)) = query.split_once("']:'") else {
            return error(400, "invalid_request_error", &format!("unsupported query {query}"));
        };
        let field = format!("metadata[{}]", field.trim_start_matches("metadata['"));
        let value = value.strip_suffix('\'').unwrap_or(value).replace("\\'", "'").replace("\\\\", "\\");
        let found: Vec<Value> = self
            .objects
            .get(collection)
            .into_iter()
            .flatten()
            .filter(|(_, f)| f.get(&field) == Some(&value))
            .map(|(id, _)| self.object(collection, id))
            .collect();
        (200, json!({"object": "search_result", "data": found, "has_more": false}))
    }
}

/// The imitation's server, in its own runtime.
#[derive(Debug)]
pub struct FakeStripe {
    /// `127.0.0.1:port`.
    pub addr: String,
    pub account: Arc<Mutex<Account>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeStripe {
    pub fn start() -> FakeStripe {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let account: Arc<Mutex<Account>> = Arc::default();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::clone(&account);
        let handler = move |method: axum::http::Method,
                            uri: axum::http::Uri,
                            headers: axum::http::HeaderMap,
                            body: axum::body::Bytes| {
            let account = Arc::clone(&shared);
            async move {
                let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let (status, answer) = if header("authorization") != Some(format!("Bearer {API_KEY}")) {
                    error(401, "invalid_request_error", "Invalid API Key provided")
                } else {
                    let form = String::from_utf8_lossy(&body).into_owned();
                    let key = header("idempotency-key");
                    let mut account = account.lock().unwrap();
                    let query = uri.query().unwrap_or("");
                    let (status, answer, replayed) =
                        account.answer(method.as_str(), uri.path(), query, &form, key.as_deref());
                    if method != "GET" {
                        let path = uri.path().to_owned();
                        account.requests.push(Seen {
                            method: method.to_string(),
                            path,
                            key,
                            status,
                            replayed,
                        });
                    }
                    (status, answer)
                };
                (axum::http::StatusCode::from_u16(status).unwrap(), axum::Json(answer))
            }
        };
        let router = axum::Router::new().fallback(handler);
        runtime.spawn(async move { axum::serve(listener, router).await.unwrap() });
        FakeStripe { addr, account, runtime: Some(runtime) }
    }
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
