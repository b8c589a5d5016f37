//! The `rabbitmq` target's config section.

use crate::config::section::{
    config_section, fields_only, outputs, required_str, Section, SectionCx, YamlMap,
};
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

/// The exchange when none is configured.
pub const DEFAULT_EXCHANGE: &str = "remix";
/// The routing key when none is configured.
pub const DEFAULT_ROUTING_KEY: &str = "{model}";
/// Publishes awaiting their confirm at most, when not configured.
pub const DEFAULT_IN_FLIGHT_MAX: usize = 1024;

pub static TARGET: TargetKind = TargetKind {
    kind: "rabbitmq",
    keys: RawRabbitmqTarget::KEYS,
    schema: include_str!("config.schema.json"),
    parse,
};

config_section!(RawRabbitmqTarget {
    url: String,
    exchange: String,
    routing_key: String,
    value: String,
    key_field: String,
    in_flight_max: u64,
    models: YamlMap,
});

#[derive(Debug, Clone, PartialEq)]
pub struct RabbitmqTarget {
    pub common: TargetCommon,
    pub url: String,
    pub exchange: String,
    pub routing_key: Template,
    pub format: MessageFormat,
    pub in_flight_max: usize,
    pub models: BTreeMap<String, OutputBinding>,
}

fn parse(s: &mut SectionCx<'_, '_>, common: &TargetCommon) -> Option<Arc<dyn TargetSpec>> {
    let raw: RawRabbitmqTarget = s.raw();
    let SectionCx { cx, models, path: p, .. } = s;
    let url = required_str(cx, raw.url, &p.key("url"));
    let url = url.filter(|url| match url.parse::<lapin::uri::AMQPUri>() {
        Ok(uri) if uri.scheme == lapin::uri::AMQPScheme::AMQP => true,
        Ok(_) => {
            cx.err(&p.key("url"), format!("'{url}': expected amqp:// (TLS is not built in)"));
            false
        }
        Err(e) => {
            cx.err(&p.key("url"), format!("invalid AMQP URL: {e}"));
            false
        }
    });
    let exchange = raw.exchange.unwrap_or_else(|| DEFAULT_EXCHANGE.into());
    if exchange.is_empty() || exchange.len() > 255 || exchange.starts_with("amq.") {
        cx.err(&p.key("exchange"), format!("invalid exchange '{exchange}' (1-255 bytes, not amq.*)"));
    }
    let routing_key = Template::parse(
        cx,
        raw.routing_key.unwrap_or_else(|| DEFAULT_ROUTING_KEY.into()),
        &p.key("routing_key"),
    );
    let in_flight_max = raw.in_flight_max.unwrap_or(DEFAULT_IN_FLIGHT_MAX as u64);
    if !(1..=65_536).contains(&in_flight_max) {
        cx.err(&p.key("in_flight_max"), format!("must be between 1 and 65536, got {in_flight_max}"));
    }
    let format = MessageFormat::parse(cx, raw.value, raw.key_field, p);
    let models = outputs(cx, models, raw.models, &p.key("models"), &fields_only);
    Some(Arc::new(RabbitmqTarget {
        common: common.clone(),
        url: url?,
        exchange,
        routing_key: routing_key?,
        format: format?,
        in_flight_max: in_flight_max as usize,
        models,
    }))
}

impl TargetSpec for RabbitmqTarget {
    fn outputs(&self) -> Vec<(&str, &Mapping)> {
        self.models.iter().map(|(m, b)| (m.as_str(), &b.mapping)).collect()
    }

    fn place(&self) -> String {
        format!("exchange {} ({})", self.exchange, self.routing_key.text())
    }

    fn doctor<'a>(&'a self, name: &'a str, _config: &'a Config, report: &'a mut Report) -> BoxFuture<'a, ()> {
        Box::pin(super::doctor::check(self, name, report))
    }

    fn start(&self, start: TargetStart<'_>) -> Result<(TargetHandle, JoinHandle<()>), StartError> {
        let target = super::target::RabbitmqTarget::new(self, Arc::clone(&start.worker.state));
        Ok(worker::spawn(target, "rabbitmq", start))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_match_serde_fields() {
        crate::config::raw_assert_keys_match::<super::RawRabbitmqTarget>();
    }
}
