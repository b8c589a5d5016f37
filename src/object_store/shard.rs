//! One open shard of one model: rows encoded as they come, sealed into the object's bytes.
//!
//! Deterministic bytes: the same items from the same first offset give the same object, however the
//! worker cut its batches. Parquet rows are decoded (arrow-json) batch by batch, but reach the
//! writer only in chunks of [`CHUNK_ROWS`] rows counted from the shard's first row, so row groups,
//! pages and dictionaries fall at the same rows; the byte limit is checked only at those chunk
//! boundaries. JSONL rows are written as they come (their compression is a stream).
//!
//! The encoded bytes are taken out as they accumulate ([`Shard::take_part`]) and streamed to the
//! store (`upload.rs`), hashed on the way: memory holds the open row group and one part.
//!
//! A row: `{"_op":"upsert","_offset":7,"_time":...,"_unchanged":[...],<fields>}`; a delete carries the
//! key fields, a truncate no field. In JSONL `_time` is RFC 3339 (ms) and `_unchanged` is left out
//! when empty.

use super::columns::Columns;
use super::config::{Compression, Format};
use crate::record::Op;
use crate::runtime::delivery::{FieldValue, Fields, Item};
use arrow_array::RecordBatch;
use arrow_json::reader::Decoder;
use arrow_json::ReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

/// Rows per write into the Parquet writer (a multiple of its 1024-row mini-batches).
pub const CHUNK_ROWS: usize = 8192;

/// How a target's shards are encoded.
#[derive(Debug, Clone)]
pub struct Encoding {
    pub format: Format,
    pub compression: Compression,
    pub row_group_rows: usize,
}

impl Encoding {
    pub fn extension(&self) -> &'static str {
        match (self.format, self.compression) {
            (Format::Parquet, _) => "parquet",
            (Format::Jsonl, Compression::Zstd) => "jsonl.zst",
            (Format::Jsonl, Compression::Gzip) => "jsonl.gz",
            (Format::Jsonl, _) => "jsonl",
        }
    }
}

/// A row Arrow could not hold (the item at fault, by its place among the items pushed since the
/// last [`Shard::settle`]).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RowError {
    pub pushed: usize,
    pub message: String,
}

/// A sealed shard: the object's last bytes (the rest left in parts) and what its manifest says.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub model: String,
    pub first: u64,
    pub last: u64,
    pub rows: u64,
    /// The bytes not taken as parts yet (`None` once handed over).
    pub tail: Option<bytes::Bytes>,
    /// The object's size and sha256 (hex), all parts included.
    pub size: u64,
    pub sha256: String,
    pub min_time_ms: u64,
    pub max_time_ms: u64,
}

/// An open shard.
pub struct Shard {
    pub model: String,
    columns: Arc<Columns>,
    /// Offsets of the first and last accepted rows (`first` is the key's first offset).
    pub first: u64,
    pub last: u64,
    /// Rows accepted.
    pub rows: u64,
    pub opened: Instant,
    min_time_ms: u64,
    max_time_ms: u64,
    /// Of the bytes taken out so far.
    hasher: Sha256,
    taken: u64,
    /// In a mutex only to make the shard `Sync` (the writers are `Send` only); reached through
    /// `&mut self`, so never contended.
    body: std::sync::Mutex<Body>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("model", &self.model)
            .field("first", &self.first)
            .field("last", &self.last)
            .field("rows", &self.rows)
            .finish()
    }
}

enum Body {
    Parquet(Box<ParquetBody>),
    Jsonl { out: JsonlOut, raw_bytes: u64 },
}

struct ParquetBody {
    writer: ArrowWriter<Vec<u8>>,
    /// Lines pushed and not decoded yet, with (offset, time) of each.
    lines: Vec<u8>,
    meta: Vec<(u64, u64)>,
    /// Decoded rows waiting for a whole chunk.
    pending: Vec<RecordBatch>,
    pending_rows: usize,
}

enum JsonlOut {
    Plain(Vec<u8>),
    Zstd(zstd::Encoder<'static, Vec<u8>>),
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
}

/// An encoding failure of the writer itself (not of one row).
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("compression: {0}")]
    Io(#[from] std::io::Error),
}

