//! What a change looks like as a message on a stream or queue (redis_streams, nats, rabbitmq, ...):
//! the name of its stream from a template, its key, its value and its headers. Every stream target
//! builds its messages here, so they all look alike.
//!
//! - The stream (topic, subject, queue) comes from a template with `{model}` and `{source}`.
//! - The key is the model key in the target's field names: canonical JSON (`{"id":7}`, fields
//!   sorted), or the text of one field (`key_field: id` gives `7`). A truncate has no key.
//! - The value, with `value: object`, is the remixed object for an upsert (a partial upsert holds
//!   only the fields it carries) and nothing for a delete or a truncate (a tombstone: `remix-op` says
//!   which); with `value: envelope` it is always
//!   `{"op","key","data","unchanged","offset","time","source","model"}` (`data` for upserts,
//!   `unchanged` only when not empty).
//! - The headers: `remix-op` (`upsert`, `delete`, `truncate`), `remix-offset` (the log offset),
//!   `remix-target` (the target's name), `remix-model`.

use super::{Fields, Item};
use crate::config::section::{choice, Cx, KeyPath};
use crate::record::Op;
use serde::Serialize;
use serde_json::Value;

pub const HEADER_OP: &str = "remix-op";
pub const HEADER_OFFSET: &str = "remix-offset";
pub const HEADER_TARGET: &str = "remix-target";
pub const HEADER_MODEL: &str = "remix-model";
/// The header holding the rewind generation (absent for 0).
pub const HEADER_GENERATION: &str = "remix-generation";

/// A message's stable id: `<target>:<offset>`, with `:g<G>` in rewind generation `G > 0`.
pub fn message_id(target: &str, offset: u64, generation: u64) -> String {
    match generation {
        0 => format!("{target}:{offset}"),
        g => format!("{target}:{offset}:g{g}"),
    }
}

/// The rewind generation a target keeps in its state-store journal (`{"generation":G}`).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct GenerationJournal {
    generation: u64,
}

/// Loads the rewind generation kept under `key` (0 when none); `what` names the target kind.
pub async fn load_generation(
    state: &dyn crate::runtime::state::StateStore,
    key: &crate::runtime::state::StateKey,
    what: &str,
) -> Result<u64, super::TargetError> {
    let stored = state
        .load(key)
        .await
        .map_err(|e| super::TargetError::transient(format!("{what}: {e}")).caused_by(e))?;
    let Some(bytes) = stored else { return Ok(0) };
    let journal: GenerationJournal = serde_json::from_slice(&bytes)
        .map_err(|e| super::TargetError::permanent(None, format!("{what}: the {key} is not valid: {e}")))?;
    Ok(journal.generation)
}

/// Stores the rewind generation under `key`.
pub async fn store_generation(
    state: &dyn crate::runtime::state::StateStore,
    key: &crate::runtime::state::StateKey,
    what: &str,
    generation: u64,
) -> Result<(), super::TargetError> {
    let bytes = serde_json::to_vec(&GenerationJournal { generation }).expect("a journal serializes");
    state
        .store(key, bytes)
        .await
        .map_err(|e| super::TargetError::transient(format!("{what}: {e}")).caused_by(e))
}

/// What a message's value holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueMode {
    /// The object (tombstones for deletes and truncates).
    Object,
    /// An envelope with the operation, key, object, offset, time and source.
    Envelope,
}

/// How a target's messages are built (`value`, `key_field`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageFormat {
    pub value: ValueMode,
    /// The key is this field's value (as text) instead of the whole key's canonical JSON.
    pub key_field: Option<String>,
}

impl MessageFormat {
    /// Reads `value` and `key_field` of a target section, reporting bad values at their paths.
    pub fn parse(
        cx: &mut Cx<'_>,
        value: Option<String>,
        key_field: Option<String>,
        path: &KeyPath,
    ) -> Option<MessageFormat> {
        let choices = [("object", ValueMode::Object), ("envelope", ValueMode::Envelope)];
        let value = choice(cx, value, &path.key("value"), &choices)?;
        if key_field.as_deref() == Some("") {
            cx.err(&path.key("key_field"), "must not be empty");
            return None;
        }
        Some(MessageFormat { value, key_field })
    }
}

/// A template naming a stream by `{model}` and `{source}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(String);

impl Template {
    /// Checks that `text` is not empty and uses no placeholder but `{model}` and `{source}`.
    pub fn parse(cx: &mut Cx<'_>, text: String, path: &KeyPath) -> Option<Template> {
        if text.is_empty() {
            cx.err(path, "must not be empty");
            return None;
        }
        let mut rest = text.as_str();
        while let Some(open) = rest.find('{') {
            let after = &rest[open..];
            let Some(close) = after.find('}') else {
                cx.err(path, format!("'{text}': an unclosed '{{'"));
                return None;
            };
            let name = &after[1..close];
            if name != "model" && name != "source" {
                cx.err(
                    path,
                    format!("'{text}': unknown placeholder {{{name}}} (expected {{model}} or {{source}})"),
                );
                return None;
            }
            rest = &after[close + 1..];
        }
        Some(Template(text))
    }

