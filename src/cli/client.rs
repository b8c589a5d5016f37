//! Talking to a running node's admin API from the CLI; `None` when no node answers (then commands act
//! on the data directory directly).

use crate::config::Config;
use anyhow::Context;
use serde_json::Value;
use std::time::Duration;

/// How long the CLI waits for a node to answer before acting on the data directory itself.
const CONNECT_TIMEOUT_MS: u64 = 500;
const REQUEST_TIMEOUT_SECONDS: u64 = 60;

#[derive(Debug)]
pub struct AdminClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl AdminClient {
    /// Connects to the node of this configuration, if one is running.
    pub async fn connect(config: &Config) -> Option<AdminClient> {
        crate::install_tls_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .timeout(Duration::from_secs(REQUEST_TIMEOUT_SECONDS))
            .build()
            .ok()?;
        let base = format!("http://{}", config.admin.listen);
        let health = http
            .get(format!("{base}/healthz"))
            .timeout(Duration::from_millis(CONNECT_TIMEOUT_MS * 4))
            .send()
            .await;
        health.ok().filter(|r| r.status().is_success())?;
        Some(AdminClient { base, token: config.admin.token.clone(), http })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.context("the node did not answer")?;
        let status = response.status();
        let body: Value = response.json().await.context("the node's answer is not JSON")?;
        if !status.is_success() {
            let message = body.get("error").and_then(Value::as_str).unwrap_or("request failed");
            anyhow::bail!("{message} (HTTP {status})");
        }
        Ok(body)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let request = self.http.post(format!("{}{path}", self.base));
        self.send(match body {
            Some(body) => request.json(&body),
            None => request,
        })
        .await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.delete(format!("{}{path}", self.base))).await
    }
}
