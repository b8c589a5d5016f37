//! The `object_store` target's config section.

use crate::config::section::{
    choice, config_section, duration, fields_only, outputs, read_section, required_str, size, Section,
    SectionCx, YamlMap, YamlValue,
};
use crate::config::{Config, OutputBinding, TargetCommon};
use crate::connector::{Report, StartError, TargetKind, TargetSpec, TargetStart};
use crate::mapping::Mapping;
use crate::runtime::delivery::worker;
use crate::runtime::delivery::TargetHandle;
use crate::util::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

pub static KIND: TargetKind = TargetKind {
    kind: "object_store",
    keys: RawObjectStoreTarget::KEYS,
    schema: include_str!("config.schema.json"),
    parse,
};

config_section!(RawObjectStoreTarget {
    url: String,
    endpoint: String,
    region: String,
    format: String,
    compression: String,
    shard: YamlValue,
    row_group_rows: u64,
    models: YamlMap,
});
config_section!(RawShard { rows_max: u64, bytes_max: YamlValue, age_max: String });

/// Shard rows when `shard.rows_max` is not set.
pub const ROWS_MAX_DEFAULT: u64 = 1_000_000;
/// Shard bytes when `shard.bytes_max` is not set (a shard is streamed while it fills, so this is
/// not a bound on memory).
pub const BYTES_MAX_DEFAULT: u64 = 128 << 20;
/// Shard age when `shard.age_max` is not set.
pub const AGE_MAX_DEFAULT: Duration = Duration::from_secs(300);
/// Parquet row-group rows when `row_group_rows` is not set.
pub const ROW_GROUP_ROWS_DEFAULT: u64 = 128 * 1024;

/// What a shard holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Jsonl,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Jsonl => "jsonl",
        }
    }
}

/// How a shard's bytes are compressed (Parquet: its pages; JSONL: the whole object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    Gzip,
    None,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::None => "none",
        }
    }
}

/// When an open shard is sealed: whichever limit comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardLimits {
    pub rows_max: u64,
    /// Parquet: bytes written plus the open row group's estimate; JSONL: uncompressed bytes.
    pub bytes_max: u64,
    pub age_max: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ObjectStoreTarget {
    pub common: TargetCommon,
    /// `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`, `file:///dir`.
    pub url: String,
    /// An S3-compatible (or emulator) endpoint, `http(s)://host:port`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub format: Format,
    pub compression: Compression,
    pub shard: ShardLimits,
    pub row_group_rows: u64,
    pub models: BTreeMap<String, OutputBinding>,
}

const SCHEMES: [&str; 5] = ["s3://", "gs://", "az://", "abfs://", "file://"];

fn parse(s: &mut SectionCx<'_, '_>, common: &TargetCommon) -> Option<Arc<dyn TargetSpec>> {
    let raw: RawObjectStoreTarget = s.raw();
    let SectionCx { cx, models, path: p, .. } = s;
    let url = required_str(cx, raw.url, &p.key("url"));
    let url_ok = url.as_ref().is_some_and(|u| {
        let ok = SCHEMES.iter().any(|s| u.starts_with(s) && u.len() > s.len()) && url::Url::parse(u).is_ok();
        if !ok {
            cx.err(
                &p.key("url"),
                format!("invalid URL '{u}' (expected s3://bucket/prefix, gs://, az:// or file:///dir)"),
            );
        }
        ok
    });
    let endpoint = raw.endpoint.filter(|e| !e.is_empty());
    if let Some(e) = &endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) || url::Url::parse(e).is_err() {
            cx.err(&p.key("endpoint"), format!("invalid endpoint '{e}' (expected http(s)://host:port)"));
        }
    }
    let format =
        choice(cx, raw.format, &p.key("format"), &[("parquet", Format::Parquet), ("jsonl", Format::Jsonl)]);
    let compressions = match format {
        Some(Format::Jsonl) => {
            &[("none", Compression::None), ("zstd", Compression::Zstd), ("gzip", Compression::Gzip)][..]
        }
        _ => &[("zstd", Compression::Zstd), ("none", Compression::None)][..],
    };
    let compression = choice(cx, raw.compression, &p.key("compression"), compressions);
    let shard = shard_limits(cx, raw.shard.as_ref(), &p.key("shard"));
    let row_group_rows = raw.row_group_rows.unwrap_or(ROW_GROUP_ROWS_DEFAULT);
    if row_group_rows == 0 {
        cx.err(&p.key("row_group_rows"), "must be greater than 0");
    }
    let models = outputs(cx, models, raw.models, &p.key("models"), &fields_only);
    let url = url.filter(|_| url_ok)?;
    Some(Arc::new(ObjectStoreTarget {
        common: common.clone(),
        url,
        endpoint,
        region: raw.region.filter(|r| !r.is_empty()),
        format: format?,
        compression: compression?,
        shard: shard?,
        row_group_rows,
        models,
    }))
}

fn shard_limits(
    cx: &mut crate::config::section::Cx<'_>,
    v: Option<&YamlValue>,
    p: &crate::config::section::KeyPath,
) -> Option<ShardLimits> {
    let raw: RawShard = match v {
        Some(v) => read_section(cx, v, p)?,
        None => RawShard::default(),
    };
    let rows_max = raw.rows_max.unwrap_or(ROWS_MAX_DEFAULT);
    let bytes_max = match &raw.bytes_max {
        Some(v) => size(cx, v, &p.key("bytes_max")),
        None => Some(BYTES_MAX_DEFAULT),
    };
    let age_max = match &raw.age_max {
        Some(t) => duration(cx, t, &p.key("age_max")),
        None => Some(AGE_MAX_DEFAULT),
    };
    if rows_max == 0 {
        cx.err(&p.key("rows_max"), "must be greater than 0");
    }
    if bytes_max == Some(0) {
        cx.err(&p.key("bytes_max"), "must be greater than 0");
    }
    if age_max == Some(Duration::ZERO) {
        cx.err(&p.key("age_max"), "must be greater than 0");
    }
    Some(ShardLimits { rows_max, bytes_max: bytes_max?, age_max: age_max? })
}

impl TargetSpec for ObjectStoreTarget {
    fn outputs(&self) -> Vec<(&str, &Mapping)> {
        self.models.iter().map(|(m, b)| (m.as_str(), &b.mapping)).collect()
    }

    fn place(&self) -> String {
        self.url.clone()
    }

    fn doctor<'a>(&'a self, name: &'a str, _config: &'a Config, report: &'a mut Report) -> BoxFuture<'a, ()> {
        Box::pin(async move { super::doctor::check(self, &format!("target {name}"), report).await })
    }

    fn start(&self, start: TargetStart<'_>) -> Result<(TargetHandle, JoinHandle<()>), StartError> {
        let error = |message: String| StartError { kind: "target", name: start.common.name.clone(), message };
        let target =
            super::target::ObjectStoreTarget::new(self, start.config).map_err(|e| error(e.to_string()))?;
        Ok(worker::spawn(target, "object_store", start))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_match_serde_fields() {
        crate::config::raw_assert_keys_match::<super::RawObjectStoreTarget>();
    }
}
