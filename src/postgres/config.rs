//! The `postgres` source's and target's config sections.

use crate::config::section::{
    binding, choice, config_section, entries, nonempty, out_mapping, outputs, required, required_str, Cx,
    KeyPath, ModelInfo, Section, SectionCx, YamlMap, YamlValue,
};
use crate::config::{Config, InputBinding, TargetCommon};
use crate::connector::{
    Input, Report, Source, SourceKind, SourceSpec, SourceStart, StartError, Started, TargetKind, TargetSpec,
    TargetStart,
};
use crate::mapping::Mapping;
use crate::runtime::delivery::worker;
use crate::runtime::delivery::TargetHandle;
use crate::util::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::task::JoinHandle;

pub static SOURCE: SourceKind = SourceKind {
    kind: "postgres",
    keys: RawPgSource::KEYS,
    schema: include_str!("config.schema.json"),
    parse: parse_source,
};

pub static TARGET: TargetKind = TargetKind {
    kind: "postgres",
    keys: RawPgTarget::KEYS,
    schema: include_str!("config.schema.json"),
    parse: parse_target,
};

config_section!(RawPgSource {
    dsn: String,
    slot: String,
    publication: String,
    snapshot: String,
    tables: YamlMap
});
config_section!(RawPgTarget { dsn: String, create_tables: bool, models: YamlMap });
config_section!(RawPgTargetModel { table: String, fields: YamlValue });

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMode {
    Initial,
    Never,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PostgresSource {
    pub name: String,
    pub dsn: String,
    /// Replication slot; defaults to `remix_<name>` (dashes become underscores).
    pub slot: String,
    /// Publication; defaults to the slot name.
    pub publication: String,
    pub snapshot: SnapshotMode,
    pub tables: Vec<TableBinding>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableBinding {
    /// PostgreSQL schema (`public` when the key names no schema).
    pub schema: String,
    pub table: String,
    pub binding: InputBinding,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PostgresTarget {
    pub common: TargetCommon,
    pub dsn: String,
    pub create_tables: bool,
    pub models: BTreeMap<String, TableOutput>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableOutput {
    /// PostgreSQL schema (`public` by default).
    pub schema: String,
    /// Table name (the model name by default).
    pub table: String,
    pub mapping: Mapping,
}

fn parse_source(s: &mut SectionCx<'_, '_>, name: &str) -> Option<Arc<dyn SourceSpec>> {
    let raw: RawPgSource = s.raw();
    let SectionCx { cx, models, path: p, .. } = s;
    let dsn = required_str(cx, raw.dsn, &p.key("dsn"));
    if let Some(dsn) = &dsn {
        check_dsn(cx, dsn, &p.key("dsn"));
    }
    let slot =
        nonempty(cx, raw.slot, &p.key("slot")).unwrap_or_else(|| format!("remix_{}", name.replace('-', "_")));
    check_pg_name(cx, &slot, &p.key("slot"));
    let publication = nonempty(cx, raw.publication, &p.key("publication")).unwrap_or_else(|| slot.clone());
    check_pg_name(cx, &publication, &p.key("publication"));
    let modes = [("initial", SnapshotMode::Initial), ("never", SnapshotMode::Never)];
    let snapshot = choice(cx, raw.snapshot, &p.key("snapshot"), &modes);
    let tp = p.key("tables");
    let tables = required(cx, raw.tables, &tp).map(|t| tables(cx, models, &t, &tp)).unwrap_or_default();
    let source =
        PostgresSource { name: name.to_owned(), dsn: dsn?, slot, publication, snapshot: snapshot?, tables };
    Some(Arc::new(source))
}

/// A DSN in either of libpq's forms, with TLS settings Remix can honour.
pub fn check_dsn(cx: &mut Cx<'_>, s: &str, path: &KeyPath) {
    let url = s.starts_with("postgres://") || s.starts_with("postgresql://");
    if !url && !s.contains('=') {
        cx.err(path, "invalid connection string (expected postgres://... or key=value pairs)");
    } else if let Err(e) = super::tls::check_dsn(s) {
        cx.err(path, e.to_string());
    }
}

/// `schema.table` or `table` (schema `public`); plain identifiers only.
fn table_name(cx: &mut Cx<'_>, s: &str, path: &KeyPath) -> Option<(String, String)> {
    let (schema, table) = s.split_once('.').unwrap_or(("public", s));
    let ident = |t: &str| !t.is_empty() && !t.contains(['.', '"']) && !t.contains(char::is_whitespace);
    if ident(schema) && ident(table) {
        Some((schema.to_owned(), table.to_owned()))
    } else {
        cx.err(path, format!("invalid table name '{s}' (expected schema.table)"));
        None
    }
}

/// Slot and publication names: `[a-z0-9_]`, at most 63 bytes.
fn check_pg_name(cx: &mut Cx<'_>, s: &str, path: &KeyPath) {
    let ok = s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if s.is_empty() || s.len() > 63 || !ok {
        cx.err(path, format!("invalid name '{s}' (use 1-63 of a-z, 0-9 and '_')"));
    }
}

fn tables(
    cx: &mut Cx<'_>,
    models: &crate::config::section::Models,
    map: &YamlMap,
    p: &KeyPath,
) -> Vec<TableBinding> {
    let mut out: Vec<TableBinding> = Vec::new();
    if map.is_empty() {
        cx.err(p, "a postgres source needs at least one table");
    }
    for (key, v) in entries(cx, map, p) {
        let tp = p.key(&key);
        let (Some((schema, table)), Some(binding)) =
            (table_name(cx, &key, &tp), binding(cx, models, &v, &tp))
        else {
            continue;
        };
        if out.iter().any(|t| t.schema == schema && t.table == table) {
            cx.err(&tp, format!("table {schema}.{table} is listed twice"));
        }
        out.push(TableBinding { schema, table, binding });
    }
    out
}

fn pg_model(
    cx: &mut Cx<'_>,
    name: &str,
    m: Option<&ModelInfo>,
    raw: RawPgTargetModel,
    p: &KeyPath,
) -> Option<TableOutput> {
    let table = nonempty(cx, raw.table, &p.key("table")).unwrap_or_else(|| name.to_owned());
    let (schema, table) = table_name(cx, &table, &p.key("table"))?;
    let mapping = out_mapping(cx, m, raw.fields.as_ref(), p)?;
    Some(TableOutput { schema, table, mapping })
}

fn parse_target(s: &mut SectionCx<'_, '_>, common: &TargetCommon) -> Option<Arc<dyn TargetSpec>> {
    let raw: RawPgTarget = s.raw();
    let SectionCx { cx, models, path: p, .. } = s;
    let dsn = required_str(cx, raw.dsn, &p.key("dsn"));
    if let Some(dsn) = &dsn {
        check_dsn(cx, dsn, &p.key("dsn"));
    }
    let mp = p.key("models");
    let models = outputs(cx, models, raw.models, &mp, &pg_model);
    let mut seen: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for (model, t) in &models {
        if let Some(other) = seen.insert((&t.schema, &t.table), model) {
            cx.err(
                &mp.key(model).key("table"),
                format!("table {}.{} is also used by model '{other}'", t.schema, t.table),
            );
        }
    }
    let target = PostgresTarget {
        common: common.clone(),
        dsn: dsn?,
        create_tables: raw.create_tables.unwrap_or(false),
        models,
    };
    Some(Arc::new(target))
}

impl SourceSpec for PostgresSource {
    fn inputs(&self) -> Vec<Input<'_>> {
        self.tables
            .iter()
            .map(|t| Input { by: "table", name: format!("{}.{}", t.schema, t.table), binding: &t.binding })
            .collect()
    }

    fn doctor<'a>(&'a self, _name: &'a str, report: &'a mut Report) -> BoxFuture<'a, ()> {
        Box::pin(super::doctor::check_source(self, report))
    }

    fn build(&self, _name: &str, _config: &Arc<Config>) -> Result<Box<dyn Source>, StartError> {
        Ok(Box::new(self.clone()))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Source for PostgresSource {
    fn start(self: Box<Self>, start: SourceStart) -> Result<Started, StartError> {
        let (status, task) = super::source::spawn(*self, start.ingest, start.shutdown);
        Ok(Started { tasks: vec![task], status: Some(status), ..Started::default() })
    }
}

impl TargetSpec for PostgresTarget {
    fn outputs(&self) -> Vec<(&str, &Mapping)> {
        self.models.iter().map(|(m, o)| (m.as_str(), &o.mapping)).collect()
    }

    fn doctor<'a>(&'a self, _name: &'a str, config: &'a Config, report: &'a mut Report) -> BoxFuture<'a, ()> {
        Box::pin(super::doctor::check_target(self, config, report))
    }

    fn start(&self, start: TargetStart<'_>) -> Result<(TargetHandle, JoinHandle<()>), StartError> {
        let target = super::target::PostgresTarget::new(self, &start.config.models)?;
        Ok(worker::spawn(target, "postgres", start))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_serde_fields() {
        crate::config::raw_assert_keys_match::<RawPgSource>();
        crate::config::raw_assert_keys_match::<RawPgTarget>();
        crate::config::raw_assert_keys_match::<RawPgTargetModel>();
    }
}