impl Shard {
    pub fn new(model: &str, columns: Arc<Columns>, encoding: &Encoding) -> Result<Shard, EncodeError> {
        let body = match encoding.format {
            Format::Parquet => {
                let compression = match encoding.compression {
                    Compression::Zstd => parquet::basic::Compression::ZSTD(Default::default()),
                    _ => parquet::basic::Compression::UNCOMPRESSED,
                };
                let props = WriterProperties::builder()
                    .set_compression(compression)
                    .set_max_row_group_row_count(Some(encoding.row_group_rows))
                    .build();
                let writer = ArrowWriter::try_new(Vec::new(), Arc::clone(&columns.schema), Some(props))?;
                Body::Parquet(Box::new(ParquetBody {
                    writer,
                    lines: Vec::new(),
                    meta: Vec::new(),
                    pending: Vec::new(),
                    pending_rows: 0,
                }))
            }
            Format::Jsonl => {
                let out = match encoding.compression {
                    Compression::Zstd => JsonlOut::Zstd(zstd::Encoder::new(Vec::new(), 3)?),
                    Compression::Gzip => JsonlOut::Gzip(flate2::write::GzEncoder::new(
                        Vec::new(),
                        flate2::Compression::default(),
                    )),
                    Compression::None => JsonlOut::Plain(Vec::new()),
                };
                Body::Jsonl { out, raw_bytes: 0 }
            }
        };
        Ok(Shard {
            model: model.to_owned(),
            columns,
            first: 0,
            last: 0,
            rows: 0,
            opened: Instant::now(),
            min_time_ms: u64::MAX,
            max_time_ms: 0,
            hasher: Sha256::new(),
            taken: 0,
            body: std::sync::Mutex::new(body),
        })
    }

    /// Rows pushed, accepted or not yet decoded.
    pub fn rows_pushed(&self) -> u64 {
        match &*self.body.lock().unwrap_or_else(|e| e.into_inner()) {
            Body::Parquet(p) => self.rows + p.meta.len() as u64,
            Body::Jsonl { .. } => self.rows,
        }
    }

    /// The bytes the limit counts: Parquet: written plus the open row group's estimate (known at
    /// chunk boundaries); JSONL: uncompressed bytes.
    pub fn size(&self) -> u64 {
        match &*self.body.lock().unwrap_or_else(|e| e.into_inner()) {
            Body::Parquet(p) => (p.writer.bytes_written() + p.writer.in_progress_size()) as u64,
            Body::Jsonl { raw_bytes, .. } => *raw_bytes,
        }
    }

    fn accept(&mut self, offset: u64, time_ms: u64) {
        if self.rows == 0 {
            self.first = offset;
            self.opened = Instant::now();
        }
        self.rows += 1;
        self.last = offset;
        self.min_time_ms = self.min_time_ms.min(time_ms);
        self.max_time_ms = self.max_time_ms.max(time_ms);
    }

    /// Adds one item. Parquet rows are accepted when decoded ([`Shard::settle`], or here when a chunk
    /// fills); `true` when a chunk boundary was crossed (the byte limit may be checked).
    pub fn push(&mut self, item: &Item) -> Result<bool, RowError> {
        match self.body.get_mut().unwrap_or_else(|e| e.into_inner()) {
            Body::Parquet(p) => {
                encode_row(&mut p.lines, item, &self.columns.json_text, TimeStyle::Micros);
                p.lines.push(b'\n');
                p.meta.push((item.offset, item.timestamp_ms));
                if p.pending_rows + p.meta.len() >= CHUNK_ROWS {
                    self.settle()?;
                    return Ok(true);
                }
                Ok(false)
            }
            Body::Jsonl { out, raw_bytes } => {
                let mut line = Vec::with_capacity(256);
                encode_row(&mut line, item, &[], TimeStyle::Rfc3339);
                line.push(b'\n');
                *raw_bytes += line.len() as u64;
                let written = match out {
                    JsonlOut::Plain(v) => v.write_all(&line),
                    JsonlOut::Zstd(e) => e.write_all(&line),
                    JsonlOut::Gzip(e) => e.write_all(&line),
                };
                written.map_err(|e| RowError { pushed: 0, message: format!("compression: {e}") })?;
                self.accept(item.offset, item.timestamp_ms);
                Ok(true)
            }
        }
    }

