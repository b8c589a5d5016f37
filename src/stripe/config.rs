//! The `stripe` source's and target's config sections.

use crate::config::section::{
    bindings, check_listen, check_path, check_url, config_section, duration, nonempty, out_mapping, outputs,
    required_str, Cx, KeyPath, ModelInfo, Section, SectionCx, YamlMap, YamlValue,
};
use crate::config::{Config, InputBinding, RateLimit, TargetCommon};
use crate::connector::{
    CatchUp, CatchUpFailed, Input, Served, Source, SourceKind, SourceSpec, SourceStart, StartError, Started,
    TargetKind, TargetSpec, TargetStart,
};
use crate::mapping::Mapping;
use crate::runtime::delivery::worker;
use crate::runtime::delivery::TargetHandle;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";
pub const DEFAULT_PATH: &str = "/stripe";
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
/// The target's rate limit when none is configured: Stripe's test-mode limit.
pub const DEFAULT_RATE_LIMIT: RateLimit = RateLimit { records_per_second: 25, burst: 25 };

pub static SOURCE: SourceKind = SourceKind {
    kind: "stripe",
    keys: RawStripeSource::KEYS,
    schema: include_str!("config.schema.json"),
    parse: parse_source,
};

pub static TARGET: TargetKind = TargetKind {
    kind: "stripe",
    keys: RawStripeTarget::KEYS,
    schema: include_str!("config.schema.json"),
    parse: parse_target,
};

config_section!(RawStripeSource {
    listen: String,
    path: String,
    signing_secret: String,
    api_key: String,
    api_base: String,
    tolerance: String,
    objects: YamlMap,
});
config_section!(RawStripeTarget { api_key: String, api_base: String, models: YamlMap });
config_section!(RawStripeTargetModel { object: String, key_field: String, fields: YamlValue });

#[derive(Debug, Clone, PartialEq)]
pub struct StripeSource {
    pub name: String,
    pub listen: String,
    pub path: String,
    pub signing_secret: String,
    pub api_key: Option<String>,
    pub api_base: String,
    pub tolerance: Duration,
    /// Stripe object type (`customer`, `invoice`, `checkout.session`) -> binding.
    pub objects: BTreeMap<String, InputBinding>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StripeTarget {
    pub common: TargetCommon,
    pub api_key: String,
    pub api_base: String,
    pub models: BTreeMap<String, StripeOutput>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StripeOutput {
    /// Stripe object type (`customer`).
    pub object: String,
    /// The Stripe-side field holding the model key (default `id`).
    pub key_field: String,
    pub mapping: Mapping,
}

/// A Stripe object type: `customer`, `checkout.session`, ...
pub fn check_object(object: &str) -> Result<(), crate::config::InvalidValue> {
    let ok = !object.is_empty() && object.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(crate::config::InvalidValue(format!(
            "invalid Stripe object type '{object}' (e.g. customer, invoice, checkout.session)"
        )))
    }
}

fn parse_source(s: &mut SectionCx<'_, '_>, name: &str) -> Option<Arc<dyn SourceSpec>> {
    let raw: RawStripeSource = s.raw();
    let SectionCx { cx, models, path: p, .. } = s;
    let listen = required_str(cx, raw.listen, &p.key("listen"));
    let listen_ok = listen.as_ref().is_some_and(|l| check_listen(cx, l, &p.key("listen")));
    let path = raw.path.unwrap_or_else(|| DEFAULT_PATH.into());
    let path_ok = check_path(&path).map_err(|m| cx.err(&p.key("path"), m.0)).is_ok();
    let signing_secret = required_str(cx, raw.signing_secret, &p.key("signing_secret"));
    let api_key = nonempty(cx, raw.api_key, &p.key("api_key"));
    let api_base = raw.api_base.unwrap_or_else(|| DEFAULT_API_BASE.into());
    check_url(cx, &api_base, &p.key("api_base"));
    let tolerance = match raw.tolerance {
        Some(t) => duration(cx, &t, &p.key("tolerance")),
        None => Some(DEFAULT_TOLERANCE),
    };
    let objects = bindings(cx, models, raw.objects, &p.key("objects"), &check_object);
    let listen = listen.filter(|_| listen_ok && path_ok)?;
    let (signing_secret, tolerance) = (signing_secret?, tolerance?);
    let name = name.to_owned();
    Some(Arc::new(StripeSource { name, listen, path, signing_secret, api_key, api_base, tolerance, objects }))
}

fn stripe_model(
    cx: &mut Cx<'_>,
    _: &str,
    m: Option<&ModelInfo>,
    raw: RawStripeTargetModel,
    p: &KeyPath,
) -> Option<StripeOutput> {
    let object = required_str(cx, raw.object, &p.key("object"));
    if let Some(Err(msg)) = object.as_deref().map(check_object) {
        cx.err(&p.key("object"), msg.0);
    }
    let key_field = nonempty(cx, raw.key_field, &p.key("key_field")).unwrap_or_else(|| "id".into());
    let mapping = out_mapping(cx, m, raw.fields.as_ref(), p)?;
    if !mapping.is_identity() && !mapping.output_fields().any(|f| f == key_field) {
        cx.err(
            &p.key("fields"),
            format!("must map the model key to key_field '{key_field}' (e.g. {key_field}: id)"),
        );
    }
    Some(StripeOutput { object: object?, key_field, mapping })
}

fn parse_target(s: &mut SectionCx<'_, '_>, common: &TargetCommon) -> Option<Arc<dyn TargetSpec>> {
    let raw: RawStripeTarget = s.raw();
    let SectionCx { cx, models, path: p, .. } = s;
    let api_key = required_str(cx, raw.api_key, &p.key("api_key"));
    let api_base = raw.api_base.unwrap_or_else(|| DEFAULT_API_BASE.into());
    check_url(cx, &api_base, &p.key("api_base"));
    let models = outputs(cx, models, raw.models, &p.key("models"), &stripe_model);
    Some(Arc::new(StripeTarget { common: common.clone(), api_key: api_key?, api_base, models }))
}

impl SourceSpec for StripeSource {
    fn inputs(&self) -> Vec<Input<'_>> {
        self.objects
            .iter()
            .map(|(object, binding)| Input { by: "object", name: object.clone(), binding })
            .collect()
    }

