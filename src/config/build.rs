//! Validation of the top level, models and shared value checks.

use super::path::KeyPath;
use super::raw::{
    entries, section, Cx, RawAdmin, RawFieldsOnly, RawIngest, RawLog, RawModel, RawRetention, RawRoot,
    RawSourceBinding, Section,
};
use super::types::*;
use super::units::{parse_duration, parse_size, InvalidValue};
use super::{sources, targets};
use crate::mapping::Mapping;
use crate::models::{read_schema, Model, ModelError};
use serde_norway::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What mapping checks need of a model; known even when its schema or key has problems.
#[derive(Debug)]
pub struct ModelInfo {
    name: String,
    properties: BTreeSet<String>,
    key: Vec<String>,
    /// The schema's top-level `required` properties.
    required: Vec<String>,
}

/// The models declared in the file, what is known of them, and those that loaded.
#[derive(Debug, Default)]
pub struct Models {
    declared: BTreeSet<String>,
    info: BTreeMap<String, ModelInfo>,
    loaded: BTreeMap<String, Arc<Model>>,
}

impl Models {
    /// Checks a model reference; `Some(None)` for a declared model whose schema could not be read.
    pub fn get(&self, cx: &mut Cx<'_>, name: &str, path: &KeyPath) -> Option<Option<&ModelInfo>> {
        if self.declared.contains(name) {
            return Some(self.info.get(name));
        }
        let known: Vec<&str> = self.declared.iter().map(String::as_str).collect();
        let known = if known.is_empty() { "none are defined".to_owned() } else { known.join(", ") };
        cx.err(path, format!("unknown model '{name}' (models: {known})"));
        None
    }
}

pub fn build(cx: &mut Cx<'_>, doc: &Value, base_dir: &Path) -> Option<Config> {
    let root: RawRoot = section(cx, doc, &KeyPath::root())?;
    let p = KeyPath::root();
    let data_dir = nonempty(cx, root.data_dir, &p.key("data_dir")).unwrap_or_else(|| DEFAULT_DATA_DIR.into());
    let admin = admin(cx, root.admin.as_ref(), &p.key("admin"));
    let log = log(cx, root.log.as_ref(), &p.key("log"));
    let ingest = ingest(cx, root.ingest.as_ref(), &p.key("ingest"));
    let models = models(cx, root.models.as_ref(), &p.key("models"), base_dir);
    let sources = sources::build_all(cx, &models, root.sources.unwrap_or_default(), &p.key("sources"));
    let targets = targets::build_all(cx, &models, root.targets.unwrap_or_default(), &p.key("targets"));
    check_addresses(cx, &admin, &sources);
    let sources = sources.into_iter().map(|(_, s)| s).collect();
    Some(Config { data_dir: data_dir.into(), admin, log, ingest, models: models.loaded, sources, targets })
}

fn admin(cx: &mut Cx<'_>, v: Option<&Value>, p: &KeyPath) -> AdminConfig {
    let raw: RawAdmin = v.and_then(|v| section(cx, v, p)).unwrap_or_default();
    let listen = raw.listen.unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.into());
    let token = raw.token.filter(|t| !t.is_empty());
    if check_listen(cx, &listen, &p.key("listen")) && token.is_none() && !is_loopback(&listen) {
        cx.err(
            &p.key("token"),
            format!(
                "the admin API on {listen} is reachable from other hosts: set a token (it can rewind \
                 targets and drop dead letters), or listen on 127.0.0.1"
            ),
        );
    }
    AdminConfig { listen, token }
}

fn log(cx: &mut Cx<'_>, v: Option<&Value>, p: &KeyPath) -> LogConfig {
    let raw: RawLog = v.and_then(|v| section(cx, v, p)).unwrap_or_default();
    let at = p.key("segment_bytes");
    let segment_bytes = raw.segment_bytes.and_then(|v| size(cx, &v, &at)).unwrap_or(DEFAULT_SEGMENT_BYTES);
    if segment_bytes < MIN_SEGMENT_BYTES {
        cx.err(&at, format!("must be at least 64KiB ({MIN_SEGMENT_BYTES} bytes), got {segment_bytes}"));
    } else if segment_bytes > MAX_SEGMENT_BYTES {
        let max_mib = MAX_SEGMENT_BYTES >> 20;
        cx.err(&at, format!("must be at most {max_mib}MiB ({MAX_SEGMENT_BYTES} bytes), got {segment_bytes}"));
    }
    let rp = p.key("retention");
    let ret: RawRetention = raw.retention.and_then(|v| section(cx, &v, &rp)).unwrap_or_default();
    let retention = RetentionConfig {
        min_age: ret.min_age.and_then(|s| duration(cx, &s, &rp.key("min_age"))),
        max_bytes: ret.max_bytes.and_then(|v| size(cx, &v, &rp.key("max_bytes"))),
    };
    LogConfig { segment_bytes, retention }
}

