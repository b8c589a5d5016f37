//! `remix dataset export`: a model's current state as of an offset, written as a dataset that
//! Hugging Face `datasets`, DuckDB, pyarrow or Spark read: `data/<split>-00000-of-00001.<ext>` per
//! split, `manifest.json`, and a dataset card `README.md` whose YAML header declares the configs
//! (data files per split) and the features (from the JSON Schema).
//!
//! Reproducible byte for byte: rows are ordered by their key's canonical JSON text, a row's split
//! is decided by the sha256 of that text (so a key stays in its split as the dataset grows), Parquet
//! reaches the writer in fixed chunks of rows, and nothing written depends on the clock or the
//! machine (the card and manifest carry the offset and the time of its record). Every object is put
//! whole (overwriting: the same export writes the same bytes).

use super::columns::{hex, schema_json, Columns, BOOKKEEPING};
use super::shard::CHUNK_ROWS;
use super::store;
use crate::connector::dataset::{ExportError, ExportOptions, Snapshot};
use crate::mapping::Mapping;
use crate::util::BoxFuture;
use ::object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use arrow_schema::{DataType, Schema};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Rows per Parquet row group in an export.
const ROW_GROUP_ROWS: usize = 128 * 1024;

pub fn write(snapshot: Snapshot, options: ExportOptions) -> BoxFuture<'static, Result<Value, ExportError>> {
    Box::pin(async move { export(snapshot, options).await })
}

/// The columns of a snapshot: the model's fields, no bookkeeping.
fn columns(snapshot: &Snapshot) -> Result<(Arc<Schema>, Vec<String>), ExportError> {
    let all =
        Columns::derive(&snapshot.model, &Mapping::identity()).map_err(|e| ExportError(e.to_string()))?;
    let fields: Vec<_> =
        all.schema.fields().iter().filter(|f| !BOOKKEEPING.contains(&f.name().as_str())).cloned().collect();
    Ok((Arc::new(Schema::new(fields)), all.json_text))
}

/// The split a key falls in: the sha256 of its text as a fraction of 2^64, against the cumulative
/// shares.
pub fn split_of<'s>(key_text: &str, splits: &'s [(String, f64)]) -> &'s str {
    let digest = Sha256::digest(key_text.as_bytes());
    let x =
        u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) as f64 / 18_446_744_073_709_551_616.0;
    let total: f64 = splits.iter().map(|(_, s)| s).sum();
    let mut upto = 0.0;
    for (name, share) in splits {
        upto += share / total;
        if x < upto {
            return name;
        }
    }
    &splits.last().expect("at least one split").0
}

/// One row's JSON line (JSON-text fields as strings).
fn line(object: &Map<String, Value>, json_text: &[String], out: &mut Vec<u8>) {
    let converted: Map<String, Value> = object
        .iter()
        .map(|(k, v)| {
            let v =
                if json_text.contains(k) && !v.is_null() { Value::String(v.to_string()) } else { v.clone() };
            (k.clone(), v)
        })
        .collect();
    serde_json::to_writer(&mut *out, &converted).expect("a map serializes");
    out.push(b'\n');
}

fn parquet_bytes(
    schema: &Arc<Schema>,
    json_text: &[String],
    rows: &[&Map<String, Value>],
) -> Result<Vec<u8>, ExportError> {
    let fail = |e: &dyn std::fmt::Display| ExportError(format!("cannot encode Parquet: {e}"));
    let props = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let mut writer =
        ArrowWriter::try_new(Vec::new(), Arc::clone(schema), Some(props)).map_err(|e| fail(&e))?;
    for chunk in rows.chunks(CHUNK_ROWS) {
        let mut lines = Vec::new();
        for row in chunk {
            line(row, json_text, &mut lines);
        }
        let mut decoder = arrow_json::ReaderBuilder::new(Arc::clone(schema))
            .with_batch_size(chunk.len())
            .build_decoder()
            .map_err(|e| fail(&e))?;
        decoder.decode(&lines).map_err(|e| fail(&e))?;
        if let Some(batch) = decoder.flush().map_err(|e| fail(&e))? {
            writer.write(&batch).map_err(|e| fail(&e))?;
        }
    }
    writer.into_inner().map_err(|e| fail(&e))
}

/// A Hugging Face `datasets` feature for an Arrow type, as YAML lines at `indent`.
fn feature(name: &str, data_type: &DataType, indent: &str, out: &mut String) {
    let dtype = |t: &DataType| match t {
        DataType::Int64 => "int64",
        DataType::Float64 => "float64",
        DataType::Boolean => "bool",
        DataType::Date32 => "date32",
        DataType::Timestamp(_, _) => "timestamp[us, tz=UTC]",
        _ => "string",
    };
    out.push_str(&format!("{indent}- name: {}\n", yaml_string(name)));
    match data_type {
        DataType::List(item) => match item.data_type() {
            DataType::Struct(_) | DataType::List(_) => out.push_str(&format!("{indent}  dtype: string\n")),
            t => out.push_str(&format!("{indent}  sequence: {}\n", dtype(t))),
        },
        DataType::Struct(fields) => {
            out.push_str(&format!("{indent}  struct:\n"));
            for f in fields {
                feature(f.name(), f.data_type(), &format!("{indent}  "), out);
            }
        }
        t => out.push_str(&format!("{indent}  dtype: {}\n", dtype(t))),
    }
}