    pub fn new(text: &str) -> Template {
        Template(text.to_owned())
    }

    pub fn text(&self) -> &str {
        &self.0
    }

    /// The name for one model and source.
    pub fn render(&self, model: &str, source: &str) -> String {
        self.0.replace("{model}", model).replace("{source}", source)
    }

    /// Whether the name depends on the source.
    pub fn uses_source(&self) -> bool {
        self.0.contains("{source}")
    }
}

/// One change as a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub offset: u64,
    pub op: Op,
    /// `None` for a truncate.
    pub key: Option<String>,
    /// `None`: a tombstone.
    pub value: Option<Vec<u8>>,
}

impl Message {
    /// `remix-op`'s value.
    pub fn op_name(&self) -> &'static str {
        op_name(self.op)
    }
}

pub fn op_name(op: Op) -> &'static str {
    match op {
        Op::Upsert => "upsert",
        Op::Delete => "delete",
        Op::Truncate => "truncate",
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    op: &'static str,
    model: &'a str,
    key: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Fields>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    unchanged: &'a [String],
    offset: u64,
    time: String,
    source: &'a str,
}

/// The message for `item`.
pub fn message(format: &MessageFormat, item: &Item) -> Message {
    let key = match item.op {
        Op::Truncate => None,
        _ => Some(key_text(format, &item.key)),
    };
    let value = match format.value {
        ValueMode::Object => {
            item.data.as_ref().map(|data| serde_json::to_vec(data).expect("an object serializes"))
        }
        ValueMode::Envelope => {
            let envelope = Envelope {
                op: op_name(item.op),
                model: &item.model,
                key: &item.key,
                data: item.data.as_ref(),
                unchanged: &item.unchanged,
                offset: item.offset,
                time: crate::time::format_ms(item.timestamp_ms),
                source: &item.source,
            };
            Some(serde_json::to_vec(&envelope).expect("an envelope serializes"))
        }
    };
    Message { offset: item.offset, op: item.op, key, value }
}

/// The key's text: canonical JSON (serde_json's maps keep keys sorted), or one field's value.
fn key_text(format: &MessageFormat, key: &Value) -> String {
    match (&format.key_field, key) {
        (Some(field), Value::Object(fields)) => match fields.get(field) {
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => key.to_string(),
        },
        _ => key.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(op: Op) -> Item {
        Item {
            offset: 7,
            timestamp_ms: 0,
            model: "order".into(),
            source: "shop".into(),
            op,
            key: json!({"id": 3, "b": "x"}),
            data: (op == Op::Upsert)
                .then(|| Fields::Map(json!({"id": 3, "b": "x"}).as_object().unwrap().clone())),
            unchanged: Vec::new(),
        }
    }

    #[test]
    fn objects_tombstones_and_envelopes() {
        let object = MessageFormat { value: ValueMode::Object, key_field: None };
        let m = message(&object, &item(Op::Upsert));
        assert_eq!(m.key.as_deref(), Some(r#"{"b":"x","id":3}"#));
        assert_eq!(m.value.as_deref(), Some(&br#"{"b":"x","id":3}"#[..]));
        assert_eq!(message(&object, &item(Op::Delete)).value, None);
        let truncate = message(&object, &Item { key: Value::Null, ..item(Op::Truncate) });
        assert_eq!((truncate.key, truncate.value, truncate.op), (None, None, Op::Truncate));

        let envelope = MessageFormat { value: ValueMode::Envelope, key_field: Some("id".into()) };
        let m = message(&envelope, &item(Op::Delete));
        assert_eq!(m.key.as_deref(), Some("3"));
        let value: Value = serde_json::from_slice(&m.value.unwrap()).unwrap();
        assert_eq!(
            value,
            json!({"op": "delete", "model": "order", "key": {"id": 3, "b": "x"}, "offset": 7,
                "time": "1970-01-01T00:00:00.000Z", "source": "shop"})
        );
    }

    #[test]
    fn templates() {
        let t = Template::new("remix.{source}.{model}");
        assert_eq!(t.render("order", "shop"), "remix.shop.order");
        assert!(t.uses_source());
        let mut cx = Cx::new("");
        assert!(Template::parse(&mut cx, "x.{table}".into(), &KeyPath::root()).is_none());
        assert!(Template::parse(&mut cx, "x.{model".into(), &KeyPath::root()).is_none());
        assert!(Template::parse(&mut cx, "x.{model}".into(), &KeyPath::root()).is_some());
    }
}
