//! `targets`: the keys every target has (`name`, `kind`, `rate_limit`, `batch`, `on_error`,
//! `truncate`); the rest of each section is read by its kind (see [`crate::registry`]).

use super::build::{self, choice, required, required_str, Models};
use super::path::KeyPath;
use super::raw::{
    as_mapping, check_keys, deser, section, Cx, RawBatch, RawRateLimit, RawTargetCommon, Section,
};
use super::section::SectionCx;
use super::types::*;
use serde_norway::Value;
use std::time::Duration;

const RECORDS_MAX_LIMIT: u64 = 100_000;
const LINGER_MS_LIMIT: u64 = 60_000;

pub(crate) fn build_all(
    cx: &mut Cx<'_>,
    models: &Models,
    items: Vec<Value>,
    p: &KeyPath,
) -> Vec<TargetConfig> {
    let built: Vec<(usize, TargetConfig)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, v)| target(cx, models, v, &p.idx(i)).map(|t| (i, t)))
        .collect();
    build::check_names(cx, built.iter().map(|(i, t)| (t.name(), p.idx(*i).key("name"))));
    built.into_iter().map(|(_, t)| t).collect()
}

/// The allowed keys of one kind: the common ones and the kind's own.
pub(crate) fn keys_of(own: &[&'static str]) -> Vec<&'static str> {
    RawTargetCommon::KEYS.iter().chain(own).copied().collect()
}

fn target(cx: &mut Cx<'_>, models: &Models, v: &Value, p: &KeyPath) -> Option<TargetConfig> {
    let map = as_mapping(cx, v, p)?;
    let raw: RawTargetCommon = deser(cx, &map, p);
    let name = required_str(cx, raw.name.clone(), &p.key("name")).unwrap_or_default();
    let kind_name = required(cx, raw.kind.clone(), &p.key("kind"))?;
    let Some(kind) = crate::registry::target_kind(&kind_name) else {
        let msg = format!(
            "unknown target kind '{kind_name}' (expected {})",
            crate::registry::or_list(&crate::registry::target_kinds())
        );
        cx.err(&p.key("kind"), msg);
        return None;
    };
    let map = check_keys(cx, &map, p, &keys_of(kind.keys));
    let common = common(cx, raw, name, p)?;
    let spec = (kind.parse)(&mut SectionCx { cx, models, map: &map, path: p }, &common)?;
    Some(TargetConfig { common, kind: kind.kind, spec })
}

fn common(cx: &mut Cx<'_>, raw: RawTargetCommon, name: String, p: &KeyPath) -> Option<TargetCommon> {
    let rate_limit = raw.rate_limit.and_then(|v| rate_limit(cx, &v, &p.key("rate_limit")));
    let batch = batch(cx, raw.batch.as_ref(), &p.key("batch"));
    let on_error = choice(
        cx,
        raw.on_error,
        &p.key("on_error"),
        &[("pause", OnError::Pause), ("dead_letter", OnError::DeadLetter)],
    );
    let truncate = choice(
        cx,
        raw.truncate,
        &p.key("truncate"),
        &[("apply", TruncatePolicy::Apply), ("ignore", TruncatePolicy::Ignore)],
    );
    // An invalid choice is already reported; carry on with the default so that the rest of the
    // target (its models) is checked too and every problem is reported at once.
    Some(TargetCommon {
        name,
        rate_limit,
        batch,
        on_error: on_error.unwrap_or(OnError::Pause),
        truncate: truncate.unwrap_or(TruncatePolicy::Apply),
    })
}

fn rate_limit(cx: &mut Cx<'_>, v: &Value, p: &KeyPath) -> Option<RateLimit> {
    let raw: RawRateLimit = section(cx, v, p)?;
    let rps = required(cx, raw.records_per_second, &p.key("records_per_second"))?;
    if rps == 0 {
        cx.err(&p.key("records_per_second"), "must be greater than 0");
    }
    let burst = raw.burst.unwrap_or(rps);
    if burst == 0 {
        cx.err(&p.key("burst"), "must be greater than 0");
    }
    Some(RateLimit { records_per_second: rps, burst })
}

fn batch(cx: &mut Cx<'_>, v: Option<&Value>, p: &KeyPath) -> BatchConfig {
    let raw: RawBatch = v.and_then(|v| section(cx, v, p)).unwrap_or_default();
    let records_max = raw.records_max;
    if let Some(records_max) = records_max.filter(|n| !(1..=RECORDS_MAX_LIMIT).contains(n)) {
        cx.err(
            &p.key("records_max"),
            format!("must be between 1 and {RECORDS_MAX_LIMIT}, got {records_max}"),
        );
    }
    let linger_ms = raw.linger_ms.unwrap_or(DEFAULT_BATCH_LINGER.as_millis() as u64);
    if linger_ms > LINGER_MS_LIMIT {
        cx.err(&p.key("linger_ms"), format!("must be at most {LINGER_MS_LIMIT}, got {linger_ms}"));
    }
    BatchConfig { records_max: records_max.map(|n| n as usize), linger: Duration::from_millis(linger_ms) }
}
