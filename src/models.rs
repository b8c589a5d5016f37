//! Canonical data models: one JSON Schema (draft 2020-12) file each, compiled once.
//!
//! Formats (`email`, `date-time`, ...) are validated, not only annotated. External `$ref`s are not
//! resolved (no file or network retrieval): a model is one self-contained document.

use jsonschema::error::ValidationErrorKind;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// A problem with an instance: the JSON pointer of the offending value and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}: {message}", if path.is_empty() { "/" } else { path.as_str() })]
pub struct ValidationError {
    pub path: String,
    pub message: String,
}

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read schema file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("schema file {} is not valid JSON: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("invalid JSON Schema: {message}")]
    Schema { message: String },
    #[error("key must name at least one field")]
    EmptyKey,
    #[error("key field '{field}' is not a property of the schema")]
    UnknownKeyField { index: usize, field: String },
}

/// A compiled model: its schema, key fields and a reusable validator.
#[derive(Debug)]
pub struct Model {
    name: String,
    origin: Option<PathBuf>,
    schema: Value,
    key: Vec<String>,
    properties: BTreeSet<String>,
    validator: jsonschema::Validator,
    flat: Option<FlatSchema>,
}

/// A schema that only constrains the types of top-level fields (see [`Model::flat`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatSchema {
    /// Each property's allowed JSON types ([`json_types`] bits).
    pub properties: std::collections::BTreeMap<String, u8>,
    pub required: Vec<String>,
    /// `additionalProperties` is not `false`.
    pub additional_allowed: bool,
}

/// Bits of the JSON types a flat schema allows a field (`integer` is also a `number`).
pub mod json_types {
    pub const NULL: u8 = 1;
    pub const BOOLEAN: u8 = 2;
    pub const INTEGER: u8 = 4;
    pub const NUMBER: u8 = 8;
    pub const STRING: u8 = 16;
    pub const OBJECT: u8 = 32;
    pub const ARRAY: u8 = 64;
    pub const ANY: u8 = 127;
}

/// Words of a schema that change nothing about validation.
const ANNOTATIONS: [&str; 5] = ["$comment", "title", "description", "examples", "$schema"];

/// The schema as a [`FlatSchema`], `None` when it says anything more than that.
fn flat_schema(schema: &Value) -> Option<FlatSchema> {
    let root = schema.as_object()?;
    let known = ["type", "properties", "required", "additionalProperties", "$id"];
    if !root.keys().all(|k| known.contains(&k.as_str()) || ANNOTATIONS.contains(&k.as_str())) {
        return None;
    }
    if root.get("type")? != "object" {
        return None;
    }
    let additional_allowed = match root.get("additionalProperties") {
        None => true,
        Some(Value::Bool(allowed)) => *allowed,
        Some(_) => return None,
    };
    let mut properties = std::collections::BTreeMap::new();
    for (name, property) in root.get("properties").map_or(Some(&Map::new()), Value::as_object)? {
        properties.insert(name.clone(), property_types(property)?);
    }
    let required = match root.get("required") {
        None => Vec::new(),
        Some(list) => {
            list.as_array()?.iter().map(|r| r.as_str().map(str::to_owned)).collect::<Option<_>>()?
        }
    };
    Some(FlatSchema { properties, required, additional_allowed })
}

/// The JSON types a property schema allows, `None` unless it constrains nothing but the type.
fn property_types(property: &Value) -> Option<u8> {
    let property = match property {
        Value::Bool(true) => return Some(json_types::ANY),
        other => other.as_object()?,
    };
    if !property.keys().all(|k| k == "type" || ANNOTATIONS.contains(&k.as_str())) {
        return None;
    }
    let bit = |name: &Value| -> Option<u8> {
        use json_types::*;
        Some(match name.as_str()? {
            "null" => NULL,
            "boolean" => BOOLEAN,
            "integer" => INTEGER,
            "number" => NUMBER | INTEGER,
            "string" => STRING,
            "object" => OBJECT,
            "array" => ARRAY,
            _ => return None,
        })
    };
    match property.get("type") {
        None => Some(json_types::ANY),
        Some(Value::Array(names)) => names.iter().try_fold(0, |bits, name| Some(bits | bit(name)?)),
        Some(name) => bit(name),
    }
}

