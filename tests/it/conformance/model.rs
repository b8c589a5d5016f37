//! The suite's models, a workload that writes their changes straight into the log (so the suite needs
//! no source: partial records and truncates included), and the fold of `remix log dump --json` into
//! the model state every target must end in.

use crate::support::{open_log, Node, Rng};
use remix::record::{Change, Op, KIND_CHANGE};
use remix_storage::AppendRecord;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub const ACCOUNT: &str = "account";
pub const ITEM: &str = "item";
pub const LINE: &str = "line";
/// Three key shapes: an integer, a string (with characters that need escaping in URLs, forms, SQL),
/// and a composite of two integers.
pub const MODELS: [&str; 3] = [ACCOUNT, ITEM, LINE];

/// The key fields of a model.
pub fn key_fields(model: &str) -> &'static [&'static str] {
    match model {
        ACCOUNT => &["id"],
        ITEM => &["sku"],
        LINE => &["order_id", "line_no"],
        other => panic!("no model {other}"),
    }
}

/// Fields a partial upsert may leave out (large values, TOASTed at a PostgreSQL source).
fn toastable(model: &str) -> &'static [&'static str] {
    match model {
        ACCOUNT => &["notes", "prefs"],
        ITEM => &["description", "tags"],
        _ => &["note"],
    }
}

fn schema(model: &str) -> Value {
    let (properties, required) = match model {
        ACCOUNT => (
            json!({"id": {"type": "integer"}, "email": {"type": "string"}, "name": {"type": ["string", "null"]},
                "tier": {"type": "string", "enum": ["free", "pro", "team"]}, "score": {"type": "integer"},
                "active": {"type": "boolean"}, "notes": {"type": ["string", "null"]},
                "prefs": {"type": ["object", "null"]}}),
            json!(["id", "email", "tier", "score", "active"]),
        ),
        ITEM => (
            json!({"sku": {"type": "string"}, "title": {"type": "string"}, "price": {"type": "integer"},
                "tags": {"type": ["array", "null"], "items": {"type": "string"}},
                "description": {"type": ["string", "null"]}}),
            json!(["sku", "title", "price"]),
        ),
        _ => (
            json!({"order_id": {"type": "integer"}, "line_no": {"type": "integer"}, "qty": {"type": "integer"},
                "amount": {"type": "number"}, "note": {"type": ["string", "null"]}}),
            json!(["order_id", "line_no", "qty", "amount"]),
        ),
    };
    json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
        "properties": properties, "required": required, "additionalProperties": false})
}

