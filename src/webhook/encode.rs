//! One pass over a webhook body: each object is parsed, remixed, validated and encoded into its log
//! record as it comes ([`super::body`]), so a request holds its body and its encoded records, never a
//! value tree of the whole array nor the changes beside their records. The batch stays all or nothing:
//! once one object is invalid, the records encoded so far are dropped and the pass only collects the
//! errors (and the invalid objects, for the DLQ).
//!
//! What the pass holds is counted against the request's reservation in the ingest memory budget
//! ([`crate::runtime::ingest::budget`]); when it needs more, `grow` is asked, and the pass stops if
//! there is no room.

use super::body::{for_each_object, BodyError, Walked};
use crate::config::InputBinding;
use crate::models::Model;
use crate::record::{FieldError, Op};
use crate::runtime::ingest::budget::{NoRoom, RECORD_OVERHEAD_BYTES};
use crate::runtime::ingest::remix_in::Origin;
use crate::runtime::ingest::{remix_in, ChangeBatch, RemixOutcome};
use serde_json::Value;

/// The idempotency key each record of a request carries.
#[derive(Debug, Clone)]
pub enum KeyOf {
    None,
    /// The `Idempotency-Key` header: every record of the batch.
    Batch(String),
    /// `idempotency_field`: each object's own value of this field, if it has one.
    Field(String),
}

/// What a pass encodes, for one request.
#[derive(Debug, Clone)]
pub struct Pass {
    pub source: String,
    pub binding: InputBinding,
    /// The header's operation (`X-Remix-Op`); `delete_field` may turn an object into a delete.
    pub op: Op,
    pub delete_field: Option<String>,
    /// The request's name in positions (`<request>:<index>`).
    pub request: String,
    pub keys: KeyOf,
    /// `None`: every object, at its own index. `Some(select)`: object `i` only when `select[i]` is
    /// `Some(j)`, at index `j` (the objects of a request that were not logged before).
    pub select: Option<Vec<Option<usize>>>,
}

/// An object that did not remix.
#[derive(Debug)]
pub struct Invalid {
    pub index: usize,
    pub errors: Vec<FieldError>,
    pub input: Value,
    pub op: Op,
}

/// What a pass made of a body.
#[derive(Debug, Default)]
pub struct Encoded {
    /// The records, when every object is valid.
    pub batch: ChangeBatch,
    /// Objects in the body.
    pub objects: usize,
    pub invalid: Vec<Invalid>,
    /// Each object's `idempotency_field` value (with [`KeyOf::Field`] and no selection).
    pub keys: Vec<Option<String>>,
    invalid_bytes: u64,
}

impl Encoded {
    /// Bytes held beyond the body (what the budget counts for the request once the body is gone).
    pub fn held_bytes(&self) -> u64 {
        self.batch.bytes() as u64 + self.batch.len() as u64 * RECORD_OVERHEAD_BYTES + self.invalid_bytes
    }
}

/// Why a pass stopped.
#[derive(Debug)]
pub enum Stop {
    Body(BodyError),
    NoRoom(NoRoom),
    /// (Without waiting) the reservation must first grow to this many bytes; then run the pass again.
    NeedRoom(u64),
}

/// Whether an object is a delete by its `delete_field`, else `header_op`.
pub fn op_of(object: &Value, delete_field: Option<&str>, header_op: Op) -> Op {
    let flagged = delete_field.and_then(|f| object.get(f)).is_some_and(|v| {
        matches!(v, Value::Bool(true)) || v.as_str().is_some_and(|s| s == "delete" || s == "true")
    });
    if flagged {
        Op::Delete
    } else {
        header_op
    }
}

/// The `idempotency_field` value of an object, as a key.
pub fn field_key(object: &Value, field: &str) -> Option<String> {
    object.get(field).map(|k| k.as_str().map_or_else(|| k.to_string(), str::to_owned))
}

/// Runs `pass` over `body`. `grow(bytes)` is asked whenever the body and what the pass holds come to
/// more than `reserved` bytes; it returns the bytes now reserved.
pub fn encode(
    pass: &Pass,
    model: &Model,
    body: &[u8],
    mut reserved: u64,
    grow: &mut dyn FnMut(u64) -> Result<u64, Stop>,
) -> Result<Encoded, Stop> {
    let mut out = Encoded::default();
    let mut stop = None;
    let walked = for_each_object(body, &mut |index, object| {
        let key = match &pass.keys {
            KeyOf::None => None,
            KeyOf::Batch(key) => Some(key.clone()),
            KeyOf::Field(field) => field_key(&object, field),
        };
        let at = match &pass.select {
            None => {
                if matches!(pass.keys, KeyOf::Field(_)) {
                    out.keys.push(key.clone());
                }
                index
            }
            Some(select) => match select.get(index).copied().flatten() {
                Some(at) => at,
                None => return true,
            },
        };
        let op = op_of(&object, pass.delete_field.as_deref(), pass.op);
        let origin = Origin {
            source: &pass.source,
            position: format!("{}:{at}", pass.request),
            idempotency_key: key.as_deref(),
        };
        match remix_in(&pass.binding, model, &object, op, origin) {
            RemixOutcome::Valid(change) if out.invalid.is_empty() => out.batch.push(&change),
            RemixOutcome::Valid(_) => {}
            RemixOutcome::Invalid(errors) => {
                if out.invalid.is_empty() {
                    out.batch = ChangeBatch::new();
                }
                out.invalid_bytes +=
                    value_bytes(&object) + errors.iter().map(|e| e.message.len() as u64 + 64).sum::<u64>();
                out.invalid.push(Invalid { index, errors, input: object, op });
            }
        }
        let held = body.len() as u64 + out.held_bytes();
        if held > reserved {
            // A quarter more at a time, so a large request asks a few times, not per record.
            match grow(held + held / 4) {
                Ok(now) => reserved = now,
                Err(e) => {
                    stop = Some(e);
                    return false;
                }
            }
        }
        true
    });
    match walked {
        Err(e) => Err(Stop::Body(e)),
        Ok(Walked::Stopped) => Err(stop.expect("stopped for a reason")),
        Ok(Walked::All(objects)) => {
            out.objects = objects;
            Ok(out)
        }
    }
}

/// About what a value tree takes in memory.
fn value_bytes(value: &Value) -> u64 {
    const NODE_BYTES: u64 = 32;
    NODE_BYTES
        + match value {
            Value::String(s) => s.len() as u64,
            Value::Array(items) => items.iter().map(value_bytes).sum(),
            Value::Object(map) => map.iter().map(|(k, v)| k.len() as u64 + NODE_BYTES + value_bytes(v)).sum(),
            _ => 0,
        }
}
