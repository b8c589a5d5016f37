//! `sources`: the keys every source has (`name`, `kind`); the rest of each section is read by its
//! kind (see [`crate::registry`]).

use super::build::{self, required, required_str, Models};
use super::path::KeyPath;
use super::raw::{as_mapping, check_keys, deser, Cx, RawSourceCommon, Section};
use super::section::SectionCx;
use super::types::*;
use serde_norway::Value;

/// Every source, with its index in the list (for paths in later checks).
pub(crate) fn build_all(
    cx: &mut Cx<'_>,
    models: &Models,
    items: Vec<Value>,
    p: &KeyPath,
) -> Vec<(usize, SourceConfig)> {
    let built: Vec<(usize, SourceConfig)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, v)| source(cx, models, v, &p.idx(i)).map(|s| (i, s)))
        .collect();
    build::check_names(cx, built.iter().map(|(i, s)| (s.name(), p.idx(*i).key("name"))));
    built
}

/// The allowed keys of one kind: the common ones and the kind's own.
pub(crate) fn keys_of(own: &[&'static str]) -> Vec<&'static str> {
    RawSourceCommon::KEYS.iter().chain(own).copied().collect()
}

fn source(cx: &mut Cx<'_>, models: &Models, v: &Value, p: &KeyPath) -> Option<SourceConfig> {
    let map = as_mapping(cx, v, p)?;
    let common: RawSourceCommon = deser(cx, &map, p);
    let name = required_str(cx, common.name, &p.key("name")).unwrap_or_default();
    let kind_name = required(cx, common.kind, &p.key("kind"))?;
    let Some(kind) = crate::registry::source_kind(&kind_name) else {
        let msg = format!(
            "unknown source kind '{kind_name}' (expected {})",
            crate::registry::or_list(&crate::registry::source_kinds())
        );
        cx.err(&p.key("kind"), msg);
        return None;
    };
    let map = check_keys(cx, &map, p, &keys_of(kind.keys));
    let spec = (kind.parse)(&mut SectionCx { cx, models, map: &map, path: p }, &name)?;
    Some(SourceConfig { name, kind: kind.kind, spec })
}
