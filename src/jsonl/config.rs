//! The `jsonl` target's config section.

use crate::config::section::{
    config_section, fields_only, outputs, required_str, Section, SectionCx, YamlMap,
};
use crate::config::{Config, OutputBinding, TargetCommon};
use crate::connector::{doctor, Report, StartError, Status, TargetKind, TargetSpec, TargetStart};
use crate::mapping::Mapping;
use crate::runtime::delivery::worker;
use crate::runtime::delivery::TargetHandle;
use crate::util::BoxFuture;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::task::JoinHandle;

pub static KIND: TargetKind = TargetKind {
    kind: "jsonl",
    keys: RawJsonlTarget::KEYS,
    schema: include_str!("config.schema.json"),
    parse,
};

config_section!(RawJsonlTarget { dir: String, models: YamlMap });

#[derive(Debug, Clone, PartialEq)]
pub struct JsonlTarget {
    pub common: TargetCommon,
    pub dir: PathBuf,
    pub models: BTreeMap<String, OutputBinding>,
}

fn parse(s: &mut SectionCx<'_, '_>, common: &TargetCommon) -> Option<Arc<dyn TargetSpec>> {
    let raw: RawJsonlTarget = s.raw();
    let SectionCx { cx, models, path: p, .. } = s;
    let dir = required_str(cx, raw.dir, &p.key("dir"));
    let models = outputs(cx, models, raw.models, &p.key("models"), &fields_only);
    Some(Arc::new(JsonlTarget { common: common.clone(), dir: dir?.into(), models }))
}

impl TargetSpec for JsonlTarget {
    fn outputs(&self) -> Vec<(&str, &Mapping)> {
        self.models.iter().map(|(m, b)| (m.as_str(), &b.mapping)).collect()
    }

    fn place(&self) -> String {
        self.dir.display().to_string()
    }

    fn doctor<'a>(&'a self, name: &'a str, _config: &'a Config, report: &'a mut Report) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let subject = format!("target {name}");
            match doctor::writable(&self.dir) {
                Ok(()) => report.ok(&subject, "directory", format!("{} is writable", self.dir.display())),
                Err(e) => report.add(
                    &subject,
                    "directory",
                    Status::Fail,
                    e.0,
                    Some("fix the directory's permissions".into()),
                ),
            }
        })
    }

    fn start(&self, start: TargetStart<'_>) -> Result<(TargetHandle, JoinHandle<()>), StartError> {
        Ok(worker::spawn(super::target::JsonlTarget::new(self), "jsonl", start))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_match_serde_fields() {
        crate::config::raw_assert_keys_match::<super::RawJsonlTarget>();
    }
}
