//! The `http` target's config section.

use crate::config::section::{
    check_url, config_section, duration, fields_only, outputs, required_str, Section, SectionCx, YamlMap,
};
use crate::config::{Config, OutputBinding, TargetCommon};
use crate::connector::{Report, StartError, TargetKind, TargetSpec, TargetStart};
use crate::mapping::Mapping;
use crate::runtime::delivery::worker;
use crate::runtime::delivery::TargetHandle;
use crate::util::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// A request's timeout when none is configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

pub static KIND: TargetKind =
    TargetKind { kind: "http", keys: RawHttpTarget::KEYS, schema: include_str!("config.schema.json"), parse };

config_section!(RawHttpTarget { url: String, headers: BTreeMap<String, String>, timeout: String, models: YamlMap });

#[derive(Debug, Clone, PartialEq)]
pub struct HttpTarget {
    pub common: TargetCommon,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub timeout: Duration,
    pub models: BTreeMap<String, OutputBinding>,
}

fn parse(s: &mut SectionCx<'_, '_>, common: &TargetCommon) -> Option<Arc<dyn TargetSpec>> {
    let raw: RawHttpTarget = s.raw();
    let SectionCx { cx, models, path: p, .. } = s;
    let url = required_str(cx, raw.url, &p.key("url"));
    let url_ok = url.as_ref().is_some_and(|u| check_url(cx, u, &p.key("url")));
    let headers = raw.headers.unwrap_or_default();
    for name in headers.keys() {
        if name.is_empty()
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            cx.err(&p.key("headers").key(name), format!("invalid header name '{name}'"));
        }
    }
    let timeout = match raw.timeout {
        Some(t) => duration(cx, &t, &p.key("timeout")),
        None => Some(DEFAULT_TIMEOUT),
    };
    if timeout == Some(Duration::ZERO) {
        cx.err(&p.key("timeout"), "must be greater than 0");
    }
    let models = outputs(cx, models, raw.models, &p.key("models"), &fields_only);
    let url = url.filter(|_| url_ok)?;
    Some(Arc::new(HttpTarget { common: common.clone(), url, headers, timeout: timeout?, models }))
}

impl TargetSpec for HttpTarget {
    fn outputs(&self) -> Vec<(&str, &Mapping)> {
        self.models.iter().map(|(m, b)| (m.as_str(), &b.mapping)).collect()
    }

    fn place(&self) -> String {
        self.url.clone()
    }

    fn doctor<'a>(&'a self, name: &'a str, _config: &'a Config, report: &'a mut Report) -> BoxFuture<'a, ()> {
        Box::pin(
            async move { super::doctor::check_reachable(&format!("target {name}"), &self.url, report).await },
        )
    }

    fn start(&self, start: TargetStart<'_>) -> Result<(TargetHandle, JoinHandle<()>), StartError> {
        let target = super::target::HttpTarget::new(self, Arc::clone(&start.worker.state))?;
        Ok(worker::spawn(target, "http", start))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_match_serde_fields() {
        crate::config::raw_assert_keys_match::<super::RawHttpTarget>();
    }
}