    /// Decodes the rows pushed so far and writes whole chunks. On a row Arrow cannot hold, the rows
    /// before it are accepted, it and the rows after it are dropped (to be pushed again).
    pub fn settle(&mut self) -> Result<(), RowError> {
        let schema = Arc::clone(&self.columns.schema);
        let Body::Parquet(p) = self.body.get_mut().unwrap_or_else(|e| e.into_inner()) else { return Ok(()) };
        if p.meta.is_empty() {
            return Ok(());
        }
        let lines = std::mem::take(&mut p.lines);
        let meta = std::mem::take(&mut p.meta);
        let (batches, error) = match decode(&schema, &lines, meta.len()) {
            Ok(batches) => (batches, None),
            Err(_) => one_by_one(&schema, &lines),
        };
        let accepted = batches.iter().map(RecordBatch::num_rows).sum::<usize>();
        p.pending_rows += accepted;
        p.pending.extend(batches);
        for &(offset, time) in &meta[..accepted] {
            self.accept(offset, time);
        }
        if let Err(e) = self.write_chunks(false) {
            return Err(RowError { pushed: accepted, message: e.to_string() });
        }
        match error {
            Some(message) => Err(RowError { pushed: accepted, message }),
            None => Ok(()),
        }
    }

    /// Drops the rows pushed and not settled (an error elsewhere in the batch: they come again).
    pub fn discard_unsettled(&mut self) {
        if let Body::Parquet(p) = self.body.get_mut().unwrap_or_else(|e| e.into_inner()) {
            p.lines.clear();
            p.meta.clear();
        }
    }

    /// Writes every whole chunk of decoded rows (and with `all`, the rest).
    fn write_chunks(&mut self, all: bool) -> Result<(), EncodeError> {
        let Body::Parquet(p) = self.body.get_mut().unwrap_or_else(|e| e.into_inner()) else { return Ok(()) };
        while p.pending_rows >= CHUNK_ROWS || (all && p.pending_rows > 0) {
            let merged = arrow_select::concat::concat_batches(&self.columns.schema, &p.pending)?;
            let take = CHUNK_ROWS.min(merged.num_rows());
            p.writer.write(&merged.slice(0, take))?;
            let rest = merged.num_rows() - take;
            p.pending = if rest > 0 { vec![merged.slice(take, rest)] } else { Vec::new() };
            p.pending_rows = rest;
        }
        Ok(())
    }

    /// The encoded bytes not taken yet, when there are at least `min_bytes` of them.
    pub fn take_part(&mut self, min_bytes: usize) -> Option<bytes::Bytes> {
        let out = match self.body.get_mut().unwrap_or_else(|e| e.into_inner()) {
            Body::Parquet(p) => p.writer.inner_mut(),
            Body::Jsonl { out: JsonlOut::Plain(v), .. } => v,
            Body::Jsonl { out: JsonlOut::Zstd(e), .. } => e.get_mut(),
            Body::Jsonl { out: JsonlOut::Gzip(e), .. } => e.get_mut(),
        };
        if out.is_empty() || out.len() < min_bytes {
            return None;
        }
        let part = std::mem::take(out);
        self.hasher.update(&part);
        self.taken += part.len() as u64;
        Some(part.into())
    }

    /// The object's last bytes, its size and sha256. Call [`Shard::settle`] first (rows not decoded
    /// are not in it).
    pub fn seal(mut self) -> Result<Sealed, EncodeError> {
        self.write_chunks(true)?;
        let tail = match self.body.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Body::Parquet(p) => p.writer.into_inner()?,
            Body::Jsonl { out: JsonlOut::Plain(v), .. } => v,
            Body::Jsonl { out: JsonlOut::Zstd(e), .. } => e.finish()?,
            Body::Jsonl { out: JsonlOut::Gzip(e), .. } => e.finish()?,
        };
        self.hasher.update(&tail);
        Ok(Sealed {
            model: self.model,
            first: self.first,
            last: self.last,
            rows: self.rows,
            size: self.taken + tail.len() as u64,
            sha256: super::columns::hex(&self.hasher.finalize()),
            tail: Some(tail.into()),
            min_time_ms: self.min_time_ms,
            max_time_ms: self.max_time_ms,
        })
    }
}

fn decoder(schema: &arrow_schema::SchemaRef, rows: usize) -> Result<Decoder, arrow_schema::ArrowError> {
    ReaderBuilder::new(Arc::clone(schema)).with_batch_size(rows.max(1)).build_decoder()
}

/// Decodes `rows` lines into record batches.
fn decode(
    schema: &arrow_schema::SchemaRef,
    lines: &[u8],
    rows: usize,
) -> Result<Vec<RecordBatch>, arrow_schema::ArrowError> {
    let mut decoder = decoder(schema, rows)?;
    let mut at = 0;
    let mut out = Vec::new();
    while at < lines.len() {
        let read = decoder.decode(&lines[at..])?;
        at += read;
        if let Some(batch) = decoder.flush()? {
            out.push(batch);
        }
        if read == 0 {
            break;
        }
    }
    out.extend(decoder.flush()?);
    Ok(out)
}

