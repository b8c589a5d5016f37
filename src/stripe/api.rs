//! A small client of Stripe's REST API, shared by the source (the Events API) and the target: the
//! secret key as a bearer token, form-encoded bodies, and Stripe's rate-limit answers respected
//! (429: wait for `Retry-After`, or a second when it is absent, then try again).

use crate::error_chain;
use crate::util::excerpt;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Map, Value};
use std::time::Duration;

/// How many 429 answers in a row one call waits out before it reports the rate limit as an error.
pub const RATE_LIMITED_RETRIES: u32 = 20;
/// The longest `Retry-After` honoured (longer ones are cut to this).
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);
/// The wait after a 429 without `Retry-After`.
const RETRY_AFTER_DEFAULT: Duration = Duration::from_secs(1);
/// How much of an error body an error message quotes.
const EXCERPT_CHARS: usize = 300;

/// A Stripe API client for one account.
pub struct Api {
    base: String,
    authorization: HeaderValue,
    client: reqwest::Client,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("base", &self.base).finish_non_exhaustive()
    }
}

/// A failed call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// No answer: connection refused or reset, timeout.
    #[error("{0}")]
    Transport(String),
    /// An answer other than 2xx. `kind` is Stripe's `error.type` (e.g. `invalid_request_error`,
    /// `idempotency_error`) when the body says.
    #[error("HTTP {status}: {message}")]
    Status { status: u16, kind: Option<String>, message: String },
    /// The client cannot be made (a bad `api_base` or key).
    #[error("{0}")]
    Setup(String),
}

impl ApiError {
    /// Worth trying again as is: no answer, 409 (a request with the same idempotency key in
    /// progress, a lock timeout), 429, 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Transport(_) => true,
            ApiError::Status { status, .. } => matches!(status, 409 | 429) || *status >= 500,
            ApiError::Setup(_) => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            ApiError::Transport(_) | ApiError::Setup(_) => None,
        }
    }
}

impl Api {
    /// `base` like `https://api.stripe.com` (a path prefix is kept); `key` the secret key.
    pub fn new(base: &str, key: &str, timeout: Duration) -> Result<Api, ApiError> {
        let url =
            reqwest::Url::parse(base).map_err(|e| ApiError::Setup(format!("api_base '{base}': {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ApiError::Setup(format!(
                "api_base '{base}': the scheme must be https (or http for a local test server)"
            )));
        }
        let mut authorization = HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| ApiError::Setup("the Stripe API key is not a valid header value".into()))?;
        authorization.set_sensitive(true);
        crate::install_tls_provider();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ApiError::Setup(format!("HTTP client: {e}")))?;
        Ok(Api { base: base.trim_end_matches('/').to_owned(), authorization, client })
    }

    /// `GET path_and_query` (e.g. `/v1/events?limit=100`), the answer's JSON.
    pub async fn get(&self, path_and_query: &str) -> Result<Value, ApiError> {
        self.call(reqwest::Method::GET, path_and_query, None, None).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<Value, ApiError> {
        self.call(reqwest::Method::DELETE, path, None, None).await
    }

    /// `POST path` with a form body and an `Idempotency-Key`.
    pub async fn post(&self, path: &str, form: &str, idempotency_key: &str) -> Result<Value, ApiError> {
        self.call(reqwest::Method::POST, path, Some(form), Some(idempotency_key)).await
    }

    /// One call, waiting out 429 answers (at most [`RATE_LIMITED_RETRIES`] in a row).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        form: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<Value, ApiError> {
        let url = format!("{}{path_and_query}", self.base);
        let mut limited = 0;
        loop {
            let mut request =
                self.client.request(method.clone(), &url).header(AUTHORIZATION, self.authorization.clone());
            if let Some(form) = form {
                request =
                    request.header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(form.to_owned());
            }
            if let Some(key) = idempotency_key {
                request = request.header("idempotency-key", key);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) if e.is_timeout() => {
                    return Err(ApiError::Transport(format!("{method} {url}: timed out")))
                }
                Err(e) => return Err(ApiError::Transport(format!("{method} {url}: {}", error_chain(&e)))),
            };
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Duration::from_secs_f64(s).min(RETRY_AFTER_MAX));
            let text = match response.text().await {
                Ok(text) => text,
                Err(e) => return Err(ApiError::Transport(format!("{method} {url}: {}", error_chain(&e)))),
            };
            if status == 429 && limited < RATE_LIMITED_RETRIES {
                limited += 1;
                let wait = retry_after.unwrap_or(RETRY_AFTER_DEFAULT);
                tracing::debug!(url = %url, wait_ms = wait.as_millis() as u64, "Stripe rate limit (429)");
                metrics::counter!("remix_stripe_rate_limited_total").increment(1);
                tokio::time::sleep(wait).await;
                continue;
            }
            if (200..300).contains(&status) {
                return serde_json::from_str(&text).map_err(|e| ApiError::Status {
                    status,
                    kind: None,
                    message: format!("{method} {url}: the answer is not JSON: {e}"),
                });
            }
            let body: Option<Value> = serde_json::from_str(&text).ok();
            let error = body.as_ref().and_then(|b| b.get("error"));
            let kind = error.and_then(|e| e.get("type")).and_then(Value::as_str).map(str::to_owned);
            let detail = error
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .map_or_else(|| excerpt(&text, EXCERPT_CHARS), str::to_owned);
            return Err(ApiError::Status {
                status,
                kind,
                message: format!("{method} {path_and_query}: {detail}"),
            });
        }
    }
}