/// Writes the schemas into `<root>/schemas/` and returns the `models:` section of the config.
pub fn write_schemas(root: &Path) -> String {
    let dir = root.join("schemas");
    std::fs::create_dir_all(&dir).unwrap();
    let mut yaml = String::from("models:\n");
    for model in MODELS {
        let path = dir.join(format!("{model}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&schema(model)).unwrap()).unwrap();
        let keys = key_fields(model).join(", ");
        yaml.push_str(&format!("  {model}: {{ schema: \"{}\", key: [{keys}] }}\n", path.display()));
    }
    yaml
}

// ---------------------------------------------------------------------------------------------------
// The workload: what a source would log, written directly.
// ---------------------------------------------------------------------------------------------------

/// Generates changes the way a source would: partial upserts only of objects that exist (leaving out
/// non-null large fields), deletes mostly of existing objects, nothing after a truncate but new rows.
#[derive(Debug)]
pub struct Workload {
    rng: Rng,
    /// Distinct keys per model.
    keys: u64,
    /// What the source holds now: (model, key number) -> object.
    rows: BTreeMap<(&'static str, u64), Map<String, Value>>,
    position: u64,
    /// The next key number outside the key space (poison records, webhook objects).
    outside: u64,
}

impl Workload {
    pub fn new(seed: u64, keys: u64) -> Workload {
        Workload { rng: Rng::new(seed), keys, rows: BTreeMap::new(), position: 0, outside: 1_000_000 }
    }

    fn change(&mut self, model: &str, op: Op, key: Value, data: Option<Map<String, Value>>) -> Change {
        self.position += 1;
        let unchanged = Vec::new();
        Change {
            source: "conformance".into(),
            position: format!("w-{}", self.position),
            model: model.into(),
            op,
            key,
            data,
            unchanged,
            idempotency_key: None,
        }
    }

    /// `n` changes spread over the three models.
    pub fn changes(&mut self, n: usize) -> Vec<Change> {
        (0..n).map(|_| self.next_change()).collect()
    }

    fn next_change(&mut self) -> Change {
        let model = MODELS[self.rng.range(0..=2) as usize];
        let n = self.rng.range(0..=self.keys - 1);
        let key = key_value(model, n);
        let roll = self.rng.range(0..=99);
        let Some(row) = self.rows.get(&(model, n)).cloned() else {
            if roll < 8 {
                // A delete of something that is not there (a webhook sender may do that).
                return self.change(model, Op::Delete, key, None);
            }
            let object = self.object(model, n);
            self.rows.insert((model, n), object.clone());
            return self.change(model, Op::Upsert, key, Some(object));
        };
        let leave_out: Vec<String> = toastable(model)
            .iter()
            .filter(|f| !row.get(**f).is_none_or(Value::is_null))
            .filter(|_| self.rng.chance(70))
            .map(|f| (*f).to_owned())
            .collect();
        if roll < 22 {
            self.rows.remove(&(model, n));
            let old = self.rng.chance(50).then_some(row);
            self.change(model, Op::Delete, key, old)
        } else if roll < 55 && !leave_out.is_empty() {
            let mut object = self.object(model, n);
            let mut merged = object.clone();
            for field in &leave_out {
                object.remove(field);
                merged.insert(field.clone(), row[field].clone());
            }
            self.rows.insert((model, n), merged);
            let mut change = self.change(model, Op::Upsert, key, Some(object));
            change.unchanged = leave_out;
            change
        } else {
            let object = self.object(model, n);
            self.rows.insert((model, n), object.clone());
            self.change(model, Op::Upsert, key, Some(object))
        }
    }

    /// A truncate of `model`: the source's table is empty afterwards.
    pub fn truncate(&mut self, model: &'static str) -> Change {
        self.rows.retain(|(m, _), _| *m != model);
        self.change(model, Op::Truncate, Value::Null, None)
    }

    /// A full upsert of a new account (a key no other change touches) named `name`.
    pub fn lone_account(&mut self, name: &str) -> Change {
        self.outside += 1;
        let n = self.outside;
        let mut object = self.object(ACCOUNT, n);
        object.insert("name".into(), name.into());
        self.change(ACCOUNT, Op::Upsert, key_value(ACCOUNT, n), Some(object))
    }

    /// New account objects (keys no other change touches), as a webhook sender would post them.
    pub fn new_accounts(&mut self, count: usize) -> Vec<Value> {
        (0..count)
            .map(|_| {
                self.outside += 1;
                Value::Object(self.object(ACCOUNT, self.outside))
            })
            .collect()
    }

    /// A full object of `model` for key number `n`, with fresh values.
    fn object(&mut self, model: &str, n: u64) -> Map<String, Value> {
        let r = &mut self.rng;
        let mut object = key_value(model, n).as_object().unwrap().clone();
        let fields = match model {
            ACCOUNT => json!({
                "email": format!("a{n}.{}@example.com", r.range(0..=999)),
                "name": if r.chance(15) { Value::Null } else { text(r).into() },
                "tier": (["free", "pro", "team"][r.range(0..=2) as usize]),
                "score": r.range(0..=20_000) as i64 - 10_000,
                "active": r.chance(50),
                "notes": big_text(r),
                "prefs": if r.chance(25) { Value::Null } else {
                    json!({"theme": (["dark", "light"][r.range(0..=1) as usize]), "n": r.range(0..=99),
                        "nested": {"list": [r.range(0..=9), text(r)], "flag": r.chance(50)}})
                },
            }),
            ITEM => json!({
                "title": text(r),
                "price": r.range(0..=1_000_000),
                "tags": if r.chance(20) { Value::Null } else {
                    (0..r.range(0..=3)).map(|_| text(r)).collect::<Vec<_>>().into()
                },
                "description": big_text(r),
            }),
            _ => json!({
                "qty": r.range(1..=500),
                // Quarters: exact in binary, so every target holds the same number.
                "amount": r.range(0..=400_000) as f64 / 4.0 + 0.25,
                "note": big_text(r),
            }),
        };
        object.extend(fields.as_object().unwrap().clone());
        object
    }
}

/// The key of key number `n` of `model`.
pub fn key_value(model: &str, n: u64) -> Value {
    match model {
        ACCOUNT => json!({"id": n + 1}),
        ITEM => json!({"sku": match n % 7 {
            0 => format!("SKU ä/{n}"),
            1 => format!("sku '{n}' \"q\""),
            2 => format!("sku&{n}=%2B+x"),
            _ => format!("sku-{n:05}"),
        }}),
        _ => json!({"order_id": n / 4 + 1, "line_no": n % 4 + 1}),
    }
}

fn text(r: &mut Rng) -> String {
    const WORDS: [&str; 10] = [
        "Ada",
        "Zoë O'Brien",
        "名前 テスト",
        "a \"quoted\" name",
        "back\\slash",
        "tab\tand\nnewline",
        "comma, semicolon; {brace} [x]",
        "x&y=z%20+w",
        "emoji 🦀",
        "plain",
    ];
    format!("{} #{}", WORDS[r.range(0..=9) as usize], r.range(0..=9999))
}

/// A nullable text that is sometimes large (a TOASTed value at a PostgreSQL source).
fn big_text(r: &mut Rng) -> Value {
    match r.range(0..=99) {
        0..=19 => Value::Null,
        20..=24 => {
            let unit = text(r);
            unit.repeat(1 + 2000 / unit.len()).into()
        }
        _ => text(r).into(),
    }
}

/// Appends `changes` to the log of `data_dir` (no node may be running), in groups.
pub fn append(data_dir: &Path, changes: &[Change]) {
    let log = open_log(data_dir);
    for chunk in changes.chunks(200) {
        let records = chunk
            .iter()
            .map(|c| AppendRecord { kind: KIND_CHANGE, payload: serde_json::to_vec(c).unwrap() })
            .collect();
        log.append_blocking(records).expect("append to the log");
    }
    log.close().expect("close the log");
}

// ---------------------------------------------------------------------------------------------------
// The log as `remix log dump --json` shows it, and the model state it leads to.
// ---------------------------------------------------------------------------------------------------

/// The change records of the log, in offset order.
pub fn dump(node: &Node) -> Vec<Value> {
    let out = node.cli(&["log", "dump", "--json"]);
    assert!(out.status.success(), "remix log dump: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .filter(|r| r.get("op").is_some())
        .collect();
    let offsets: Vec<u64> = records.iter().map(offset).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "log dump is in offset order");
    records
}

pub fn offset(record: &Value) -> u64 {
    record["offset"].as_u64().expect("a record has an offset")
}

/// The records a target receives: those of its models, without truncates when it ignores them,
/// without the offsets in `skip` (dead-lettered), after `after`.
pub fn select(records: &[Value], models: &[&str], truncate: bool, skip: &[u64], after: u64) -> Vec<Value> {
    records
        .iter()
        .filter(|r| models.iter().any(|m| r["model"] == *m))
        .filter(|r| truncate || r["op"] != "truncate")
        .filter(|r| !skip.contains(&offset(r)) && offset(r) > after)
        .cloned()
        .collect()
}

/// Model objects by (model, canonical key text).
pub type ModelState = BTreeMap<(String, String), Map<String, Value>>;

/// Folds change records into the model state: an upsert replaces the object, except that the fields
/// a partial upsert lists as `unchanged` keep their previous value; a delete removes it; a truncate
/// empties the model.
pub fn fold(records: &[Value]) -> ModelState {
    let mut state = ModelState::new();
    for record in records {
        let model = record["model"].as_str().unwrap().to_owned();
        match record["op"].as_str().unwrap() {
            "upsert" => {
                let key = (model, canonical(&record["key"]));
                let mut object = record["data"].as_object().cloned().unwrap_or_default();
                if let (Some(previous), Some(unchanged)) = (state.get(&key), record["unchanged"].as_array()) {
                    for field in unchanged.iter().filter_map(Value::as_str) {
                        if let Some(value) = previous.get(field) {
                            object.insert(field.to_owned(), value.clone());
                        }
                    }
                }
                state.insert(key, object);
            }
            "delete" => {
                state.remove(&(model, canonical(&record["key"])));
            }
            "truncate" => state.retain(|(m, _), _| *m != model),
            other => panic!("unknown op {other} in {record}"),
        }
    }
    state
}

/// JSON text with object keys sorted at every level and integral floats written as integers, so
/// that equal values from different targets compare equal.
pub fn canonical(value: &Value) -> String {
    normalize(value).to_string()
}

/// `value` with object keys sorted and integral floats as integers.
pub fn normalize(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, Value> = map.iter().map(|(k, v)| (k, normalize(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap();
            if f.fract() == 0.0 && f.abs() < 9e15 {
                json!(f as i64)
            } else {
                value.clone()
            }
        }
        other => other.clone(),
    }
}

/// How many records of each op (and partial upserts) `records` hold, for the test's output.
pub fn census(records: &[Value]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in records {
        *counts.entry(r["op"].as_str().unwrap()).or_default() += 1;
        if r.get("unchanged").is_some() {
            *counts.entry("partial").or_default() += 1;
        }
    }
    let models: BTreeSet<&str> = records.iter().filter_map(|r| r["model"].as_str()).collect();
    format!("{} records {counts:?} over {models:?}", records.len())
}
