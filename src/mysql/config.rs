//! The `mysql` source's and target's config sections.

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
    kind: "mysql",
    keys: RawMySource::KEYS,
    schema: include_str!("config.schema.json"),
    parse: parse_source,
};

pub static TARGET: TargetKind = TargetKind {
    kind: "mysql",
    keys: RawMyTarget::KEYS,
    schema: include_str!("config.schema.json"),
    parse: parse_target,
};

config_section!(RawMySource {
    url: String,
    server_id: u32,
    snapshot: String,
    heartbeat_ms: u64,
    tables: YamlMap
});
config_section!(RawMyTarget { url: String, create_tables: bool, models: YamlMap });
config_section!(RawMyTargetModel { table: String, fields: YamlValue });

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMode {
    Initial,
    Never,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MySource {
    pub name: String,
    pub url: String,
    /// The replica id this source announces to the server (unique among its replicas).
    pub server_id: u32,
    pub snapshot: SnapshotMode,
    /// How often the server sends a heartbeat while it has nothing else to send; 4 times this without
    /// any event and the connection counts as lost.
    pub heartbeat_ms: u64,
    pub tables: Vec<TableBinding>,
}

/// The default `heartbeat_ms`.
pub const HEARTBEAT_MS_DEFAULT: u64 = 5_000;
/// The allowed `heartbeat_ms` (the server takes at most 4294967 s; a minute is plenty).
const HEARTBEAT_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=60_000;

#[derive(Debug, Clone, PartialEq)]
pub struct TableBinding {
    pub database: String,
    pub table: String,
    pub binding: InputBinding,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MyTarget {
    pub common: TargetCommon,
    pub url: String,
    pub create_tables: bool,
    pub models: BTreeMap<String, TableOutput>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableOutput {
    /// The database (`None`: the URL's).
    pub database: Option<String>,
    pub table: String,
    pub mapping: Mapping,
}

impl TableOutput {
    /// `db.table` or `table`, as configured (for messages).
    pub fn display_name(&self) -> String {
        match &self.database {
            Some(db) => format!("{db}.{}", self.table),
            None => self.table.clone(),
        }
    }
}

/// The default `server_id` of a source: derived from its name, in 1000..2^31 (away from the small
/// numbers servers are usually given).
pub fn default_server_id(name: &str) -> u32 {
    let hash = name.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    1000 + hash % (0x7fff_ffff - 1000)
}

fn check_url(cx: &mut Cx<'_>, s: &str, path: &KeyPath) {
    if let Err(e) = super::conn::parse_url(s) {
        cx.err(path, e.to_string());
    }
}

/// `db.table` or `table`; plain identifiers (no backtick, dot or whitespace).
fn table_name(cx: &mut Cx<'_>, s: &str, path: &KeyPath) -> Option<(Option<String>, String)> {
    let (db, table) = match s.split_once('.') {
        Some((db, table)) => (Some(db), table),
        None => (None, s),
    };
    let ident = |t: &str| {
        !t.is_empty() && t.len() <= 64 && !t.contains(['.', '`']) && !t.contains(char::is_whitespace)
    };
    if db.is_none_or(ident) && ident(table) {
        Some((db.map(str::to_owned), table.to_owned()))
    } else {
        cx.err(path, format!("invalid table name '{s}' (expected database.table or table)"));
        None
    }
}

fn parse_source(s: &mut SectionCx<'_, '_>, name: &str) -> Option<Arc<dyn SourceSpec>> {
    let raw: RawMySource = s.raw();
    let SectionCx { cx, models, path: p, .. } = s;
    let url = required_str(cx, raw.url, &p.key("url"));
    if let Some(url) = &url {
        check_url(cx, url, &p.key("url"));
    }
    let server_id = raw.server_id.unwrap_or_else(|| default_server_id(name));
    if server_id == 0 {
        cx.err(&p.key("server_id"), "server_id 0 is not allowed (a replica needs a non-zero id)");
    }
    let heartbeat_ms = raw.heartbeat_ms.unwrap_or(HEARTBEAT_MS_DEFAULT);
    if !HEARTBEAT_MS_RANGE.contains(&heartbeat_ms) {
        let (low, high) = HEARTBEAT_MS_RANGE.into_inner();
        cx.err(&p.key("heartbeat_ms"), format!("must be between {low} and {high}, got {heartbeat_ms}"));
    }
    let modes = [("initial", SnapshotMode::Initial), ("never", SnapshotMode::Never)];
    let snapshot = choice(cx, raw.snapshot, &p.key("snapshot"), &modes);
    let tp = p.key("tables");
    let map = required(cx, raw.tables, &tp);
    let mut tables: Vec<TableBinding> = Vec::new();
    if map.as_ref().is_some_and(YamlMap::is_empty) {
        cx.err(&tp, "a mysql source needs at least one table");
    }
    let listed = map.as_ref().map(|m| entries(cx, m, &tp)).unwrap_or_default();
    for (key, v) in listed {
        let kp = tp.key(&key);
        let (Some((db, table)), Some(binding)) = (table_name(cx, &key, &kp), binding(cx, models, &v, &kp))
        else {
            continue;
        };
        let Some(database) = db else {
            cx.err(&kp, format!("name the database of table '{table}' (database.table)"));
            continue;
        };
        if tables.iter().any(|t| t.database == database && t.table == table) {
            cx.err(&kp, format!("table {database}.{table} is listed twice"));
        }
        tables.push(TableBinding { database, table, binding });
    }
    let source =
        MySource { name: name.to_owned(), url: url?, server_id, snapshot: snapshot?, heartbeat_ms, tables };
    Some(Arc::new(source))
}

fn my_model(
    cx: &mut Cx<'_>,
    name: &str,
    m: Option<&ModelInfo>,
    raw: RawMyTargetModel,
    p: &KeyPath,
) -> Option<TableOutput> {
    let table = nonempty(cx, raw.table, &p.key("table")).unwrap_or_else(|| name.to_owned());
    let (database, table) = table_name(cx, &table, &p.key("table"))?;
    let mapping = out_mapping(cx, m, raw.fields.as_ref(), p)?;
    Some(TableOutput { database, table, mapping })
}

fn parse_target(s: &mut SectionCx<'_, '_>, common: &TargetCommon) -> Option<Arc<dyn TargetSpec>> {
    let raw: RawMyTarget = s.raw();
    let SectionCx { cx, models, path: p, .. } = s;
    let url = required_str(cx, raw.url, &p.key("url"));
    let mut url_db = None;
    if let Some(url) = &url {
        check_url(cx, url, &p.key("url"));
        url_db = super::conn::parse_url(url).ok().and_then(|u| u.database);
    }
    let mp = p.key("models");
    let models = outputs(cx, models, raw.models, &mp, &my_model);
    let mut seen: BTreeMap<(Option<&str>, &str), &str> = BTreeMap::new();
    for (model, t) in &models {
        if t.database.is_none() && url.is_some() && url_db.is_none() {
            cx.err(
                &mp.key(model).key("table"),
                format!("the url names no database: write the table as database.{}", t.table),
            );
        }
        let db = t.database.as_deref().or(url_db.as_deref());
        if let Some(other) = seen.insert((db, &t.table), model) {
            cx.err(
                &mp.key(model).key("table"),
                format!("table {} is also used by model '{other}'", t.display_name()),
            );
        }
    }
    let target = MyTarget {
        common: common.clone(),
        url: url?,
        create_tables: raw.create_tables.unwrap_or(false),
        models,
    };
    Some(Arc::new(target))
}

impl SourceSpec for MySource {
    fn inputs(&self) -> Vec<Input<'_>> {
        self.tables
            .iter()
            .map(|t| Input { by: "table", name: format!("{}.{}", t.database, t.table), binding: &t.binding })
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

impl Source for MySource {
    fn start(self: Box<Self>, start: SourceStart) -> Result<Started, StartError> {
        let (status, task) = super::source::spawn(*self, start.ingest, start.shutdown);
        Ok(Started { tasks: vec![task], status: Some(status), ..Started::default() })
    }
}

impl TargetSpec for MyTarget {
    fn outputs(&self) -> Vec<(&str, &Mapping)> {
        self.models.iter().map(|(m, o)| (m.as_str(), &o.mapping)).collect()
    }

    fn doctor<'a>(&'a self, _name: &'a str, config: &'a Config, report: &'a mut Report) -> BoxFuture<'a, ()> {
        Box::pin(super::doctor::check_target(self, config, report))
    }

    fn start(&self, start: TargetStart<'_>) -> Result<(TargetHandle, JoinHandle<()>), StartError> {
        let target = super::target::MyTarget::new(self, &start.config.models)?;
        Ok(worker::spawn(target, "mysql", start))
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
        crate::config::raw_assert_keys_match::<RawMySource>();
        crate::config::raw_assert_keys_match::<RawMyTarget>();
        crate::config::raw_assert_keys_match::<RawMyTargetModel>();
    }

    #[test]
    fn default_server_ids_are_stable_and_in_range() {
        let id = default_server_id("orders-db");
        assert_eq!(id, default_server_id("orders-db"));
        assert_ne!(id, default_server_id("orders-db2"));
        assert!((1000..0x7fff_ffff).contains(&id));
    }
}
