//! The remix engine: turns one JSON object into another according to a `fields` mapping.
//!
//! The same form serves remix in (source record -> model object) and remix out (model object ->
//! target record). In `fields`, each key is the field name on the receiving side; each value says
//! where it comes from on the sending side:
//!
//! - `"a.b.0.c"`: a dotted path; segments walk nested objects, numeric segments also index arrays;
//! - `{from: path, type: integer|number|string|boolean|timestamp|date|json, default: value}`;
//! - `{const: value}`.
//!
//! Rules: unmapped input fields are dropped; a missing source path leaves the field absent (or sets
//! the `default`, already cast at compile time); an explicit `null` stays `null` and is never cast
//! nor replaced by the default; walking a path through a non-container (`null`, a string, ...) counts
//! as missing. An empty or absent mapping is the identity: the whole object passes through.
//!
//! Casts (`type`):
//! - `integer`: integers as-is; floats only if integral; strings holding an exact integer (`"1.5"`
//!   and `" 1"` are errors).
//! - `number`: numbers as-is; numeric strings (integers stay integers; NaN/infinite refused).
//! - `string`: strings as-is; numbers and booleans as their JSON text.
//! - `boolean`: booleans; `"true"`/`"false"`/`"t"`/`"f"`/`"1"`/`"0"` (any case); numbers 1 and 0.
//! - `timestamp`: RFC 3339 strings, or epoch numbers whose unit follows the magnitude (`|n| < 1e11`
//!   seconds, `< 1e14` milliseconds, `< 1e17` microseconds, else nanoseconds), normalised to UTC
//!   with millisecond precision: `2026-11-24T10:00:00.000Z`.
//! - `date`: `YYYY-MM-DD` strings (calendar-checked), or a timestamp/epoch reduced to its UTC date.
//! - `json`: strings are parsed as JSON text; anything else is kept as-is.

use crate::time;

use serde_json::{Map, Number, Value};
use std::fmt;

pub use time::{epoch_to_millis, format_rfc3339, parse_rfc3339};

/// One problem met while compiling or applying a mapping, for one receiving field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field '{field}': {message}")]
pub struct MappingError {
    /// The receiving field name (empty for a problem with the whole input or mapping).
    pub field: String,
    pub message: String,
}

impl MappingError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        MappingError { field: field.to_owned(), message: message.into() }
    }
}

/// The target type of a cast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cast {
    Integer,
    Number,
    String,
    Boolean,
    Timestamp,
    Date,
    Json,
}

impl Cast {
    pub const NAMES: [&'static str; 7] =
        ["integer", "number", "string", "boolean", "timestamp", "date", "json"];

    pub fn parse(name: &str) -> Option<Cast> {
        Some(match name {
            "integer" => Cast::Integer,
            "number" => Cast::Number,
            "string" => Cast::String,
            "boolean" => Cast::Boolean,
            "timestamp" => Cast::Timestamp,
            "date" => Cast::Date,
            "json" => Cast::Json,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Cast::Integer => "integer",
            Cast::Number => "number",
            Cast::String => "string",
            Cast::Boolean => "boolean",
            Cast::Timestamp => "timestamp",
            Cast::Date => "date",
            Cast::Json => "json",
        }
    }

    /// Casts a non-null value; the error is the message without the field name.
    pub fn apply(self, v: &Value) -> Result<Value, CastError> {
        let out = match self {
            Cast::Integer => to_integer(v),
            Cast::Number => to_number(v),
            Cast::String => to_string(v),
            Cast::Boolean => to_boolean(v),
            Cast::Timestamp => to_millis(v).and_then(|ms| Ok(format_rfc3339(ms)?)).map(Value::String),
            Cast::Date => to_date(v),
            Cast::Json => to_json(v),
        };
        out.map_err(|CastError(reason)| {
            let base = format!("cannot cast {} to {}", describe(v), self.name());
            CastError(if reason.is_empty() { base } else { format!("{base}: {reason}") })
        })
    }
}

/// A dotted path into a JSON value (`contact.email`, `items.0.sku`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    segments: Vec<String>,
}

impl FieldPath {
    pub fn parse(text: &str) -> Result<FieldPath, CastError> {
        let segments: Vec<String> = text.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            return Err(CastError(format!("invalid path '{text}': empty segment")));
        }
        Ok(FieldPath { text: text.to_owned(), segments })
    }