/// The largest `ingest.wait_ms`: a sender waits at most this long for an answer.
const INGEST_WAIT_MS_LIMIT: u64 = 60_000;
/// The smallest `ingest.memory_bytes_max`.
const INGEST_MEMORY_BYTES_MIN: u64 = 64 << 10;

fn ingest(cx: &mut Cx<'_>, v: Option<&Value>, p: &KeyPath) -> IngestConfig {
    let raw: RawIngest = v.and_then(|v| section(cx, v, p)).unwrap_or_default();
    let default = IngestConfig::default();
    let at = p.key("memory_bytes_max");
    let memory_bytes_max =
        raw.memory_bytes_max.and_then(|v| size(cx, &v, &at)).unwrap_or(default.memory_bytes_max);
    if memory_bytes_max < INGEST_MEMORY_BYTES_MIN {
        cx.err(
            &at,
            format!("must be at least 64KiB ({INGEST_MEMORY_BYTES_MIN} bytes), got {memory_bytes_max}"),
        );
    }
    let wait_ms = raw.wait_ms.unwrap_or(default.wait.as_millis() as u64);
    if wait_ms > INGEST_WAIT_MS_LIMIT {
        cx.err(&p.key("wait_ms"), format!("must be at most {INGEST_WAIT_MS_LIMIT}, got {wait_ms}"));
    }
    IngestConfig { memory_bytes_max, wait: Duration::from_millis(wait_ms) }
}

fn models(cx: &mut Cx<'_>, map: Option<&serde_norway::Mapping>, p: &KeyPath, base_dir: &Path) -> Models {
    let mut out = Models::default();
    for (name, v) in map.map(|m| entries(cx, m, p)).unwrap_or_default() {
        let mp = p.key(&name);
        if !valid_model_name(&name) {
            cx.err(&mp, format!("invalid model name '{name}' (use letters, digits, '_' and '-')"));
        }
        out.declared.insert(name.clone());
        let Some(raw) = section::<RawModel>(cx, &v, &mp) else { continue };
        let schema = required(cx, raw.schema, &mp.key("schema"));
        let key = required(cx, raw.key, &mp.key("key"));
        let (Some(schema), Some(key)) = (schema, key) else { continue };
        let path = base_dir.join(&schema);
        let value = match read_schema(&path) {
            Ok(value) => value,
            Err(e) => {
                model_error(cx, &e, &mp, &schema);
                continue;
            }
        };
        if let Some(props) = value.get("properties").and_then(serde_json::Value::as_object) {
            let properties: BTreeSet<String> = props.keys().cloned().collect();
            let key = key.iter().filter(|k| properties.contains(*k)).cloned().collect();
            let required = value.get("required").and_then(serde_json::Value::as_array).into_iter().flatten();
            let required = required.filter_map(|r| r.as_str().map(str::to_owned)).collect();
            out.info.insert(name.clone(), ModelInfo { name: name.clone(), properties, key, required });
        }
        match Model::new(&name, value, &key) {
            Ok(model) => {
                out.loaded.insert(name, Arc::new(model.with_origin(&path)));
            }
            Err(errors) => errors.iter().for_each(|e| model_error(cx, e, &mp, &schema)),
        }
    }
    out
}

fn model_error(cx: &mut Cx<'_>, e: &ModelError, mp: &KeyPath, schema: &str) {
    match e {
        ModelError::UnknownKeyField { index, field } => {
            cx.err(&mp.key("key").idx(*index), format!("key field '{field}' is not a property of {schema}"))
        }
        ModelError::EmptyKey => cx.err(&mp.key("key"), e.to_string()),
        ModelError::Schema { .. } => cx.err(&mp.key("schema"), format!("{schema}: {e}")),
        ModelError::Read { .. } | ModelError::Json { .. } => cx.err(&mp.key("schema"), e.to_string()),
    }
}

fn valid_model_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Source and target names: `[a-z0-9_-]+`, at most 63 bytes, unique within their list.
pub fn check_names<'a>(cx: &mut Cx<'_>, names: impl Iterator<Item = (&'a str, KeyPath)>) {
    let mut seen: BTreeMap<&str, KeyPath> = BTreeMap::new();
    // An empty name was already reported as missing or empty.
    for (name, path) in names.filter(|(name, _)| !name.is_empty()) {
        let ok = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if name.len() > 63 || !ok {
            cx.err(&path, format!("invalid name '{name}' (use 1-63 of a-z, 0-9, '_' and '-')"));
        }
        if let Some(first) = seen.get(name) {
            cx.err(&path, format!("duplicate name '{name}' (also used at {first})"));
        } else {
            seen.insert(name, path);
        }
    }
}

