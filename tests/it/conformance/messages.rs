//! What the stream and queue adapters (redis_streams, nats, rabbitmq, ...) share: the messages a
//! target should send for the log's records, in one comparable form, and the state they fold to.
//!
//! A message in comparable form: `{"offset", "op", "key", "value"}`, where `key` is the parsed key
//! (canonical JSON in the message) or `null` (a truncate), and `value` the parsed value or `null` (a
//! tombstone). Every adapter configures `item` with an output mapping ([`ITEM_FIELDS`]) and reads its
//! messages into this form, one list per model in arrival order, after applying its own duplicate
//! rule ([`dedupe_exactly_once`]; at least once: keep the first copy of each message id).

use super::model::{canonical, key_fields, normalize, ModelState, ITEM};
use super::{History, State};
use serde_json::{json, Map, Value};

/// `item` renamed by the target's mapping: (message field, model field).
pub const ITEM_FIELDS: [(&str, &str); 5] = [
    ("id", "sku"),
    ("name", "title"),
    ("price_cents", "price"),
    ("tags", "tags"),
    ("description", "description"),
];

/// The `models:` lines of a target section (4 spaces of indentation).
pub fn models_yaml() -> String {
    let item: Vec<String> = ITEM_FIELDS.iter().map(|(to, from)| format!("{to}: {from}")).collect();
    format!(
        "    models:\n      account: {{}}\n      item: {{ fields: {{ {} }} }}\n      line: {{}}\n",
        item.join(", ")
    )
}

/// A model object (or key) in the target's field names.
pub fn rename(model: &str, object: &Map<String, Value>) -> Map<String, Value> {
    if model != ITEM {
        return object.clone();
    }
    ITEM_FIELDS
        .iter()
        .filter_map(|(to, from)| object.get(*from).map(|v| ((*to).to_owned(), v.clone())))
        .collect()
}

fn target_key_fields(model: &str) -> Vec<&'static str> {
    if model == ITEM {
        vec!["id"]
    } else {
        key_fields(model).to_vec()
    }
}

fn as_map(value: &Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

/// Whether the values are objects or envelopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Object,
    Envelope,
}

/// The messages of `records` (from `remix log dump --json`), one list per model.
pub fn expected(records: &[Value], models: &[&str], mode: Mode) -> History {
    let mut history = History::new();
    for model in models {
        let messages = records
            .iter()
            .filter(|r| r["model"] == *model)
            .map(|r| {
                let op = r["op"].as_str().unwrap();
                let key = match op {
                    "truncate" => Value::Null,
                    _ => Value::Object(rename(model, &as_map(&r["key"]))),
                };
                let data = (op == "upsert").then(|| Value::Object(rename(model, &as_map(&r["data"]))));
                let value = match mode {
                    Mode::Object => data.unwrap_or(Value::Null),
                    Mode::Envelope => {
                        let mut envelope = json!({"op": op, "model": model, "key": key, "offset": r["offset"],
                            "time": r["time"], "source": r["source"]});
                        if let Some(data) = data {
                            envelope["data"] = data;
                        }
                        if let Some(unchanged) = r["unchanged"].as_array().filter(|u| !u.is_empty()) {
                            envelope["unchanged"] = Value::Array(unchanged.clone());
                        }
                        envelope
                    }
                };
                normalize(&json!({"offset": r["offset"], "op": op, "key": key, "value": value}))
            })
            .collect();
        history.insert((*model).to_owned(), messages);
    }
    history
}

/// The model state in the target's names.
pub fn expected_state(state: &ModelState) -> State {
    state
        .iter()
        .map(|((model, _), object)| {
            let object = rename(model, object);
            let key: Map<String, Value> =
                target_key_fields(model).iter().map(|f| ((*f).to_owned(), object[*f].clone())).collect();
            ((model.clone(), canonical(&Value::Object(key))), normalize(&Value::Object(object)))
        })
        .collect()
}

/// The state the messages fold to (a partial upsert's value holds only the fields it carries).
pub fn fold(history: &History, mode: Mode) -> Result<State, String> {
    let mut state = State::new();
    for (model, messages) in history {
        for m in messages {
            let (op, key) = (m["op"].as_str().unwrap_or_default(), &m["key"]);
            let data = match mode {
                Mode::Object => &m["value"],
                Mode::Envelope => &m["value"]["data"],
            };
            match op {
                "upsert" => {
                    let entry = state.entry((model.clone(), canonical(key))).or_insert_with(|| json!({}));
                    entry.as_object_mut().unwrap().extend(as_map(data));
                }
                "delete" => {
                    state.remove(&(model.clone(), canonical(key)));
                }
                "truncate" => state.retain(|(m, _), _| m != model),
                other => return Err(format!("{model}: a message with op '{other}': {m}")),
            }
        }
    }
    Ok(state.into_iter().map(|(k, v)| (k, normalize(&v))).collect())
}

/// Exactly once: no offset twice in one list.
pub fn dedupe_exactly_once(history: &History) -> Result<(), String> {
    for (stream, messages) in history {
        let mut seen = std::collections::BTreeSet::new();
        for m in messages {
            if !seen.insert(m["offset"].as_u64()) {
                return Err(format!("{stream}: offset {} delivered twice", m["offset"]));
            }
        }
    }
    Ok(())
}

/// A message's key text parsed back (canonical JSON), `null` when absent.
pub fn parse_key(text: Option<&str>) -> Result<Value, String> {
    match text {
        None => Ok(Value::Null),
        Some(text) => serde_json::from_str(text).map_err(|e| format!("a key is not JSON ({e}): {text}")),
    }
}
