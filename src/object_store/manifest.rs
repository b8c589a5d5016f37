//! Shard names and manifests.
//!
//! A shard of model `m` holding the rows of log offsets `first..=last` is the object
//! `<prefix>/m/<first as 20 digits>-<last as 20 digits>.<ext>` (`parquet`, `jsonl`, `jsonl.zst`,
//! `jsonl.gz`), and its manifest `<prefix>/m/<first>-<last>.manifest.json` beside it. A manifest is
//! written only after its shard, so a shard without one was never committed (a crash between the
//! two puts): readers take the shards that have a manifest.

use super::shard::Sealed;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The offsets a shard holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    pub first: u64,
    pub last: u64,
}

/// The suffix of manifests.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

impl Span {
    pub fn stem(self) -> String {
        format!("{:020}-{:020}", self.first, self.last)
    }

    pub fn object_name(self, extension: &str) -> String {
        format!("{}.{extension}", self.stem())
    }

    pub fn manifest_name(self) -> String {
        format!("{}{MANIFEST_SUFFIX}", self.stem())
    }

    /// `(span, is_manifest)` of an object name of this layout with `extension`.
    pub fn parse(name: &str, extension: &str) -> Option<(Span, bool)> {
        let (stem, manifest) = match name.strip_suffix(MANIFEST_SUFFIX) {
            Some(stem) => (stem, true),
            None => (name.strip_suffix(extension)?.strip_suffix('.')?, false),
        };
        let (first, last) = stem.split_once('-')?;
        let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(first) || !digits(last) {
            return None;
        }
        Some((Span { first: first.parse().ok()?, last: last.parse().ok()? }, manifest))
    }
}

/// What `<first>-<last>.manifest.json` holds. Its bytes depend only on the shard (no write time), so
/// a rebuilt shard has the same manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub model: String,
    /// The shard's object name (beside the manifest).
    pub object: String,
    pub format: String,
    pub compression: String,
    pub first_offset: u64,
    pub last_offset: u64,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    /// sha256 of the Arrow schema's JSON description (`columns`).
    pub schema_hash: String,
    /// The model's JSON Schema `$id` and `title`, when it has them.
    pub schema_id: Option<String>,
    pub schema_title: Option<String>,
    /// The first and last `_time` of the rows (RFC 3339).
    pub min_time: String,
    pub max_time: String,
    /// The columns: `[{"name", "type", "nullable"}]`.
    pub columns: Value,
}

/// What a manifest says beyond the shard itself.
#[derive(Debug, Clone)]
pub struct Describe<'a> {
    pub extension: &'a str,
    pub format: &'a str,
    pub compression: &'a str,
    pub schema_hash: &'a str,
    pub schema_id: Option<&'a str>,
    pub schema_title: Option<&'a str>,
    pub columns: &'a Value,
}

impl Manifest {
    pub fn of(sealed: &Sealed, sha256: String, d: &Describe<'_>) -> Manifest {
        let span = Span { first: sealed.first, last: sealed.last };
        Manifest {
            version: 1,
            model: sealed.model.clone(),
            object: span.object_name(d.extension),
            format: d.format.to_owned(),
            compression: d.compression.to_owned(),
            first_offset: sealed.first,
            last_offset: sealed.last,
            rows: sealed.rows,
            bytes: sealed.size,
            sha256,
            schema_hash: d.schema_hash.to_owned(),
            schema_id: d.schema_id.map(str::to_owned),
            schema_title: d.schema_title.map(str::to_owned),
            min_time: crate::time::format_ms(sealed.min_time_ms),
            max_time: crate::time::format_ms(sealed.max_time_ms),
            columns: d.columns.clone(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a manifest serializes");
        bytes.push(b'\n');
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let span = Span { first: 7, last: 12_345_678_901 };
        assert_eq!(span.object_name("parquet"), "00000000000000000007-00000000012345678901.parquet");
        assert_eq!(Span::parse(&span.object_name("parquet"), "parquet"), Some((span, false)));
        assert_eq!(Span::parse(&span.object_name("jsonl.zst"), "jsonl.zst"), Some((span, false)));
        assert_eq!(Span::parse(&span.manifest_name(), "parquet"), Some((span, true)));
        for bad in ["1-2.parquet", "00000000000000000007-00000000012345678901.jsonl", "x.parquet"] {
            assert_eq!(Span::parse(bad, "parquet"), None, "{bad}");
        }
    }
}
