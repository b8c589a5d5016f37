//! What a connector's config code uses to read its own section: the section's context
//! ([`SectionCx`]) and the shared value checks, so that every kind reports problems the same way
//! (with their path and line, all at once).

pub use super::build::{
    binding, bindings, check_listen, check_path, check_url, choice, duration, fields_only, is_loopback,
    mapping, nonempty, out_mapping, outputs, required, required_str, size, ModelInfo, Models,
};
pub use super::path::KeyPath;
pub(crate) use super::raw::config_section;
pub use super::raw::{deser, entries, section as read_section, Cx, Section};
pub use serde_norway::{Mapping as YamlMap, Value as YamlValue};

/// One source's or target's section, as its kind's `parse` sees it: keys checked already.
#[derive(Debug)]
pub struct SectionCx<'a, 't> {
    pub cx: &'a mut Cx<'t>,
    /// The models of the file (for bindings and output mappings).
    pub models: &'a Models,
    /// The section.
    pub map: &'a YamlMap,
    /// Where the section is: `targets[1]`.
    pub path: &'a KeyPath,
}

impl SectionCx<'_, '_> {
    /// The section's own keys as `T` (a key of the wrong type is reported and left out).
    pub fn raw<T: Section>(&mut self) -> T {
        deser(self.cx, self.map, self.path)
    }

    /// The path of one of the section's keys.
    pub fn at(&self, key: &str) -> KeyPath {
        self.path.key(key)
    }

    pub fn err(&mut self, at: &KeyPath, message: impl Into<String>) {
        self.cx.err(at, message);
    }
}
