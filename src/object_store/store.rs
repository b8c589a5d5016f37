//! The store a target URL names, on the `object_store` crate: one code path for `s3://`, `gs://`,
//! `az://` and `file://`. Credentials come only from the environment or the provider's usual chain
//! (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, instance metadata;
//! `GOOGLE_SERVICE_ACCOUNT`/`GOOGLE_APPLICATION_CREDENTIALS`; `AZURE_STORAGE_ACCOUNT_NAME`/
//! `AZURE_STORAGE_ACCOUNT_KEY`, ...), never from the configuration file.

use crate::runtime::delivery::TargetError;
use ::object_store::multipart::MultipartStore;
use ::object_store::path::Path;
use ::object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The store and the prefix inside it that a URL names.
#[derive(Debug, Clone)]
pub struct Place {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    /// The URL, for messages.
    pub url: String,
    /// How an open shard is streamed (`upload.rs`).
    pub parts: Parts,
}

/// How an open shard's parts reach the store.
#[derive(Clone)]
pub enum Parts {
    /// The provider's multipart upload; on S3 also listed (to abort a crash's leftovers).
    Multipart { store: Arc<dyn MultipartStore>, s3: Option<S3Uploads> },
    /// `file://`: a staging file under this directory (the store's root).
    Local(PathBuf),
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Parts::Multipart { s3, .. } => f.debug_struct("Multipart").field("s3", s3).finish(),
            Parts::Local(dir) => f.debug_tuple("Local").field(dir).finish(),
        }
    }
}

/// What listing a bucket's multipart uploads needs (`object_store` does not list them).
#[derive(Clone)]
pub struct S3Uploads {
    store: Arc<::object_store::aws::AmazonS3>,
    /// `https://bucket.s3.region.amazonaws.com`, or `endpoint/bucket` (path style).
    pub bucket_url: String,
    region: String,
}

impl std::fmt::Debug for S3Uploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Uploads").field("bucket_url", &self.bucket_url).finish()
    }
}

impl S3Uploads {
    /// `(key, upload id)` of up to 1000 uploads whose key starts with `prefix` (SigV4-signed
    /// ListMultipartUploads).
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, String)>, super::upload::UploadError> {
        let fail =
            |message: String| super::upload::UploadError::List { url: self.bucket_url.clone(), message };
        let credential = self.store.credentials().get_credential().await.map_err(|e| fail(e.to_string()))?;
        let mut url = url::Url::parse(&format!("{}/", self.bucket_url.trim_end_matches('/')))
            .map_err(|e| fail(e.to_string()))?;
        url.query_pairs_mut().append_pair("prefix", prefix).append_pair("uploads", "");
        let mut request =
            ::object_store::client::HttpRequest::new(::object_store::client::HttpRequestBody::empty());
        *request.uri_mut() =
            url.as_str().parse().map_err(|e: axum::http::uri::InvalidUri| fail(e.to_string()))?;
        ::object_store::aws::AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| fail(e.to_string()))?;
        let mut builder = reqwest::Client::new().get(url.as_str());
        for (name, value) in request.headers() {
            builder = builder.header(name.as_str(), value.as_bytes());
        }
        let response = builder.send().await.map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| fail(e.to_string()))?;
        if !status.is_success() {
            return Err(fail(format!("{status}: {text}")));
        }
        Ok(super::upload::parse_uploads(&text))
    }
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
    let built = |e: ::object_store::Error| fail(format!("cannot build the client: {e}"), Some(e));
    let (store, parts): (Arc<dyn ObjectStore>, Parts) = match parsed.scheme() {
        "s3" => {
            use ::object_store::aws::{AmazonS3Builder, S3CopyIfNotExists};
            let mut b = AmazonS3Builder::from_env()
                .with_url(url)
                .with_retry(retry)
                .with_client_options(options)
                .with_allow_http(http);
            if let Some(e) = endpoint {
                b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
            }
            // A sealed shard is copied from its staging key with a create-only copy: by default
            // UploadPartCopy completed with `If-None-Match: *` (AWS_COPY_IF_NOT_EXISTS overrides).
            if std::env::var_os("AWS_COPY_IF_NOT_EXISTS").is_none() {
                b = b.with_copy_if_not_exists(S3CopyIfNotExists::Multipart);
            }
            let region = region.map(str::to_owned).or_else(|| std::env::var("AWS_REGION").ok());
            let region = region.unwrap_or_else(|| "us-east-1".to_owned());
            b = b.with_region(region.clone());
            let s3 = Arc::new(b.build().map_err(built)?);
            let bucket = parsed.host_str().unwrap_or_default();
            let bucket_url = match endpoint {
                Some(e) => format!("{}/{bucket}", e.trim_end_matches('/')),
                None => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            };
            let uploads = S3Uploads { store: Arc::clone(&s3), bucket_url, region };
            let parts = Parts::Multipart { store: s3.clone(), s3: Some(uploads) };
            (s3, parts)
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
            let gcs = Arc::new(b.build().map_err(built)?);
            (gcs.clone(), Parts::Multipart { store: gcs, s3: None })
        }
        "az" | "abfs" => {
            use ::object_store::azure::MicrosoftAzureBuilder;
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_url(url)
                .with_retry(retry)
                .with_client_options(options)
                .with_allow_http(http);
            // The account's blob endpoint, as a connection string's `BlobEndpoint` (azurite:
            // `http://127.0.0.1:10000/devstoreaccount1`).
            if let Some(e) = endpoint {
                b = b.with_endpoint(e.to_owned());
            }
            let azure = Arc::new(b.build().map_err(built)?);
            (azure.clone(), Parts::Multipart { store: azure, s3: None })
        }
        "file" => {
            let dir = parsed.to_file_path().map_err(|()| fail("not a local path".into(), None))?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| fail(format!("cannot create {}: {e}", dir.display()), None))?;
            let local = ::object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| fail(format!("cannot open {}: {e}", dir.display()), Some(e)))?
                // Durable like a remote store: the file and its directory entry fsynced before `Ok`.
                .with_fsync(true);
            return Ok(Place {
                store: Arc::new(local),
                prefix: Path::default(),
                url: url.to_owned(),
                parts: Parts::Local(dir),
            });
        }
        other => return Err(fail(format!("unsupported scheme '{other}' (s3, gs, az or file)"), None)),
    };
    let prefix = Path::parse(parsed.path().trim_matches('/'))
        .map_err(|e| fail(format!("invalid prefix: {e}"), None))?;
    Ok(Place { store, prefix, url: url.to_owned(), parts })
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