/// Percent-encodes everything but the unreserved characters (`A-Z a-z 0-9 - . _ ~`).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Encodes an object the way Stripe's API reads forms: nested objects as `metadata[key]=value`,
/// arrays as `items[0][price]=...`, a top-level field name with dots (`metadata.remix_id`, as field
/// mappings name nested fields) as the same nesting, `null` and empty objects or arrays as an empty
/// value (which is how Stripe unsets a field). Keys keep their brackets readable; every other byte
/// outside the unreserved set is percent-encoded. Fields come out in key order.
pub fn form_encode(object: &Map<String, Value>) -> String {
    let mut pairs = Vec::new();
    for (name, value) in object {
        let mut parts = name.split('.');
        let mut key = percent_encode(parts.next().unwrap_or_default());
        for part in parts {
            key.push_str(&format!("[{}]", percent_encode(part)));
        }
        flatten(key, value, &mut pairs);
    }
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

fn flatten(key: String, value: &Value, pairs: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                flatten(format!("{key}[{}]", percent_encode(k)), v, pairs);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                flatten(format!("{key}[{i}]"), v, pairs);
            }
        }
        Value::Object(_) | Value::Array(_) | Value::Null => pairs.push((key, String::new())),
        Value::String(s) => pairs.push((key, percent_encode(s))),
        Value::Bool(b) => pairs.push((key, b.to_string())),
        Value::Number(n) => pairs.push((key, n.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn form(value: Value) -> String {
        form_encode(value.as_object().unwrap())
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(percent_encode("Ada Lovelace"), "Ada%20Lovelace");
        assert_eq!(percent_encode("a+b@c.io"), "a%2Bb%40c.io");
        assert_eq!(percent_encode("x=1&y=[2]"), "x%3D1%26y%3D%5B2%5D");
        assert_eq!(percent_encode("é~_-."), "%C3%A9~_-.");
    }

    #[test]
    fn form_encoding_of_scalars_nesting_and_arrays() {
        assert_eq!(
            form(json!({"email": "ada@example.com", "name": "Ada L", "balance": -5, "tax_exempt": false})),
            "balance=-5&email=ada%40example.com&name=Ada%20L&tax_exempt=false"
        );
        assert_eq!(
            form(json!({"metadata": {"remix_id": 7, "note": "a&b"}})),
            "metadata[note]=a%26b&metadata[remix_id]=7"
        );
        assert_eq!(
            form(json!({"items": [{"price": "price_1", "quantity": 2}, {"price": "price_2"}]})),
            "items[0][price]=price_1&items[0][quantity]=2&items[1][price]=price_2"
        );
        assert_eq!(
            form(json!({"address": {"line1": "1 Main St", "city": null}})),
            "address[city]=&address[line1]=1%20Main%20St"
        );
        assert_eq!(
            form(json!({"metadata.remix_id": 7, "preferred_locales": ["en", "fr"]})),
            "metadata[remix_id]=7&preferred_locales[0]=en&preferred_locales[1]=fr"
        );
        assert_eq!(
            form(json!({"description": null, "metadata": {}, "tags": []})),
            "description=&metadata=&tags="
        );
        assert_eq!(
            form(json!({"amount": 12.5, "nested": {"deep": {"er": [true]}}})),
            "amount=12.5&nested[deep][er][0]=true"
        );
        assert_eq!(form(json!({"odd key": {"a=b": "c"}})), "odd%20key[a%3Db]=c");
        assert_eq!(form(json!({})), "");
    }

    #[test]
    fn transient_errors() {
        let status = |status| ApiError::Status { status, kind: None, message: String::new() };
        assert!(status(429).is_transient() && status(500).is_transient() && status(409).is_transient());
        assert!(!status(400).is_transient() && !status(404).is_transient() && !status(402).is_transient());
        assert!(ApiError::Transport("reset".into()).is_transient());
    }
}
