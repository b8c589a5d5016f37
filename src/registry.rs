//! The one table of connector kinds compiled into this binary. Adding a kind is a folder under
//! `src/` (its config section, schema part, source and/or target, doctor checks) and one line here,
//! behind its cargo feature.

use crate::connector::{SourceKind, TargetKind};

/// Every source kind, in the order `remix check` and errors list them.
pub static SOURCES: &[&SourceKind] = &[
    #[cfg(feature = "postgres")]
    &crate::postgres::config::SOURCE,
    #[cfg(feature = "mysql")]
    &crate::mysql::config::SOURCE,
    &crate::webhook::config::KIND,
    #[cfg(feature = "stripe")]
    &crate::stripe::config::SOURCE,
];

/// Every target kind, in the order `remix check` and errors list them.
pub static TARGETS: &[&TargetKind] = &[
    #[cfg(feature = "jsonl")]
    &crate::jsonl::config::KIND,
    #[cfg(feature = "http")]
    &crate::http::config::KIND,
    #[cfg(feature = "postgres")]
    &crate::postgres::config::TARGET,
    #[cfg(feature = "mysql")]
    &crate::mysql::config::TARGET,
    #[cfg(feature = "stripe")]
    &crate::stripe::config::TARGET,
    #[cfg(feature = "blackhole")]
    &crate::blackhole::config::KIND,
    #[cfg(feature = "object_store")]
    &crate::object_store::config::KIND,
    #[cfg(feature = "redis")]
    &crate::redis::config::TARGET,
    #[cfg(feature = "nats")]
    &crate::nats::config::TARGET,
    #[cfg(feature = "rabbitmq")]
    &crate::rabbitmq::config::TARGET,
];

/// The writer of `remix dataset export`, when a dataset format is compiled in.
#[cfg(feature = "object_store")]
pub static DATASET_WRITER: Option<crate::connector::dataset::DatasetWriter> =
    Some(crate::object_store::export::write);
#[cfg(not(feature = "object_store"))]
pub static DATASET_WRITER: Option<crate::connector::dataset::DatasetWriter> = None;

pub fn source_kind(kind: &str) -> Option<&'static SourceKind> {
    SOURCES.iter().copied().find(|k| k.kind == kind)
}

pub fn target_kind(kind: &str) -> Option<&'static TargetKind> {
    TARGETS.iter().copied().find(|k| k.kind == kind)
}

pub fn source_kinds() -> Vec<&'static str> {
    SOURCES.iter().map(|k| k.kind).collect()
}

pub fn target_kinds() -> Vec<&'static str> {
    TARGETS.iter().map(|k| k.kind).collect()
}

/// `a, b or c`.
pub fn or_list(names: &[&str]) -> String {
    match names {
        [] => "none (this binary was built without any)".to_owned(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// `config/remix.schema.json` for the kinds compiled in.
pub fn config_schema_text() -> String {
    crate::config::schema::text(SOURCES, TARGETS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_unique_and_lists_read_naturally() {
        let mut sources = source_kinds();
        sources.sort_unstable();
        sources.dedup();
        assert_eq!(sources.len(), SOURCES.len());
        let mut targets = target_kinds();
        targets.sort_unstable();
        targets.dedup();
        assert_eq!(targets.len(), TARGETS.len());
        assert_eq!(or_list(&["a", "b", "c"]), "a, b or c");
        assert_eq!(or_list(&["a"]), "a");
    }
}
