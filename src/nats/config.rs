//! The `nats` target's config section.

use crate::config::section::{config_section, fields_only, outputs, required, Section, SectionCx, YamlMap};
use crate::config::{Config, OutputBinding, TargetCommon};
use crate::connector::{Report, StartError, TargetKind, TargetSpec, TargetStart};
use crate::mapping::Mapping;
use crate::runtime::delivery::message::{MessageFormat, Template};
use crate::runtime::delivery::worker;
use crate::runtime::delivery::TargetHandle;
use crate::util::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// The subject when none is configured.
pub const DEFAULT_SUBJECT: &str = "remix.{model}";
/// Publishes awaiting their ack at most, when not configured.
pub const DEFAULT_IN_FLIGHT_MAX: usize = 1024;

pub static TARGET: TargetKind =
    TargetKind { kind: "nats", keys: RawNatsTarget::KEYS, schema: include_str!("config.schema.json"), parse };

config_section!(RawNatsTarget {
    servers: Vec<String>,
    subject: String,
    stream: String,
    value: String,
    key_field: String,
    in_flight_max: u64,
    models: YamlMap,
});

#[derive(Debug, Clone, PartialEq)]
pub struct NatsTarget {
    pub common: TargetCommon,
    pub servers: Vec<String>,
    pub subject: Template,
    pub stream: String,
    pub format: MessageFormat,
    pub in_flight_max: usize,
    pub models: BTreeMap<String, OutputBinding>,
}

impl NatsTarget {
    /// The stream's subject filter: the template with each placeholder a `*` token.
    pub fn stream_subject(&self) -> String {
        self.subject.render("*", "*")
    }
}

fn parse(s: &mut SectionCx<'_, '_>, common: &TargetCommon) -> Option<Arc<dyn TargetSpec>> {
    let raw: RawNatsTarget = s.raw();
    let SectionCx { cx, models, path: p, .. } = s;
    let servers = required(cx, raw.servers, &p.key("servers"));
    if let Some(servers) = &servers {
        if servers.is_empty() {
            cx.err(&p.key("servers"), "name at least one server");
        }
        for (i, server) in servers.iter().enumerate() {
            if server.parse::<async_nats::ServerAddr>().is_err() {
                cx.err(&p.key("servers").idx(i), format!("invalid NATS server address '{server}'"));
            }
        }
    }
    let subject =
        Template::parse(cx, raw.subject.unwrap_or_else(|| DEFAULT_SUBJECT.into()), &p.key("subject"));
    if let Some(subject) = &subject {
        let tokens_ok =
            subject.render("m", "s").split('.').all(|t| !t.is_empty() && !t.contains(['*', '>', ' ']));
        let whole_tokens =
            subject.text().split('.').all(|t| !t.contains('{') || t == "{model}" || t == "{source}");
        if !tokens_ok || !whole_tokens {
            cx.err(
                &p.key("subject"),
                format!("'{}': a subject is dot-separated tokens without '*', '>' or spaces, each placeholder a whole token", subject.text()),
            );
        }
    }
    let stream = raw.stream.unwrap_or_else(|| format!("remix-{}", common.name));
    if stream.is_empty() || stream.contains(['.', '*', '>', ' ', '/', '\\']) {
        cx.err(
            &p.key("stream"),
            format!("invalid stream name '{stream}' (no '.', '*', '>', '/', '\\' or spaces)"),
        );
    }
    let in_flight_max = raw.in_flight_max.unwrap_or(DEFAULT_IN_FLIGHT_MAX as u64);
    if !(1..=65_536).contains(&in_flight_max) {
        cx.err(&p.key("in_flight_max"), format!("must be between 1 and 65536, got {in_flight_max}"));
    }
    let format = MessageFormat::parse(cx, raw.value, raw.key_field, p);
    let models = outputs(cx, models, raw.models, &p.key("models"), &fields_only);
    Some(Arc::new(NatsTarget {
        common: common.clone(),
        servers: servers.filter(|s| !s.is_empty())?,
        subject: subject?,
        stream,
        format: format?,
        in_flight_max: in_flight_max as usize,
        models,
    }))
}

impl TargetSpec for NatsTarget {
    fn outputs(&self) -> Vec<(&str, &Mapping)> {
        self.models.iter().map(|(m, b)| (m.as_str(), &b.mapping)).collect()
    }

    fn place(&self) -> String {
        format!("stream {} ({})", self.stream, self.subject.text())
    }

    fn doctor<'a>(&'a self, name: &'a str, _config: &'a Config, report: &'a mut Report) -> BoxFuture<'a, ()> {
        Box::pin(super::doctor::check(self, name, report))
    }

    fn start(&self, start: TargetStart<'_>) -> Result<(TargetHandle, JoinHandle<()>), StartError> {
        let target = super::target::NatsTarget::new(self, Arc::clone(&start.worker.state));
        Ok(worker::spawn(target, "nats", start))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_match_serde_fields() {
        crate::config::raw_assert_keys_match::<super::RawNatsTarget>();
    }
}
