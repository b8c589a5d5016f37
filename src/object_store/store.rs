//! The store a target URL names, on the `object_store` crate: one code path for `s3://`, `gs://`,
//! `az://` and `file://`. Credentials come only from the environment or the provider's usual chain
//! (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, instance metadata;
//! `GOOGLE_SERVICE_ACCOUNT`/`GOOGLE_APPLICATION_CREDENTIALS`; `AZURE_STORAGE_ACCOUNT_NAME`/
//! `AZURE_STORAGE_ACCOUNT_KEY`, ...), never from the configuration file.

use crate::runtime::delivery::TargetError;
use ::object_store::path::Path;
use ::object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use std::sync::Arc;
use std::time::Duration;

/// The store and the prefix inside it that a URL names.
#[derive(Debug, Clone)]
pub struct Place {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    /// The URL, for messages.
    pub url: String,
}

/// A URL or endpoint the store cannot be built from.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {message}")]
pub struct PlaceError {
    pub url: String,
    pub message: String,
    #[source]
    pub source: Option<::object_store::Error>,
}

/// How long the client retries one request itself (5xx, 503 SlowDown, connection resets) before the
/// error reaches the worker, which retries with its own backoff (state `retrying`).
const REQUEST_RETRY: Duration = Duration::from_secs(20);

/// Builds the store for `url` (`endpoint` for S3-compatible servers and emulators).
pub fn open(url: &str, endpoint: Option<&str>, region: Option<&str>) -> Result<Place, PlaceError> {
    crate::install_tls_provider();
    let fail = |message: String, source: Option<::object_store::Error>| PlaceError {
        url: url.to_owned(),
        message,
        source,
    };
    let parsed = url::Url::parse(url).map_err(|e| fail(format!("not a URL: {e}"), None))?;
    let retry =
        RetryConfig { backoff: BackoffConfig::default(), max_retries: 5, retry_timeout: REQUEST_RETRY };
    let http = endpoint.is_some_and(|e| e.starts_with("http://"));
    let options = ClientOptions::new().with_allow_http(http).with_timeout(Duration::from_secs(60));
    let built = |r: ::object_store::Result<Arc<dyn ObjectStore>>| {
        r.map_err(|e| fail(format!("cannot build the client: {e}"), Some(e)))
    };
    let store: Arc<dyn ObjectStore> = match parsed.scheme() {
        "s3" => {
            use ::object_store::aws::AmazonS3Builder;
            let mut b = AmazonS3Builder::from_env()
                .with_url(url)
                .with_retry(retry)
                .with_client_options(options)
                .with_allow_http(http);
            if let Some(e) = endpoint {
                b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
            }
            let region = region.map(str::to_owned).or_else(|| std::env::var("AWS_REGION").ok());
            b = b.with_region(region.unwrap_or_else(|| "us-east-1".to_owned()));
            built(b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>))?
        }
        "gs" => {
            use ::object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
            let mut b = GoogleCloudStorageBuilder::from_env()
                .with_url(url)
                .with_retry(retry)
                .with_client_options(options);
            if let Some(e) = endpoint {
                b = b.with_config(GoogleConfigKey::BaseUrl, e);
            }
            built(b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>))?
        }
        "az" | "abfs" => {
            use ::object_store::azure::MicrosoftAzureBuilder;
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_url(url)
                .with_retry(retry)
                .with_client_options(options)
                .with_allow_http(http);
            if let Some(e) = endpoint {
                b = b.with_endpoint(e.to_owned());
            }
            built(b.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>))?
        }
        "file" => {
            let dir = parsed.to_file_path().map_err(|()| fail("not a local path".into(), None))?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| fail(format!("cannot create {}: {e}", dir.display()), None))?;
            let local = ::object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| fail(format!("cannot open {}: {e}", dir.display()), Some(e)))?
                // Durable like a remote store: the file and its directory entry fsynced before `Ok`.
                .with_fsync(true);
            return Ok(Place { store: Arc::new(local), prefix: Path::default(), url: url.to_owned() });
        }
        other => return Err(fail(format!("unsupported scheme '{other}' (s3, gs, az or file)"), None)),
    };
    let prefix = Path::parse(parsed.path().trim_matches('/'))
        .map_err(|e| fail(format!("invalid prefix: {e}"), None))?;
    Ok(Place { store, prefix, url: url.to_owned() })
}

impl Place {
    /// `<prefix>/<parts...>`.
    pub fn path(&self, parts: &[&str]) -> Path {
        let mut path = self.prefix.clone();
        for part in parts {
            path = path.clone().join(*part);
        }
        path
    }
}

/// A store error as the worker sees it. Every failure to reach or write the store is retried
/// (`retrying`, with the provider's message): a sealed shard holds many records, none of which is at
/// fault for a missing bucket or refused credentials, and nothing is lost while it waits.
pub fn target_error(what: &str, error: ::object_store::Error) -> TargetError {
    let hint = match &error {
        ::object_store::Error::NotFound { .. } => " (does the bucket exist?)",
        ::object_store::Error::PermissionDenied { .. } | ::object_store::Error::Unauthenticated { .. } => {
            " (check the credentials in the environment)"
        }
        _ => "",
    };
    TargetError::transient(format!("{what}: {error}{hint}")).caused_by(error)
}