fn yaml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// The dataset card.
fn card(
    snapshot: &Snapshot,
    schema: &Schema,
    ext: &str,
    counts: &[(String, usize)],
    manifest: &Value,
) -> String {
    let model = snapshot.model.name();
    let mut yaml = String::from("---\nconfigs:\n- config_name: default\n  data_files:\n");
    for (split, _) in counts {
        yaml.push_str(&format!("  - split: {split}\n    path: data/{split}-*.{ext}\n"));
    }
    yaml.push_str("dataset_info:\n  features:\n");
    for field in schema.fields() {
        feature(field.name(), field.data_type(), "  ", &mut yaml);
    }
    yaml.push_str("  splits:\n");
    for (split, rows) in counts {
        yaml.push_str(&format!("  - name: {split}\n    num_examples: {rows}\n"));
    }
    yaml.push_str("---\n");
    let title = snapshot.model.schema().get("title").and_then(Value::as_str).unwrap_or(model);
    let description = snapshot.model.schema().get("description").and_then(Value::as_str).unwrap_or("");
    let splits: Vec<String> = counts.iter().map(|(s, n)| format!("{s}: {n} rows")).collect();
    format!(
        "{yaml}\n# {title}\n\n{description}\n\nThe current state of the Remix model `{model}` as of log offset {} ({}): \
         changes compacted per key, deletes and truncates applied; one row per key, ordered by key. \
         Splits by a hash of the key ({}). Key: {}. Schema hash: {}.\n\nExported by `remix dataset export`; \
         `manifest.json` lists every file with its sha256.\n",
        snapshot.offset,
        manifest["time"].as_str().unwrap_or_default(),
        splits.join(", "),
        snapshot.model.key_fields().join(", "),
        manifest["schema_hash"].as_str().unwrap_or_default(),
    )
}

async fn export(snapshot: Snapshot, options: ExportOptions) -> Result<Value, ExportError> {
    let place = store::open(&options.to, options.endpoint.as_deref(), None)
        .map_err(|e| ExportError(e.to_string()))?;
    let (schema, json_text) = columns(&snapshot)?;
    let ext = if options.format == "jsonl" { "jsonl" } else { "parquet" };
    let mut files = Vec::new();
    let mut counts = Vec::new();
    let mut objects: Vec<(String, Vec<u8>)> = Vec::new();
    for (split, _) in &options.splits {
        let rows: Vec<&Map<String, Value>> = snapshot
            .rows
            .iter()
            .filter(|(key, _)| split_of(key, &options.splits) == split)
            .map(|(_, row)| row)
            .collect();
        let bytes = if ext == "parquet" {
            parquet_bytes(&schema, &json_text, &rows)?
        } else {
            let mut out = Vec::new();
            for row in &rows {
                serde_json::to_writer(&mut out, row).expect("a map serializes");
                out.push(b'\n');
            }
            out
        };
        let name = format!("data/{split}-00000-of-00001.{ext}");
        files.push(json!({"path": name, "split": split, "rows": rows.len(), "bytes": bytes.len(),
            "sha256": hex(&Sha256::digest(&bytes))}));
        counts.push((split.clone(), rows.len()));
        objects.push((name, bytes));
    }
    let columns = schema_json(&schema);
    let manifest = json!({
        "version": 1,
        "model": snapshot.model.name(),
        "offset": snapshot.offset,
        "time": crate::time::format_ms(snapshot.time_ms),
        "format": ext,
        "rows": snapshot.rows.len(),
        "key": snapshot.model.key_fields(),
        "splits": options.splits.iter().map(|(s, share)| json!({"name": s, "share": share})).collect::<Vec<_>>(),
        "files": files,
        "schema_hash": hex(&Sha256::digest(serde_json::to_vec(&columns).unwrap_or_default())),
        "schema_id": snapshot.model.schema().get("$id"),
        "schema_title": snapshot.model.schema().get("title"),
        "columns": columns,
    });
    let readme = card(&snapshot, &schema, ext, &counts, &manifest);
    let mut manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("serializes");
    manifest_bytes.push(b'\n');
    objects.push(("manifest.json".into(), manifest_bytes));
    objects.push(("README.md".into(), readme.into_bytes()));
    for (name, bytes) in objects {
        let parts: Vec<&str> = name.split('/').collect();
        let path = place.path(&parts);
        let options = PutOptions { mode: PutMode::Overwrite, ..Default::default() };
        place
            .store
            .put_opts(&path, PutPayload::from(bytes), options)
            .await
            .map_err(|e| ExportError(format!("put {path}: {e}")))?;
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_follow_the_shares_and_keep_each_key() {
        let splits = vec![("train".to_owned(), 0.9), ("validation".to_owned(), 0.1)];
        let n = 100_000;
        let train = (0..n).filter(|i| split_of(&format!("{{\"id\":{i}}}"), &splits) == "train").count();
        let share = train as f64 / n as f64;
        assert!((share - 0.9).abs() < 0.01, "{share}");
        assert_eq!(split_of("{\"id\":7}", &splits), split_of("{\"id\":7}", &splits));
    }
}
