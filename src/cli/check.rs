//! `remix check`: validate the configuration, schemas and mappings, and print the plan.

use super::{Exit, Out};
use serde_json::json;
use std::path::Path;

pub fn run(path: &Path, out: &mut Out) -> anyhow::Result<Exit> {
    let config = match (out.json, path.exists()) {
        (true, true) => match crate::config::load(path) {
            Ok(config) => config,
            Err(errors) => return refused(&errors, out),
        },
        _ => super::load_config(path)?,
    };
    let sources: Vec<_> = config
        .sources
        .iter()
        .map(|s| {
            let inputs: Vec<_> =
                s.spec.inputs().iter().map(|i| json!({i.by: i.name, "model": i.binding.model})).collect();
            json!({"name": s.name(), "kind": s.kind(), "listen": s.listen(), "inputs": inputs})
        })
        .collect();
    let targets: Vec<_> = config
        .targets
        .iter()
        .map(|t| {
            let models: Vec<&str> = t.outputs().into_iter().map(|(m, _)| m).collect();
            json!({"name": t.name(), "kind": t.kind(), "models": models, "to": t.spec.place()})
        })
        .collect();
    let models: Vec<_> = config
        .models
        .iter()
        .map(|(name, m)| json!({"name": name, "key": m.key_fields(), "schema": m.origin().map(|p| p.display().to_string())}))
        .collect();
    let kinds =
        json!({"sources": crate::registry::source_kinds(), "targets": crate::registry::target_kinds()});
    let plan = json!({"ok": true, "data_dir": config.data_dir, "admin": config.admin.listen, "models": models,
        "sources": sources, "targets": targets, "kinds": kinds});
    if out.json {
        out.json_value(&plan)?;
        return Ok(Exit::Ok);
    }
    out.line(format_args!("configuration {} is valid", path.display()))?;
    out.line(format_args!(
        "data dir: {}   admin API: http://{}",
        config.data_dir.display(),
        config.admin.listen
    ))?;
    out.line(format_args!(
        "compiled-in kinds: sources {}; targets {}",
        crate::registry::source_kinds().join(", "),
        crate::registry::target_kinds().join(", ")
    ))?;
    for m in &models {
        out.line(format_args!(
            "model {}: key {}, schema {}",
            m["name"].as_str().unwrap_or(""),
            m["key"],
            m["schema"].as_str().unwrap_or("-")
        ))?;
    }
    for s in &sources {
        out.line(format_args!(
            "source {} ({}) {}",
            s["name"].as_str().unwrap_or(""),
            s["kind"].as_str().unwrap_or(""),
            s["listen"].as_str().unwrap_or("")
        ))?;
        for input in s["inputs"].as_array().into_iter().flatten() {
            out.line(format_args!("  {input} ->  log"))?;
        }
    }
    for t in &targets {
        out.line(format_args!(
            "log -> target {} ({}) {} models {}",
            t["name"].as_str().unwrap_or(""),
            t["kind"].as_str().unwrap_or(""),
            t["to"].as_str().unwrap_or(""),
            t["models"]
        ))?;
    }
    Ok(Exit::Ok)
}

/// `--json` on a refused configuration: `{"ok": false, "file", "errors": [{path, line, message}]}`
/// on stdout, exit 2.
fn refused(errors: &crate::config::ConfigErrors, out: &mut Out) -> anyhow::Result<Exit> {
    let list: Vec<_> =
        errors.errors.iter().map(|e| json!({"path": e.path, "line": e.line, "message": e.message})).collect();
    let file = errors.file.as_ref().map(|f| f.display().to_string());
    out.json_value(&json!({"ok": false, "file": file, "errors": list}))?;
    Ok(Exit::Usage)
}
