//! Keeps `config/remix.schema.json` (the editor schema) in step with the keys the loader accepts,
//! and checks the shipped configs against it.

use super::raw::*;
use super::{sources, targets};
use crate::mapping::Cast;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn schema() -> Value {
    let text = std::fs::read_to_string(root().join("config/remix.schema.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every section of the loader, as (`$defs` entry, accepted keys); "" is the top level.
fn sections() -> Vec<(String, Vec<&'static str>)> {
    let mut out: Vec<(String, Vec<&'static str>)> = vec![
        ("".into(), RawRoot::KEYS.to_vec()),
        ("admin".into(), RawAdmin::KEYS.to_vec()),
        ("log".into(), RawLog::KEYS.to_vec()),
        ("ingest".into(), RawIngest::KEYS.to_vec()),
        ("retention".into(), RawRetention::KEYS.to_vec()),
        ("model".into(), RawModel::KEYS.to_vec()),
        ("source_binding".into(), RawSourceBinding::KEYS.to_vec()),
        ("rate_limit".into(), RawRateLimit::KEYS.to_vec()),
        ("batch".into(), RawBatch::KEYS.to_vec()),
        ("target_model".into(), RawFieldsOnly::KEYS.to_vec()),
        ("field_from".into(), vec!["from", "type", "default"]),
        ("field_const".into(), vec!["const"]),
        // Sub-sections the kinds read themselves.
        ("webhook_auth".into(), crate::webhook::config::RawWebhookAuth::KEYS.to_vec()),
        ("postgres_target_model".into(), crate::postgres::config::RawPgTargetModel::KEYS.to_vec()),
        ("mysql_target_model".into(), crate::mysql::config::RawMyTargetModel::KEYS.to_vec()),
        ("stripe_target_model".into(), crate::stripe::config::RawStripeTargetModel::KEYS.to_vec()),
    ];
    for kind in crate::registry::SOURCES {
        out.push((format!("{}_source", kind.kind), sources::keys_of(kind.keys)));
    }
    for kind in crate::registry::TARGETS {
        out.push((format!("{}_target", kind.kind), targets::keys_of(kind.keys)));
    }
    out
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.get("properties").and_then(Value::as_object).map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

#[test]
fn schema_properties_match_loader_keys() {
    let schema = schema();
    let defs = schema["$defs"].as_object().unwrap();
    for (def, want) in sections() {
        let node = if def.is_empty() { &schema } else { &defs[&def] };
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(keys(node), want, "$defs/{def} properties differ from the loader's keys");
        assert_eq!(node["additionalProperties"], Value::Bool(false), "$defs/{def} must refuse unknown keys");
    }
    let sections = sections();
    let covered: BTreeSet<&str> = sections.iter().map(|(d, _)| d.as_str()).collect();
    for (name, def) in defs {
        if def.get("properties").is_some() && !["source", "target"].contains(&name.as_str()) {
            assert!(covered.contains(name.as_str()), "$defs/{name} is not checked against the loader");
        }
    }
    let mut field_keys = vec!["from", "type", "default", "const"];
    field_keys.sort_unstable();
    let mut spec_keys = crate::mapping::SPEC_KEYS.to_vec();
    spec_keys.sort_unstable();
    assert_eq!(field_keys, spec_keys);
}

#[test]
fn schema_kinds_and_enums_match() {
    let schema = schema();
    let defs = &schema["$defs"];
    assert_eq!(strings(&defs["source"]["properties"]["kind"]["enum"]), crate::registry::source_kinds());
    assert_eq!(strings(&defs["target"]["properties"]["kind"]["enum"]), crate::registry::target_kinds());
    assert_eq!(strings(&defs["field_from"]["properties"]["type"]["enum"]), Cast::NAMES);
    for (list, kinds, suffix) in [
        ("source", crate::registry::source_kinds(), "source"),
        ("target", crate::registry::target_kinds(), "target"),
    ] {
        let branches = defs[list]["allOf"].as_array().unwrap();
        let refs: Vec<&str> = branches.iter().filter_map(|b| b["then"]["$ref"].as_str()).collect();
        let want: Vec<String> = kinds.iter().map(|k| format!("#/$defs/{k}_{suffix}")).collect();
        assert_eq!(refs, want);
    }
}

fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema())
        .expect("remix.schema.json compiles")
}

fn check(validator: &jsonschema::Validator, name: &str, doc: &Value) {
    let errors: Vec<String> =
        validator.iter_errors(doc).map(|e| format!("{}: {e}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{name} does not match remix.schema.json:\n{}", errors.join("\n"));
}

#[test]
fn shipped_configs_match_the_schema() {
    let validator = validator();
    for file in ["remix.yaml", "examples/webhook-to-jsonl.yaml", "examples/webhook-to-http.yaml"] {
        let text = std::fs::read_to_string(root().join("config").join(file)).unwrap();
        // As an editor sees it (references unexpanded), and as the loader sees it.
        let raw: Value = serde_norway::from_str(&text).unwrap();
        check(&validator, file, &raw);
        let env = |n: &str| (n == "REMIX_HTTP_URL").then(|| "http://127.0.0.1:1/x".to_owned());
        let (expanded, errs) = super::interpolate::interpolate(&text, &env);
        assert!(errs.is_empty(), "{file}: {errs:?}");
        check(&validator, file, &serde_norway::from_str(&expanded).unwrap());
    }
}

#[test]
fn schema_refuses_what_the_loader_refuses() {
    let validator = validator();
    for bad in [
        serde_json::json!({"modles": {}}),
        serde_json::json!({"targets": [{"name": "t", "kind": "jsnol"}]}),
        serde_json::json!({"targets": [{"name": "t", "kind": "jsonl", "dir": "d", "models": {}, "retries": 3}]}),
        serde_json::json!({"log": {"segment_bytes": "12 parsecs"}}),
        serde_json::json!({"sources": [{"name": "Bad", "kind": "webhook", "listen": "a:1", "routes": {}}]}),
    ] {
        assert!(!validator.is_valid(&bad), "{bad}");
    }
}
