//! Streaming an open shard to the store: the encoded bytes leave in parts while the shard fills, so
//! memory holds one row group and a few parts, not the shard.
//!
//! A shard's key names its last offset, which is known only when it is sealed, so the parts go to a
//! staging key, `<prefix>/_remix/<target>/open/<model>/<first offset>.<ext>`: a provider's multipart
//! upload (S3, Azure blocks, GCS), or on `file://` a staging file appended to and fsynced. Sealing
//! completes the staging object and copies it to the shard's key with a create-only copy (see
//! `target.rs`). Parts are sent in the background, at most [`PARTS_IN_FLIGHT_MAX`] at a time; a part
//! that failed is kept and sent again under the same part number on the next call, so a network
//! loss costs a retry, never the shard.
//!
//! Leftovers of a crash (uploads never completed, staging objects never copied) are removed when
//! the target opens ([`clean`]): S3 uploads under the target's keys are listed and aborted, staging
//! objects deleted. Azure has no upload to abort (uncommitted blocks expire after 7 days) and GCS
//! uploads are not listed (a lifecycle rule aborts them).

use super::store::{Parts, Place, S3Uploads};
use ::object_store::multipart::{MultipartStore, PartId};
use ::object_store::path::Path;
use ::object_store::{MultipartId, ObjectStoreExt, PutPayload};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::task::JoinSet;

/// Bytes the shard's encoder gathers before they leave as one part (S3's least part is 5 MiB).
pub const PART_BYTES: usize = 8 << 20;
/// Parts sent at once; memory holds at most this many parts being sent plus one being filled.
pub const PARTS_IN_FLIGHT_MAX: usize = 4;

/// A failure to stream or clean up.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("{what}: {source}")]
    Store {
        what: String,
        #[source]
        source: ::object_store::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("list the multipart uploads of {url}: {message}")]
    List { url: String, message: String },
}

fn store_error(what: impl Into<String>) -> impl FnOnce(::object_store::Error) -> UploadError {
    let what = what.into();
    move |source| UploadError::Store { what, source }
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> UploadError {
    let what = what.into();
    move |source| UploadError::Io { what, source }
}

type PartResult = (usize, Bytes, ::object_store::Result<PartId>);

/// One shard's staging object, being written.
pub struct Upload {
    /// The staging key.
    pub path: Path,
    kind: Kind,
    /// Bytes handed over so far.
    pub bytes: u64,
    completed: bool,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload").field("path", &self.path).field("bytes", &self.bytes).finish()
    }
}

enum Kind {
    Multipart {
        store: Arc<dyn MultipartStore>,
        /// Created on the first part.
        id: Option<MultipartId>,
        next: usize,
        /// Parts to send (new, or failed and kept), by part number.
        queue: VecDeque<(usize, Bytes)>,
        running: JoinSet<PartResult>,
        done: BTreeMap<usize, PartId>,
    },
    Local {
        file_path: PathBuf,
        /// Open while writes succeed; reopened (cut to `written`) after a failed one.
        file: Option<std::fs::File>,
        written: u64,
        queue: VecDeque<Bytes>,
    },
}

impl Upload {
    /// An upload to `path` (nothing is sent before the first part).
    pub fn new(place: &Place, path: Path) -> Upload {
        let kind = match &place.parts {
            Parts::Multipart { store, .. } => Kind::Multipart {
                store: Arc::clone(store),
                id: None,
                next: 0,
                queue: VecDeque::new(),
                running: JoinSet::new(),
                done: BTreeMap::new(),
            },
            Parts::Local(root) => Kind::Local {
                file_path: local_path(root, &path),
                file: None,
                written: 0,
                queue: VecDeque::new(),
            },
        };
        Upload { path, kind, bytes: 0, completed: false }
    }

    /// Hands over the next part (sent in the background; waits while too many are in flight).
    pub async fn send(&mut self, part: Bytes) -> Result<(), UploadError> {
        if part.is_empty() {
            return Ok(());
        }
        self.bytes += part.len() as u64;
        match &mut self.kind {
            Kind::Multipart { next, queue, .. } => {
                queue.push_back((*next, part));
                *next += 1;
            }
            Kind::Local { queue, .. } => queue.push_back(part),
        }
        self.pump(PARTS_IN_FLIGHT_MAX).await
    }

