//! The fast path of the PostgreSQL source: a row of plain columns (integers, text, booleans) written
//! straight to its change record's JSON bytes, without a map per row, the mapping or the validator.
//!
//! A [`FastPlan`] exists for a relation only when the general path could not do anything else: the
//! binding's mapping is the identity, the model's schema is flat (it constrains only the JSON types of
//! top-level fields, which are required, and whether others are allowed: [`Model::flat`]), every
//! column has a type whose values are always of one JSON type the schema allows for its field, every
//! required field and every key field is a column, and no column is a field the schema forbids. Per
//! row, what the plan cannot prove from the column types is checked (a `NULL` where the field does not
//! allow null or in a key field, an unchanged TOAST value, a value that is not what its type prints);
//! such a row goes the general way, which builds the same record or the dead letter.
//!
//! The bytes are exactly `serde_json::to_vec(&change)` of the general path's [`Change`]: fields in
//! declaration order, the object's fields sorted by name as a `serde_json::Map` keeps them, strings
//! escaped by serde_json itself, integers as their shortest decimal. Tests compare the two.
//!
//! [`Change`]: crate::record::Change

use super::pgoutput::{Relation, Tuple, TupleValue};
use super::types;
use crate::config::InputBinding;
use crate::models::{json_types, Model};
use std::io::Write as _;

/// What a column's values are in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// `int2`, `int4`, `int8`, `oid`: a JSON integer.
    Integer,
    /// `text`, `varchar`, `bpchar`, `name`, `uuid`: a JSON string of the text as PostgreSQL prints it.
    Text,
    /// `bool`: `true` or `false`.
    Boolean,
}

impl Class {
    fn of(type_oid: u32) -> Option<Class> {
        use types::*;
        match type_oid {
            INT2 | INT4 | INT8 | OID => Some(Class::Integer),
            TEXT | VARCHAR | BPCHAR | NAME | UUID => Some(Class::Text),
            BOOL => Some(Class::Boolean),
            _ => None,
        }
    }

    fn json_type(self) -> u8 {
        match self {
            Class::Integer => json_types::INTEGER,
            Class::Text => json_types::STRING,
            Class::Boolean => json_types::BOOLEAN,
        }
    }
}

#[derive(Debug)]
struct FastColumn {
    class: Class,
    /// The field allows `null`, and is not a key field.
    null_allowed: bool,
    /// `"name":`, escaped.
    label: Vec<u8>,
}

/// How to write the rows of one relation; see the module docs.
#[derive(Debug)]
pub struct FastPlan {
    columns: Vec<FastColumn>,
    /// Column indices in the order the object's fields are written (by name).
    data_order: Vec<usize>,
    /// Column indices of the key fields, by name.
    key_order: Vec<usize>,
    /// `"model":"...","op":"upsert","key":{`, escaped.
    model_op_key: Vec<u8>,
}

impl FastPlan {
    /// The plan for `relation` bound to `binding` (into `model`), `None` when its rows need the
    /// general path.
    pub fn new(relation: &Relation, binding: &InputBinding, model: &Model) -> Option<FastPlan> {
        let flat = model.flat()?;
        if !binding.mapping.is_identity() {
            return None;
        }
        let names: Vec<&str> = relation.columns.iter().map(|c| c.name.as_str()).collect();
        let is_column = |field: &String| names.contains(&field.as_str());
        if !flat.required.iter().all(is_column) || !model.key_fields().iter().all(is_column) {
            return None;
        }
        let mut columns = Vec::with_capacity(relation.columns.len());
        for column in &relation.columns {
            let class = Class::of(column.type_oid)?;
            let allowed = match flat.properties.get(&column.name) {
                Some(&types) => types,
                None if flat.additional_allowed => json_types::ANY,
                None => return None,
            };
            if allowed & class.json_type() == 0 {
                return None;
            }
            let is_key = model.key_fields().contains(&column.name);
            let null_allowed = allowed & json_types::NULL != 0 && !is_key;
            columns.push(FastColumn { class, null_allowed, label: label(&column.name) });
        }
        let mut data_order: Vec<usize> = (0..names.len()).collect();
        data_order.sort_by_key(|&i| names[i]);
        if data_order.windows(2).any(|w| names[w[0]] == names[w[1]]) {
            return None; // two columns of one name: the general path decides
        }
        let mut key_fields: Vec<&String> = model.key_fields().iter().collect();
        key_fields.sort();
        key_fields.dedup();
        let key_order =
            key_fields.iter().map(|f| names.iter().position(|n| n == f)).collect::<Option<_>>()?;
        let mut model_op_key = b"\"model\":".to_vec();
        serde_json::to_writer(&mut model_op_key, &binding.model).expect("writing to a Vec");
        model_op_key.extend_from_slice(b",\"op\":\"upsert\",\"key\":{");
        Some(FastPlan { columns, data_order, key_order, model_op_key })
    }

