//! Remix in: one source object becomes a validated change record, or the list of every reason it
//! cannot (mapping and validation errors together).

use crate::config::InputBinding;
use crate::mapping::MappingError;
use crate::models::Model;
use crate::record::{Change, FieldError, Op};
use serde_json::{Map, Value};

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
    let (mapped, mapping_errors) = binding.mapping.apply_all(input, unchanged);
    match finish(binding, model, mapped, mapping_errors, op, unchanged, origin) {
        Ok(change) => RemixOutcome::Valid(change),
        Err((errors, _)) => RemixOutcome::Invalid(errors),
    }
}

/// An object that did not remix: every reason, and the input object itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub errors: Vec<FieldError>,
    pub input: Value,
}

/// [`remix_in_partial`] taking the input by value, for sources that build a fresh object per record
/// (an identity mapping then moves the object instead of copying it). A rejected object comes back
/// unchanged with its errors.
pub fn remix_in_owned(
    binding: &InputBinding,
    model: &Model,
    input: Value,
    op: Op,
    unchanged: &[String],
    origin: Origin<'_>,
) -> Result<Change, Box<Rejected>> {
    if binding.mapping.is_identity() {
        let Value::Object(object) = input else {
            let (mapped, errors) = binding.mapping.apply_all(&input, unchanged);
            return finish(binding, model, mapped, errors, op, unchanged, origin)
                .map_err(|(errors, _)| Box::new(Rejected { errors, input }));
        };
        // The mapped object is the input: a rejected one goes back as it came.
        return finish(binding, model, object, Vec::new(), op, unchanged, origin)
            .map_err(|(errors, mapped)| Box::new(Rejected { errors, input: Value::Object(mapped) }));
    }
    let (mapped, mapping_errors) = binding.mapping.apply_all(&input, unchanged);
    finish(binding, model, mapped, mapping_errors, op, unchanged, origin)
        .map_err(|(errors, _)| Box::new(Rejected { errors, input }))
}

/// Validates a mapped object and builds its change; on failure, every error and the mapped object.
fn finish(
    binding: &InputBinding,
    model: &Model,
    mapped: Map<String, Value>,
    mapping_errors: Vec<MappingError>,
    op: Op,
    unchanged: &[String],
    origin: Origin<'_>,
) -> Result<Change, (Vec<FieldError>, Map<String, Value>)> {
    let unchanged_fields = binding.mapping.map_field_names(unchanged);
    let mapped = Value::Object(mapped);
    let mut errors: Vec<FieldError> = Vec::new();
    if !mapping_errors.is_empty() || (op == Op::Upsert && !model.is_surely_valid(&mapped)) {
        // The fields that did not map are left out of validation like unchanged ones; the fields
        // that did are validated too, so a sender learns every problem of an object at once.
        let mut left_out = unchanged_fields.clone();
        left_out.extend(mapping_errors.iter().map(|e| e.field.clone()));
        errors = mapping_errors
            .into_iter()
            .map(|e| FieldError { path: format!("/{}", e.field), message: e.message })
            .collect();
        if op == Op::Upsert {
            if let Err(invalid) = model.validate_partial(&mapped, &left_out) {
                let more: Vec<FieldError> = invalid
                    .into_iter()
                    .filter(|v| !errors.iter().any(|e| e.path == v.path))
                    .map(|v| FieldError { path: v.path, message: v.message })
                    .collect();
                errors.extend(more);
            }
        }
    }
    let Value::Object(mapped) = mapped else { unreachable!("built as an object") };
    if !errors.is_empty() {
        return Err((errors, mapped));
    }
    let Some(key) = model.key_of_map(&mapped) else {
        let message = format!("the key ({}) is missing or null", model.key_fields().join(", "));
        return Err((vec![FieldError { path: String::new(), message }], mapped));
    };
    let data = (op == Op::Upsert).then_some(mapped);
    Ok(Change {
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