    /// `file://`: appends the queued parts to the staging file. A part stays queued until written;
    /// after a failed write the file is reopened and cut back to what was written.
    fn write_local(&mut self) -> Result<(), UploadError> {
        let Kind::Local { file_path, file, written, queue } = &mut self.kind else { return Ok(()) };
        while let Some(part) = queue.front() {
            if file.is_none() {
                use std::io::Seek;
                if let Some(dir) = file_path.parent() {
                    std::fs::create_dir_all(dir).map_err(io_error(format!("create {}", dir.display())))?;
                }
                let what = format!("open {}", file_path.display());
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&*file_path)
                    .map_err(io_error(what.clone()))?;
                f.set_len(*written).map_err(io_error(what.clone()))?;
                f.seek(std::io::SeekFrom::Start(*written)).map_err(io_error(what))?;
                *file = Some(f);
            }
            let f = file.as_mut().expect("opened above");
            if let Err(e) = f.write_all(part) {
                *file = None;
                return Err(io_error(format!("write {}", file_path.display()))(e));
            }
            *written += part.len() as u64;
            queue.pop_front();
        }
        Ok(())
    }

    /// Sends queued parts while fewer than `in_flight_max` are running (waiting for one to end
    /// otherwise). A failed part goes back to the queue and its error is returned.
    async fn pump(&mut self, in_flight_max: usize) -> Result<(), UploadError> {
        let path = self.path.clone();
        if let Kind::Local { .. } = self.kind {
            return self.write_local();
        }
        let Kind::Multipart { store, id, queue, running, done, .. } = &mut self.kind else { return Ok(()) };
        if queue.is_empty() {
            return Ok(());
        }
        let upload = match id {
            Some(id) => id.clone(),
            None => {
                let created = store
                    .create_multipart(&path)
                    .await
                    .map_err(store_error(format!("start the upload of {path}")))?;
                *id = Some(created.clone());
                created
            }
        };
        while !queue.is_empty() {
            while running.len() >= in_flight_max {
                joined(running, queue, done, &path).await?;
            }
            let Some((index, part)) = queue.pop_front() else { break };
            let (store, path, upload) = (Arc::clone(store), path.clone(), upload.clone());
            running.spawn(async move {
                let sent = store.put_part(&path, &upload, index, PutPayload::from_bytes(part.clone())).await;
                (index, part, sent)
            });
        }
        Ok(())
    }

    /// Sends every part and completes the staging object (done once; a retry after success is a
    /// no-op).
    pub async fn complete(&mut self, place: &Place) -> Result<(), UploadError> {
        if self.completed {
            return Ok(());
        }
        let path = self.path.clone();
        if let Kind::Local { .. } = self.kind {
            self.write_local()?;
            let Kind::Local { file_path, file, .. } = &mut self.kind else { unreachable!() };
            file.take();
            let what = format!("sync {}", file_path.display());
            let f = std::fs::File::open(&*file_path).map_err(io_error(what.clone()))?;
            f.sync_all().map_err(io_error(what))?;
            self.completed = true;
            return Ok(());
        }
        loop {
            self.pump(PARTS_IN_FLIGHT_MAX).await?;
            let Kind::Multipart { queue, running, done, .. } = &mut self.kind else { unreachable!() };
            while !running.is_empty() {
                joined(running, queue, done, &path).await?;
            }
            if queue.is_empty() {
                break;
            }
        }
        let size = self.bytes;
        let Kind::Multipart { store, id, done, .. } = &mut self.kind else { unreachable!() };
        let upload = id.clone().unwrap_or_default();
        let parts: Vec<PartId> = done.values().cloned().collect();
        if let Err(e) = store.complete_multipart(&path, &upload, parts).await {
            // The answer of an earlier, successful completion may have been lost.
            match place.store.head(&path).await {
                Ok(meta) if meta.size == size => {}
                _ => return Err(store_error(format!("complete the upload of {path}"))(e)),
            }
        }
        self.completed = true;
        Ok(())
    }

    /// Best effort: drops what was sent (a rewind discards open shards; leftovers of a failure here
    /// are removed when the target opens next).
    pub async fn abort(mut self, place: &Place) {
        match &mut self.kind {
            Kind::Multipart { store, id, running, .. } => {
                running.abort_all();
                if let Some(id) = id {
                    let _ = store.abort_multipart(&self.path, id).await;
                }
                if self.completed {
                    let _ = place.store.delete(&self.path).await;
                }
            }
            Kind::Local { file_path, file, .. } => {
                file.take();
                let _ = std::fs::remove_file(&*file_path);
            }
        }
    }
}