    /// Writes the change record of an upsert of `tuple` (a whole row) into `out` (emptied first).
    /// `false` when the row needs the general path (`out` is then unspecified).
    pub fn write_upsert(&self, tuple: &Tuple, source: &str, position: &str, out: &mut Vec<u8>) -> bool {
        out.clear();
        if tuple.0.len() != self.columns.len() {
            return false;
        }
        out.extend_from_slice(b"{\"source\":");
        serde_json::to_writer(&mut *out, source).expect("writing to a Vec");
        out.extend_from_slice(b",\"position\":");
        serde_json::to_writer(&mut *out, position).expect("writing to a Vec");
        out.push(b',');
        out.extend_from_slice(&self.model_op_key);
        if !self.write_fields(tuple, &self.key_order, out) {
            return false;
        }
        out.extend_from_slice(b"},\"data\":{");
        if !self.write_fields(tuple, &self.data_order, out) {
            return false;
        }
        out.extend_from_slice(b"}}");
        true
    }

    /// `"name":value` of each column in `order`, comma-separated.
    fn write_fields(&self, tuple: &Tuple, order: &[usize], out: &mut Vec<u8>) -> bool {
        for (n, &i) in order.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            let column = &self.columns[i];
            out.extend_from_slice(&column.label);
            let written = match &tuple.0[i] {
                TupleValue::Null if column.null_allowed => {
                    out.extend_from_slice(b"null");
                    true
                }
                TupleValue::Text(bytes) => write_value(column.class, bytes, out),
                TupleValue::Null | TupleValue::Unchanged | TupleValue::Binary(_) => false,
            };
            if !written {
                return false;
            }
        }
        true
    }
}

/// A column value as JSON; `false` when it is not what its type prints.
fn write_value(class: Class, bytes: &[u8], out: &mut Vec<u8>) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else { return false };
    match class {
        Class::Integer => match text.parse::<i64>() {
            Ok(n) => write!(out, "{n}").is_ok(),
            Err(_) => false,
        },
        Class::Text => serde_json::to_writer(&mut *out, text).is_ok(),
        Class::Boolean => match text {
            "t" => {
                out.extend_from_slice(b"true");
                true
            }
            "f" => {
                out.extend_from_slice(b"false");
                true
            }
            _ => false,
        },
    }
}