/// After a failed decode: the rows before the first bad one, and its error.
fn one_by_one(schema: &arrow_schema::SchemaRef, lines: &[u8]) -> (Vec<RecordBatch>, Option<String>) {
    let mut good = Vec::new();
    for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match decode(schema, line, 1) {
            Ok(batches) => good.extend(batches),
            Err(e) => return (good, Some(format!("a value Arrow cannot hold: {e}"))),
        }
    }
    (good, Some("the rows could not be decoded together".to_owned()))
}

#[derive(Debug, Clone, Copy)]
enum TimeStyle {
    Micros,
    Rfc3339,
}

/// Appends one row's JSON object (no newline).
fn encode_row(out: &mut Vec<u8>, item: &Item, json_text: &[String], time: TimeStyle) {
    let op = match item.op {
        Op::Upsert => "upsert",
        Op::Delete => "delete",
        Op::Truncate => "truncate",
    };
    out.extend_from_slice(b"{\"_op\":\"");
    out.extend_from_slice(op.as_bytes());
    out.extend_from_slice(b"\",\"_offset\":");
    out.extend_from_slice(item.offset.to_string().as_bytes());
    out.extend_from_slice(b",\"_time\":");
    match time {
        TimeStyle::Micros => out.extend_from_slice((item.timestamp_ms * 1000).to_string().as_bytes()),
        TimeStyle::Rfc3339 => {
            let text = crate::time::format_ms(item.timestamp_ms);
            serde_json::to_writer(&mut *out, &text).expect("a string serializes");
        }
    }
    if !item.unchanged.is_empty() {
        out.extend_from_slice(b",\"_unchanged\":");
        serde_json::to_writer(&mut *out, &item.unchanged).expect("strings serialize");
    }
    let mut field = |name: &str, value: FieldValue<'_>| {
        out.push(b',');
        serde_json::to_writer(&mut *out, name).expect("a string serializes");
        out.push(b':');
        let as_text = json_text.iter().any(|f| f == name);
        match value {
            FieldValue::Raw(raw) if as_text && raw.get() != "null" => {
                serde_json::to_writer(&mut *out, raw.get()).expect("a string serializes")
            }
            FieldValue::Raw(raw) => out.extend_from_slice(raw.get().as_bytes()),
            FieldValue::Parsed(v) if as_text && !v.is_null() => {
                serde_json::to_writer(&mut *out, &v.to_string()).expect("a string serializes")
            }
            FieldValue::Parsed(v) => serde_json::to_writer(&mut *out, v).expect("a value serializes"),
        }
    };
    match (item.op, &item.data) {
        // The logged object's text as is (serde_json's compact output), when no field is rewritten.
        (Op::Upsert, Some(Fields::Raw(raw))) if json_text.is_empty() => {
            let text = raw.get().trim();
            if let Some(inner) = text.strip_prefix('{').filter(|t| t.trim() != "}") {
                out.push(b',');
                out.extend_from_slice(inner.as_bytes());
            } else {
                out.push(b'}');
            }
            return;
        }
        (Op::Upsert, Some(data)) => data.for_each(&mut field),
        (Op::Truncate, _) => {}
        _ => {
            if let Value::Object(key) = &item.key {
                Fields::Map(key.clone()).for_each(&mut field);
            }
        }
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_object_is_spliced_exactly_as_its_fields_would_be_written() {
        for text in [r#"{"a":1,"b":"x\"y","c":{"d":[1,2]}}"#, "{}"] {
            let map: serde_json::Map<String, Value> = serde_json::from_str(text).unwrap();
            let raw = serde_json::value::RawValue::from_string(text.to_owned()).unwrap();
            let item = |data| Item {
                offset: 7,
                timestamp_ms: 1,
                model: "m".into(),
                op: Op::Upsert,
                key: serde_json::json!({"a": 1}),
                data: Some(data),
                unchanged: vec!["z".into()],
                source: "s".into(),
            };
            let (mut spliced, mut written) = (Vec::new(), Vec::new());
            encode_row(&mut spliced, &item(Fields::Raw(raw)), &[], TimeStyle::Micros);
            encode_row(&mut written, &item(Fields::Map(map)), &[], TimeStyle::Micros);
            assert_eq!(String::from_utf8(spliced).unwrap(), String::from_utf8(written).unwrap());
        }
    }
}
