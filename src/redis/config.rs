//! The `redis_streams` target's config section.

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

/// The stream's key when none is configured.
pub const DEFAULT_STREAM: &str = "remix:{model}";

pub static TARGET: TargetKind = TargetKind {
    kind: "redis_streams",
    keys: RawRedisStreamsTarget::KEYS,
    schema: include_str!("config.schema.json"),
    parse,
};

config_section!(RawRedisStreamsTarget {
    url: String,
    stream: String,
    maxlen: u64,
    value: String,
    key_field: String,
    models: YamlMap,
});

#[derive(Debug, Clone, PartialEq)]
pub struct RedisStreamsTarget {
    pub common: TargetCommon,
    pub url: String,
    pub stream: Template,
    /// `MAXLEN ~ N` on every `XADD`.
    pub maxlen: Option<u64>,
    pub format: MessageFormat,
    pub models: BTreeMap<String, OutputBinding>,
}

fn parse(s: &mut SectionCx<'_, '_>, common: &TargetCommon) -> Option<Arc<dyn TargetSpec>> {
    let raw: RawRedisStreamsTarget = s.raw();
    let SectionCx { cx, models, path: p, .. } = s;
    let url = required_str(cx, raw.url, &p.key("url"));
    let url = url.filter(|url| match redis::Client::open(url.as_str()) {
        Ok(_) if url.starts_with("redis://") || url.starts_with("redis+unix://") => true,
        Ok(_) => {
            cx.err(&p.key("url"), format!("'{url}': expected redis:// (TLS is not built in)"));
            false
        }
        Err(e) => {
            cx.err(&p.key("url"), format!("invalid Redis URL: {e}"));
            false
        }
    });
    let stream = Template::parse(cx, raw.stream.unwrap_or_else(|| DEFAULT_STREAM.into()), &p.key("stream"));
    if raw.maxlen == Some(0) {
        cx.err(&p.key("maxlen"), "must be at least 1");
    }
    let format = MessageFormat::parse(cx, raw.value, raw.key_field, p);
    let models = outputs(cx, models, raw.models, &p.key("models"), &fields_only);
    Some(Arc::new(RedisStreamsTarget {
        common: common.clone(),
        url: url?,
        stream: stream?,
        maxlen: raw.maxlen.filter(|n| *n > 0),
        format: format?,
        models,
    }))
}

impl TargetSpec for RedisStreamsTarget {
    fn outputs(&self) -> Vec<(&str, &Mapping)> {
        self.models.iter().map(|(m, b)| (m.as_str(), &b.mapping)).collect()
    }

    fn place(&self) -> String {
        self.stream.text().to_owned()
    }

    fn doctor<'a>(&'a self, name: &'a str, _config: &'a Config, report: &'a mut Report) -> BoxFuture<'a, ()> {
        Box::pin(super::doctor::check(self, name, report))
    }

    fn start(&self, start: TargetStart<'_>) -> Result<(TargetHandle, JoinHandle<()>), StartError> {
        let target = super::target::RedisStreamsTarget::new(self)?;
        Ok(worker::spawn(target, "redis_streams", start))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_match_serde_fields() {
        crate::config::raw_assert_keys_match::<super::RawRedisStreamsTarget>();
    }
}
