use super::*;
use crate::config::{BatchConfig, OnError, OutputBinding, TargetCommon, TruncatePolicy};
use crate::mapping::Mapping;
use crate::models::Model;
use crate::object_store::config::{Compression, Format, ObjectStoreTarget as Config, ShardLimits};
use crate::record::Op;
use crate::runtime::delivery::{Fields, Item};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::json;
use std::path::Path as FsPath;
use std::time::Duration;

fn config(dir: &FsPath, format: Format, rows_max: u64) -> Config {
    let models = ["customer", "order"]
        .into_iter()
        .map(|m| (m.to_owned(), OutputBinding { mapping: Mapping::identity() }))
        .collect();
    Config {
        common: TargetCommon {
            name: "lake".into(),
            rate_limit: None,
            batch: BatchConfig { records_max: Some(100), linger: Duration::ZERO },
            on_error: OnError::Pause,
            truncate: TruncatePolicy::Apply,
        },
        url: format!("file://{}", dir.display()),
        endpoint: None,
        region: None,
        format,
        compression: if format == Format::Parquet { Compression::Zstd } else { Compression::None },
        shard: ShardLimits { rows_max, bytes_max: 1 << 30, age_max: Duration::from_secs(3600) },
        row_group_rows: 1000,
        models,
    }
}

fn models() -> BTreeMap<String, Arc<Model>> {
    let schema = json!({"type": "object", "title": "Thing", "$id": "https://example.com/thing",
        "properties": {"id": {"type": "integer"}, "name": {"type": ["string", "null"]},
        "amount": {"type": "integer"}, "extra": {"type": ["object", "null"]}}});
    ["customer", "order"]
        .into_iter()
        .map(|m| (m.to_owned(), Arc::new(Model::new(m, schema.clone(), &["id".to_owned()]).unwrap())))
        .collect()
}

fn target(dir: &FsPath, format: Format, rows_max: u64) -> ObjectStoreTarget {
    ObjectStoreTarget::with_models(&config(dir, format, rows_max), &models()).unwrap()
}

fn upsert(offset: u64, model: &str, id: u64) -> Item {
    let data = json!({"id": id, "name": format!("n{offset}"), "amount": offset * 10, "extra": {"k": offset}});
    Item {
        offset,
        timestamp_ms: 1_700_000_000_000 + offset,
        model: model.into(),
        op: Op::Upsert,
        key: json!({"id": id}),
        data: data.as_object().cloned().map(Fields::Map),
        unchanged: Vec::new(),
        source: "hooks".into(),
    }
}

/// Items at offsets 1..=n over two models, with deletes and gaps.
fn history(n: u64) -> Vec<Item> {
    (1..=n)
        .filter(|o| o % 7 != 0)
        .map(|o| match o % 5 {
            0 => Item { op: Op::Delete, data: None, ..upsert(o, "order", o / 2) },
            1 | 3 => upsert(o, "customer", o % 4),
            _ => upsert(o, "order", o / 2),
        })
        .collect()
}

fn batch(items: &[Item], first: u64, last: u64) -> Batch {
    let items = items.iter().filter(|i| (first..=last).contains(&i.offset)).cloned().collect();
    Batch { first_offset: first, last_offset: last, items }
}

