//! A target's persisted control state (`<data_dir>/targets/<name>.json`): paused or not, and a
//! rewind requested while no node was running. Written to a temp file, fsynced and renamed.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetState {
    #[serde(default)]
    pub paused: bool,
    /// A rewind to this offset that the worker carries out when it next starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewind_to: Option<u64>,
}

pub fn state_path(data_dir: &Path, target: &str) -> PathBuf {
    data_dir.join("targets").join(format!("{target}.json"))
}

impl TargetState {
    pub fn load(data_dir: &Path, target: &str) -> anyhow::Result<TargetState> {
        let path = state_path(data_dir, target);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TargetState::default()),
            Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
        }
    }

    pub fn store(&self, data_dir: &Path, target: &str) -> anyhow::Result<()> {
        let path = state_path(data_dir, target);
        let dir = path.parent().expect("state files live in a directory");
        std::fs::create_dir_all(dir)?;
        Ok(crate::util::write_durably(&path, &serde_json::to_vec_pretty(self)?)?)
    }
}
