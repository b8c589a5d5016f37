//! The Arrow schema of a model's shards, derived from its JSON Schema through the target's field
//! mapping, plus the bookkeeping columns every row carries.
//!
//! Types: `integer` → Int64, `number` → Float64, `boolean` → Boolean, `string` → Utf8
//! (`format: date-time` → Timestamp(µs, UTC), `format: date` → Date32), an array whose `items`
//! have one of these types → List of it, a closed object (`additionalProperties: false` with
//! `properties`) → Struct of its properties; anything else (open objects, mixed types, no type) is
//! written as its JSON text (Utf8) and listed in [`Columns::json_text`]. A mapping's cast
//! (`type: ...`) decides the type of its field; a constant's value does. `null` in a type list makes
//! no difference: every model column is nullable (a delete row carries only the key, a truncate row
//! nothing).
//!
//! Bookkeeping columns, first: `_op` (Utf8: upsert, delete, truncate), `_offset` (Int64, the log
//! offset), `_time` (Timestamp(µs, UTC), when the change was logged), `_unchanged` (List<Utf8>, the
//! fields a partial upsert leaves untouched; null otherwise).

use crate::mapping::{Cast, FieldSource, Mapping};
use crate::models::Model;
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The bookkeeping columns' names.
pub const BOOKKEEPING: [&str; 4] = ["_op", "_offset", "_time", "_unchanged"];

/// One model's shard schema.
#[derive(Debug, Clone)]
pub struct Columns {
    pub schema: SchemaRef,
    /// Top-level fields written as JSON text.
    pub json_text: Vec<String>,
    /// sha256 of the Arrow schema (its JSON form), in hex: equal schemas, equal hashes.
    pub hash: String,
}

/// A field name that collides with a bookkeeping column.
#[derive(Debug, thiserror::Error)]
#[error("model {model}: field '{field}' collides with the bookkeeping column of the same name")]
pub struct ColumnError {
    pub model: String,
    pub field: String,
}

impl Columns {
    /// The columns of `model` written through `mapping`.
    pub fn derive(model: &Model, mapping: &Mapping) -> Result<Columns, ColumnError> {
        let mut fields: Vec<Field> = bookkeeping_fields();
        let mut json_text = Vec::new();
        let mut push = |name: &str, (data_type, text): (DataType, bool)| {
            if BOOKKEEPING.contains(&name) {
                return Err(ColumnError { model: model.name().to_owned(), field: name.to_owned() });
            }
            if text {
                json_text.push(name.to_owned());
            }
            fields.push(Field::new(name, data_type, true));
            Ok(())
        };
        if mapping.is_identity() {
            for name in model.properties() {
                push(name, data_type(model.property_schema(name).unwrap_or(&Value::Null)))?;
            }
        } else {
            for rule in mapping.rules() {
                let typed = match &rule.source {
                    FieldSource::Path { cast: Some(cast), .. } => cast_type(*cast),
                    FieldSource::Path { from, cast: None, .. } => {
                        let path: Vec<&str> = from.as_str().split('.').collect();
                        data_type(schema_at(model.schema(), &path).unwrap_or(&Value::Null))
                    }
                    FieldSource::Const(value) => value_type(value),
                };
                push(&rule.name, typed)?;
            }
        }
        let schema = Schema::new(fields);
        let hash = hex(&Sha256::digest(serde_json::to_vec(&schema_json(&schema)).unwrap_or_default()));
        Ok(Columns { schema: Arc::new(schema), json_text, hash })
    }
}

/// The bookkeeping columns.
pub fn bookkeeping_fields() -> Vec<Field> {
    vec![
        Field::new("_op", DataType::Utf8, false),
        Field::new("_offset", DataType::Int64, false),
        Field::new("_time", DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())), false),
        Field::new("_unchanged", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), true),
    ]
}