/// A model's object names (shards and manifests), sorted.
fn names(dir: &FsPath, model: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(model))
        .map(|d| d.map(|e| e.unwrap().file_name().into_string().unwrap()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Every shard's bytes, by (model, name).
fn contents(dir: &FsPath) -> BTreeMap<(String, String), Vec<u8>> {
    let mut out = BTreeMap::new();
    for model in ["customer", "order"] {
        for name in names(dir, model) {
            out.insert((model.to_owned(), name.clone()), std::fs::read(dir.join(model).join(&name)).unwrap());
        }
    }
    out
}

/// `_offset` of every row of a model's committed parquet shards, in name order.
fn offsets(dir: &FsPath, model: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for name in names(dir, model).into_iter().filter(|n| n.ends_with(".parquet")) {
        let manifest = dir.join(model).join(name.replace(".parquet", ".manifest.json"));
        assert!(manifest.exists(), "{name} has no manifest");
        let file = std::fs::File::open(dir.join(model).join(&name)).unwrap();
        for batch in ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap() {
            let batch = batch.unwrap();
            let column = batch.column_by_name("_offset").unwrap();
            let values = column.as_any().downcast_ref::<arrow_array::Int64Array>().unwrap();
            out.extend(values.iter().map(Option::unwrap));
        }
    }
    out
}

fn expected_offsets(items: &[Item], model: &str) -> Vec<i64> {
    items.iter().filter(|i| i.model == model).map(|i| i.offset as i64).collect()
}

async fn apply_all(target: &mut ObjectStoreTarget, cuts: &[(u64, u64)], items: &[Item]) {
    for &(first, last) in cuts {
        target.apply(&batch(items, first, last)).await.unwrap();
    }
}

#[tokio::test]
async fn shards_seal_at_rows_max_with_manifests_and_hold_the_cursor() {
    let tmp = tempfile::tempdir().unwrap();
    let items = history(40);
    let mut t = target(tmp.path(), Format::Parquet, 5);
    assert_eq!(t.open(0).await.unwrap(), 0);
    apply_all(&mut t, &[(1, 12)], &items).await;
    // customer: 1,3,6,8,11 sealed (5 rows); order: 2,4,5,9,10 sealed, 12 open.
    assert_eq!(
        names(tmp.path(), "customer"),
        [
            "00000000000000000001-00000000000000000011.manifest.json",
            "00000000000000000001-00000000000000000011.parquet"
        ]
    );
    assert_eq!(t.held_from(), Some(12));
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(tmp.path().join("customer/00000000000000000001-00000000000000000011.manifest.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!((manifest.first_offset, manifest.last_offset, manifest.rows), (1, 11, 5));
    assert_eq!(manifest.schema_title.as_deref(), Some("Thing"));
    assert_eq!(manifest.schema_id.as_deref(), Some("https://example.com/thing"));
    let bytes =
        std::fs::read(tmp.path().join("customer/00000000000000000001-00000000000000000011.parquet")).unwrap();
    assert_eq!(manifest.sha256, super::super::columns::hex(&Sha256::digest(&bytes)));
    assert_eq!(manifest.bytes, bytes.len() as u64);
    assert_eq!(manifest.min_time, crate::time::format_ms(1_700_000_000_001));
    apply_all(&mut t, &[(13, 40)], &items).await;
    assert_eq!(offsets(tmp.path(), "customer").len() % 5, 0);
}

#[tokio::test]
async fn the_same_items_cut_differently_give_the_same_bytes() {
    let items = history(200);
    let mut all = Vec::new();
    for (cuts, format) in [
        (vec![(1, 200)], Format::Parquet),
        (vec![(1, 3), (4, 77), (78, 78), (79, 200)], Format::Parquet),
        (vec![(1, 200)], Format::Jsonl),
        (vec![(1, 50), (51, 199), (200, 200)], Format::Jsonl),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let mut t = target(tmp.path(), format, 30);
        t.open(0).await.unwrap();
        apply_all(&mut t, &cuts, &items).await;
        all.push(contents(tmp.path()));
    }
    assert!(!all[0].is_empty() && !all[2].is_empty());
    assert_eq!(all[0], all[1]);
    assert_eq!(all[2], all[3]);
}

#[tokio::test]
async fn a_crash_between_shard_and_manifest_is_verified_by_rebuilding() {
    let items = history(60);
    let reference = tempfile::tempdir().unwrap();
    let mut t = target(reference.path(), Format::Parquet, 10);
    t.open(0).await.unwrap();
    apply_all(&mut t, &[(1, 60)], &items).await;
    let expected = contents(reference.path());

    let tmp = tempfile::tempdir().unwrap();
    let mut t = target(tmp.path(), Format::Parquet, 10);
    t.open(0).await.unwrap();
    apply_all(&mut t, &[(1, 60)], &items).await;
    // The node died after the last customer shard's put, before its manifest; the cursor was 0.
    let last_manifest =
        names(tmp.path(), "customer").into_iter().rfind(|n| n.ends_with(".manifest.json")).unwrap();
    std::fs::remove_file(tmp.path().join("customer").join(&last_manifest)).unwrap();
    let mut t = target(tmp.path(), Format::Parquet, 10);
    assert_eq!(t.open(0).await.unwrap(), 0);
    apply_all(&mut t, &[(1, 17), (18, 60)], &items).await;
    assert_eq!(contents(tmp.path()), expected);
    assert_eq!(offsets(tmp.path(), "customer"), expected_offsets(&items, "customer")[..20]);
}

#[tokio::test]
async fn an_uncommitted_shard_with_other_bytes_is_replaced() {
    let items = history(30);
    let tmp = tempfile::tempdir().unwrap();
    let mut t = target(tmp.path(), Format::Jsonl, 4);
    t.open(0).await.unwrap();
    apply_all(&mut t, &[(1, 30)], &items).await;
    let expected = contents(tmp.path());
    let shard = names(tmp.path(), "order").into_iter().find(|n| n.ends_with(".jsonl")).unwrap();
    std::fs::write(tmp.path().join("order").join(&shard), b"{\"half\":").unwrap();
    std::fs::remove_file(tmp.path().join("order").join(shard.replace(".jsonl", ".manifest.json"))).unwrap();
    // Every later order shard is gone too (they were never written).
    for name in names(tmp.path(), "order").into_iter().filter(|n| *n > shard) {
        std::fs::remove_file(tmp.path().join("order").join(name)).unwrap();
    }
    let mut t = target(tmp.path(), Format::Jsonl, 4);
    t.open(0).await.unwrap();
    apply_all(&mut t, &[(1, 30)], &items).await;
    assert_eq!(contents(tmp.path()), expected);
}

#[tokio::test]
async fn redelivery_from_an_older_cursor_skips_committed_rows() {
    let items = history(80);
    let tmp = tempfile::tempdir().unwrap();
    let mut t = target(tmp.path(), Format::Parquet, 8);
    t.open(0).await.unwrap();
    apply_all(&mut t, &[(1, 50)], &items).await;
    let held = t.held_from().unwrap();
    drop(t);
    // Restarted from the cursor the worker could store (below the first open row).
    let mut t = target(tmp.path(), Format::Parquet, 8);
    assert_eq!(t.open(held - 1).await.unwrap(), held - 1);
    apply_all(&mut t, &[(held, 61), (62, 80)], &items).await;
    // Seal what is open by age.
    t.limits.age_max = Duration::ZERO;
    t.idle().await.unwrap();
    assert_eq!(t.held_from(), None);
    for model in ["customer", "order"] {
        assert_eq!(offsets(tmp.path(), model), expected_offsets(&items, model), "{model}");
    }
}

#[tokio::test]
async fn straddling_rewind_goes_back_to_the_shard_start_and_rewrites_the_same_shards() {
    let items = history(60);
    let tmp = tempfile::tempdir().unwrap();
    let mut t = target(tmp.path(), Format::Parquet, 6);
    t.open(0).await.unwrap();
    apply_all(&mut t, &[(1, 60)], &items).await;
    let before = contents(tmp.path());
    let effective = t.rewind(20).await.unwrap();
    assert!(effective <= 20);
    for (model, name) in before.keys() {
        let span = Span::parse(name, "parquet").unwrap().0;
        assert_eq!(tmp.path().join(model).join(name).exists(), span.last <= 20, "{model}/{name}");
    }
    apply_all(&mut t, &[(effective + 1, 60)], &items).await;
    assert_eq!(contents(tmp.path()), before);
    assert!(!tmp.path().join("_remix/lake/rewind.json").exists());
}

#[tokio::test]
async fn open_finishes_an_interrupted_rewind() {
    let items = history(30);
    let tmp = tempfile::tempdir().unwrap();
    let mut t = target(tmp.path(), Format::Jsonl, 3);
    t.open(0).await.unwrap();
    apply_all(&mut t, &[(1, 30)], &items).await;
    std::fs::create_dir_all(tmp.path().join("_remix/lake")).unwrap();
    std::fs::write(tmp.path().join("_remix/lake/rewind.json"), br#"{"offset":0,"effective":0}"#).unwrap();
    let mut t = target(tmp.path(), Format::Jsonl, 3);
    assert_eq!(t.open(30).await.unwrap(), 0);
    assert!(names(tmp.path(), "customer").is_empty() && names(tmp.path(), "order").is_empty());
}

#[tokio::test]
async fn a_value_arrow_cannot_hold_is_permanent_with_its_item() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = target(tmp.path(), Format::Parquet, 100);
    t.open(0).await.unwrap();
    let mut bad = upsert(3, "customer", 3);
    bad.data = json!({"id": 3, "amount": "lots"}).as_object().cloned().map(Fields::Map);
    let items = vec![upsert(1, "customer", 1), upsert(2, "order", 2), bad, upsert(4, "customer", 4)];
    let b = Batch { first_offset: 1, last_offset: 4, items };
    let error = t.apply(&b).await.unwrap_err();
    assert!(matches!(error, TargetError::Permanent { item: Some(2), .. }), "{error:?}");
    // dead_letter: the batch again without the item at fault.
    let mut b = b;
    b.items.remove(2);
    t.apply(&b).await.unwrap();
    t.limits.age_max = Duration::ZERO;
    t.idle().await.unwrap();
    assert_eq!(offsets(tmp.path(), "customer"), [1, 4]);
    assert_eq!(offsets(tmp.path(), "order"), [2]);
}

#[tokio::test]
async fn jsonl_rows_carry_bookkeeping_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = target(tmp.path(), Format::Jsonl, 3);
    t.open(0).await.unwrap();
    let partial = Item { unchanged: vec!["extra".into()], ..upsert(3, "order", 1) };
    let truncate =
        Item { op: Op::Truncate, data: None, key: serde_json::Value::Null, ..upsert(2, "order", 0) };
    let delete = Item { op: Op::Delete, data: None, ..upsert(1, "order", 1) };
    t.apply(&Batch { first_offset: 1, last_offset: 3, items: vec![delete, truncate, partial] })
        .await
        .unwrap();
    let text =
        std::fs::read_to_string(tmp.path().join("order/00000000000000000001-00000000000000000003.jsonl"))
            .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], r#"{"_op":"delete","_offset":1,"_time":"2023-11-14T22:13:20.001Z","id":1}"#);
    assert_eq!(lines[1], r#"{"_op":"truncate","_offset":2,"_time":"2023-11-14T22:13:20.002Z"}"#);
    assert!(lines[2].starts_with(r#"{"_op":"upsert","_offset":3,"_time":"2023-11-14T22:13:20.003Z","_unchanged":["extra"],"amount":30"#), "{}", lines[2]);
}
