//! The `jsonl` target: dataset files (the AI-dataset and analytics use), exactly once across crashes
//! and rewinds.
//!
//! Layout: one directory per model, `<dir>/<model>/`, holding files named by the log offset range of
//! the items they hold, `<first offset as 20 digits>-<last offset as 20 digits>.jsonl`. Each `apply`
//! writes, per model present in the batch, one file: to `<name>.tmp`, fsynced, renamed, and the model
//! directory fsynced; only then is the batch `Ok`. A line is the remixed object (only the fields a
//! partial upsert carries); bookkeeping fields start with `_`: `{"_op":"delete","key":{...}}`,
//! `{"_op":"truncate"}`. Lines are in log order, keys in a stable (sorted) order. Concatenating a
//! model's files in name order gives its dataset.
//!
//! Exactly once:
//! - `open` removes stale `*.tmp` files and remembers, per model, the highest offset already in a
//!   file (`written`). It returns the local cursor unchanged, and `apply` skips every item whose
//!   offset is at most `written[model]`: those items are already in a file. A crash may leave some
//!   models' files of a batch renamed and not others, and the worker may cut batches differently
//!   when it re-delivers; the skip makes re-delivery exactly once either way.
//! - `rewind(offset)` deletes every file whose last offset is after `offset`, newest first (so what
//!   remains of a model is always a prefix of its dataset). A file that straddles the offset is
//!   deleted too, and the target rewinds to just before its first offset (the minimum over models).
//!   Files of other models that end at or before `offset` are kept: `written` skips their items when
//!   they are re-delivered. The dataset after a rewind and re-delivery is identical line for line.
//! - Before deleting, `rewind` durably records `<dir>/.rewind` (`{"offset":o,"effective":e}`). If the
//!   node dies before the worker stores the rewound cursor, `open` finishes the deletion and returns
//!   `e`, so no deleted line is left undelivered. The first `apply` after a rewind removes the marker
//!   (the worker stores the cursor before it reads again).
//!
//! Errors: I/O errors (disk full, permissions) are transient and retried; an item that cannot be
//! written (a model name that is not a plain directory name, or an unserializable object) is
//! permanent, with its index in the batch.

use crate::record::Op;
use crate::runtime::delivery::{blocking_io, Batch, Capabilities, Guarantee, Item, Target, TargetError};
use crate::util::write_durably;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// The marker of a rewind whose cursor may not be stored yet.
const REWIND_MARKER: &str = ".rewind";

/// Writes dataset files; see the module docs.
#[derive(Debug)]
pub struct JsonlTarget {
    dir: PathBuf,
    /// Per model, the highest log offset already in one of its files.
    written: BTreeMap<String, u64>,
    /// Whether `<dir>/.rewind` may exist.
    marker: bool,
}

/// One data file: the offsets of its first and last item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Span {
    first: u64,
    last: u64,
}

impl Span {
    fn file_name(self) -> String {
        format!("{:020}-{:020}.jsonl", self.first, self.last)
    }

    fn parse(name: &str) -> Option<Span> {
        let stem = name.strip_suffix(".jsonl")?;
        let (first, last) = stem.split_once('-')?;
        let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(first) || !digits(last) {
            return None;
        }
        Some(Span { first: first.parse().ok()?, last: last.parse().ok()? })
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct RewindMarker {
    offset: u64,
    effective: u64,
}

/// A bookkeeping line.
#[derive(Serialize)]
struct Tombstone<'a> {
    #[serde(rename = "_op")]
    op: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a serde_json::Value>,
}

/// The file one `apply` writes for one model.
#[derive(Debug)]
struct NewFile {
    model: String,
    span: Span,
    bytes: Vec<u8>,
}

impl JsonlTarget {
    pub fn new(config: &crate::jsonl::config::JsonlTarget) -> JsonlTarget {
        JsonlTarget { dir: config.dir.clone(), written: BTreeMap::new(), marker: false }
    }

