//! `config/remix.schema.json`, the schema of the config file for editors, generated: the common part
//! (`schema.base.json`: the top level, models, mappings, shared value shapes) plus each compiled-in
//! kind's part, which lives in its connector's folder (`src/<system>/config.schema.json`) beside the
//! code that reads the same keys. A test keeps the committed file equal to what this generates
//! (`REMIX_BLESS=1 cargo test config::schema` rewrites it).

use crate::connector::{SourceKind, TargetKind};
use serde_json::{json, Map, Value};

const BASE: &str = include_str!("schema.base.json");

/// The properties every source section has besides its kind's own.
fn source_common() -> Value {
    json!({
        "name": { "$ref": "#/$defs/name", "description": "Unique source name: a-z, 0-9, '_' and '-'." },
        "kind": { "type": "string" }
    })
}

/// The properties every target section has besides its kind's own.
fn target_common() -> Value {
    json!({
        "name": { "$ref": "#/$defs/name", "description": "Unique target name: a-z, 0-9, '_' and '-'." },
        "kind": { "type": "string" },
        "rate_limit": { "$ref": "#/$defs/rate_limit" },
        "batch": { "$ref": "#/$defs/batch" },
        "on_error": {
            "enum": ["pause", "dead_letter"],
            "description": "What to do with permanent errors (default pause)."
        },
        "truncate": {
            "enum": ["apply", "ignore"],
            "description": "Whether source truncates are applied (default apply)."
        }
    })
}

/// The whole schema for these kinds.
pub fn generate(sources: &[&SourceKind], targets: &[&TargetKind]) -> Value {
    let mut schema: Value = serde_json::from_str(BASE).expect("schema.base.json is JSON");
    let defs = schema["$defs"].as_object_mut().expect("schema.base.json has $defs");
    let source_kinds: Vec<(&str, &str)> = sources.iter().map(|k| (k.kind, k.schema)).collect();
    let target_kinds: Vec<(&str, &str)> = targets.iter().map(|k| (k.kind, k.schema)).collect();
    add_kinds(defs, "source", &source_kinds, &source_common());
    add_kinds(defs, "target", &target_kinds, &target_common());
    schema
}

/// The schema as committed: pretty JSON and a final newline.
pub fn text(sources: &[&SourceKind], targets: &[&TargetKind]) -> String {
    let mut text = serde_json::to_string_pretty(&generate(sources, targets)).expect("serializable");
    text.push('\n');
    text
}

/// Adds `<role>` (the list entry: `kind` one of the kinds, then the kind's section) and every kind's
/// definitions.
fn add_kinds(defs: &mut Map<String, Value>, role: &str, kinds: &[(&str, &str)], common: &Value) {
    let mut branches = Vec::new();
    for (kind, fragment) in kinds {
        let fragment: Value = serde_json::from_str(fragment)
            .unwrap_or_else(|e| panic!("the schema part of {role} kind {kind} is not JSON: {e}"));
        let section = format!("{kind}_{role}");
        // A folder with a source and a target of its kind has one part for both: each role
        // completes its own section.
        let other_role = format!("{kind}_{}", if role == "source" { "target" } else { "source" });
        for (name, def) in fragment.as_object().expect("a schema part is an object of $defs") {
            if *name == section {
                defs.insert(name.clone(), complete(def, common));
            } else if *name != other_role {
                defs.insert(name.clone(), def.clone());
            }
        }
        assert!(defs.contains_key(&section), "the schema part of {kind} has no {section}");
        branches.push(json!({
            "if": { "properties": { "kind": { "const": kind } }, "required": ["kind"] },
            "then": { "$ref": format!("#/$defs/{section}") }
        }));
    }
    let names: Vec<&str> = kinds.iter().map(|(kind, _)| *kind).collect();
    defs.insert(
        role.to_owned(),
        json!({
            "type": "object",
            "required": ["name", "kind"],
            "properties": { "kind": { "enum": names } },
            "allOf": branches
        }),
    );
}

/// A kind's section with the common properties, closed to other keys.
fn complete(own: &Value, common: &Value) -> Value {
    let mut properties = common.as_object().expect("an object").clone();
    for (key, value) in own["properties"].as_object().into_iter().flatten() {
        properties.insert(key.clone(), value.clone());
    }
    let mut required = vec![json!("name"), json!("kind")];
    required.extend(own["required"].as_array().into_iter().flatten().cloned());
    let mut section = json!({
        "type": "object",
        "additionalProperties": false,
        "required": required,
        "properties": properties
    });
    if let Some(description) = own.get("description") {
        section["description"] = description.clone();
    }
    section
}

#[cfg(test)]
mod tests {
    use crate::registry;

    #[test]
    fn the_committed_schema_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/remix.schema.json");
        let generated = registry::config_schema_text();
        if std::env::var_os("REMIX_BLESS").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap();
        assert!(
            committed == generated,
            "config/remix.schema.json differs from what the registry generates; \
             run `REMIX_BLESS=1 cargo test config::schema` and commit the file"
        );
    }
}
