//! The config document as written: lenient serde structs (every field optional, nested sections
//! kept as YAML values) read section by section, so that every problem is reported with its path.

use super::path::KeyPath;
use super::ConfigError;
use serde::de::DeserializeOwned;
use serde_norway::{Mapping, Value};

/// Collects errors while the config is read and validated.
#[derive(Debug)]
pub struct Cx<'t> {
    text: &'t str,
    pub errors: Vec<ConfigError>,
}

impl<'t> Cx<'t> {
    pub fn new(text: &'t str) -> Self {
        Cx { text, errors: Vec::new() }
    }

    pub fn err(&mut self, path: &KeyPath, message: impl Into<String>) {
        let line = super::path::locate(self.text, path);
        self.errors.push(ConfigError { path: path.to_string(), line, message: message.into() });
    }
}

/// A section of the document: a serde struct whose fields are all optional, and its keys.
pub trait Section: DeserializeOwned + Default + std::fmt::Debug {
    const KEYS: &'static [&'static str];
}

/// `v` as a mapping (null counts as empty); reports anything else.
pub fn as_mapping(cx: &mut Cx<'_>, v: &Value, path: &KeyPath) -> Option<Mapping> {
    match v {
        Value::Null => Some(Mapping::new()),
        Value::Mapping(m) => Some(m.clone()),
        other => {
            cx.err(path, format!("expected a mapping, got {}", yaml_kind(other)));
            None
        }
    }
}

/// Reports keys outside `allowed` (and non-string keys); returns the mapping without them.
pub fn check_keys(cx: &mut Cx<'_>, map: &Mapping, path: &KeyPath, allowed: &[&str]) -> Mapping {
    let mut kept = Mapping::new();
    for (k, v) in map {
        match k.as_str() {
            Some(key) if allowed.contains(&key) => {
                kept.insert(k.clone(), v.clone());
            }
            Some(key) => cx
                .err(&path.key(key), format!("unknown key '{key}' (expected one of {})", allowed.join(", "))),
            None => cx.err(path, format!("keys must be strings, got {}", yaml_kind(k))),
        }
    }
    kept
}

/// Deserializes `T` from the keys of `map` that `T` knows. A key whose value has the wrong type is
/// reported at its own path and left out, so the rest of the section is still read.
pub fn deser<T: Section>(cx: &mut Cx<'_>, map: &Mapping, path: &KeyPath) -> T {
    let mut own: Mapping = map
        .iter()
        .filter(|(k, _)| k.as_str().is_some_and(|k| T::KEYS.contains(&k)))
        .map(clone_pair)
        .collect();
    if let Ok(v) = serde_norway::from_value::<T>(Value::Mapping(own.clone())) {
        return v;
    }
    let bad: Vec<(Value, String)> = own
        .iter()
        .filter_map(|(k, v)| {
            let single: Mapping = std::iter::once((k.clone(), v.clone())).collect();
            serde_norway::from_value::<T>(Value::Mapping(single)).err().map(|e| (k.clone(), e.to_string()))
        })
        .collect();
    for (k, message) in bad {
        cx.err(&path.key(k.as_str().unwrap_or_default()), message);
        own.remove(&k);
    }
    serde_norway::from_value(Value::Mapping(own)).unwrap_or_default()
}

fn clone_pair((k, v): (&Value, &Value)) -> (Value, Value) {
    (k.clone(), v.clone())
}

/// Reads one whole section: checks its keys, then its values.
pub fn section<T: Section>(cx: &mut Cx<'_>, v: &Value, path: &KeyPath) -> Option<T> {
    let map = as_mapping(cx, v, path)?;
    let map = check_keys(cx, &map, path, T::KEYS);
    Some(deser(cx, &map, path))
}

/// The entries of a name -> section mapping with string keys (others are reported).
pub fn entries(cx: &mut Cx<'_>, map: &Mapping, path: &KeyPath) -> Vec<(String, Value)> {
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        match k.as_str() {
            Some(key) => out.push((key.to_owned(), v.clone())),
            None => cx.err(path, format!("keys must be strings, got {}", yaml_kind(k))),
        }
    }
    out
}

pub fn yaml_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a sequence",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Declares a section: a serde struct whose fields are all optional, and its keys.
macro_rules! config_section {
    ($(#[$meta:meta])* $name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $(pub $field: Option<$ty>,)*
        }
        impl $crate::config::section::Section for $name {
            const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];
        }
    };
}
pub(crate) use config_section;

config_section!(
    /// The top level of the document.
    RawRoot {
        data_dir: String,
        admin: Value,
        log: Value,
        ingest: Value,
        models: Mapping,
        sources: Vec<Value>,
        targets: Vec<Value>,
    }
);
config_section!(RawAdmin { listen: String, token: String });
config_section!(RawLog { segment_bytes: Value, retention: Value });
config_section!(RawIngest { memory_bytes_max: Value, wait_ms: u64 });
config_section!(RawRetention { min_age: String, max_bytes: Value });
config_section!(RawModel { schema: String, key: Vec<String> });
config_section!(
    /// Keys every source has.
    RawSourceCommon { name: String, kind: String }
);
config_section!(
    /// One entry of a source's `tables`, `routes` or `objects`.
    RawSourceBinding { model: String, fields: Value }
);
config_section!(
    /// Keys every target has.
    RawTargetCommon { name: String, kind: String, rate_limit: Value, batch: Value, on_error: String, truncate: String }
);
config_section!(RawRateLimit { records_per_second: u64, burst: u64 });
config_section!(RawBatch { records_max: u64, linger_ms: u64 });
config_section!(
    /// A model entry of a jsonl or http target.
    RawFieldsOnly { fields: Value }
);

/// Fails when `T::KEYS` differ from the field names serde accepts (read back from its
/// `deny_unknown_fields` error): every section's key list stays true to its struct.
#[cfg(test)]
pub fn assert_keys_match<T: Section>() {
    let probe: Value = serde_norway::from_str("__probe__: 1").unwrap();
    let err = serde_norway::from_value::<T>(probe).unwrap_err().to_string();
    let list = err.split("expected ").nth(1).unwrap_or_default();
    let list = list.trim_start_matches("one of ").replace(" or ", ", ");
    let fields: Vec<String> = list.split(", ").map(|s| s.trim_matches('`').to_owned()).collect();
    assert_eq!(fields, T::KEYS, "{}", std::any::type_name::<T>());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: Section>() {
        assert_keys_match::<T>();
    }

    #[test]
    fn keys_match_serde_fields() {
        check::<RawRoot>();
        check::<RawAdmin>();
        check::<RawLog>();
        check::<RawIngest>();
        check::<RawRetention>();
        check::<RawModel>();
        check::<RawSourceCommon>();
        check::<RawSourceBinding>();
        check::<RawTargetCommon>();
        check::<RawRateLimit>();
        check::<RawBatch>();
        check::<RawFieldsOnly>();
    }

    #[test]
    fn type_errors_are_reported_per_key() {
        let text = "name: 5\nkind: webhook\nrate_limit: {}\non_error: [x]\n";
        let v: Value = serde_norway::from_str(text).unwrap();
        let mut cx = Cx::new(text);
        let raw: RawTargetCommon = section(&mut cx, &v, &KeyPath::root().key("t")).unwrap();
        assert_eq!(raw.kind.as_deref(), Some("webhook"));
        assert!(raw.rate_limit.is_some() && raw.name.is_none() && raw.on_error.is_none());
        let paths: Vec<&str> = cx.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["t.name", "t.on_error"]);
    }
}
