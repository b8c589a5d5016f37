//! The validated, typed configuration.

use crate::connector::{SourceSpec, TargetSpec};
use crate::mapping::Mapping;
use crate::models::Model;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_DATA_DIR: &str = "./remix-data";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9700";
pub const DEFAULT_SEGMENT_BYTES: u64 = 128 << 20;
/// The smallest and largest `log.segment_bytes` the log's format allows.
pub const MIN_SEGMENT_BYTES: u64 = remix_storage::format::SEGMENT_BYTES_MIN;
pub const MAX_SEGMENT_BYTES: u64 = remix_storage::format::SEGMENT_BYTES_MAX;
pub const DEFAULT_BATCH_LINGER: Duration = Duration::from_millis(50);

/// The whole configuration. Relative `data_dir` and target directories are relative to the
/// working directory; schema paths were resolved against the config file's directory.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub ingest: IngestConfig,
    pub models: BTreeMap<String, Arc<Model>>,
    pub sources: Vec<SourceConfig>,
    pub targets: Vec<TargetConfig>,
}

impl Config {
    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name() == name)
    }

    pub fn target(&self, name: &str) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| t.name() == name)
    }

    pub fn model(&self, name: &str) -> Option<&Arc<Model>> {
        self.models.get(name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// `host:port`.
    pub listen: String,
    /// Bearer token required by the admin API; `None` (or empty in the file) means none.
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub retention: RetentionConfig,
}

/// What requests in flight may hold in memory at once (see [`crate::runtime::ingest::budget`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestConfig {
    pub memory_bytes_max: u64,
    /// How long a request may wait for room before it is refused (503).
    pub wait: Duration,
}

impl Default for IngestConfig {
    fn default() -> IngestConfig {
        IngestConfig {
            memory_bytes_max: crate::runtime::ingest::budget::DEFAULT_MEMORY_BYTES_MAX,
            wait: crate::runtime::ingest::budget::DEFAULT_WAIT,
        }
    }
}

/// Sealed segments may be deleted once older than `min_age` or beyond `max_bytes` in total
/// (never before every target's cursor has passed them). `None` means no limit of that kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionConfig {
    pub min_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

/// How one source record (table row, webhook body, Stripe object) becomes a model object.
#[derive(Debug, Clone, PartialEq)]
pub struct InputBinding {
    pub model: String,
    pub mapping: Mapping,
}

/// One entry of `sources`: its name and kind, and what its kind read from the rest of the section.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: String,
    pub kind: &'static str,
    pub spec: Arc<dyn SourceSpec>,
}

impl SourceConfig {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The HTTP listen address, for the sources that run a server.
    pub fn listen(&self) -> Option<String> {
        self.spec.served().map(|s| s.listen)
    }

    /// Every input binding of the source, whatever it is keyed by.
    pub fn bindings(&self) -> Vec<&InputBinding> {
        self.spec.inputs().into_iter().map(|i| i.binding).collect()
    }

    /// The kind's own configuration, when it is a `T`.
    pub fn downcast<T: SourceSpec>(&self) -> Option<&T> {
        self.spec.as_any().downcast_ref::<T>()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Pause,
    DeadLetter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruncatePolicy {
    Apply,
    Ignore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub records_per_second: u64,
    /// Defaults to `records_per_second` (one second's worth).
    pub burst: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// The user's upper bound; `None`: the target kind's default (`Capabilities::batch_records_default`).
    pub records_max: Option<usize>,
    pub linger: Duration,
}

/// Keys every target has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetCommon {
    pub name: String,
    pub rate_limit: Option<RateLimit>,
    pub batch: BatchConfig,
    pub on_error: OnError,
    pub truncate: TruncatePolicy,
}

/// How a model object becomes a target record (identity when the mapping is empty).
#[derive(Debug, Clone, PartialEq)]
pub struct OutputBinding {
    pub mapping: Mapping,
}

/// One entry of `targets`: the keys every target has, and what its kind read from the rest.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub common: TargetCommon,
    pub kind: &'static str,
    pub spec: Arc<dyn TargetSpec>,
}

impl TargetConfig {
    pub fn common(&self) -> &TargetCommon {
        &self.common
    }

    pub fn name(&self) -> &str {
        &self.common.name
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The models this target receives, with their output mappings.
    pub fn outputs(&self) -> Vec<(&str, &Mapping)> {
        self.spec.outputs()
    }

    /// The kind's own configuration, when it is a `T`.
    pub fn downcast<T: TargetSpec>(&self) -> Option<&T> {
        self.spec.as_any().downcast_ref::<T>()
    }
}
