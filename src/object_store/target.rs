//! The `object_store` target: shards of rows (Parquet or JSONL) with manifests, exactly once across
//! crashes and rewinds.
//!
//! Each model has at most one open shard, filled across batches and sealed at `shard.rows_max`,
//! `shard.bytes_max` or `shard.age_max` (checked on every batch and while the log is quiet). While
//! open, its encoded bytes are streamed to a staging key (`upload.rs`); sealed, the staging object
//! is completed, copied to the shard's key and the manifest put. The worker's cursor stays below
//! the first row of any open or unsent shard ([`Target::held_from`]): a crash loses only what was
//! never committed, and the log gives it again.
//!
//! Exactly once:
//! - Keys derive from offset ranges, and shards reach their key with a create-only copy of the
//!   staging object (`CopyMode::Create`: S3 UploadPartCopy completed with `If-None-Match: *`,
//!   Azure Copy Blob with `If-None-Match: *`, GCS `ifGenerationMatch=0`, a no-clobber hard link
//!   on a file system); manifests with a create-only put. A shard is committed when its manifest
//!   exists. Staging objects and S3 uploads left by a crash are removed at `open`.
//! - `open` lists each model's objects: `accepted[model]` is the last offset of its committed shards,
//!   and items at or below it are skipped when re-delivered (the cursor may be older than the
//!   shards: one model's shard can be committed while another model's is still open).
//! - A shard without a manifest (a crash between the two puts) was never committed; its range is
//!   remembered, and the shard rebuilt from the log is sealed at the same last offset. Rebuilding
//!   gives the same bytes (see `shard.rs`), so the conditional put finds the object, its sha256 is
//!   compared with the rebuilt one's and, equal, it counts as written; then the manifest is put.
//!   Unequal (the configuration changed in between), the uncommitted object is replaced.
//! - `rewind(offset)` records `<prefix>/_remix/<target>/rewind.json`, then deletes, per model and
//!   newest first (manifest before shard), every shard whose last offset is after `offset`; a shard
//!   that straddles `offset` goes too and the target rewinds to just before its first offset. `open`
//!   finishes an interrupted rewind; the first `apply` after it removes the record.

use super::columns::{schema_json, Columns};
use super::config::ShardLimits;
use super::manifest::{Describe, Manifest, Span};
use super::shard::{Encoding, Sealed, Shard};
use super::store::{self, target_error, Place};
use super::upload::{Upload, UploadError, PART_BYTES};
use crate::config::Config;
use crate::runtime::delivery::{Batch, Capabilities, Guarantee, Target, TargetError};
use ::object_store::path::Path;
use ::object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// One model's output: its columns and what the manifest says of its schema.
#[derive(Debug, Clone)]
struct ModelOut {
    columns: Arc<Columns>,
    columns_json: serde_json::Value,
    schema_id: Option<String>,
    schema_title: Option<String>,
}

