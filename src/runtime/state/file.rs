//! The file backend of the state store: the files of a data directory, as every release wrote them.
//!
//! - cursors: `cursors/<target>.cursor`, the log's A/B slot files (through the log, which checks
//!   them against its durable offset and lets retention read them);
//! - target control: `targets/<target>.json`;
//! - target journals: `targets/<target>.<name>` (`.inflight`, `.stripe`);
//! - source progress: `sources/<source>.json`;
//! - checkpoints: `checkpoints/<name>`.
//!
//! A stored value is written to a temp file, fsynced and renamed, and the directory fsynced; an
//! append is written and fsynced in place (journals are read line by line, a torn last line is the
//! reader's to drop).

use super::{StateError, StateKey, StateStore};
use crate::util::BoxFuture;
use remix_storage::Log;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// State in the files of a data directory.
#[derive(Debug, Clone)]
pub struct FileStateStore {
    data_dir: PathBuf,
    /// The log whose cursor files these are; `None` for commands that run without a node (they read
    /// cursors through a log view and never store one).
    log: Option<Arc<Log>>,
}

impl FileStateStore {
    pub fn new(data_dir: &Path, log: Arc<Log>) -> FileStateStore {
        FileStateStore { data_dir: data_dir.to_owned(), log: Some(log) }
    }

    /// Without the log: everything but cursors.
    pub fn offline(data_dir: &Path) -> FileStateStore {
        FileStateStore { data_dir: data_dir.to_owned(), log: None }
    }

    /// The file of `key`.
    pub fn path(&self, key: &StateKey) -> PathBuf {
        match key {
            StateKey::TargetControl(target) => self.data_dir.join("targets").join(format!("{target}.json")),
            StateKey::TargetJournal { target, name } => {
                self.data_dir.join("targets").join(format!("{target}.{name}"))
            }
            StateKey::SourceProgress(source) => self.data_dir.join("sources").join(format!("{source}.json")),
            StateKey::Checkpoint(name) => self.data_dir.join("checkpoints").join(name),
        }
    }
}

fn io_error(key: &StateKey, path: &Path, source: std::io::Error) -> StateError {
    StateError::Io { key: format!("{key} ({})", path.display()), source }
}

/// Runs file work on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}

impl StateStore for FileStateStore {
    fn cursor(&self, target: &str) -> Option<u64> {
        self.log.as_ref()?.cursor(target)
    }

    fn cursors(&self) -> BTreeMap<String, u64> {
        self.log.as_ref().map(|log| log.cursors()).unwrap_or_default()
    }

    fn store_cursor<'a>(&'a self, target: &'a str, offset: u64) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            let cursor_error = |message: String| StateError::Cursor { target: target.to_owned(), message };
            let log = self.log.clone().ok_or_else(|| cursor_error("no node holds the log".into()))?;
            let name = target.to_owned();
            tokio::task::spawn_blocking(move || log.store_cursor(&name, offset))
                .await
                .map_err(|e| cursor_error(e.to_string()))?
                .map_err(|e| cursor_error(e.to_string()))
        })
    }

    fn load<'a>(&'a self, key: &'a StateKey) -> BoxFuture<'a, Result<Option<Vec<u8>>, StateError>> {
        let path = self.path(key);
        Box::pin(async move {
            let read = path.clone();
            blocking(move || match std::fs::read(&read) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            })
            .await
            .map_err(|e| io_error(key, &path, e))
        })
    }

    fn store<'a>(&'a self, key: &'a StateKey, value: Vec<u8>) -> BoxFuture<'a, Result<(), StateError>> {
        let path = self.path(key);
        Box::pin(async move {
            let write = path.clone();
            blocking(move || {
                std::fs::create_dir_all(write.parent().expect("state files live in a directory"))?;
                crate::util::write_durably(&write, &value)
            })
            .await
            .map_err(|e| io_error(key, &path, e))
        })
    }

    fn append<'a>(&'a self, key: &'a StateKey, bytes: Vec<u8>) -> BoxFuture<'a, Result<(), StateError>> {
        let path = self.path(key);
        Box::pin(async move {
            let write = path.clone();
            blocking(move || {
                let dir = write.parent().expect("state files live in a directory");
                std::fs::create_dir_all(dir)?;
                let created = !write.exists();
                let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&write)?;
                file.write_all(&bytes)?;
                file.sync_data()?;
                if created {
                    crate::util::sync_dir(dir)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| io_error(key, &path, e))
        })
    }

    fn remove<'a>(&'a self, key: &'a StateKey) -> BoxFuture<'a, Result<(), StateError>> {
        let path = self.path(key);
        Box::pin(async move {
            let remove = path.clone();
            blocking(move || match std::fs::remove_file(&remove) {
                Ok(()) => crate::util::sync_dir(remove.parent().expect("in a directory")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            })
            .await
            .map_err(|e| io_error(key, &path, e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn values_are_stored_appended_and_removed_in_the_files_of_every_release() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStateStore::offline(dir.path());
        let control = StateKey::TargetControl("dataset".into());
        assert_eq!(store.load(&control).await.unwrap(), None);
        store.store(&control, b"{\"paused\":true}".to_vec()).await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("targets/dataset.json")).unwrap(), b"{\"paused\":true}");
        let journal = StateKey::TargetJournal { target: "crm".into(), name: "stripe" };
        store.append(&journal, b"a\n".to_vec()).await.unwrap();
        store.append(&journal, b"b\n".to_vec()).await.unwrap();
        assert_eq!(store.load(&journal).await.unwrap().unwrap(), b"a\nb\n");
        assert!(dir.path().join("targets/crm.stripe").exists());
        store.remove(&journal).await.unwrap();
        store.remove(&journal).await.unwrap();
        assert_eq!(store.load(&journal).await.unwrap(), None);
        let progress = StateKey::SourceProgress("shop".into());
        assert_eq!(store.path(&progress), dir.path().join("sources/shop.json"));
        assert!(store.store_cursor("dataset", 1).await.is_err(), "no cursors without the log");
    }
}