    /// The files to write for `batch`: per model, its items not yet written, in log order.
    fn render(&self, batch: &Batch) -> Result<Vec<NewFile>, TargetError> {
        let mut files: BTreeMap<&str, NewFile> = BTreeMap::new();
        for (index, item) in batch.items.iter().enumerate() {
            if self.written.get(&item.model).is_some_and(|&written| item.offset <= written) {
                continue;
            }
            if !is_plain_name(&item.model) {
                let message = format!("model name '{}' cannot be a directory name", item.model);
                return Err(TargetError::Permanent { item: Some(index), message, source: None });
            }
            let file = files.entry(&item.model).or_insert_with(|| NewFile {
                model: item.model.clone(),
                span: Span { first: item.offset, last: item.offset },
                bytes: Vec::new(),
            });
            file.span.last = item.offset;
            write_line(&mut file.bytes, item).map_err(|e| TargetError::Permanent {
                item: Some(index),
                message: e.to_string(),
                source: None,
            })?;
        }
        Ok(files.into_values().collect())
    }

    async fn clear_marker(&mut self) -> Result<(), TargetError> {
        if self.marker {
            let dir = self.dir.clone();
            blocking_io("jsonl", move || remove_durably(&dir.join(REWIND_MARKER))).await?;
            self.marker = false;
        }
        Ok(())
    }

    fn remember(&mut self, files: &BTreeMap<String, Vec<Span>>) {
        self.written = files
            .iter()
            .filter_map(|(model, spans)| spans.iter().map(|s| s.last).max().map(|last| (model.clone(), last)))
            .collect();
    }
}

impl Target for JsonlTarget {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            collapse: false,
            guarantee: Guarantee::OffsetNamed,
            batch_records_max: 100_000,
            batch_records_default: 20_000,
        }
    }

    async fn open(&mut self, cursor: u64) -> Result<u64, TargetError> {
        let dir = self.dir.clone();
        let (files, marker) = blocking_io("jsonl", move || {
            create_dir_durably(&dir)?;
            remove_durably(&crate::util::tmp_path(&dir.join(REWIND_MARKER)))?;
            let marker = read_marker(&dir)?;
            if let Some(marker) = marker {
                delete_after(&dir, &scan(&dir)?, marker.offset)?;
            }
            Ok((scan(&dir)?, marker))
        })
        .await?;
        self.remember(&files);
        self.marker = marker.is_some();
        Ok(marker.map_or(cursor, |m| m.effective.min(cursor)))
    }

    async fn apply(&mut self, batch: &Batch) -> Result<(), TargetError> {
        let files = self.render(batch)?;
        self.clear_marker().await?;
        for file in files {
            let (dir, model, span) = (self.dir.join(&file.model), file.model, file.span);
            blocking_io("jsonl", move || {
                create_dir_durably(&dir)?;
                write_durably(&dir.join(span.file_name()), &file.bytes).map_err(io::Error::other)
            })
            .await?;
            self.written.insert(model, span.last);
        }
        Ok(())
    }

    async fn rewind(&mut self, offset: u64) -> Result<u64, TargetError> {
        let dir = self.dir.clone();
        let (files, effective) = blocking_io("jsonl", move || {
            create_dir_durably(&dir)?;
            let files = scan(&dir)?;
            let effective = rewind_point(&files, offset);
            if files.values().flatten().any(|span| span.last > offset) {
                let marker = RewindMarker { offset, effective };
                let bytes = serde_json::to_vec(&marker).map_err(io::Error::other)?;
                write_durably(&dir.join(REWIND_MARKER), &bytes).map_err(io::Error::other)?;
                delete_after(&dir, &files, offset)?;
                return Ok((scan(&dir)?, Some(effective)));
            }
            Ok((files, None))
        })
        .await?;
        self.remember(&files);
        self.marker |= effective.is_some();
        Ok(effective.unwrap_or(offset))
    }
}

/// Appends the line of `item` (and a newline) to `out`.
fn write_line(out: &mut Vec<u8>, item: &Item) -> serde_json::Result<()> {
    match (item.op, &item.data) {
        (Op::Upsert, Some(data)) => serde_json::to_writer(&mut *out, data)?,
        (Op::Upsert, None) => serde_json::to_writer(&mut *out, &item.key)?,
        (Op::Delete, _) => {
            serde_json::to_writer(&mut *out, &Tombstone { op: "delete", key: Some(&item.key) })?
        }
        (Op::Truncate, _) => serde_json::to_writer(&mut *out, &Tombstone { op: "truncate", key: None })?,
    }
    out.push(b'\n');
    Ok(())
}

/// Whether `name` can be used as a directory name as is.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0'])
}