/// Sources sharing an address share one server: their paths must differ, and the admin API
/// needs an address of its own.
fn check_addresses(cx: &mut Cx<'_>, admin: &AdminConfig, sources: &[(usize, SourceConfig)]) {
    let mut routes: BTreeMap<(String, String), String> = BTreeMap::new();
    for (i, s) in sources {
        let sp = KeyPath::root().key("sources").idx(*i);
        let Some(served) = s.spec.served() else { continue };
        let listen = served.listen;
        if listen == admin.listen {
            cx.err(&sp.key("listen"), format!("address {listen} is also the admin API's (admin.listen)"));
        }
        for (route, keys) in served.paths {
            let at = keys.iter().fold(sp.clone(), |p, k| p.key(k));
            match routes.get(&(listen.clone(), route.clone())) {
                Some(other) => {
                    cx.err(&at, format!("path {route} on {listen} is also served by source '{other}'"))
                }
                None => {
                    routes.insert((listen.clone(), route), s.name().to_owned());
                }
            }
        }
    }
}

pub fn required<T>(cx: &mut Cx<'_>, v: Option<T>, path: &KeyPath) -> Option<T> {
    if v.is_none() {
        cx.err(path, "required key is missing");
    }
    v
}

/// A string that must not be empty when given.
pub fn nonempty(cx: &mut Cx<'_>, v: Option<String>, path: &KeyPath) -> Option<String> {
    match v {
        Some(s) if s.trim().is_empty() => {
            cx.err(path, "must not be empty");
            None
        }
        other => other,
    }
}

/// A string that must be present and not empty.
pub fn required_str(cx: &mut Cx<'_>, v: Option<String>, path: &KeyPath) -> Option<String> {
    let v = required(cx, v, path)?;
    nonempty(cx, Some(v), path)
}

pub fn size(cx: &mut Cx<'_>, v: &Value, path: &KeyPath) -> Option<u64> {
    let parsed = match v {
        Value::Number(n) => {
            n.as_u64().ok_or_else(|| InvalidValue(format!("invalid size {n} (expected whole bytes)")))
        }
        Value::String(s) => parse_size(s),
        other => {
            Err(InvalidValue(format!("expected a size like 128MiB, got {}", super::raw::yaml_kind(other))))
        }
    };
    parsed.map_err(|m| cx.err(path, m.0)).ok()
}

pub fn duration(cx: &mut Cx<'_>, s: &str, path: &KeyPath) -> Option<Duration> {
    parse_duration(s).map_err(|m| cx.err(path, m.0)).ok()
}

/// `host:port` (IPv6 hosts in brackets).
pub fn check_listen(cx: &mut Cx<'_>, s: &str, path: &KeyPath) -> bool {
    let ok = s.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !ok {
        cx.err(path, format!("invalid address '{s}' (expected host:port, e.g. 127.0.0.1:9701)"));
    }
    ok
}

/// Whether `listen` (a `host:port` that [`check_listen`] accepted) is reachable from this host only:
/// `localhost`, `127.0.0.0/8` or `[::1]`. A host name other than `localhost` counts as reachable.
pub fn is_loopback(listen: &str) -> bool {
    let Some((host, _port)) = listen.rsplit_once(':') else { return false };
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub fn check_url(cx: &mut Cx<'_>, s: &str, path: &KeyPath) -> bool {
    let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
    let ok = rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace));
    if !ok {
        cx.err(path, format!("invalid URL '{s}' (expected http:// or https://)"));
    }
    ok
}

/// One of `choices` (`None` means the default).
pub fn choice<T: Copy>(
    cx: &mut Cx<'_>,
    v: Option<String>,
    path: &KeyPath,
    choices: &[(&str, T)],
) -> Option<T> {
    let Some(v) = v else { return Some(choices[0].1) };
    let found = choices.iter().find(|(name, _)| *name == v).map(|(_, t)| *t);
    if found.is_none() {
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        cx.err(path, format!("unknown value '{v}' (expected {})", names.join(" or ")));
    }
    found
}

/// Compiles a `fields` mapping, reporting each problem at `<path>.<field>`.
pub fn mapping(cx: &mut Cx<'_>, fields: Option<&Value>, path: &KeyPath) -> Option<Mapping> {
    let json = match fields.map(serde_json::to_value).transpose() {
        Ok(v) => v.unwrap_or(serde_json::Value::Null),
        Err(e) => {
            cx.err(path, format!("cannot read fields: {e}"));
            return None;
        }
    };
    Mapping::compile(&json)
        .map_err(|errs| {
            for e in errs {
                let at = if e.field.is_empty() { path.clone() } else { path.key(&e.field) };
                cx.err(&at, e.message);
            }
        })
        .ok()
}

fn property_list(model: &ModelInfo) -> String {
    model.properties.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
}

