//! Validation of `targets`: jsonl, http, postgres and stripe, and their common keys.

use super::build::{self, check_dsn, check_url, choice, nonempty, required, required_str, ModelInfo, Models};
use super::path::KeyPath;
use super::raw::{
    as_mapping, check_keys, deser, entries, section, Cx, RawBatch, RawFieldsOnly, RawHttpTarget,
    RawJsonlTarget, RawPgTarget, RawPgTargetModel, RawRateLimit, RawStripeTarget, RawStripeTargetModel,
    RawTargetCommon, Section,
};
use super::types::*;
use crate::mapping::Mapping;
use serde_norway::{Mapping as YamlMap, Value};
use std::collections::BTreeMap;
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
pub(crate) fn keys_of<T: Section>() -> Vec<&'static str> {
    RawTargetCommon::KEYS.iter().chain(T::KEYS).copied().collect()
}

fn target(cx: &mut Cx<'_>, models: &Models, v: &Value, p: &KeyPath) -> Option<TargetConfig> {
    let map = as_mapping(cx, v, p)?;
    let raw: RawTargetCommon = deser(cx, &map, p);
    let name = required_str(cx, raw.name.clone(), &p.key("name")).unwrap_or_default();
    let kind = required(cx, raw.kind.clone(), &p.key("kind"))?;
    let allowed = match kind.as_str() {
        "jsonl" => keys_of::<RawJsonlTarget>(),
        "http" => keys_of::<RawHttpTarget>(),
        "postgres" => keys_of::<RawPgTarget>(),
        "stripe" => keys_of::<RawStripeTarget>(),
        other => {
            let msg = format!("unknown target kind '{other}' (expected jsonl, http, postgres or stripe)");
            cx.err(&p.key("kind"), msg);
            return None;
        }
    };
    let map = check_keys(cx, &map, p, &allowed);
    let common = common(cx, raw, name, p);
    match kind.as_str() {
        "jsonl" => jsonl(cx, models, &map, p, common?).map(TargetConfig::Jsonl),
        "http" => http(cx, models, &map, p, common?).map(TargetConfig::Http),
        "postgres" => postgres(cx, models, &map, p, common?).map(TargetConfig::Postgres),
        _ => stripe(cx, models, &map, p, common?).map(TargetConfig::Stripe),
    }
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
    let records_max = raw.records_max.unwrap_or(DEFAULT_BATCH_RECORDS_MAX as u64);
    if !(1..=RECORDS_MAX_LIMIT).contains(&records_max) {
        cx.err(
            &p.key("records_max"),
            format!("must be between 1 and {RECORDS_MAX_LIMIT}, got {records_max}"),
        );
    }
    let linger_ms = raw.linger_ms.unwrap_or(DEFAULT_BATCH_LINGER.as_millis() as u64);
    if linger_ms > LINGER_MS_LIMIT {
        cx.err(&p.key("linger_ms"), format!("must be at most {LINGER_MS_LIMIT}, got {linger_ms}"));
    }
    BatchConfig { records_max: records_max as usize, linger: Duration::from_millis(linger_ms) }
}

