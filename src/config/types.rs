//! The validated, typed configuration.

use crate::mapping::Mapping;
use crate::models::Model;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_DATA_DIR: &str = "./remix-data";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9700";
pub const DEFAULT_SEGMENT_BYTES: u64 = 128 << 20;
pub const MIN_SEGMENT_BYTES: u64 = 64 << 10;
pub const DEFAULT_BODY_BYTES_MAX: u64 = 10 << 20;
pub const DEFAULT_HMAC_HEADER: &str = "X-Remix-Signature";
pub const DEFAULT_STRIPE_API_BASE: &str = "https://api.stripe.com";
pub const DEFAULT_STRIPE_PATH: &str = "/stripe";
pub const DEFAULT_STRIPE_TOLERANCE: Duration = Duration::from_secs(300);
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BATCH_RECORDS_MAX: usize = 500;
pub const DEFAULT_BATCH_LINGER: Duration = Duration::from_millis(50);

/// The whole configuration. Relative `data_dir` and target directories are relative to the
/// working directory; schema paths were resolved against the config file's directory.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub admin: AdminConfig,
    pub log: LogConfig,
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

#[derive(Debug, Clone)]
pub enum SourceConfig {
    Postgres(PostgresSource),
    Webhook(WebhookSource),
    Stripe(StripeSource),
}

impl SourceConfig {
    pub const KINDS: [&'static str; 3] = ["postgres", "webhook", "stripe"];

    pub fn name(&self) -> &str {
        match self {
            SourceConfig::Postgres(s) => &s.name,
            SourceConfig::Webhook(s) => &s.name,
            SourceConfig::Stripe(s) => &s.name,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Postgres(_) => "postgres",
            SourceConfig::Webhook(_) => "webhook",
            SourceConfig::Stripe(_) => "stripe",
        }
    }

    /// The HTTP listen address, for the sources that run a server.
    pub fn listen(&self) -> Option<&str> {
        match self {
            SourceConfig::Postgres(_) => None,
            SourceConfig::Webhook(s) => Some(&s.listen),
            SourceConfig::Stripe(s) => Some(&s.listen),
        }
    }

    /// Every input binding of the source, whatever it is keyed by.
    pub fn bindings(&self) -> Vec<&InputBinding> {
        match self {
            SourceConfig::Postgres(s) => s.tables.iter().map(|t| &t.binding).collect(),
            SourceConfig::Webhook(s) => s.routes.values().collect(),
            SourceConfig::Stripe(s) => s.objects.values().collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMode {
    Initial,
    Never,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PostgresSource {
    pub name: String,
    pub dsn: String,
    /// Replication slot; defaults to `remix_<name>` (dashes become underscores).
    pub slot: String,
    /// Publication; defaults to the slot name.
    pub publication: String,
    pub snapshot: SnapshotMode,
    pub tables: Vec<TableBinding>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableBinding {
    /// PostgreSQL schema (`public` when the key names no schema).
    pub schema: String,
    pub table: String,
    pub binding: InputBinding,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookAuth {
    None,
    Bearer { token: String },
    Hmac { secret: String, header: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSource {
    pub name: String,
    pub listen: String,
    pub auth: WebhookAuth,
    pub body_bytes_max: u64,
    pub idempotency_field: Option<String>,
    pub delete_field: Option<String>,
    /// Route path (`/customers`) -> binding.
    pub routes: BTreeMap<String, InputBinding>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StripeSource {
    pub name: String,
    pub listen: String,
    pub path: String,
    pub signing_secret: String,
    pub api_key: Option<String>,
    pub api_base: String,
    pub tolerance: Duration,
    /// Stripe object type (`customer`, `invoice`, `checkout.session`) -> binding.
    pub objects: BTreeMap<String, InputBinding>,
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
    pub records_max: usize,
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

#[derive(Debug, Clone)]
pub enum TargetConfig {
    Jsonl(JsonlTarget),
    Http(HttpTarget),
    Postgres(PostgresTarget),
    Stripe(StripeTarget),
}

impl TargetConfig {
    pub const KINDS: [&'static str; 4] = ["jsonl", "http", "postgres", "stripe"];

    pub fn common(&self) -> &TargetCommon {
        match self {
            TargetConfig::Jsonl(t) => &t.common,
            TargetConfig::Http(t) => &t.common,
            TargetConfig::Postgres(t) => &t.common,
            TargetConfig::Stripe(t) => &t.common,
        }
    }

    pub fn name(&self) -> &str {
        &self.common().name
    }

    pub fn kind(&self) -> &'static str {
        match self {
            TargetConfig::Jsonl(_) => "jsonl",
            TargetConfig::Http(_) => "http",
            TargetConfig::Postgres(_) => "postgres",
            TargetConfig::Stripe(_) => "stripe",
        }
    }

    /// The models this target receives, with their output mappings.
    pub fn outputs(&self) -> Vec<(&str, &Mapping)> {
        match self {
            TargetConfig::Jsonl(t) => t.models.iter().map(|(m, b)| (m.as_str(), &b.mapping)).collect(),
            TargetConfig::Http(t) => t.models.iter().map(|(m, b)| (m.as_str(), &b.mapping)).collect(),
            TargetConfig::Postgres(t) => t.models.iter().map(|(m, b)| (m.as_str(), &b.mapping)).collect(),
            TargetConfig::Stripe(t) => t.models.iter().map(|(m, b)| (m.as_str(), &b.mapping)).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct JsonlTarget {
    pub common: TargetCommon,
    pub dir: PathBuf,
    pub models: BTreeMap<String, OutputBinding>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpTarget {
    pub common: TargetCommon,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub timeout: Duration,
    pub models: BTreeMap<String, OutputBinding>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PostgresTarget {
    pub common: TargetCommon,
    pub dsn: String,
    pub create_tables: bool,
    pub models: BTreeMap<String, TableOutput>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableOutput {
    /// PostgreSQL schema (`public` by default).
    pub schema: String,
    /// Table name (the model name by default).
    pub table: String,
    pub mapping: Mapping,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StripeTarget {
    pub common: TargetCommon,
    pub api_key: String,
    pub api_base: String,
    pub models: BTreeMap<String, StripeOutput>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StripeOutput {
    /// Stripe object type (`customer`).
    pub object: String,
    /// The Stripe-side field holding the model key (default `id`).
    pub key_field: String,
    pub mapping: Mapping,
}