fn label(name: &str) -> Vec<u8> {
    let mut label = serde_json::to_vec(name).expect("a string serializes");
    label.push(b':');
    label
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Mapping;
    use crate::record::Op;
    use crate::runtime::ingest::remix_in::{remix_in_owned, Origin};
    use serde_json::{json, Value};
    use types::tests::relation;
    use types::*;

    fn model(schema: Value, key: &[&str]) -> Model {
        let key: Vec<String> = key.iter().map(|k| k.to_string()).collect();
        Model::new("row", schema, &key).expect("a valid model")
    }

    fn binding() -> InputBinding {
        InputBinding { model: "row".into(), mapping: Mapping::identity() }
    }

    fn tuple(values: &[Option<&str>]) -> Tuple {
        Tuple(
            values
                .iter()
                .map(|v| v.map_or(TupleValue::Null, |t| TupleValue::Text(t.as_bytes().to_vec())))
                .collect(),
        )
    }

    /// The general path's bytes for the same row, or `None` when it rejects the row.
    fn general(relation: &Relation, model: &Model, tuple: &Tuple) -> Option<Vec<u8>> {
        let (row, unchanged) = types::tuple_to_object(relation, tuple).ok()?;
        let origin = Origin { source: "db\"1", position: "0/16B3D28:7".into(), idempotency_key: None };
        let change =
            remix_in_owned(&binding(), model, Value::Object(row), Op::Upsert, &unchanged, origin).ok()?;
        Some(serde_json::to_vec(&change).expect("serializes"))
    }

    fn fast(plan: &FastPlan, tuple: &Tuple) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        plan.write_upsert(tuple, "db\"1", "0/16B3D28:7", &mut out).then_some(out)
    }

    const COLUMNS: [(&str, u32); 6] =
        [("id", INT8), ("k", INT4), ("payload", TEXT), ("flag", BOOL), ("note", VARCHAR), ("Zed", UUID)];

    fn schema() -> Value {
        json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "a row", "type": "object",
            "properties": {"id": {"type": "integer"}, "k": {"type": "number"}, "payload": {"type": "string"},
                "flag": {"type": "boolean", "description": "on or off"}, "note": {"type": ["string", "null"]},
                "Zed": {"type": "string"}},
            "required": ["id", "k", "payload"], "additionalProperties": false})
    }

    #[test]
    fn fast_rows_are_byte_for_byte_the_general_path() {
        let (relation, model) = (relation(&COLUMNS), model(schema(), &["k", "id"]));
        let plan = FastPlan::new(&relation, &binding(), &model).expect("a plan");
        let rows: [[Option<&str>; 6]; 4] = [
            [
                Some("1"),
                Some("-2147483648"),
                Some("plain"),
                Some("t"),
                None,
                Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            ],
            [
                Some("9223372036854775807"),
                Some("0"),
                Some("tab\t \"q\" \\ é \u{1}"),
                Some("f"),
                Some(""),
                Some("x"),
            ],
            [Some("-5"), Some("7"), Some(""), None, Some("note"), Some("z")],
            [Some("3"), Some("3"), Some("ünï"), Some("t"), Some("x\ny"), Some("u")],
        ];
        for row in rows {
            let tuple = tuple(&row);
            let general = general(&relation, &model, &tuple);
            let fast = fast(&plan, &tuple);
            if row[3].is_none() {
                // `flag` does not allow null: the general path rejects the row, the fast path leaves it.
                assert_eq!((fast, general), (None, None));
                continue;
            }
            let fast = fast.expect("written");
            assert_eq!(String::from_utf8(fast).unwrap(), String::from_utf8(general.expect("valid")).unwrap());
        }
    }

    #[test]
    fn rows_the_fast_path_cannot_prove_go_the_general_way() {
        let (relation, model) = (relation(&COLUMNS), model(schema(), &["id"]));
        let plan = FastPlan::new(&relation, &binding(), &model).expect("a plan");
        let ok = [Some("1"), Some("2"), Some("p"), Some("t"), None, Some("u")];
        assert!(fast(&plan, &tuple(&ok)).is_some());
        let mut null_key = ok;
        null_key[0] = None;
        assert_eq!(fast(&plan, &tuple(&null_key)), None);
        let mut not_an_integer = ok;
        not_an_integer[1] = Some("1.5");
        assert_eq!(fast(&plan, &tuple(&not_an_integer)), None);
        let mut unchanged = tuple(&ok);
        unchanged.0[2] = TupleValue::Unchanged;
        assert_eq!(fast(&plan, &unchanged), None);
        assert_eq!(fast(&plan, &tuple(&ok[..5])), None, "a tuple of another shape");
        let mut not_utf8 = tuple(&ok);
        not_utf8.0[2] = TupleValue::Text(vec![0xff]);
        assert_eq!(fast(&plan, &not_utf8), None);
    }

    #[test]
    fn no_plan_when_the_schema_or_columns_say_more_than_types() {
        let columns = relation(&COLUMNS);
        let with = |f: &dyn Fn(&mut Value)| {
            let mut schema = schema();
            f(&mut schema);
            FastPlan::new(&columns, &binding(), &model(schema, &["id"])).is_some()
        };
        assert!(with(&|_| {}));
        assert!(!with(&|s| s["properties"]["payload"]["maxLength"] = json!(3)), "a constraint");
        assert!(!with(&|s| s["properties"]["note"]["format"] = json!("email")), "a format");
        assert!(!with(&|s| s["properties"]["k"]["type"] = json!("string")), "a type the column never has");
        assert!(!with(&|s| s["minProperties"] = json!(1)), "a keyword at the root");
        assert!(!with(&|s| {
            s["properties"].as_object_mut().unwrap().remove("Zed");
        }));
        assert!(with(&|s| {
            s["properties"].as_object_mut().unwrap().remove("Zed");
            s["additionalProperties"] = json!(true);
        }));
        assert!(!with(&|s| s["required"] = json!(["id", "missing"])), "a required field no column has");
        let numeric = relation(&[("id", INT8), ("k", NUMERIC)]);
        let numeric_schema =
            json!({"type": "object", "properties": {"id": {"type": "integer"}, "k": {"type": "string"}}});
        assert!(FastPlan::new(&numeric, &binding(), &model(numeric_schema, &["id"])).is_none(), "numeric");
        let renamed = InputBinding {
            model: "row".into(),
            mapping: Mapping::compile(&json!({"id": {"from": "id"}})).expect("a mapping"),
        };
        assert!(FastPlan::new(&columns, &renamed, &model(schema(), &["id"])).is_none());
    }
}