/// Builds one entry of a target's `models` from (model name, what is known of it, raw entry, path).
type EachOutput<'f, T, O> = &'f dyn Fn(&mut Cx<'_>, &str, Option<&ModelInfo>, T, &KeyPath) -> Option<O>;

/// Reads a target's `models`: each key must be a model; `each` builds the entry.
fn outputs<T: Section, O>(
    cx: &mut Cx<'_>,
    models: &Models,
    map: Option<YamlMap>,
    p: &KeyPath,
    each: EachOutput<'_, T, O>,
) -> BTreeMap<String, O> {
    let Some(map) = required(cx, map, p) else { return BTreeMap::new() };
    if map.is_empty() {
        cx.err(p, "a target needs at least one model");
    }
    let mut out = BTreeMap::new();
    for (name, v) in entries(cx, &map, p) {
        let mp = p.key(&name);
        let Some(found) = models.get(cx, &name, &mp) else { continue };
        let Some(raw) = section::<T>(cx, &v, &mp) else { continue };
        if let Some(o) = each(cx, &name, found, raw, &mp) {
            out.insert(name, o);
        }
    }
    out
}

fn out_mapping(
    cx: &mut Cx<'_>,
    model: Option<&ModelInfo>,
    fields: Option<&Value>,
    p: &KeyPath,
) -> Option<Mapping> {
    let fp = p.key("fields");
    let mapping = build::mapping(cx, fields, &fp)?;
    if let Some(m) = model {
        build::check_output(cx, m, &mapping, &fp);
    }
    Some(mapping)
}

fn fields_only(
    cx: &mut Cx<'_>,
    _: &str,
    m: Option<&ModelInfo>,
    raw: RawFieldsOnly,
    p: &KeyPath,
) -> Option<OutputBinding> {
    out_mapping(cx, m, raw.fields.as_ref(), p).map(|mapping| OutputBinding { mapping })
}

fn jsonl(
    cx: &mut Cx<'_>,
    models: &Models,
    map: &YamlMap,
    p: &KeyPath,
    common: TargetCommon,
) -> Option<JsonlTarget> {
    let raw: RawJsonlTarget = deser(cx, map, p);
    let dir = required_str(cx, raw.dir, &p.key("dir"));
    let models = outputs(cx, models, raw.models, &p.key("models"), &fields_only);
    Some(JsonlTarget { common, dir: dir?.into(), models })
}

fn http(
    cx: &mut Cx<'_>,
    models: &Models,
    map: &YamlMap,
    p: &KeyPath,
    common: TargetCommon,
) -> Option<HttpTarget> {
    let raw: RawHttpTarget = deser(cx, map, p);
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
        Some(t) => build::duration(cx, &t, &p.key("timeout")),
        None => Some(DEFAULT_HTTP_TIMEOUT),
    };
    if timeout == Some(Duration::ZERO) {
        cx.err(&p.key("timeout"), "must be greater than 0");
    }
    let models = outputs(cx, models, raw.models, &p.key("models"), &fields_only);
    Some(HttpTarget { common, url: url.filter(|_| url_ok)?, headers, timeout: timeout?, models })
}

fn pg_model(
    cx: &mut Cx<'_>,
    name: &str,
    m: Option<&ModelInfo>,
    raw: RawPgTargetModel,
    p: &KeyPath,
) -> Option<TableOutput> {
    let table = nonempty(cx, raw.table, &p.key("table")).unwrap_or_else(|| name.to_owned());
    let (schema, table) = build::table_name(cx, &table, &p.key("table"))?;
    let mapping = out_mapping(cx, m, raw.fields.as_ref(), p)?;
    Some(TableOutput { schema, table, mapping })
}

fn postgres(
    cx: &mut Cx<'_>,
    models: &Models,
    map: &YamlMap,
    p: &KeyPath,
    common: TargetCommon,
) -> Option<PostgresTarget> {
    let raw: RawPgTarget = deser(cx, map, p);
    let dsn = required_str(cx, raw.dsn, &p.key("dsn"));
    if let Some(dsn) = &dsn {
        check_dsn(cx, dsn, &p.key("dsn"));
    }
    let mp = p.key("models");
    let models = outputs(cx, models, raw.models, &mp, &pg_model);
    let mut seen: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for (model, t) in &models {
        if let Some(other) = seen.insert((&t.schema, &t.table), model) {
            cx.err(
                &mp.key(model).key("table"),
                format!("table {}.{} is also used by model '{other}'", t.schema, t.table),
            );
        }
    }
    Some(PostgresTarget { common, dsn: dsn?, create_tables: raw.create_tables.unwrap_or(false), models })
}

fn stripe_model(
    cx: &mut Cx<'_>,
    _: &str,
    m: Option<&ModelInfo>,
    raw: RawStripeTargetModel,
    p: &KeyPath,
) -> Option<StripeOutput> {
    let object = required_str(cx, raw.object, &p.key("object"));
    if let Some(Err(msg)) = object.as_deref().map(build::check_stripe_object) {
        cx.err(&p.key("object"), msg);
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

fn stripe(
    cx: &mut Cx<'_>,
    models: &Models,
    map: &YamlMap,
    p: &KeyPath,
    common: TargetCommon,
) -> Option<StripeTarget> {
    let raw: RawStripeTarget = deser(cx, map, p);
    let api_key = required_str(cx, raw.api_key, &p.key("api_key"));
    let api_base = raw.api_base.unwrap_or_else(|| DEFAULT_STRIPE_API_BASE.into());
    check_url(cx, &api_base, &p.key("api_base"));
    let models = outputs(cx, models, raw.models, &p.key("models"), &stripe_model);
    Some(StripeTarget { common, api_key: api_key?, api_base, models })
}