/// Waits for one running part: done, or back in the queue with its error.
async fn joined(
    running: &mut JoinSet<PartResult>,
    queue: &mut VecDeque<(usize, Bytes)>,
    done: &mut BTreeMap<usize, PartId>,
    path: &Path,
) -> Result<(), UploadError> {
    let Some(result) = running.join_next().await else { return Ok(()) };
    let (index, part, sent) = result.map_err(|e| UploadError::Io {
        what: format!("send a part of {path}"),
        source: std::io::Error::other(e.to_string()),
    })?;
    match sent {
        Ok(id) => {
            done.insert(index, id);
            Ok(())
        }
        Err(e) => {
            queue.push_front((index, part));
            Err(store_error(format!("send part {} of {path}", index + 1))(e))
        }
    }
}

fn local_path(root: &std::path::Path, path: &Path) -> PathBuf {
    path.parts().fold(root.to_path_buf(), |p, part| p.join(part.as_ref()))
}

/// Removes what a crash left of this target's uploads: the staging objects under `open`, and on S3
/// the multipart uploads under `open` and under each of `dirs` (the models' directories: a
/// create-only copy is itself a multipart upload there).
pub async fn clean(place: &Place, open: &Path, dirs: &[Path]) -> Result<(), UploadError> {
    match &place.parts {
        Parts::Local(root) => {
            let dir = local_path(root, open);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_error(format!("remove {}", dir.display()))(e)),
            }
        }
        Parts::Multipart { store, s3 } => {
            if let Some(s3) = s3 {
                for prefix in std::iter::once(open).chain(dirs) {
                    abort_uploads(s3, store.as_ref(), prefix).await?;
                }
            }
            let mut listing = place.store.list(Some(open));
            let mut stale = Vec::new();
            while let Some(meta) = listing.next().await {
                stale.push(meta.map_err(store_error(format!("list {open}")))?.location);
            }
            for path in stale {
                match place.store.delete(&path).await {
                    Ok(()) | Err(::object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(store_error(format!("delete {path}"))(e)),
                }
            }
            Ok(())
        }
    }
}

/// Rounds of listing and aborting before giving up (1000 uploads a round).
const ABORT_ROUNDS_MAX: usize = 100;

/// Aborts every S3 multipart upload whose key starts with `prefix/`.
async fn abort_uploads(s3: &S3Uploads, store: &dyn MultipartStore, prefix: &Path) -> Result<(), UploadError> {
    for _ in 0..ABORT_ROUNDS_MAX {
        let uploads = s3.list(&format!("{prefix}/")).await?;
        if uploads.is_empty() {
            return Ok(());
        }
        for (key, id) in uploads {
            let path = Path::from(key.as_str());
            match store.abort_multipart(&path, &id).await {
                Ok(()) | Err(::object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_error(format!("abort the upload of {key}"))(e)),
            }
        }
    }
    Err(UploadError::List { url: s3.bucket_url.clone(), message: "uploads keep appearing".into() })
}

/// `(key, upload id)` of each `<Upload>` in a ListMultipartUploads answer.
pub fn parse_uploads(xml: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(at) = rest.find("<Upload>") {
        let end = rest[at..].find("</Upload>").map_or(rest.len(), |e| at + e);
        let upload = &rest[at..end];
        if let (Some(key), Some(id)) = (element(upload, "Key"), element(upload, "UploadId")) {
            out.push((unescape(key), unescape(id)));
        }
        rest = &rest[end..];
    }
    out
}

fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(&xml[start..end])
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    #[test]
    fn uploads_are_read_from_the_answer() {
        let xml = "<?xml version=\"1.0\"?><ListMultipartUploadsResult><Bucket>b</Bucket>\
            <Upload><Key>lake/_remix/a&amp;b/1.parquet</Key><UploadId>u1</UploadId><Initiated>x</Initiated></Upload>\
            <Upload><Key>lake/m/2.parquet</Key><UploadId>u2</UploadId></Upload><IsTruncated>false</IsTruncated>\
            </ListMultipartUploadsResult>";
        assert_eq!(
            super::parse_uploads(xml),
            vec![
                ("lake/_remix/a&b/1.parquet".to_owned(), "u1".to_owned()),
                ("lake/m/2.parquet".to_owned(), "u2".to_owned())
            ]
        );
    }
}