    /// The first segment: the top-level field the path reads.
    pub fn root(&self) -> &str {
        &self.segments[0]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Walks the path; `None` when any segment is missing or the walk meets a non-container.
    pub fn lookup<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        self.segments.iter().try_fold(value, |cur, seg| match cur {
            Value::Object(map) => map.get(seg),
            Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Where one receiving field comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldSource {
    Path { from: FieldPath, cast: Option<Cast>, default: Option<Value> },
    Const(Value),
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldRule {
    pub name: String,
    pub source: FieldSource,
}

/// A compiled `fields` mapping; no rules means identity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapping {
    rules: Vec<FieldRule>,
}

pub(crate) const SPEC_KEYS: [&str; 4] = ["from", "type", "default", "const"];

impl Mapping {
    pub fn identity() -> Mapping {
        Mapping::default()
    }

    /// Compiles a `fields` value (a JSON object, or null for identity), reporting every problem.
    pub fn compile(fields: &Value) -> Result<Mapping, Vec<MappingError>> {
        let map = match fields {
            Value::Null => return Ok(Mapping::identity()),
            Value::Object(map) => map,
            other => {
                let msg = format!("expected a mapping of field names to sources, got {}", kind_of(other));
                return Err(vec![MappingError::new("", msg)]);
            }
        };
        let mut rules = Vec::with_capacity(map.len());
        let mut errors = Vec::new();
        for (name, spec) in map {
            match compile_rule(name, spec) {
                Ok(rule) => rules.push(rule),
                Err(mut errs) => errors.append(&mut errs),
            }
        }
        if errors.is_empty() {
            Ok(Mapping { rules })
        } else {
            Err(errors)
        }
    }

    pub fn is_identity(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[FieldRule] {
        &self.rules
    }

    /// The receiving field names (empty for identity).
    pub fn output_fields(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    /// `(receiving field, source path)` for every path-sourced rule.
    pub fn source_paths(&self) -> impl Iterator<Item = (&str, &FieldPath)> {
        self.rules.iter().filter_map(|r| match &r.source {
            FieldSource::Path { from, .. } => Some((r.name.as_str(), from)),
            FieldSource::Const(_) => None,
        })
    }

    /// Translates sending-side top-level field names (e.g. unchanged TOAST columns) into the
    /// receiving fields read from them.
    pub fn map_field_names(&self, inputs: &[String]) -> Vec<String> {
        if self.is_identity() {
            return inputs.to_vec();
        }
        self.source_paths()
            .filter(|(_, p)| inputs.iter().any(|i| i == p.root()))
            .map(|(name, _)| name.to_owned())
            .collect()
    }

    /// Applies the mapping to one object, collecting every error.
    pub fn apply(&self, input: &Value) -> Result<Map<String, Value>, Vec<MappingError>> {
        self.apply_inner(input, &|_| true, true)
    }

    /// Like [`Mapping::apply_partial`] (`unchanged` empty: [`Mapping::apply`]), but also returns the
    /// fields that did map when others did not, so the caller can validate them too and report every
    /// problem at once.
    pub fn apply_all(&self, input: &Value, unchanged: &[String]) -> (Map<String, Value>, Vec<MappingError>) {
        self.apply_collect(input, &|p: &FieldPath| !unchanged.iter().any(|u| u == p.root()), true)
    }

    /// Like [`Mapping::apply`] for a partial object: no defaults are set for fields whose source
    /// root is listed in `unchanged` (they are left alone on the receiving side).
    pub fn apply_partial(
        &self,
        input: &Value,
        unchanged: &[String],
    ) -> Result<Map<String, Value>, Vec<MappingError>> {
        self.apply_inner(input, &|p: &FieldPath| !unchanged.iter().any(|u| u == p.root()), true)
    }

    /// Maps a key object (`{"id": 7}`): only fields present in the input, no consts, no defaults.
    pub fn apply_key(&self, key: &Value) -> Result<Map<String, Value>, Vec<MappingError>> {
        self.apply_inner(key, &|_| false, false)
    }

    fn apply_inner(
        &self,
        input: &Value,
        use_default: &dyn Fn(&FieldPath) -> bool,
        use_const: bool,
    ) -> Result<Map<String, Value>, Vec<MappingError>> {
        let (out, errors) = self.apply_collect(input, use_default, use_const);
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    fn apply_collect(
        &self,
        input: &Value,
        use_default: &dyn Fn(&FieldPath) -> bool,
        use_const: bool,
    ) -> (Map<String, Value>, Vec<MappingError>) {
        let Value::Object(obj) = input else {
            let msg = format!("expected a JSON object, got {}", kind_of(input));
            return (Map::new(), vec![MappingError::new("", msg)]);
        };
        if self.is_identity() {
            return (obj.clone(), Vec::new());
        }
        let mut out = Map::new();
        let mut errors = Vec::new();
        for rule in &self.rules {
            let value = match &rule.source {
                FieldSource::Const(v) => use_const.then(|| Ok(v.clone())),
                FieldSource::Path { from, cast, default } => match from.lookup(input) {
                    None => default.clone().filter(|_| use_default(from)).map(Ok),
                    Some(Value::Null) => Some(Ok(Value::Null)),
                    Some(v) => Some(cast.map_or_else(|| Ok(v.clone()), |c| c.apply(v))),
                },
            };
            match value {
                Some(Ok(v)) => {
                    out.insert(rule.name.clone(), v);
                }
                Some(Err(message)) => errors.push(MappingError::new(&rule.name, message.0)),
                None => {}
            }
        }
        (out, errors)
    }
}

fn compile_rule(name: &str, spec: &Value) -> Result<FieldRule, Vec<MappingError>> {
    let err = |m: String| vec![MappingError::new(name, m)];
    if name.is_empty() {
        return Err(err("field name must not be empty".into()));
    }
    let source = match spec {
        Value::String(path) => FieldSource::Path {
            from: FieldPath::parse(path).map_err(|e| err(e.0))?,
            cast: None,
            default: None,
        },
        Value::Object(obj) => compile_spec(name, obj)?,
        other => {
            return Err(err(format!(
                "expected a path string, {{from, type, default}} or {{const}}, got {}",
                kind_of(other)
            )))
        }
    };
    Ok(FieldRule { name: name.to_owned(), source })
}

fn compile_spec(name: &str, obj: &Map<String, Value>) -> Result<FieldSource, Vec<MappingError>> {
    let mut errors: Vec<MappingError> = obj
        .keys()
        .filter(|k| !SPEC_KEYS.contains(&k.as_str()))
        .map(|k| {
            MappingError::new(name, format!("unknown key '{k}' (expected from, type, default or const)"))
        })
        .collect();
    if let Some(value) = obj.get("const") {
        if obj.len() > 1 {
            errors.push(MappingError::new(name, "'const' cannot be combined with from, type or default"));
        }
        return if errors.is_empty() { Ok(FieldSource::Const(value.clone())) } else { Err(errors) };
    }
    let from = match obj.get("from") {
        Some(Value::String(p)) => {
            FieldPath::parse(p).map_err(|m| errors.push(MappingError::new(name, m.0))).ok()
        }
        Some(other) => {
            errors.push(MappingError::new(
                name,
                format!("'from' must be a path string, got {}", kind_of(other)),
            ));
            None
        }
        None => {
            errors.push(MappingError::new(name, "missing 'from' (or use {const: value})"));
            None
        }
    };
    let cast = compile_cast(name, obj.get("type"), &mut errors);
    let default = obj.get("default").and_then(|d| match (cast, d) {
        (Some(c), d) if !d.is_null() => {
            c.apply(d).map_err(|m| errors.push(MappingError::new(name, format!("default: {m}")))).ok()
        }
        _ => Some(d.clone()),
    });
    match from {
        Some(from) if errors.is_empty() => Ok(FieldSource::Path { from, cast, default }),
        _ => Err(errors),
    }
}

fn compile_cast(name: &str, spec: Option<&Value>, errors: &mut Vec<MappingError>) -> Option<Cast> {
    let expected = Cast::NAMES.join(", ");
    match spec {
        None => None,
        Some(Value::String(t)) => Cast::parse(t).or_else(|| {
            errors.push(MappingError::new(name, format!("unknown type '{t}' (expected {expected})")));
            None
        }),
        Some(other) => {
            errors.push(MappingError::new(
                name,
                format!("'type' must be one of {expected}, got {}", kind_of(other)),
            ));
            None
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Why a value did not cast (or a path did not parse): the message without the field name.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CastError(pub String);

impl From<time::TimeError> for CastError {
    fn from(error: time::TimeError) -> CastError {
        CastError(error.0)
    }
}

/// `string "x"`, `number 1.5`, `object {...}`, shortened for messages.
fn describe(v: &Value) -> String {
    let mut text = v.to_string();
    if text.chars().count() > 64 {
        text = text.chars().take(60).collect::<String>() + "...";
    }
    format!("{} {text}", kind_of(v))
}

fn to_integer(v: &Value) -> Result<Value, CastError> {
    match v {
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(v.clone()),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Value::from(f as i64)),
            Some(f) if f.fract() == 0.0 => Err(CastError("too large to be exact".into())),
            _ => Err(CastError("not an integral value".into())),
        },
        Value::String(s) => parse_integer(s).ok_or_else(CastError::default),
        _ => Err(CastError::default()),
    }
}

fn parse_integer(s: &str) -> Option<Value> {
    s.parse::<i64>().map(Value::from).or_else(|_| s.parse::<u64>().map(Value::from)).ok()
}

fn to_number(v: &Value) -> Result<Value, CastError> {
    match v {
        Value::Number(_) => Ok(v.clone()),
        Value::String(s) => parse_integer(s)
            .or_else(|| s.parse::<f64>().ok().and_then(Number::from_f64).map(Value::Number))
            .ok_or_else(CastError::default),
        _ => Err(CastError::default()),
    }
}

fn to_string(v: &Value) -> Result<Value, CastError> {
    match v {
        Value::String(_) => Ok(v.clone()),
        Value::Number(n) => Ok(Value::String(n.to_string())),
        Value::Bool(b) => Ok(Value::String(b.to_string())),
        _ => Err(CastError::default()),
    }
}

fn to_boolean(v: &Value) -> Result<Value, CastError> {
    let b = match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_u64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" => Some(true),
            "false" | "f" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    };
    b.map(Value::Bool).ok_or_else(CastError::default)
}

fn to_millis(v: &Value) -> Result<i64, CastError> {
    match v {
        Value::String(s) => Ok(parse_rfc3339(s)?),
        Value::Number(n) => n.as_f64().ok_or_else(CastError::default).and_then(|n| Ok(epoch_to_millis(n)?)),
        _ => Err(CastError::default()),
    }
}

fn to_date(v: &Value) -> Result<Value, CastError> {
    if let Value::String(s) = v {
        if s.len() == 10 {
            let (y, m, d) = time::parse_date(s)?;
            return Ok(Value::String(format!("{y:04}-{m:02}-{d:02}")));
        }
    }
    to_millis(v).and_then(|ms| Ok(time::format_date(ms)?)).map(Value::String)
}

fn to_json(v: &Value) -> Result<Value, CastError> {
    match v {
        Value::String(s) => serde_json::from_str(s).map_err(|e| CastError(format!("invalid JSON text: {e}"))),
        _ => Ok(v.clone()),
    }
}

#[cfg(test)]
mod tests;