/// Where a rewind to `offset` lands: before the first offset of any file that straddles it.
fn rewind_point(files: &BTreeMap<String, Vec<Span>>, offset: u64) -> u64 {
    files
        .values()
        .flatten()
        .filter(|span| span.first <= offset && offset < span.last)
        .map(|span| span.first.saturating_sub(1))
        .fold(offset, u64::min)
}

/// Deletes, per model and newest first, every file whose last offset is after `offset`.
fn delete_after(dir: &Path, files: &BTreeMap<String, Vec<Span>>, offset: u64) -> io::Result<()> {
    for (model, spans) in files {
        for span in spans.iter().rev().filter(|span| span.last > offset) {
            remove_durably(&dir.join(model).join(span.file_name()))?;
        }
    }
    Ok(())
}

/// The data files of every model directory, sorted; stale temp files are removed on the way.
fn scan(dir: &Path) -> io::Result<BTreeMap<String, Vec<Span>>> {
    let mut models = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(model) = entry.file_name().into_string() else { continue };
        if is_plain_name(&model) && entry.file_type()?.is_dir() {
            models.insert(model, scan_model(&entry.path())?);
        }
    }
    Ok(models)
}

fn scan_model(dir: &Path) -> io::Result<Vec<Span>> {
    let mut spans = Vec::new();
    let mut removed = false;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        if name.ends_with(".tmp") {
            std::fs::remove_file(entry.path())?;
            removed = true;
        } else if let Some(span) = Span::parse(&name) {
            spans.push(span);
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    spans.sort();
    Ok(spans)
}

fn read_marker(dir: &Path) -> io::Result<Option<RewindMarker>> {
    let path = dir.join(REWIND_MARKER);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes a file (if it exists) and fsyncs its directory.
fn remove_durably(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("."))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates a directory and its missing parents, fsyncing each parent that gained an entry.
fn create_dir_durably(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    create_dir_durably(parent)?;
    match std::fs::create_dir(path) {
        Ok(()) => sync_dir(parent),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BatchConfig, OnError, TargetCommon, TruncatePolicy};
    use serde_json::json;
    use std::time::Duration;

    fn config(dir: &Path) -> crate::jsonl::config::JsonlTarget {
        crate::jsonl::config::JsonlTarget {
            common: TargetCommon {
                name: "dataset".into(),
                rate_limit: None,
                batch: BatchConfig { records_max: Some(100), linger: Duration::ZERO },
                on_error: OnError::Pause,
                truncate: TruncatePolicy::Apply,
            },
            dir: dir.to_path_buf(),
            models: BTreeMap::new(),
        }
    }

    fn upsert(offset: u64, model: &str, id: u64) -> Item {
        let data = json!({"id": id, "name": format!("n{offset}"), "amount": offset * 10});
        Item {
            offset,
            timestamp_ms: 1_700_000_000_000 + offset,
            model: model.into(),
            source: "s".into(),
            op: Op::Upsert,
            key: json!({"id": id}),
            data: data.as_object().cloned().map(crate::runtime::delivery::Fields::Map),
            unchanged: Vec::new(),
        }
    }

    fn delete(offset: u64, model: &str, id: u64) -> Item {
        Item { op: Op::Delete, data: None, ..upsert(offset, model, id) }
    }

    fn truncate(offset: u64, model: &str) -> Item {
        Item { op: Op::Truncate, data: None, key: serde_json::Value::Null, ..upsert(offset, model, 0) }
    }

    /// Items at offsets 1..=20 alternating between two models, with gaps (offsets for no model).
    fn history() -> Vec<Item> {
        (1..=20u64)
            .filter(|o| o % 7 != 0)
            .map(|o| match o % 5 {
                0 => delete(o, "order", o / 2),
                1 | 3 => upsert(o, "customer", o % 4),
                _ => upsert(o, "order", o / 2),
            })
            .collect()
    }

    /// The batch covering `first..=last` of `items`.
    fn batch(items: &[Item], first: u64, last: u64) -> Batch {
        let items = items.iter().filter(|i| (first..=last).contains(&i.offset)).cloned().collect();
        Batch { first_offset: first, last_offset: last, items }
    }

    /// A model's dataset: its files' lines, in name order.
    fn dataset(dir: &Path, model: &str) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir.join(model))
            .map(|d| d.map(|e| e.unwrap().file_name().into_string().unwrap()).collect())
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .flat_map(|name| {
                assert!(Span::parse(name).is_some(), "unexpected file {name}");
                let text = std::fs::read_to_string(dir.join(model).join(name)).unwrap();
                text.lines().map(str::to_owned).collect::<Vec<_>>()
            })
            .collect()
    }

    fn files(dir: &Path, model: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join(model))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// The datasets of both models after applying `cuts` (inclusive ranges) to a fresh target.
    async fn reference(cuts: &[(u64, u64)]) -> (Vec<String>, Vec<String>) {
        let tmp = tempfile::tempdir().unwrap();
        let mut target = JsonlTarget::new(&config(tmp.path()));
        target.open(0).await.unwrap();
        for &(first, last) in cuts {
            target.apply(&batch(&history(), first, last)).await.unwrap();
        }
        (dataset(tmp.path(), "customer"), dataset(tmp.path(), "order"))
    }

    #[tokio::test]
    async fn writes_one_file_per_model_and_batch_named_by_offsets() {
        let tmp = tempfile::tempdir().unwrap();
        let mut target = JsonlTarget::new(&config(tmp.path()));
        assert_eq!(target.open(0).await.unwrap(), 0);
        target.apply(&batch(&history(), 1, 5)).await.unwrap();
        target.apply(&batch(&history(), 6, 9)).await.unwrap();
        assert_eq!(
            files(tmp.path(), "customer"),
            [
                "00000000000000000001-00000000000000000003.jsonl",
                "00000000000000000006-00000000000000000008.jsonl"
            ]
        );
        assert_eq!(
            files(tmp.path(), "order"),
            [
                "00000000000000000002-00000000000000000005.jsonl",
                "00000000000000000009-00000000000000000009.jsonl"
            ]
        );
        assert_eq!(
            dataset(tmp.path(), "customer"),
            [
                r#"{"amount":10,"id":1,"name":"n1"}"#,
                r#"{"amount":30,"id":3,"name":"n3"}"#,
                r#"{"amount":60,"id":2,"name":"n6"}"#,
                r#"{"amount":80,"id":0,"name":"n8"}"#,
            ]
        );
        assert_eq!(
            dataset(tmp.path(), "order"),
            [
                r#"{"amount":20,"id":1,"name":"n2"}"#,
                r#"{"amount":40,"id":2,"name":"n4"}"#,
                r#"{"_op":"delete","key":{"id":2}}"#,
                r#"{"amount":90,"id":4,"name":"n9"}"#,
            ]
        );
    }

    #[tokio::test]
    async fn tombstones_and_partial_upserts() {
        let tmp = tempfile::tempdir().unwrap();
        let mut target = JsonlTarget::new(&config(tmp.path()));
        target.open(0).await.unwrap();
        let partial = Item {
            data: json!({"id": 1, "name": "x"})
                .as_object()
                .cloned()
                .map(crate::runtime::delivery::Fields::Map),
            unchanged: vec!["amount".into()],
            ..upsert(3, "m", 1)
        };
        let items = vec![delete(1, "m", 1), truncate(2, "m"), partial];
        target.apply(&Batch { first_offset: 1, last_offset: 3, items }).await.unwrap();
        assert_eq!(
            dataset(tmp.path(), "m"),
            [r#"{"_op":"delete","key":{"id":1}}"#, r#"{"_op":"truncate"}"#, r#"{"id":1,"name":"x"}"#]
        );
    }

    #[tokio::test]
    async fn redelivery_after_a_crash_cut_differently_writes_no_duplicate() {
        let expected = reference(&[(1, 20)]).await;
        let tmp = tempfile::tempdir().unwrap();
        let mut target = JsonlTarget::new(&config(tmp.path()));
        target.open(0).await.unwrap();
        target.apply(&batch(&history(), 1, 5)).await.unwrap();
        // The batch 6..=12 was renamed for `order` only when the node died.
        let mut torn = batch(&history(), 6, 12);
        torn.items.retain(|i| i.model == "order");
        target.apply(&torn).await.unwrap();
        drop(target);
        // Restarted with a cursor that only covers 1..=3, batches cut differently.
        let mut target = JsonlTarget::new(&config(tmp.path()));
        assert_eq!(target.open(3).await.unwrap(), 3);
        for (first, last) in [(4, 4), (5, 9), (10, 15), (16, 20)] {
            target.apply(&batch(&history(), first, last)).await.unwrap();
        }
        assert_eq!((dataset(tmp.path(), "customer"), dataset(tmp.path(), "order")), expected);
    }

    #[tokio::test]
    async fn retry_after_a_failed_model_writes_no_duplicate() {
        let expected = reference(&[(1, 20)]).await;
        let tmp = tempfile::tempdir().unwrap();
        let mut target = JsonlTarget::new(&config(tmp.path()));
        target.open(0).await.unwrap();
        // `order` cannot be written: a regular file is in the way.
        std::fs::write(tmp.path().join("order"), b"").unwrap();
        let error = target.apply(&batch(&history(), 1, 20)).await.unwrap_err();
        assert!(matches!(error, TargetError::Transient { .. }), "{error:?}");
        assert_eq!(files(tmp.path(), "customer").len(), 1);
        std::fs::remove_file(tmp.path().join("order")).unwrap();
        target.apply(&batch(&history(), 1, 20)).await.unwrap();
        assert_eq!((dataset(tmp.path(), "customer"), dataset(tmp.path(), "order")), expected);
    }

    #[tokio::test]
    async fn rewind_to_start_and_redelivery_give_identical_content() {
        let tmp = tempfile::tempdir().unwrap();
        let mut target = JsonlTarget::new(&config(tmp.path()));
        target.open(0).await.unwrap();
        for (first, last) in [(1, 6), (7, 13), (14, 20)] {
            target.apply(&batch(&history(), first, last)).await.unwrap();
        }
        let before = (dataset(tmp.path(), "customer"), dataset(tmp.path(), "order"));
        assert_eq!(target.rewind(0).await.unwrap(), 0);
        assert!(dataset(tmp.path(), "customer").is_empty() && dataset(tmp.path(), "order").is_empty());
        for (first, last) in [(1, 2), (3, 17), (18, 20)] {
            target.apply(&batch(&history(), first, last)).await.unwrap();
        }
        assert_eq!((dataset(tmp.path(), "customer"), dataset(tmp.path(), "order")), before);
        assert!(!tmp.path().join(REWIND_MARKER).exists());
    }

    #[tokio::test]
    async fn straddling_rewind_goes_back_to_the_file_start() {
        let expected = reference(&[(1, 20)]).await;
        let tmp = tempfile::tempdir().unwrap();
        let mut target = JsonlTarget::new(&config(tmp.path()));
        target.open(0).await.unwrap();
        // customer: 1-3, 6-11, 13-18; order: 2-5, 9-12, 15-20.
        for (first, last) in [(1, 5), (6, 12), (13, 20)] {
            target.apply(&batch(&history(), first, last)).await.unwrap();
        }
        // 8 is inside customer's 6-11; order's 9-12 starts after it.
        assert_eq!(target.rewind(8).await.unwrap(), 5);
        assert_eq!(files(tmp.path(), "customer"), ["00000000000000000001-00000000000000000003.jsonl"]);
        assert_eq!(files(tmp.path(), "order"), ["00000000000000000002-00000000000000000005.jsonl"]);
        for (first, last) in [(6, 9), (10, 20)] {
            target.apply(&batch(&history(), first, last)).await.unwrap();
        }
        assert_eq!((dataset(tmp.path(), "customer"), dataset(tmp.path(), "order")), expected);
    }

    #[tokio::test]
    async fn straddling_rewind_keeps_other_models_files_and_skips_their_items() {
        let expected = reference(&[(1, 20)]).await;
        let tmp = tempfile::tempdir().unwrap();
        let mut target = JsonlTarget::new(&config(tmp.path()));
        target.open(0).await.unwrap();
        // order: 2-5, then customer: 1-8 (as a crash and a different cut can leave them), then 9-20.
        let only = |model: &str, first, last| {
            let mut b = batch(&history(), first, last);
            b.items.retain(|i| i.model == model);
            b
        };
        target.apply(&only("order", 1, 5)).await.unwrap();
        target.apply(&only("customer", 1, 8)).await.unwrap();
        target.apply(&batch(&history(), 9, 20)).await.unwrap();
        // customer's 1-8 straddles 6: back to 0; order's 2-5 ends before 6 and stays.
        assert_eq!(target.rewind(6).await.unwrap(), 0);
        assert_eq!(files(tmp.path(), "order"), ["00000000000000000002-00000000000000000005.jsonl"]);
        assert!(files(tmp.path(), "customer").is_empty());
        target.apply(&batch(&history(), 1, 20)).await.unwrap();
        assert_eq!((dataset(tmp.path(), "customer"), dataset(tmp.path(), "order")), expected);
    }

    #[tokio::test]
    async fn a_crash_after_a_rewind_still_redelivers_from_the_rewind_point() {
        let expected = reference(&[(1, 20)]).await;
        let tmp = tempfile::tempdir().unwrap();
        let mut target = JsonlTarget::new(&config(tmp.path()));
        target.open(0).await.unwrap();
        for (first, last) in [(1, 5), (6, 12), (13, 20)] {
            target.apply(&batch(&history(), first, last)).await.unwrap();
        }
        assert_eq!(target.rewind(8).await.unwrap(), 5);
        drop(target);
        // The node died before the worker stored cursor 5: the local cursor still says 20.
        let mut target = JsonlTarget::new(&config(tmp.path()));
        assert_eq!(target.open(20).await.unwrap(), 5);
        target.apply(&batch(&history(), 6, 20)).await.unwrap();
        assert!(!tmp.path().join(REWIND_MARKER).exists());
        assert_eq!((dataset(tmp.path(), "customer"), dataset(tmp.path(), "order")), expected);
        // Once applied, a restart resumes from the local cursor again.
        let mut target = JsonlTarget::new(&config(tmp.path()));
        assert_eq!(target.open(20).await.unwrap(), 20);
    }

    #[tokio::test]
    async fn open_finishes_an_interrupted_rewind() {
        let tmp = tempfile::tempdir().unwrap();
        let mut target = JsonlTarget::new(&config(tmp.path()));
        target.open(0).await.unwrap();
        target.apply(&batch(&history(), 1, 20)).await.unwrap();
        // A rewind to 0 recorded its marker, then the node died before deleting anything.
        std::fs::write(tmp.path().join(REWIND_MARKER), br#"{"offset":0,"effective":0}"#).unwrap();
        let mut target = JsonlTarget::new(&config(tmp.path()));
        assert_eq!(target.open(20).await.unwrap(), 0);
        assert!(dataset(tmp.path(), "customer").is_empty() && dataset(tmp.path(), "order").is_empty());
    }

    #[tokio::test]
    async fn open_removes_stale_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let mut target = JsonlTarget::new(&config(tmp.path()));
        target.open(0).await.unwrap();
        target.apply(&batch(&history(), 1, 4)).await.unwrap();
        let stale = tmp.path().join("order").join(format!("{}.tmp", Span { first: 5, last: 9 }.file_name()));
        std::fs::write(&stale, b"{\"half\":").unwrap();
        let mut target = JsonlTarget::new(&config(tmp.path()));
        assert_eq!(target.open(4).await.unwrap(), 4);
        assert!(!stale.exists());
        assert_eq!(files(tmp.path(), "order"), ["00000000000000000002-00000000000000000004.jsonl"]);
    }

    #[tokio::test]
    async fn a_model_name_that_is_not_a_directory_name_is_permanent() {
        let tmp = tempfile::tempdir().unwrap();
        let mut target = JsonlTarget::new(&config(tmp.path()));
        target.open(0).await.unwrap();
        let items = vec![upsert(1, "ok", 1), upsert(2, "../escape", 2)];
        let error = target.apply(&Batch { first_offset: 1, last_offset: 2, items }).await.unwrap_err();
        assert!(matches!(error, TargetError::Permanent { item: Some(1), .. }), "{error:?}");
        assert!(!tmp.path().join("ok").exists(), "nothing is written when a batch is refused");
    }

    #[tokio::test]
    async fn io_errors_are_transient() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("not-a-dir");
        std::fs::write(&file, b"").unwrap();
        let mut target = JsonlTarget::new(&config(&file));
        assert!(matches!(target.open(0).await, Err(TargetError::Transient { .. })));
    }

    #[test]
    fn span_names_round_trip() {
        let span = Span { first: 7, last: 12_345_678_901 };
        assert_eq!(span.file_name(), "00000000000000000007-00000000012345678901.jsonl");
        assert_eq!(Span::parse(&span.file_name()), Some(span));
        for bad in ["1-2.jsonl", "00000000000000000007-00000000012345678901.jsonl.tmp", "x.jsonl"] {
            assert_eq!(Span::parse(bad), None, "{bad}");
        }
    }
}