/// Why the target cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Place(#[from] store::PlaceError),
    #[error(transparent)]
    Columns(#[from] super::columns::ColumnError),
    #[error("model {0} is not defined")]
    NoModel(String),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct RewindMarker {
    offset: u64,
    effective: u64,
}

/// Writes shards; see the module docs.
#[derive(Debug)]
pub struct ObjectStoreTarget {
    name: String,
    place: Place,
    encoding: Encoding,
    limits: ShardLimits,
    models: BTreeMap<String, ModelOut>,
    open: BTreeMap<String, Shard>,
    /// The open shards' uploads.
    uploads: BTreeMap<String, Upload>,
    /// Sealed shards not committed yet, oldest first.
    sealed: VecDeque<(Sealed, Upload)>,
    /// Per model, the last offset in a committed, sealed or open shard.
    accepted: BTreeMap<String, u64>,
    /// Per model, the last offset of an uncommitted shard found at open: the rebuilt one ends there.
    forced_end: BTreeMap<String, u64>,
    marker: bool,
}

impl ObjectStoreTarget {
    pub fn new(
        config: &super::config::ObjectStoreTarget,
        all: &Config,
    ) -> Result<ObjectStoreTarget, BuildError> {
        Self::with_models(config, &all.models)
    }

    /// The target for `config`, its models' schemas looked up in `defined`.
    pub fn with_models(
        config: &super::config::ObjectStoreTarget,
        defined: &BTreeMap<String, Arc<crate::models::Model>>,
    ) -> Result<ObjectStoreTarget, BuildError> {
        let place = store::open(&config.url, config.endpoint.as_deref(), config.region.as_deref())?;
        let mut models = BTreeMap::new();
        for (name, binding) in &config.models {
            let model = defined.get(name).ok_or_else(|| BuildError::NoModel(name.clone()))?;
            let columns = Columns::derive(model, &binding.mapping)?;
            let text = |k: &str| model.schema().get(k).and_then(serde_json::Value::as_str).map(str::to_owned);
            models.insert(
                name.clone(),
                ModelOut {
                    columns_json: schema_json(&columns.schema),
                    columns: Arc::new(columns),
                    schema_id: text("$id"),
                    schema_title: text("title"),
                },
            );
        }
        Ok(ObjectStoreTarget {
            name: config.common.name.clone(),
            place,
            encoding: Encoding {
                format: config.format,
                compression: config.compression,
                row_group_rows: config.row_group_rows as usize,
            },
            limits: config.shard,
            models,
            open: BTreeMap::new(),
            uploads: BTreeMap::new(),
            sealed: VecDeque::new(),
            accepted: BTreeMap::new(),
            forced_end: BTreeMap::new(),
            marker: false,
        })
    }

    fn marker_path(&self) -> Path {
        self.place.path(&["_remix", &self.name, "rewind.json"])
    }

    /// Where open shards are staged: `<prefix>/_remix/<target>/open/`.
    fn staging_dir(&self) -> Path {
        self.place.path(&["_remix", &self.name, "open"])
    }

    /// Every model's shards: (committed spans, uncommitted spans), sorted.
    async fn scan(&self) -> Result<BTreeMap<String, (Vec<Span>, Vec<Span>)>, TargetError> {
        let extension = self.encoding.extension();
        let mut out = BTreeMap::new();
        for model in self.models.keys() {
            let dir = self.place.path(&[model]);
            let mut listing = self.place.store.list(Some(&dir));
            let (mut objects, mut manifests) = (Vec::new(), Vec::new());
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(|e| target_error(&format!("list {}", self.place.url), e))?;
                let Some(name) = meta.location.filename() else { continue };
                match Span::parse(name, extension) {
                    Some((span, true)) => manifests.push(span),
                    Some((span, false)) => objects.push(span),
                    None => {}
                }
            }
            objects.sort();
            let (committed, orphans) = objects.into_iter().partition(|s| manifests.contains(s));
            out.insert(model.clone(), (committed, orphans));
        }
        Ok(out)
    }

    /// Sets `accepted` and `forced_end` from a scan.
    fn remember(&mut self, scan: &BTreeMap<String, (Vec<Span>, Vec<Span>)>) {
        self.accepted.clear();
        self.forced_end.clear();
        for (model, (committed, orphans)) in scan {
            let last = committed.iter().map(|s| s.last).max().unwrap_or(0);
            if last > 0 {
                self.accepted.insert(model.clone(), last);
            }
            if let Some(orphan) = orphans.iter().find(|s| s.first > last) {
                self.forced_end.insert(model.clone(), orphan.last);
            }
        }
    }

    /// Deletes, per model and newest first, every shard (manifest first) whose last offset is after
    /// `offset`.
    async fn delete_after(
        &self,
        scan: &BTreeMap<String, (Vec<Span>, Vec<Span>)>,
        offset: u64,
    ) -> Result<(), TargetError> {
        let extension = self.encoding.extension();
        for (model, (committed, orphans)) in scan {
            let mut spans: Vec<Span> = committed.iter().chain(orphans).copied().collect();
            spans.sort();
            for span in spans.iter().rev().filter(|s| s.last > offset) {
                self.delete(&self.place.path(&[model, &span.manifest_name()])).await?;
                self.delete(&self.place.path(&[model, &span.object_name(extension)])).await?;
            }
        }
        Ok(())
    }

    async fn delete(&self, path: &Path) -> Result<(), TargetError> {
        match self.place.store.delete(path).await {
            Ok(()) | Err(::object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(target_error(&format!("delete {path}"), e)),
        }
    }

    async fn read_marker(&self) -> Result<Option<RewindMarker>, TargetError> {
        let path = self.marker_path();
        match self.place.store.get(&path).await {
            Ok(got) => {
                let bytes = got.bytes().await.map_err(|e| target_error(&format!("read {path}"), e))?;
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| TargetError::permanent(None, format!("{path}: {e}")))
            }
            Err(::object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(target_error(&format!("read {path}"), e)),
        }
    }

    /// Puts `bytes` at `path` unless it exists; `Ok(false)`: it existed (nothing written).
    async fn create(&self, path: &Path, bytes: bytes::Bytes) -> Result<bool, TargetError> {
        let options = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.place.store.put_opts(path, PutPayload::from_bytes(bytes), options).await {
            Ok(_) => Ok(true),
            Err(::object_store::Error::AlreadyExists { .. } | ::object_store::Error::Precondition { .. }) => {
                Ok(false)
            }
            Err(e) => Err(target_error(&format!("put {path}"), e)),
        }
    }

    /// Copies `from` to `to` unless `to` exists; `Ok(false)`: it existed (nothing copied).
    async fn copy_new(&self, from: &Path, to: &Path) -> Result<bool, TargetError> {
        match self.place.store.copy_if_not_exists(from, to).await {
            Ok(()) => Ok(true),
            Err(::object_store::Error::AlreadyExists { .. } | ::object_store::Error::Precondition { .. }) => {
                Ok(false)
            }
            Err(e) => Err(target_error(&format!("copy {from} to {to}"), e)),
        }
    }

    async fn get(&self, path: &Path) -> Result<Option<bytes::Bytes>, TargetError> {
        match self.place.store.get(path).await {
            Ok(got) => got.bytes().await.map(Some).map_err(|e| target_error(&format!("read {path}"), e)),
            Err(::object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(target_error(&format!("read {path}"), e)),
        }
    }

    /// The sha256 (hex) of the object at `path`, read as a stream; `None`: there is none.
    async fn sha256_of(&self, path: &Path) -> Result<Option<String>, TargetError> {
        let got = match self.place.store.get(path).await {
            Ok(got) => got,
            Err(::object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(target_error(&format!("read {path}"), e)),
        };
        let mut stream = got.into_stream();
        let mut hasher = Sha256::new();
        while let Some(chunk) = stream.next().await {
            hasher.update(chunk.map_err(|e| target_error(&format!("read {path}"), e))?);
        }
        Ok(Some(super::columns::hex(&hasher.finalize())))
    }

    /// Commits the oldest sealed shard: its last bytes sent, its staging object completed and
    /// copied to the shard's key, the manifest put, the staging object deleted; see the module docs.
    /// Every step may be repeated after an error.
    async fn put_sealed(&mut self) -> Result<(), TargetError> {
        let Some((sealed, upload)) = self.sealed.front_mut() else { return Ok(()) };
        let streamed = |e: UploadError| TargetError::transient(e.to_string()).caused_by(e);
        if let Some(tail) = sealed.tail.take() {
            upload.send(tail).await.map_err(streamed)?;
        }
        upload.complete(&self.place).await.map_err(streamed)?;
        let (sealed, upload) = self.sealed.front().expect("a front");
        let span = Span { first: sealed.first, last: sealed.last };
        let out = &self.models[&sealed.model];
        let extension = self.encoding.extension();
        let shard_path = self.place.path(&[&sealed.model, &span.object_name(extension)]);
        let manifest_path = self.place.path(&[&sealed.model, &span.manifest_name()]);
        let describe = Describe {
            extension,
            format: self.encoding.format.name(),
            compression: self.encoding.compression.name(),
            schema_hash: &out.columns.hash,
            schema_id: out.schema_id.as_deref(),
            schema_title: out.schema_title.as_deref(),
            columns: &out.columns_json,
        };
        let manifest = bytes::Bytes::from(Manifest::of(sealed, sealed.sha256.clone(), &describe).to_bytes());
        if !self.copy_new(&upload.path, &shard_path).await? {
            let same = self.sha256_of(&shard_path).await?.as_ref() == Some(&sealed.sha256);
            if !same {
                if self.get(&manifest_path).await?.is_some() {
                    return Err(TargetError::permanent(
                        None,
                        format!(
                            "{shard_path} exists with other content and a manifest: another writer \
                             (or a changed configuration) uses this prefix; rewind the target to rewrite it"
                        ),
                    ));
                }
                tracing::warn!(target = %self.name, object = %shard_path,
                    "replacing an uncommitted shard whose bytes differ from the rebuilt one");
                self.delete(&shard_path).await?;
                if !self.copy_new(&upload.path, &shard_path).await? {
                    return Err(TargetError::transient(format!("{shard_path} was created meanwhile")));
                }
            }
        }
        if !self.create(&manifest_path, manifest.clone()).await? {
            let existing = self.get(&manifest_path).await?;
            if existing.as_ref() != Some(&manifest) {
                let options = PutOptions { mode: PutMode::Overwrite, ..Default::default() };
                self.place
                    .store
                    .put_opts(&manifest_path, PutPayload::from_bytes(manifest), options)
                    .await
                    .map_err(|e| target_error(&format!("put {manifest_path}"), e))?;
            }
        }
        self.delete(&upload.path).await
    }

    /// Commits every sealed shard, oldest first.
    async fn put_all(&mut self) -> Result<(), TargetError> {
        while !self.sealed.is_empty() {
            self.put_sealed().await?;
            let (sealed, _) = self.sealed.pop_front().expect("a front");
            if self.forced_end.get(&sealed.model).is_some_and(|&end| sealed.last >= end) {
                self.forced_end.remove(&sealed.model);
            }
        }
        Ok(())
    }

    /// Streams what the open shards have encoded, a part at a time.
    async fn send_parts(&mut self) -> Result<(), TargetError> {
        for (model, shard) in &mut self.open {
            let Some(part) = shard.take_part(PART_BYTES) else { continue };
            let upload = self.uploads.get_mut(model).expect("an open shard has an upload");
            upload.send(part).await.map_err(|e| TargetError::transient(e.to_string()).caused_by(e))?;
        }
        Ok(())
    }

    /// Drops the open and sealed shards (a rewind), and what was sent of them.
    async fn discard(&mut self) {
        self.open.clear();
        let uploads = std::mem::take(&mut self.uploads);
        let sealed = std::mem::take(&mut self.sealed);
        for upload in uploads.into_values().chain(sealed.into_iter().map(|(_, u)| u)) {
            upload.abort(&self.place).await;
        }
    }

    /// Seals the open shard of `model` (its rows all settled).
    fn seal(&mut self, model: &str) -> Result<(), TargetError> {
        let Some(shard) = self.open.remove(model) else { return Ok(()) };
        let upload = self.uploads.remove(model).expect("an open shard has an upload");
        if shard.rows == 0 {
            // Nothing was encoded, so nothing was sent.
            return Ok(());
        }
        let sealed = shard
            .seal()
            .map_err(|e| TargetError::permanent(None, format!("cannot encode the shard of {model}: {e}")))?;
        self.sealed.push_back((sealed, upload));
        Ok(())
    }

    /// Seals the shards open for `age_max` or longer.
    fn seal_aged(&mut self) -> Result<(), TargetError> {
        let aged: Vec<String> = self
            .open
            .iter()
            .filter(|(_, s)| s.rows > 0 && s.opened.elapsed() >= self.limits.age_max)
            .map(|(m, _)| m.clone())
            .collect();
        for model in aged {
            self.seal(&model)?;
        }
        Ok(())
    }

    /// Adds the batch's items to the open shards, sealing those that reach a limit. On a row Arrow
    /// cannot hold, the rows not settled yet are dropped (pushed again on the retry).
    fn push_all(&mut self, batch: &Batch) -> Result<(), TargetError> {
        let mut pushed: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let result = self.push_items(batch, &mut pushed);
        if result.is_err() {
            for shard in self.open.values_mut() {
                shard.discard_unsettled();
            }
        }
        // Rows accepted before an error stay in their shard: not to be pushed again.
        for (model, shard) in &self.open {
            if shard.rows > 0 {
                self.accepted.insert(model.clone(), shard.last);
            }
        }
        result
    }

    fn push_items(
        &mut self,
        batch: &Batch,
        pushed: &mut BTreeMap<String, Vec<usize>>,
    ) -> Result<(), TargetError> {
        let row_error = |indices: &[usize], e: super::shard::RowError, fallback: usize| {
            let item = indices.get(e.pushed).copied().unwrap_or(fallback);
            TargetError::permanent(Some(item), e.message)
        };
        for (index, item) in batch.items.iter().enumerate() {
            if self.accepted.get(&item.model).is_some_and(|&a| item.offset <= a) {
                continue;
            }
            let Some(out) = self.models.get(&item.model) else {
                return Err(TargetError::permanent(
                    Some(index),
                    format!("model {} is not configured", item.model),
                ));
            };
            if !self.open.contains_key(&item.model) {
                let shard = Shard::new(&item.model, Arc::clone(&out.columns), &self.encoding)
                    .map_err(|e| TargetError::permanent(Some(index), e.to_string()))?;
                self.open.insert(item.model.clone(), shard);
            }
            if !self.uploads.contains_key(&item.model) {
                let name = format!("{:020}.{}", item.offset, self.encoding.extension());
                let path = self.staging_dir().join(item.model.as_str()).join(name);
                self.uploads.insert(item.model.clone(), Upload::new(&self.place, path));
            }
            let indices = pushed.entry(item.model.clone()).or_default();
            indices.push(index);
            let shard = self.open.get_mut(&item.model).expect("opened above");
            let chunk_done = match shard.push(item) {
                Ok(done) => done,
                Err(e) => return Err(row_error(indices, e, index)),
            };
            if chunk_done {
                indices.clear();
            }
            let forced = self.forced_end.get(&item.model) == Some(&item.offset);
            let full = shard.rows_pushed() >= self.limits.rows_max
                || (chunk_done && shard.size() >= self.limits.bytes_max);
            if forced || full {
                if let Err(e) = shard.settle() {
                    return Err(row_error(indices, e, index));
                }
                indices.clear();
                self.accepted.insert(item.model.clone(), shard.last);
                self.seal(&item.model)?;
            }
        }
        for (model, shard) in &mut self.open {
            if let Err(e) = shard.settle() {
                let indices = pushed.get(model).map_or(&[][..], Vec::as_slice);
                return Err(row_error(indices, e, 0));
            }
        }
        Ok(())
    }

    async fn clear_marker(&mut self) -> Result<(), TargetError> {
        if self.marker {
            self.delete(&self.marker_path()).await?;
            self.marker = false;
        }
        Ok(())
    }
}

impl Target for ObjectStoreTarget {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            collapse: false,
            guarantee: Guarantee::OffsetNamed,
            batch_records_max: 100_000,
            batch_records_default: 20_000,
        }
    }

    async fn open(&mut self, cursor: u64) -> Result<u64, TargetError> {
        let dirs: Vec<Path> = self.models.keys().map(|m| self.place.path(&[m.as_str()])).collect();
        super::upload::clean(&self.place, &self.staging_dir(), &dirs)
            .await
            .map_err(|e| TargetError::transient(e.to_string()).caused_by(e))?;
        let marker = self.read_marker().await?;
        let mut scan = self.scan().await?;
        if let Some(marker) = marker {
            self.delete_after(&scan, marker.offset).await?;
            scan = self.scan().await?;
        }
        self.remember(&scan);
        self.marker = marker.is_some();
        Ok(marker.map_or(cursor, |m| m.effective.min(cursor)))
    }

    async fn apply(&mut self, batch: &Batch) -> Result<(), TargetError> {
        self.clear_marker().await?;
        self.put_all().await?;
        let pushed = self.push_all(batch);
        self.send_parts().await?;
        pushed?;
        self.seal_aged()?;
        self.put_all().await
    }

    async fn rewind(&mut self, offset: u64) -> Result<u64, TargetError> {
        self.discard().await;
        let scan = self.scan().await?;
        let spans = || scan.values().flat_map(|(c, o)| c.iter().chain(o));
        let effective = spans()
            .filter(|s| s.first <= offset && offset < s.last)
            .map(|s| s.first.saturating_sub(1))
            .fold(offset, u64::min);
        if spans().any(|s| s.last > offset) {
            let marker = serde_json::to_vec(&RewindMarker { offset, effective }).expect("serializes");
            let options = PutOptions { mode: PutMode::Overwrite, ..Default::default() };
            let path = self.marker_path();
            self.place
                .store
                .put_opts(&path, PutPayload::from(marker), options)
                .await
                .map_err(|e| target_error(&format!("put {path}"), e))?;
            self.marker = true;
            self.delete_after(&scan, offset).await?;
        }
        let scan = self.scan().await?;
        self.remember(&scan);
        Ok(effective)
    }

    fn held_from(&self) -> Option<u64> {
        let open = self.open.values().filter(|s| s.rows > 0).map(|s| s.first);
        open.chain(self.sealed.iter().map(|(s, _)| s.first)).min()
    }

    async fn idle(&mut self) -> Result<(), TargetError> {
        self.put_all().await?;
        self.seal_aged()?;
        self.put_all().await
    }
}

#[cfg(test)]
mod tests;
