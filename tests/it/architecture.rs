//! The architecture invariants of ARCHITECTURE.md, checked on the source tree (test code aside:
//! `#[cfg(test)]` modules, `tests.rs` and `tests/` files, which may reach anything).
//!
//! - A connector folder never imports another connector folder.
//! - Nothing outside a connector's folder names it, but the registry: adding a kind is its folder and
//!   one line in `src/registry.rs` (and a cargo feature).
//! - Config, the connector interface, the runtime and the CLI never import a connector folder.
//! - The log (`remix_storage`) is reached only by the runtime's engine, state store and opening
//!   (`runtime/engine.rs`, `runtime/state/file.rs`, `runtime/open.rs`), the CLI's log commands, and
//!   `util` (the temp-file naming) and config (the format's segment limits); never by a connector.
//! - `anyhow` only in `main.rs` and `cli/`; below them no `Result<_, String>` (typed errors).

use std::path::{Path, PathBuf};

/// The top-level folders of `src/` that are not connectors.
const CORE: [&str; 6] = ["cli", "config", "connector", "mapping", "runtime", "util"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every non-test `.rs` file under `dir`, with its text up to its first `#[cfg(test)]`.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "tests" && name != "testdata" {
                out.extend(sources(&path));
            }
        } else if name.ends_with(".rs") && name != "tests.rs" && name != "schema_sync.rs" {
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default().to_owned();
            out.push((path, code));
        }
    }
    out
}

/// The connector folders: every folder of `src/` that is not core.
fn connectors() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(src())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|name| !CORE.contains(&name.as_str()))
        .collect();
    names.sort();
    names
}

/// The top-level folder (or file stem) of `path` under `src/`.
fn part_of(path: &Path) -> String {
    let relative = path.strip_prefix(src()).unwrap();
    let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_owned()
}

fn names(code: &str, module: &str) -> bool {
    ["crate::", "remix::"].iter().any(|root| {
        code.match_indices(&format!("{root}{module}")).any(|(at, _)| {
            let after = code[at + root.len() + module.len()..].chars().next();
            !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
    })
}

#[test]
fn connectors_are_reached_only_through_the_registry() {
    let connectors = connectors();
    assert!(connectors.len() >= 5, "connector folders: {connectors:?}");
    let mut violations = Vec::new();
    for (path, code) in sources(&src()) {
        let part = part_of(&path);
        for connector in &connectors {
            if *connector == part || part == "registry" {
                continue;
            }
            if names(&code, connector) {
                violations.push(format!("{} names the {connector} connector", path.display()));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_log_is_reached_only_through_the_engine_state_store_and_cli() {
    let allowed =
        ["runtime/engine.rs", "runtime/open.rs", "runtime/state/file.rs", "util/mod.rs", "config/types.rs"];
    let mut violations = Vec::new();
    for (path, code) in sources(&src()) {
        let relative = path.strip_prefix(src()).unwrap().to_string_lossy().into_owned();
        if relative.starts_with("cli/") || allowed.contains(&relative.as_str()) {
            continue;
        }
        if code.contains("remix_storage") {
            violations.push(format!("{relative} reaches remix_storage"));
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn anyhow_is_only_at_the_edge() {
    let mut violations = Vec::new();
    for (path, code) in sources(&src()) {
        let relative = path.strip_prefix(src()).unwrap().to_string_lossy().into_owned();
        if relative.starts_with("cli/") || relative == "main.rs" {
            continue;
        }
        if code.contains("anyhow") {
            violations.push(relative);
        }
    }
    assert!(violations.is_empty(), "anyhow below the binary's edge: {}", violations.join(", "));
}

/// `Result<T, String>` (with `T` of any nesting), written in the code of `text`.
fn string_error_results(text: &str) -> usize {
    let mut count = 0;
    for (start, _) in text.match_indices("Result<") {
        let mut depth = 0usize;
        let mut last_comma = None;
        for (i, c) in text[start + "Result".len()..].char_indices() {
            match c {
                '<' | '(' | '[' => depth += 1,
                '>' | ')' | ']' => {
                    depth -= 1;
                    if depth == 0 {
                        let end = start + "Result".len() + i;
                        if last_comma.is_some_and(|comma| text[comma + 1..end].trim() == "String") {
                            count += 1;
                        }
                        break;
                    }
                }
                ',' if depth == 1 => last_comma = Some(start + "Result".len() + i),
                _ => {}
            }
        }
    }
    count
}

#[test]
fn errors_below_the_edge_are_typed() {
    assert_eq!(string_error_results("fn f() -> Result<(Vec<u8>, Map<String, Value>), String> {"), 1);
    assert_eq!(string_error_results("fn f() -> Result<String, Error> {"), 0);
    let mut violations = Vec::new();
    for root in [src(), Path::new(env!("CARGO_MANIFEST_DIR")).join("storage/src")] {
        for (path, code) in sources(&root) {
            let relative = path.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
            if relative.starts_with("cli/") || relative == "main.rs" {
                continue;
            }
            if string_error_results(&code) > 0 {
                violations.push(path.display().to_string());
            }
        }
    }
    assert!(violations.is_empty(), "Result<_, String> below the CLI: {}", violations.join(", "));
}

#[test]
fn the_storage_crate_knows_nothing_of_the_runtime() {
    let storage = Path::new(env!("CARGO_MANIFEST_DIR")).join("storage");
    let manifest = std::fs::read_to_string(storage.join("Cargo.toml")).unwrap();
    let dependencies = manifest.split("[dependencies]").nth(1).unwrap_or_default();
    let dependencies = dependencies.split("\n[").next().unwrap_or_default();
    for forbidden in ["tokio", "serde_json", "jsonschema", "remix"] {
        let named = dependencies.lines().any(|l| l.trim_start().starts_with(forbidden));
        assert!(!named, "storage depends on {forbidden}:\n{dependencies}");
    }
}

/// `cargo tree` of the given packages and edge kinds, as package -> the features it is built with.
fn resolved_features(
    args: &[&str],
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "--frozen", "--prefix", "none", "-f", "{p}|{f}"])
        .args(args)
        .output()
        .expect("run cargo tree");
    assert!(output.status.success(), "cargo tree: {}", String::from_utf8_lossy(&output.stderr));
    let mut features = std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some((package, list)) =
            line.replace(" (*)", "").split_once('|').map(|(p, f)| (p.to_owned(), f.to_owned()))
        else {
            continue;
        };
        let entry = features.entry(package).or_default();
        entry.extend(list.split(',').map(str::trim).filter(|f| !f.is_empty()).map(str::to_owned));
    }
    features
}

/// The release binary that `cargo build --bin remix` (the contract smoke test) builds must resolve every
/// dependency with the features the test build (`cargo test --workspace`) resolved, or CI compiles
/// parquet, object_store and their dependents twice. Cargo.toml's "Feature unification" list fixes
/// the differences; this names any new one.
#[test]
fn the_binary_and_the_tests_resolve_the_same_features() {
    let binary = resolved_features(&["-p", "remix", "-e", "normal,build"]);
    let tests = resolved_features(&["--workspace", "-e", "normal,build,dev"]);
    let differing: Vec<String> = binary
        .iter()
        .filter_map(|(package, features)| {
            let extra: Vec<&String> = tests.get(package)?.difference(features).collect();
            (!extra.is_empty()).then(|| format!("{package}: the tests add {extra:?}"))
        })
        .collect();
    assert!(
        differing.is_empty(),
        "add these to Cargo.toml's feature unification list:\n{}",
        differing.join("\n")
    );
}
