//! Remix out: a log record becomes an item in the target's shape (its field names, its key), or the
//! reasons it cannot.

use super::{Fields, Item};
use crate::config::TruncatePolicy;
use crate::mapping::Mapping;
use crate::record::{ChangeBody, FieldError, Op};
use crate::runtime::engine::Record;
use std::collections::BTreeMap;

/// The item for a target, `None` when the record is not for it, or the change as an item (in the
/// model's names) and its remix-out errors.
#[allow(clippy::result_large_err)] // the error path is rare and short-lived
pub(super) fn remix_out(
    outputs: &BTreeMap<String, Mapping>,
    truncate: TruncatePolicy,
    record: &Record,
) -> Result<Option<Item>, (Item, Vec<FieldError>)> {
    let Some(change) = ChangeBody::decode(record.kind, &record.payload) else { return Ok(None) };
    let Some(mapping) = outputs.get(&change.model) else { return Ok(None) };
    if change.op == Op::Truncate && truncate == TruncatePolicy::Ignore {
        return Ok(None);
    }
    let ChangeBody { source, model, op, key, data, unchanged, .. } = change;
    let mut errors = Vec::new();
    let mut note = |e: Vec<crate::mapping::MappingError>| {
        errors.extend(e.into_iter().map(|e| FieldError { path: format!("/{}", e.field), message: e.message }))
    };
    let key = match op {
        Op::Truncate => serde_json::Value::Null,
        _ if mapping.is_identity() => key,
        _ => match mapping.apply_key(&key) {
            Ok(mapped) => serde_json::Value::Object(mapped),
            Err(e) => {
                note(e);
                key
            }
        },
    };
    let data = match (op, data) {
        (Op::Upsert, Some(raw)) if mapping.is_identity() => Some(Fields::Raw(raw)),
        (Op::Upsert, Some(raw)) => {
            let input = serde_json::Value::Object(Fields::Raw(raw).into_map());
            match mapping.apply_partial(&input, &unchanged) {
                Ok(mapped) => Some(Fields::Map(mapped)),
                Err(e) => {
                    note(e);
                    let serde_json::Value::Object(data) = input else { unreachable!("built as an object") };
                    Some(Fields::Map(data))
                }
            }
        }
        _ => None,
    };
    let item = Item {
        offset: record.offset,
        timestamp_ms: record.timestamp_ms,
        unchanged: mapping.map_field_names(&unchanged),
        model,
        source,
        op,
        key,
        data,
    };
    if errors.is_empty() {
        Ok(Some(item))
    } else {
        Err((item, errors))
    }
}
