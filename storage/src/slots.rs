//! Slot files: a small value (a cursor, the log's start) kept in two checksummed slots, so that a torn
//! write never loses the previous value. The byte layout is in [`crate::format`].

use crate::error::{Error, IoContext, Result};
use crate::format::{Slot, SLOT_BYTES, SLOT_FILE_BYTES};
use crate::fs::{read_file, write_file_atomic, Fs, OpenMode};
use std::io;
use std::path::{Path, PathBuf};

/// A slot file whose current value is known.
#[derive(Debug, Clone)]
pub(crate) struct SlotFile {
    pub path: PathBuf,
    magic: [u8; 8],
    /// The newest valid slot; `None` when the file does not exist yet.
    pub current: Option<Slot>,
}

impl SlotFile {
    /// A slot file that does not exist yet; the first `store` creates it.
    pub(crate) fn new(path: PathBuf, magic: [u8; 8]) -> SlotFile {
        SlotFile { path, magic, current: None }
    }

    /// Reads the file; a missing file is `current: None`, a file without a valid slot an error.
    pub(crate) fn load(fs: &dyn Fs, path: PathBuf, magic: [u8; 8]) -> Result<SlotFile> {
        let bytes = match read_file(fs, &path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(SlotFile { path, magic, current: None })
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        match Slot::decode_file(&bytes, &magic) {
            Ok(slot) => Ok(SlotFile { path, magic, current: Some(slot) }),
            Err(e) => Err(Error::SlotsTorn { path, reason: e.to_string() }),
        }
    }

    pub(crate) fn value(&self) -> Option<u64> {
        self.current.map(|slot| slot.value)
    }

    /// Durably stores `value`: into the older slot with `fdatasync`, or, for a new file, through a temp
    /// file and rename so the file never exists without a valid slot.
    pub(crate) fn store(&mut self, fs: &dyn Fs, value: u64, time_ms: u64) -> Result<()> {
        let sequence = self.current.map_or(1, |slot| slot.sequence + 1);
        let slot = Slot { sequence, value, time_ms };
        let encoded = slot.encode(&self.magic);
        match self.current {
            None => {
                let mut bytes = vec![0u8; SLOT_FILE_BYTES];
                let at = Slot::position_for(sequence) as usize;
                bytes[at..at + SLOT_BYTES].copy_from_slice(&encoded);
                write_file_atomic(fs, &self.path, &bytes).at(&self.path)?;
            }
            Some(_) => {
                let file = fs.open(&self.path, OpenMode::ReadWrite).at(&self.path)?;
                file.write_all_at(&encoded, Slot::position_for(sequence)).at(&self.path)?;
                file.sync_data().at(&self.path)?;
            }
        }
        self.current = Some(slot);
        Ok(())
    }
}

/// Checks a cursor or target name: it becomes a file name.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName { name: name.to_owned() })
    }
}

pub(crate) fn cursor_path(dir: &Path, target: &str) -> PathBuf {
    dir.join(format!("{target}.cursor"))
}
