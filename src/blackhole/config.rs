//! The `blackhole` target's config section: only `models`.

use crate::config::section::{config_section, fields_only, outputs, Section, SectionCx, YamlMap};
use crate::config::{Config, OutputBinding, TargetCommon};
use crate::connector::{Report, StartError, TargetKind, TargetSpec, TargetStart};
use crate::mapping::Mapping;
use crate::runtime::delivery::worker;
use crate::runtime::delivery::TargetHandle;
use crate::util::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::task::JoinHandle;

pub static KIND: TargetKind = TargetKind {
    kind: "blackhole",
    keys: RawBlackholeTarget::KEYS,
    schema: include_str!("config.schema.json"),
    parse,
};

config_section!(RawBlackholeTarget { models: YamlMap });

#[derive(Debug, Clone, PartialEq)]
pub struct BlackholeTarget {
    pub common: TargetCommon,
    pub models: BTreeMap<String, OutputBinding>,
}

fn parse(s: &mut SectionCx<'_, '_>, common: &TargetCommon) -> Option<Arc<dyn TargetSpec>> {
    let raw: RawBlackholeTarget = s.raw();
    let SectionCx { cx, models, path: p, .. } = s;
    let models = outputs(cx, models, raw.models, &p.key("models"), &fields_only);
    Some(Arc::new(BlackholeTarget { common: common.clone(), models }))
}

impl TargetSpec for BlackholeTarget {
    fn outputs(&self) -> Vec<(&str, &Mapping)> {
        self.models.iter().map(|(m, b)| (m.as_str(), &b.mapping)).collect()
    }

    fn place(&self) -> String {
        "nowhere (records are dropped)".to_owned()
    }

    fn doctor<'a>(&'a self, name: &'a str, _config: &'a Config, report: &'a mut Report) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            report.ok(&format!("target {name}"), "blackhole", "drops every record; nothing to check");
        })
    }

    fn start(&self, start: TargetStart<'_>) -> Result<(TargetHandle, JoinHandle<()>), StartError> {
        Ok(worker::spawn(super::target::Blackhole::default(), "blackhole", start))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_match_serde_fields() {
        crate::config::raw_assert_keys_match::<super::RawBlackholeTarget>();
    }
}