/// Remix in: every receiving field must be a model property, and the model key must be mapped.
pub fn check_input(cx: &mut Cx<'_>, model: &ModelInfo, m: &Mapping, path: &KeyPath) {
    for field in m.output_fields() {
        if !model.properties.contains(field) {
            let msg = format!(
                "unknown model field '{field}' (model '{}' has {})",
                model.name,
                property_list(model)
            );
            cx.err(&path.key(field), msg);
        }
    }
    if m.is_identity() {
        return;
    }
    for key in &model.key {
        if !m.output_fields().any(|f| f == key) {
            cx.err(path, format!("model key field '{key}' is not mapped"));
        }
    }
    // An upsert without a required field never validates: every one would go to the DLQ.
    let unset: Vec<&str> = model
        .required
        .iter()
        .filter(|r| !model.key.contains(*r) && !m.output_fields().any(|f| f == *r))
        .map(String::as_str)
        .collect();
    if !unset.is_empty() {
        let msg = format!(
            "model '{}' requires {}, which this mapping never sets (every upsert would be refused)",
            model.name,
            unset.iter().map(|f| format!("'{f}'")).collect::<Vec<_>>().join(", ")
        );
        cx.err(path, msg);
    }
}

/// Remix out: every path must start at a model property.
pub fn check_output(cx: &mut Cx<'_>, model: &ModelInfo, m: &Mapping, path: &KeyPath) {
    for (field, from) in m.source_paths() {
        if !model.properties.contains(from.root()) {
            let root = from.root();
            let msg =
                format!("unknown model field '{root}' (model '{}' has {})", model.name, property_list(model));
            cx.err(&path.key(field), msg);
        }
    }
}

/// An HTTP path a source serves: `/customers`.
pub fn check_path(path: &str) -> Result<(), InvalidValue> {
    let ok = path.starts_with('/') && !path.contains(['?', '#']) && !path.contains(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(InvalidValue(format!("invalid route '{path}' (expected a path like /customers)")))
    }
}

/// One `{model, fields}` entry of a source's tables, routes or objects.
pub fn binding(cx: &mut Cx<'_>, models: &Models, v: &Value, p: &KeyPath) -> Option<InputBinding> {
    let raw: RawSourceBinding = section(cx, v, p)?;
    let model = required_str(cx, raw.model, &p.key("model"))?;
    let found = models.get(cx, &model, &p.key("model"));
    let fp = p.key("fields");
    let mapping = mapping(cx, raw.fields.as_ref(), &fp)?;
    if let Some(Some(m)) = found {
        check_input(cx, m, &mapping, &fp);
    }
    found.map(|_| InputBinding { model, mapping })
}

/// A source's `{key: {model, fields}}` entries, each key checked by `check_key`.
pub fn bindings(
    cx: &mut Cx<'_>,
    models: &Models,
    map: Option<serde_norway::Mapping>,
    p: &KeyPath,
    check_key: &dyn Fn(&str) -> Result<(), InvalidValue>,
) -> BTreeMap<String, InputBinding> {
    let Some(map) = required(cx, map, p) else { return BTreeMap::new() };
    if map.is_empty() {
        cx.err(p, "needs at least one entry");
    }
    let mut out = BTreeMap::new();
    for (key, v) in entries(cx, &map, p) {
        let kp = p.key(&key);
        if let Err(m) = check_key(&key) {
            cx.err(&kp, m.0);
        }
        if let Some(b) = binding(cx, models, &v, &kp) {
            out.insert(key, b);
        }
    }
    out
}

/// Builds one entry of a target's `models` from (model name, what is known of it, raw entry, path).
pub type EachOutput<'f, T, O> = &'f dyn Fn(&mut Cx<'_>, &str, Option<&ModelInfo>, T, &KeyPath) -> Option<O>;

/// Reads a target's `models`: each key must be a model; `each` builds the entry.
pub fn outputs<T: Section, O>(
    cx: &mut Cx<'_>,
    models: &Models,
    map: Option<serde_norway::Mapping>,
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

/// A target model entry's `fields`: compiled, and checked against the model.
pub fn out_mapping(
    cx: &mut Cx<'_>,
    model: Option<&ModelInfo>,
    fields: Option<&Value>,
    p: &KeyPath,
) -> Option<Mapping> {
    let fp = p.key("fields");
    let mapping = mapping(cx, fields, &fp)?;
    if let Some(m) = model {
        check_output(cx, m, &mapping, &fp);
    }
    Some(mapping)
}

/// A target model entry that is only `fields` (jsonl, http, ...).
pub fn fields_only(
    cx: &mut Cx<'_>,
    _: &str,
    m: Option<&ModelInfo>,
    raw: RawFieldsOnly,
    p: &KeyPath,
) -> Option<OutputBinding> {
    out_mapping(cx, m, raw.fields.as_ref(), p).map(|mapping| OutputBinding { mapping })
}