/// A stable JSON description of a schema (names, types, nullability), for the hash and the manifest.
pub fn schema_json(schema: &Schema) -> Value {
    Value::Array(
        schema
            .fields()
            .iter()
            .map(|f| serde_json::json!({"name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable()}))
            .collect(),
    )
}

/// The subschema at a dotted path below the top level's `properties` (array indices pass to `items`).
fn schema_at<'s>(schema: &'s Value, path: &[&str]) -> Option<&'s Value> {
    let mut at = schema;
    for segment in path {
        at = match at.get("properties").and_then(|p| p.get(*segment)) {
            Some(s) => s,
            None if segment.parse::<usize>().is_ok() => at.get("items")?,
            None => return None,
        };
    }
    Some(at)
}

fn json() -> (DataType, bool) {
    (DataType::Utf8, true)
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
}

/// The Arrow type of values a JSON Schema allows, and whether they are written as JSON text.
pub fn data_type(schema: &Value) -> (DataType, bool) {
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect(),
        _ => return json(),
    };
    let [only] = types[..] else {
        return json();
    };
    match only {
        "integer" => (DataType::Int64, false),
        "number" => (DataType::Float64, false),
        "boolean" => (DataType::Boolean, false),
        "string" => match schema.get("format").and_then(Value::as_str) {
            Some("date-time") => (timestamp(), false),
            Some("date") => (DataType::Date32, false),
            _ => (DataType::Utf8, false),
        },
        "array" => match schema.get("items").map(data_type) {
            Some((item, false)) => (DataType::List(Arc::new(Field::new("item", item, true))), false),
            _ => json(),
        },
        "object" => {
            let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
            match schema.get("properties").and_then(Value::as_object) {
                Some(properties) if closed && !properties.is_empty() => {
                    let mut fields = Vec::with_capacity(properties.len());
                    for (name, sub) in properties {
                        match data_type(sub) {
                            (t, false) => fields.push(Field::new(name, t, true)),
                            (_, true) => return json(),
                        }
                    }
                    (DataType::Struct(Fields::from(fields)), false)
                }
                _ => json(),
            }
        }
        _ => json(),
    }
}

fn cast_type(cast: Cast) -> (DataType, bool) {
    match cast {
        Cast::Integer => (DataType::Int64, false),
        Cast::Number => (DataType::Float64, false),
        Cast::String => (DataType::Utf8, false),
        Cast::Boolean => (DataType::Boolean, false),
        Cast::Timestamp => (timestamp(), false),
        Cast::Date => (DataType::Date32, false),
        Cast::Json => json(),
    }
}

fn value_type(value: &Value) -> (DataType, bool) {
    match value {
        Value::Bool(_) => (DataType::Boolean, false),
        Value::Number(n) if n.is_i64() || n.is_u64() => (DataType::Int64, false),
        Value::Number(_) => (DataType::Float64, false),
        Value::String(_) => (DataType::Utf8, false),
        _ => json(),
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_schema_types_map_to_arrow() {
        let t = |s: Value| data_type(&s);
        assert_eq!(t(json!({"type": "integer"})), (DataType::Int64, false));
        assert_eq!(t(json!({"type": ["number", "null"]})), (DataType::Float64, false));
        assert_eq!(t(json!({"type": "string", "format": "date-time"})), (timestamp(), false));
        assert_eq!(t(json!({"type": "string", "format": "date"})), (DataType::Date32, false));
        assert_eq!(
            t(json!({"type": ["array", "null"], "items": {"type": "string"}})),
            (DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), false)
        );
        assert_eq!(t(json!({"type": ["object", "null"]})), (DataType::Utf8, true));
        assert_eq!(t(json!({"type": ["string", "integer"]})), (DataType::Utf8, true));
        assert_eq!(t(json!({"enum": ["a"]})), (DataType::Utf8, true));
        let closed = t(json!({"type": "object", "additionalProperties": false,
            "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}}));
        assert!(matches!(closed, (DataType::Struct(ref f), false) if f.len() == 2), "{closed:?}");
    }

    #[test]
    fn mapped_fields_take_the_type_at_their_source_path_or_cast() {
        let model = Model::new(
            "m",
            json!({"type": "object", "properties": {"id": {"type": "integer"},
                "contact": {"type": "object", "properties": {"email": {"type": "string"}}}}}),
            &["id".to_owned()],
        )
        .unwrap();
        let mapping = Mapping::compile(&json!({"key": "id", "email": "contact.email",
            "id_text": {"from": "id", "type": "string"}, "v": {"const": 2}}))
        .unwrap();
        let columns = Columns::derive(&model, &mapping).unwrap();
        let types: Vec<(String, DataType)> = columns
            .schema
            .fields()
            .iter()
            .skip(4)
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        assert_eq!(
            types,
            [
                ("email".to_owned(), DataType::Utf8),
                ("id_text".to_owned(), DataType::Utf8),
                ("key".to_owned(), DataType::Int64),
                ("v".to_owned(), DataType::Int64)
            ]
        );
        let clash = Mapping::compile(&json!({"_op": "id"})).unwrap();
        assert!(Columns::derive(&model, &clash).is_err());
    }
}
