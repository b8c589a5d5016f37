//! The configuration file: `${VAR}` interpolation, YAML parsing, and validation of every section
//! (models and their schemas, sources, targets, mappings) into a typed [`Config`].
//!
//! Every problem is reported at once, each with its path in the document
//! (`targets[1].models.order.fields.amount: unknown model field 'amount_cents'`) and, where it can
//! be found, its line. Schema paths are relative to the config file's directory; `data_dir` and
//! target directories are relative to the working directory.

mod build;
mod interpolate;
mod path;
mod raw;
pub mod schema;
pub mod section;
mod sources;
mod targets;
mod types;
mod units;

// These read every kind's own types: only with every connector compiled in.
#[cfg(all(test, feature = "postgres", feature = "stripe", feature = "http", feature = "jsonl"))]
mod schema_sync;
#[cfg(all(test, feature = "postgres", feature = "stripe", feature = "http", feature = "jsonl"))]
mod tests;

#[cfg(test)]
pub(crate) use raw::assert_keys_match as raw_assert_keys_match;

pub use types::*;
pub use units::{parse_duration, parse_size, InvalidValue};

use std::fmt;
use std::path::{Path, PathBuf};

/// The default config file, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/remix.yaml";

/// The text of the default config (`config/remix.yaml`), embedded in the binary.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/remix.yaml");

/// One problem in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where in the document: `sources[0].kind`; empty for the whole file.
    pub path: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a config, in document order. Displays one per line, prefixed with
/// `file:line:` when the file is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigErrors {
    pub file: Option<PathBuf>,
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub fn new(errors: Vec<ConfigError>) -> Self {
        ConfigErrors { file: None, errors }
    }

    fn single(message: String) -> Self {
        ConfigErrors::new(vec![ConfigError { path: String::new(), line: None, message }])
    }

    pub fn with_file(mut self, file: &Path) -> Self {
        self.file = Some(file.to_owned());
        self
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }

    fn render(&self) -> String {
        let lines: Vec<String> = self.errors.iter().map(|e| self.render_one(e)).collect();
        lines.join("\n")
    }

    fn render_one(&self, e: &ConfigError) -> String {
        let Some(file) = &self.file else { return e.to_string() };
        let at = match e.line {
            Some(line) => format!("{}:{line}", file.display()),
            None => file.display().to_string(),
        };
        let unlined = ConfigError { line: None, ..e.clone() };
        format!("{at}: {unlined}")
    }
}

/// Reads, interpolates (from the process environment) and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::single(format!("cannot read config file {}: {e}", path.display())))?;
    let base_dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    load_str(&text, base_dir, &|name| std::env::var(name).ok()).map_err(|e| e.with_file(path))
}

/// Interpolates `text` with `env`, parses and validates it; schema paths resolve against `base_dir`.
pub fn load_str(
    text: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let (text, interp_errors) = interpolate::interpolate(text, env);
    let mut errors: Vec<ConfigError> = interp_errors
        .iter()
        .map(|e| ConfigError { path: String::new(), line: Some(e.line), message: e.message.clone() })
        .collect();
    let doc = match parse_yaml(&text) {
        Ok(doc) => doc,
        Err(e) => {
            errors.push(e);
            return Err(ConfigErrors::new(errors));
        }
    };
    let mut cx = raw::Cx::new(&text);
    let config = build::build(&mut cx, &doc, base_dir);
    // Problems on a line whose variable was missing are consequences of it: report the cause only.
    let bad_lines: Vec<usize> = interp_errors.iter().map(|e| e.line).collect();
    errors.extend(cx.errors.into_iter().filter(|e| e.line.is_none_or(|l| !bad_lines.contains(&l))));
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(ConfigErrors::new(errors)),
    }
}

fn parse_yaml(text: &str) -> Result<serde_norway::Value, ConfigError> {
    let mut doc: serde_norway::Value = serde_norway::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        ConfigError { path: String::new(), line, message: format!("invalid YAML: {e}") }
    })?;
    doc.apply_merge().map_err(|e| ConfigError {
        path: String::new(),
        line: None,
        message: format!("invalid YAML: {e}"),
    })?;
    Ok(doc)
}