impl Model {
    /// Reads and compiles a schema file. Key problems are reported together with schema ones.
    pub fn load(name: &str, path: &Path, key: &[String]) -> Result<Model, Vec<ModelError>> {
        let schema = read_schema(path).map_err(|e| vec![e])?;
        Ok(Model::new(name, schema, key)?.with_origin(path))
    }

    /// Records the file the schema came from.
    pub fn with_origin(mut self, path: &Path) -> Model {
        self.origin = Some(path.to_owned());
        self
    }

    /// Compiles a schema document held in memory.
    pub fn new(name: &str, schema: Value, key: &[String]) -> Result<Model, Vec<ModelError>> {
        let properties = schema_properties(&schema).map_err(|e| vec![e])?;
        let validator = compile(&schema).map_err(|e| vec![e])?;
        let mut errors: Vec<ModelError> = key
            .iter()
            .enumerate()
            .filter(|(_, f)| !properties.contains(*f))
            .map(|(index, f)| ModelError::UnknownKeyField { index, field: f.clone() })
            .collect();
        if key.is_empty() {
            errors.push(ModelError::EmptyKey);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let flat = flat_schema(&schema);
        Ok(Model {
            name: name.to_owned(),
            origin: None,
            schema,
            key: key.to_vec(),
            properties,
            validator,
            flat,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schema file this model was loaded from, if any.
    pub fn origin(&self) -> Option<&Path> {
        self.origin.as_deref()
    }

    pub fn schema(&self) -> &Value {
        &self.schema
    }

    pub fn key_fields(&self) -> &[String] {
        &self.key
    }

    /// Top-level property names of the schema.
    pub fn properties(&self) -> impl Iterator<Item = &str> {
        self.properties.iter().map(String::as_str)
    }

    pub fn has_property(&self, name: &str) -> bool {
        self.properties.contains(name)
    }

    /// The subschema of one top-level property.
    pub fn property_schema(&self, name: &str) -> Option<&Value> {
        self.schema.get("properties")?.get(name)
    }

    /// The schema's top-level `required` list.
    pub fn required(&self) -> Vec<&str> {
        let list = self.schema.get("required").and_then(Value::as_array);
        list.map(|l| l.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
    }

    /// Validates a whole object, returning every error (plus missing or null key fields).
    pub fn validate(&self, obj: &Value) -> Result<(), Vec<ValidationError>> {
        self.validate_partial(obj, &[])
    }

    /// Validates an object that leaves out the `unchanged` fields (e.g. unchanged TOAST values):
    /// their absence is not an error even where the schema requires them.
    pub fn validate_partial(&self, obj: &Value, unchanged: &[String]) -> Result<(), Vec<ValidationError>> {
        let mut errors: Vec<ValidationError> = self
            .validator
            .iter_errors(obj)
            .filter(|e| !is_unchanged_required(e, unchanged))
            .map(|e| ValidationError { path: e.instance_path().as_str().to_owned(), message: e.to_string() })
            .collect();
        if obj.is_object() {
            self.check_key_fields(obj, &mut errors);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// A quick check that builds no errors: `true` means the whole object is valid (so
    /// [`Model::validate_partial`] passes too); `false` means ask [`Model::validate_partial`], e.g.
    /// when the object leaves out unchanged required fields.
    pub fn is_surely_valid(&self, obj: &Value) -> bool {
        self.validator.is_valid(obj)
            && self.key.iter().all(|field| obj.get(field).is_some_and(|v| !v.is_null()))
    }

    fn check_key_fields(&self, obj: &Value, errors: &mut Vec<ValidationError>) {
        for field in &self.key {
            let pointer = format!("/{}", escape_pointer(field));
            let required = format!("{} is a required property", Value::String(field.clone()));
            let reported =
                errors.iter().any(|e| e.path == pointer || (e.path.is_empty() && e.message == required));
            if !reported && obj.get(field).is_none_or(Value::is_null) {
                let message = format!("key field \"{field}\" is missing or null");
                errors.push(ValidationError { path: pointer, message });
            }
        }
    }

    /// The schema, when it constrains only the JSON types of top-level fields, which fields are
    /// required, and whether others are allowed: a source that knows the types of its values can then
    /// tell a valid object without the validator.
    pub fn flat(&self) -> Option<&FlatSchema> {
        self.flat.as_ref()
    }

    /// The key object (`{"id": 7}`), or `None` when a key field is missing or null.
    pub fn key_of_map(&self, obj: &Map<String, Value>) -> Option<Value> {
        let mut key = Map::new();
        for field in &self.key {
            match obj.get(field) {
                None | Some(Value::Null) => return None,
                Some(v) => key.insert(field.clone(), v.clone()),
            };
        }
        Some(Value::Object(key))
    }
}

/// Reads a schema file as JSON (not yet checked as a schema).
pub fn read_schema(path: &Path) -> Result<Value, ModelError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ModelError::Read { path: path.to_owned(), source })?;
    serde_json::from_str(&text).map_err(|source| ModelError::Json { path: path.to_owned(), source })
}

fn is_unchanged_required(e: &jsonschema::ValidationError<'_>, unchanged: &[String]) -> bool {
    match e.kind() {
        ValidationErrorKind::Required { property } if e.instance_path().as_str().is_empty() => {
            property.as_str().is_some_and(|p| unchanged.iter().any(|u| u == p))
        }
        _ => false,
    }
}

fn escape_pointer(field: &str) -> String {
    field.replace('~', "~0").replace('/', "~1")
}

/// Checks the document's shape and returns the names under `properties`.
fn schema_properties(schema: &Value) -> Result<BTreeSet<String>, ModelError> {
    let Value::Object(root) = schema else {
        return Err(schema_error("a model schema must be a JSON object"));
    };
    match root.get("$schema") {
        None => {}
        Some(Value::String(s)) if s.trim_end_matches('#') == DRAFT_2020_12 => {}
        Some(other) => {
            return Err(schema_error(format!(
                "$schema must be \"{DRAFT_2020_12}\" (draft 2020-12), got {other}"
            )))
        }
    }
    match root.get("type") {
        Some(Value::String(t)) if t == "object" => {}
        _ => return Err(schema_error("a model schema must have \"type\": \"object\"")),
    }
    match root.get("properties") {
        Some(Value::Object(props)) => Ok(props.keys().cloned().collect()),
        _ => Err(schema_error("a model schema must have a \"properties\" object")),
    }
}

fn compile(schema: &Value) -> Result<jsonschema::Validator, ModelError> {
    jsonschema::draft202012::options().should_validate_formats(true).build(schema).map_err(|e| {
        let at = e.instance_path().as_str();
        if at.is_empty() {
            schema_error(e.to_string())
        } else {
            schema_error(format!("at {at}: {e}"))
        }
    })
}

fn schema_error(message: impl Into<String>) -> ModelError {
    ModelError::Schema { message: message.into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order() -> Model {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/order.json");
        Model::load("order", &path, &["id".into()]).unwrap()
    }

    fn customer() -> Model {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/customer.json");
        Model::load("customer", &path, &["id".into()]).unwrap()
    }

    #[test]
    fn shipped_models_load() {
        let o = order();
        assert_eq!(o.key_fields(), ["id"]);
        assert!(o.has_property("amount") && o.has_property("status"));
        assert!(o.required().contains(&"status"));
        assert!(o.validate(&json!({"id": 7, "customer_id": 1, "amount": 1200, "status": "paid"})).is_ok());
        let c = customer();
        assert!(c.validate(&json!({"id": 1, "email": "a@example.com", "name": "Ada"})).is_ok());
        let ts = json!({"id": 1, "email": "a@example.com", "created_at": "2026-11-24T10:00:00.000Z"});
        assert!(c.validate(&ts).is_ok());
    }

    #[test]
    fn validate_returns_every_error() {
        let errs =
            order().validate(&json!({"id": "7", "amount": 1.5, "status": "lost", "extra": 1})).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        for want in ["/id", "/amount", "/status", ""] {
            assert!(paths.contains(&want), "{want} not in {errs:?}");
        }
        assert!(errs.iter().any(|e| e.message.contains("customer_id")), "{errs:?}");
        assert!(errs.iter().any(|e| e.message.contains("extra")), "{errs:?}");
    }

    #[test]
    fn formats_are_validated() {
        let errs = customer().validate(&json!({"id": 1, "email": "not-an-email"})).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "/email");
        let errs = customer().validate(&json!({"id": 1, "email": "a@b.co", "created_at": "yesterday"}));
        assert_eq!(errs.unwrap_err()[0].path, "/created_at");
    }

    #[test]
    fn partial_objects_skip_unchanged_required_fields() {
        let obj = json!({"id": 7, "customer_id": 1, "status": "paid"});
        assert!(order().validate(&obj).is_err());
        assert!(order().validate_partial(&obj, &["amount".into()]).is_ok());
        let errs = order().validate_partial(&json!({"id": 7}), &["amount".into()]).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    #[test]
    fn key_fields() {
        let m = Model::new(
            "t",
            json!({"type": "object", "properties": {"a": {}, "b": {}}}),
            &["a".into(), "b".into()],
        )
        .unwrap();
        assert_eq!(
            m.key_of_map(json!({"a": 1, "b": "x", "c": 3}).as_object().unwrap()),
            Some(json!({"a": 1, "b": "x"}))
        );
        assert_eq!(m.key_of_map(json!({"a": 1}).as_object().unwrap()), None);
        assert_eq!(m.key_of_map(json!({"a": 1, "b": null}).as_object().unwrap()), None);
        let errs = m.validate(&json!({"a": 1})).unwrap_err();
        assert_eq!(
            errs,
            [ValidationError { path: "/b".into(), message: "key field \"b\" is missing or null".into() }]
        );
        assert!(
            order().validate(&json!({"customer_id": 1, "amount": 1, "status": "paid"})).unwrap_err().len()
                == 1
        );
    }

    #[test]
    fn bad_models_are_refused() {
        let props = json!({"type": "object", "properties": {"id": {"type": "integer"}}});
        let errs = Model::new("t", props.clone(), &["idd".into(), "id".into()]).unwrap_err();
        assert!(matches!(&errs[..], [ModelError::UnknownKeyField { index: 0, field }] if field == "idd"));
        assert!(matches!(Model::new("t", props, &[]).unwrap_err()[..], [ModelError::EmptyKey]));
        for bad in [
            json!([]),
            json!({"type": "object"}),
            json!({"type": "array", "properties": {}}),
            json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "properties": {}}),
            json!({"type": "object", "properties": {"id": {"type": "intgr"}}}),
            json!({"type": "object", "properties": {"id": {"$ref": "other.json"}}}),
        ] {
            let errs = Model::new("t", bad.clone(), &["id".into()]).unwrap_err();
            assert!(matches!(errs[..], [ModelError::Schema { .. }]), "{bad}: {errs:?}");
        }
        let missing = Model::load("t", Path::new("/nonexistent/x.json"), &["id".into()]).unwrap_err();
        assert!(missing[0].to_string().contains("/nonexistent/x.json"));
    }

    #[test]
    fn error_display() {
        let e = ValidationError { path: "/amount".into(), message: "1.5 is not of type \"integer\"".into() };
        assert_eq!(e.to_string(), "/amount: 1.5 is not of type \"integer\"");
        assert_eq!(serde_json::to_value(&e).unwrap(), json!({"path": "/amount", "message": e.message}));
    }
}
