//! The `object_store` target writing Parquet on `file://`, against the plain arrow-rs pipeline
//! (arrow-json's reader into `ArrowWriter`, same schema, same writer properties) on the same records
//! in the same run, printed as a ratio (goal: at least 0.8).
//!
//! Ours: items as the worker hands them over (each upsert's fields still the logged JSON text,
//! `Fields::Raw`), applied in batches of the target's default size (no `batch.records_max` in the
//! configuration: 20k), one shard of all rows (row building, decoding,
//! chunking, zstd, sha256, the conditional put of shard and manifest). The anchor: the same rows as
//! NDJSON bytes in memory, `arrow_json::ReaderBuilder` → `ArrowWriter<File>`.
//!
//! `cargo bench --bench object_store_parquet` (`REMIX_BENCH_RECORDS`, default 300000).

use arrow_json::ReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use remix::config::{BatchConfig, OnError, OutputBinding, TargetCommon, TruncatePolicy};
use remix::mapping::Mapping;
use remix::models::Model;
use remix::object_store::columns::Columns;
use remix::object_store::config::{Compression, Format, ObjectStoreTarget as Config, ShardLimits};
use remix::object_store::target::ObjectStoreTarget;
use remix::record::Op;
use remix::runtime::delivery::{Batch, Fields, Item, Target};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

// The binary's allocator (its default features), for both pipelines.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ROW_GROUP_ROWS: usize = 128 * 1024;

fn model() -> Model {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/order.json");
    Model::load("order", &path, &["id".to_owned()]).expect("schema loads")
}

/// The logged objects: order-like rows.
fn objects(n: usize) -> Vec<String> {
    let statuses = ["pending", "paid", "shipped", "cancelled"];
    (0..n)
        .map(|i| {
            let mut object = serde_json::Map::new();
            for (name, schema) in model().schema()["properties"].as_object().unwrap() {
                let value = match (schema["type"].as_str(), schema["format"].as_str(), name.as_str()) {
                    (_, _, "status") => json!(statuses[i % 4]),
                    (Some("integer"), _, _) => json!(i as u64 * 7 + 1),
                    (Some("number"), _, _) => json!(i as f64 * 1.25),
                    (Some("boolean"), _, _) => json!(i % 3 == 0),
                    (_, Some("date-time"), _) => {
                        json!(format!("2026-11-{:02}T10:{:02}:{:02}.000Z", 1 + i % 28, i % 60, (i / 60) % 60))
                    }
                    (_, Some("date"), _) => json!(format!("2026-11-{:02}", 1 + i % 28)),
                    _ => json!(format!("{name} value {}", i % 977)),
                };
                object.insert(name.clone(), value);
            }
            serde_json::to_string(&object).unwrap()
        })
        .collect()
}

fn items(objects: &[String]) -> Vec<Item> {
    objects
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let raw = serde_json::value::RawValue::from_string(text.clone()).unwrap();
            Item {
                offset: i as u64 + 1,
                timestamp_ms: 1_790_000_000_000 + i as u64,
                model: "order".into(),
                op: Op::Upsert,
                key: json!({"id": i}),
                data: Some(Fields::Raw(raw)),
                unchanged: Vec::new(),
                source: "hooks".into(),
            }
        })
        .collect()
}

/// The same rows as NDJSON, bookkeeping columns included.
fn ndjson(objects: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, text) in objects.iter().enumerate() {
        let micros = (1_790_000_000_000 + i as u64) * 1000;
        out.extend_from_slice(
            format!("{{\"_op\":\"upsert\",\"_offset\":{},\"_time\":{micros},", i + 1).as_bytes(),
        );
        out.extend_from_slice(&text.as_bytes()[1..]);
        out.push(b'\n');
    }
    out
}

fn ours(items: &[Item], dir: &std::path::Path) -> Duration {
    let n = items.len() as u64;
    let config = Config {
        common: TargetCommon {
            name: "bench".into(),
            rate_limit: None,
            batch: BatchConfig { records_max: None, linger: Duration::ZERO },
            on_error: OnError::Pause,
            truncate: TruncatePolicy::Apply,
        },
        url: format!("file://{}", dir.display()),
        endpoint: None,
        region: None,
        format: Format::Parquet,
        compression: Compression::Zstd,
        shard: ShardLimits { rows_max: n, bytes_max: 1 << 40, age_max: Duration::from_secs(3600) },
        row_group_rows: ROW_GROUP_ROWS as u64,
        models: [("order".to_owned(), OutputBinding { mapping: Mapping::identity() })].into_iter().collect(),
    };
    let models: BTreeMap<String, Arc<Model>> =
        [("order".to_owned(), Arc::new(model()))].into_iter().collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut target = ObjectStoreTarget::with_models(&config, &models).unwrap();
        target.open(0).await.unwrap();
        let batch_records = target.capabilities().batch_records_default;
        let batches: Vec<Batch> = items
            .chunks(batch_records)
            .map(|chunk| Batch {
                first_offset: chunk[0].offset,
                last_offset: chunk.last().unwrap().offset,
                items: chunk.to_vec(),
            })
            .collect();
        let start = Instant::now();
        for batch in &batches {
            target.apply(batch).await.unwrap();
        }
        assert_eq!(target.held_from(), None, "one shard of all rows, sealed and put");
        start.elapsed()
    })
}

fn anchor(lines: &[u8], schema: &arrow_schema::SchemaRef, path: &std::path::Path) -> Duration {
    let start = Instant::now();
    let reader = ReaderBuilder::new(Arc::clone(schema)).with_batch_size(8192).build(lines).unwrap();
    let props = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, Arc::clone(schema), Some(props)).unwrap();
    for batch in reader {
        writer.write(&batch.unwrap()).unwrap();
    }
    writer.close().unwrap();
    start.elapsed()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("REMIX_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(300_000);
    let objects = objects(n);
    let items = items(&objects);
    let lines = ndjson(&objects);
    let columns = Columns::derive(&model(), &Mapping::identity()).unwrap();
    let (mut best_ours, mut best_anchor) = (Duration::MAX, Duration::MAX);
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let a = anchor(&lines, &columns.schema, &dir.path().join("anchor.parquet"));
        let o = ours(&items, &dir.path().join("lake"));
        best_anchor = best_anchor.min(a);
        best_ours = best_ours.min(o);
        eprintln!("round {round}: ours {o:?}, arrow-rs {a:?}");
    }
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "object_store parquet (file://): {n} records: ours {:.0} records/s, arrow-json -> ArrowWriter {:.0} records/s, ratio {:.2}",
        rate(best_ours),
        rate(best_anchor),
        rate(best_ours) / rate(best_anchor)
    );
}
