//! Remix in: one source object becomes a validated change record, or the list of every reason it
//! cannot (mapping and validation errors together).

use crate::config::InputBinding;
use crate::models::Model;
use crate::record::{Change, FieldError, Op};
use serde_json::Value;

/// The result of remixing one input object.
#[derive(Debug, Clone, PartialEq)]
pub enum RemixOutcome {
    Valid(Change),
    Invalid(Vec<FieldError>),
}

/// Where a record comes from, for the change record it becomes.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    pub source: &'a str,
    pub position: String,
    pub idempotency_key: Option<&'a str>,
}

/// Maps `input` through `binding` into its model, validates it, and builds the change. For a delete
/// only the key fields must map and be present; the rest of the object is not validated.
pub fn remix_in(
    binding: &InputBinding,
    model: &Model,
    input: &Value,
    op: Op,
    origin: Origin<'_>,
) -> RemixOutcome {
    remix_in_partial(binding, model, input, op, &[], origin)
}

/// [`remix_in`] for a row some of whose fields the source left out because they did not change
/// (`unchanged`, in the source's field names: PostgreSQL's unchanged TOAST values). Those fields are
/// neither defaulted nor required; the change lists them (in model field names) as unchanged.
pub fn remix_in_partial(
    binding: &InputBinding,
    model: &Model,
    input: &Value,
    op: Op,
    unchanged: &[String],
    origin: Origin<'_>,
) -> RemixOutcome {
    let unchanged_fields = binding.mapping.map_field_names(unchanged);
    let mapped = match binding.mapping.apply_partial(input, unchanged) {
        Ok(mapped) => Value::Object(mapped),
        Err(errors) => {
            return RemixOutcome::Invalid(
                errors
                    .into_iter()
                    .map(|e| FieldError { path: format!("/{}", e.field), message: e.message })
                    .collect(),
            )
        }
    };
    if op == Op::Upsert {
        if let Err(errors) = model.validate_partial(&mapped, &unchanged_fields) {
            return RemixOutcome::Invalid(
                errors.into_iter().map(|e| FieldError { path: e.path, message: e.message }).collect(),
            );
        }
    }
    let Some(key) = model.key_of(&mapped) else {
        let message = format!("the key ({}) is missing or null", model.key_fields().join(", "));
        return RemixOutcome::Invalid(vec![FieldError { path: String::new(), message }]);
    };
    let data = match (op, mapped) {
        (Op::Upsert, Value::Object(map)) => Some(map),
        _ => None,
    };
    RemixOutcome::Valid(Change {
        source: origin.source.to_owned(),
        position: origin.position,
        model: binding.model.clone(),
        op,
        key,
        data,
        unchanged: if op == Op::Upsert { unchanged_fields } else { Vec::new() },
        idempotency_key: origin.idempotency_key.map(str::to_owned),
    })
}
