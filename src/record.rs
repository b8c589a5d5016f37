//! What Remix stores in the log: the payload of each record kind, as JSON bytes.
//!
//! The storage crate sees opaque `(kind, payload)` pairs; this module gives them meaning. The record
//! form matches `remix log dump --json` (SPEC section 5): `offset` and `time` come from the frame, the
//! rest from the payload.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A change to one model object: the canonical record every target consumes.
pub const KIND_CHANGE: u8 = 1;
/// An object that failed remix in or validation, kept for `remix dlq`.
pub const KIND_DEAD_LETTER: u8 = 2;
/// A DLQ entry was resolved (retried or dropped); the payload names it.
pub const KIND_DEAD_LETTER_RESOLVED: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Upsert,
    Delete,
    Truncate,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Delete => "delete",
            Op::Truncate => "truncate",
        }
    }
}

/// The payload of a [`KIND_CHANGE`] record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// The source's name in the configuration.
    pub source: String,
    /// Where the source had it (a Postgres LSN and ordinal, a webhook request id, a Stripe event id).
    pub position: String,
    pub model: String,
    pub op: Op,
    /// The model key (`{"id": 7}`); `null` for a truncate.
    pub key: Value,
    /// The object (upsert), or the old row if the source sent one (delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
    /// Fields left out of a partial upsert because the source did not send them (unchanged TOAST).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchanged: Vec<String>,
    /// The idempotency key the source gave the batch this record came in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// A [`Change`] as targets read it: `position` and `idempotency_key` are checked for well-formed
/// JSON and skipped, not copied (a target never uses them, and this is per record); `source` is kept
/// (stream targets name streams and envelopes by it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeBody {
    pub source: String,
    #[serde(rename = "position")]
    _position: serde::de::IgnoredAny,
    pub model: String,
    pub op: Op,
    pub key: Value,
    /// The object's JSON text, not parsed (see [`crate::runtime::delivery::Fields`]).
    #[serde(default)]
    pub data: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    pub unchanged: Vec<String>,
    #[serde(default, rename = "idempotency_key")]
    _idempotency_key: Option<serde::de::IgnoredAny>,
}

impl ChangeBody {
    /// The body of a [`KIND_CHANGE`] record; `None` for any other kind or a payload that does not
    /// decode (as [`decode`] would give `Decoded::Other`).
    pub fn decode(kind: u8, payload: &[u8]) -> Option<ChangeBody> {
        let body: ChangeBody = (kind == KIND_CHANGE).then(|| serde_json::from_slice(payload).ok())??;
        // `data` is an object, as in a `Change`.
        let is_object = body.data.as_ref().is_none_or(|raw| raw.get().starts_with('{'));
        is_object.then_some(body)
    }
}

/// One validation or mapping error, with the JSON pointer (or field) it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

/// The payload of a [`KIND_DEAD_LETTER`] record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetter {
    pub source: String,
    pub position: String,
    pub model: String,
    /// The route, table or object type the input came through (what remix in ran for).
    pub route: String,
    pub errors: Vec<FieldError>,
    /// The raw input as the source sent it.
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<Op>,
}

/// The payload of a [`KIND_DEAD_LETTER_RESOLVED`] record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterResolved {
    /// The offset of the dead letter.
    pub id: u64,
    /// `retried` (then `offset` is where the change landed) or `dropped`.
    pub how: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// A decoded log record of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Change(Change),
    DeadLetter(DeadLetter),
    Resolved(DeadLetterResolved),
    /// A kind this version does not know, or a payload that does not decode.
    Other {
        kind: u8,
        error: String,
    },
}

pub fn decode(kind: u8, payload: &[u8]) -> Decoded {
    let result = match kind {
        KIND_CHANGE => serde_json::from_slice(payload).map(Decoded::Change),
        KIND_DEAD_LETTER => serde_json::from_slice(payload).map(Decoded::DeadLetter),
        KIND_DEAD_LETTER_RESOLVED => serde_json::from_slice(payload).map(Decoded::Resolved),
        _ => return Decoded::Other { kind, error: "unknown record kind".into() },
    };
    result.unwrap_or_else(|e| Decoded::Other { kind, error: e.to_string() })
}

/// The `remix log dump --json` form of a change record.
pub fn change_json(offset: u64, timestamp_ms: u64, change: &Change) -> Value {
    let mut object = Map::new();
    object.insert("offset".into(), offset.into());
    object.insert("time".into(), crate::time::format_ms(timestamp_ms).into());
    object.insert("source".into(), change.source.clone().into());
    object.insert("position".into(), change.position.clone().into());
    object.insert("model".into(), change.model.clone().into());
    object.insert("op".into(), change.op.as_str().into());
    // A truncate concerns the model only: no key (SPEC section 5).
    if change.op != Op::Truncate {
        object.insert("key".into(), change.key.clone());
    }
    if let Some(data) = &change.data {
        object.insert("data".into(), Value::Object(data.clone()));
    } else if change.op == Op::Upsert {
        object.insert("data".into(), Value::Object(Map::new()));
    }
    if !change.unchanged.is_empty() {
        object.insert("unchanged".into(), change.unchanged.clone().into());
    }
    Value::Object(object)
}
