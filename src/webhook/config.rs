//! The `webhook` source's config section.

use crate::config::section::{
    bindings, check_listen, check_path, config_section, is_loopback, nonempty, read_section, required_str,
    size, Section, SectionCx, YamlValue,
};
use crate::config::{Config, InputBinding};
use crate::connector::{Input, Served, Source, SourceKind, SourceSpec, SourceStart, StartError, Started};
use serde_norway::Mapping;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The request body limit when none is configured.
pub const DEFAULT_BODY_BYTES_MAX: u64 = 10 << 20;
/// The signature header when `hmac_secret` is set without `hmac_header`.
pub const DEFAULT_HMAC_HEADER: &str = "X-Remix-Signature";

pub static KIND: SourceKind = SourceKind {
    kind: "webhook",
    keys: RawWebhookSource::KEYS,
    schema: include_str!("config.schema.json"),
    parse,
};

config_section!(RawWebhookSource {
    listen: String,
    auth: YamlValue,
    body_bytes_max: YamlValue,
    idempotency_field: String,
    delete_field: String,
    routes: Mapping,
});
config_section!(RawWebhookAuth { bearer_token: String, hmac_secret: String, hmac_header: String });

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookAuth {
    None,
    Bearer { token: String },
    Hmac { secret: String, header: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSource {
    pub name: String,
    pub listen: String,
    pub auth: WebhookAuth,
    pub body_bytes_max: u64,
    pub idempotency_field: Option<String>,
    pub delete_field: Option<String>,
    /// Route path (`/customers`) -> binding.
    pub routes: BTreeMap<String, InputBinding>,
}

fn parse(s: &mut SectionCx<'_, '_>, name: &str) -> Option<Arc<dyn SourceSpec>> {
    let raw: RawWebhookSource = s.raw();
    let SectionCx { cx, models, path: p, .. } = s;
    let listen = required_str(cx, raw.listen, &p.key("listen"));
    let listen_ok = listen.as_ref().is_some_and(|l| check_listen(cx, l, &p.key("listen")));
    let auth = auth(cx, raw.auth.as_ref(), &p.key("auth"));
    let bp = p.key("body_bytes_max");
    let body_bytes_max = raw.body_bytes_max.and_then(|v| size(cx, &v, &bp)).unwrap_or(DEFAULT_BODY_BYTES_MAX);
    if body_bytes_max == 0 {
        cx.err(&bp, "must be greater than 0");
    }
    let idempotency_field = nonempty(cx, raw.idempotency_field, &p.key("idempotency_field"));
    let delete_field = nonempty(cx, raw.delete_field, &p.key("delete_field"));
    let routes = bindings(cx, models, raw.routes, &p.key("routes"), &check_path);
    let listen = listen.filter(|_| listen_ok)?;
    if matches!(auth, Some(WebhookAuth::None)) && !is_loopback(&listen) {
        cx.err(
            &p.key("auth"),
            format!(
                "no auth (an empty or missing bearer_token) is allowed only on a loopback address, and \
                 {listen} is reachable from other hosts: set bearer_token or hmac_secret, or listen on \
                 127.0.0.1"
            ),
        );
    }
    let source = WebhookSource {
        name: name.to_owned(),
        listen,
        auth: auth?,
        body_bytes_max,
        idempotency_field,
        delete_field,
        routes,
    };
    Some(Arc::new(source))
}

fn auth(
    cx: &mut crate::config::section::Cx<'_>,
    v: Option<&YamlValue>,
    p: &crate::config::section::KeyPath,
) -> Option<WebhookAuth> {
    let Some(v) = v else { return Some(WebhookAuth::None) };
    let raw: RawWebhookAuth = read_section(cx, v, p)?;
    let token = raw.bearer_token.filter(|t| !t.is_empty());
    let secret = raw.hmac_secret.filter(|t| !t.is_empty());
    match (token, secret) {
        (Some(_), Some(_)) => {
            cx.err(p, "set either bearer_token or hmac_secret, not both");
            None
        }
        (Some(token), None) => {
            if raw.hmac_header.is_some() {
                cx.err(&p.key("hmac_header"), "hmac_header needs hmac_secret");
            }
            Some(WebhookAuth::Bearer { token })
        }
        (None, Some(secret)) => {
            let header = nonempty(cx, raw.hmac_header, &p.key("hmac_header"));
            Some(WebhookAuth::Hmac { secret, header: header.unwrap_or_else(|| DEFAULT_HMAC_HEADER.into()) })
        }
        (None, None) => Some(WebhookAuth::None),
    }
}

impl SourceSpec for WebhookSource {
    fn inputs(&self) -> Vec<Input<'_>> {
        self.routes
            .iter()
            .map(|(route, binding)| Input { by: "route", name: route.clone(), binding })
            .collect()
    }

    fn served(&self) -> Option<Served> {
        let paths = self.routes.keys().map(|r| (r.clone(), vec!["routes".to_owned(), r.clone()])).collect();
        Some(Served { listen: self.listen.clone(), paths })
    }

    fn ready_hint(&self) -> Option<String> {
        let (route, binding) = self.routes.iter().next()?;
        let listen = &self.listen;
        Some(format!(
            "ready: POST records to http://{listen}{route} (model {}), for example:\n  curl -sS -H \
             'Content-Type: application/json' -d '{{\"id\": 1, \"email\": \"ada@example.com\", \"name\": \"Ada\"}}' \
             http://{listen}{route}",
            binding.model
        ))
    }

    fn build(&self, _name: &str, _config: &Arc<Config>) -> Result<Box<dyn Source>, StartError> {
        Ok(Box::new(self.clone()))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Source for WebhookSource {
    fn start(self: Box<Self>, start: SourceStart) -> Result<Started, StartError> {
        let router = super::source::router(&self, &start.ingest);
        Ok(Started { router: Some(router), ..Started::default() })
    }
}