    fn served(&self) -> Option<Served> {
        Some(Served {
            listen: self.listen.clone(),
            paths: vec![(self.path.clone(), vec!["path".to_owned()])],
        })
    }

    fn build(&self, _name: &str, _config: &Arc<Config>) -> Result<Box<dyn Source>, StartError> {
        Ok(Box::new(Built(super::source::StripeState::new(self))))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// A Stripe source built before the start-up scan: the state the scan feeds.
struct Built(Arc<super::source::StripeState>);

impl Source for Built {
    fn observe(&self) -> Option<crate::connector::Observer> {
        Some(Arc::clone(&self.0) as crate::connector::Observer)
    }

    fn start(self: Box<Self>, start: SourceStart) -> Result<Started, StartError> {
        let name = self.0.name().to_owned();
        let handle = super::source::StripeHandle::new(self.0, start.ingest).map_err(|e| StartError {
            kind: "stripe source",
            name,
            message: e.to_string(),
        })?;
        let catch_up_handle = handle.clone();
        let catch_up: CatchUp = Arc::new(move || {
            let handle = catch_up_handle.clone();
            Box::pin(async move {
                let report = handle.catch_up().await.map_err(|e| CatchUpFailed(crate::error_chain(&e)))?;
                Ok(serde_json::to_value(report).expect("a report serializes"))
            })
        });
        let at_start = handle.clone();
        Ok(Started {
            router: Some(handle.router()),
            catch_up: Some(catch_up),
            when_ready: Some(Box::new(move |shutdown| at_start.spawn_catch_up_at_start(shutdown))),
            ..Started::default()
        })
    }
}

impl TargetSpec for StripeTarget {
    fn outputs(&self) -> Vec<(&str, &Mapping)> {
        self.models.iter().map(|(m, o)| (m.as_str(), &o.mapping)).collect()
    }

    fn start(&self, mut start: TargetStart<'_>) -> Result<(TargetHandle, JoinHandle<()>), StartError> {
        let target = super::target::StripeTarget::new(self, Arc::clone(&start.worker.state))?;
        start.common.rate_limit = start.common.rate_limit.or(Some(DEFAULT_RATE_LIMIT));
        Ok(worker::spawn(target, "stripe", start))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_serde_fields() {
        crate::config::raw_assert_keys_match::<RawStripeSource>();
        crate::config::raw_assert_keys_match::<RawStripeTarget>();
        crate::config::raw_assert_keys_match::<RawStripeTargetModel>();
    }
}
