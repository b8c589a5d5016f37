//! TLS to PostgreSQL with libpq's semantics, on rustls (ring), for both our replication client
//! (`conn.rs`) and tokio-postgres (through [`MakeRustlsConnect`]).
//!
//! A DSN's `sslmode` and `sslrootcert` are taken out here (tokio-postgres knows only
//! `disable`/`prefer`/`require` and no root certificates) and the rest goes to
//! `tokio_postgres::Config`. The modes:
//!
//! - `disable`: plaintext.
//! - `prefer` (the default): TLS when the server accepts it (it answers 'S' to SSLRequest), else
//!   plaintext; the certificate is not verified.
//! - `require`: TLS or nothing; the certificate is not verified, unless `sslrootcert` is given, in
//!   which case it behaves like `verify-ca` (as libpq does).
//! - `verify-ca`: the server's chain must lead to a certificate of `sslrootcert`; any host name.
//! - `verify-full`: the chain as for `verify-ca`, and the host name (or IP address) of the DSN must
//!   be in the certificate.
//!
//! `verify-*` need `sslrootcert` (a PEM file of CA certificates): there is no `~/.postgresql/root.crt`
//! default. PostgreSQL never uses TLS on a unix socket: there `prefer` is plaintext and `require` and
//! above are refused. The handshake's signatures are always checked, whatever the mode.

use crate::error_chain;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// Largest `sslrootcert` file we read.
const ROOT_CERT_BYTES_MAX: u64 = 4 << 20;

/// libpq's `sslmode` (without `allow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(text: &str) -> Result<SslMode, TlsError> {
        match text {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(TlsError::InvalidMode(other.to_owned())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether a connection without TLS is refused.
    pub fn requires_tls(self) -> bool {
        matches!(self, SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The TLS part of a DSN.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    pub mode: SslMode,
    /// `sslrootcert`: a PEM file of CA certificates.
    pub root_cert: Option<PathBuf>,
}

/// What is checked of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    Nothing,
    Chain,
    ChainAndName,
}

impl TlsSettings {
    fn verify(&self) -> Verify {
        match self.mode {
            SslMode::Disable | SslMode::Prefer => Verify::Nothing,
            SslMode::Require if self.root_cert.is_none() => Verify::Nothing,
            SslMode::Require | SslMode::VerifyCa => Verify::Chain,
            SslMode::VerifyFull => Verify::ChainAndName,
        }
    }

    /// `sslmode=verify-full` or `sslmode=verify-full, sslrootcert=/x.pem`, for messages.
    fn describe(&self) -> String {
        match &self.root_cert {
            Some(path) => format!("sslmode={}, sslrootcert={}", self.mode, path.display()),
            None => format!("sslmode={}", self.mode),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid DSN: {0}")]
    Dsn(String),
    #[error("invalid sslmode '{0}' (expected disable, prefer, require, verify-ca or verify-full)")]
    InvalidMode(String),
    #[error(
        "sslmode={0} needs sslrootcert=<PEM file of CA certificates> in the DSN (there is no \
         ~/.postgresql/root.crt default here)"
    )]
    RootCertRequired(SslMode),
    #[error(
        "sslmode={0} on a unix socket: PostgreSQL does not use TLS on unix sockets; connect over TCP \
         (host=<name>) or use sslmode=prefer or disable"
    )]
    UnixSocket(SslMode),
    #[error("sslnegotiation=direct is not supported (use sslnegotiation=postgres, the default)")]
    DirectNegotiation,
    #[error("cannot read sslrootcert {}: {cause}", path.display())]
    RootCertRead { path: PathBuf, cause: std::io::Error },
    #[error("sslrootcert {}: {reason}", path.display())]
    RootCertInvalid { path: PathBuf, reason: String },
    #[error("the server refuses TLS (it answered 'N' to SSLRequest) and sslmode={0} requires it")]
    Refused(SslMode),
    #[error("invalid server name '{0}' for TLS")]
    ServerName(String),
    #[error("server certificate verification failed for {host} ({settings}): {cause}")]
    Verification { host: String, settings: String, cause: rustls::Error },
    #[error("TLS handshake with {host} failed: {cause}")]
    Handshake { host: String, cause: std::io::Error },
}

impl TlsError {
    /// Whether retrying later may help (a handshake cut short) as opposed to a configuration problem.
    pub fn is_transient(&self) -> bool {
        matches!(self, TlsError::Handshake { .. })
    }
}

/// A DSN split into what tokio-postgres understands and the TLS settings.
#[derive(Debug, Clone)]
pub struct PgDsn {
    /// Everything else; its `ssl_mode` is set to what tokio-postgres should do (`Disable`, `Prefer`
    /// or `Require`).
    pub config: tokio_postgres::Config,
    pub tls: TlsSettings,
}

/// Parses a libpq-style DSN (`host=... sslmode=verify-full sslrootcert=/x.pem`) or a
/// `postgresql://...?sslmode=...` URL and checks the TLS settings (without reading `sslrootcert`).
pub fn parse_dsn(dsn: &str) -> Result<PgDsn, TlsError> {
    let (rest, mode, root_cert) = split_tls(dsn)?;
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| TlsError::Dsn(error_chain(&e)))?;
    let tls = TlsSettings {
        mode: mode.as_deref().map_or(Ok(SslMode::Prefer), SslMode::parse)?,
        root_cert: root_cert.filter(|p| !p.is_empty()).map(PathBuf::from),
    };
    if config.get_ssl_negotiation() == tokio_postgres::config::SslNegotiation::Direct {
        return Err(TlsError::DirectNegotiation);
    }
    if matches!(tls.mode, SslMode::VerifyCa | SslMode::VerifyFull) && tls.root_cert.is_none() {
        return Err(TlsError::RootCertRequired(tls.mode));
    }
    // No host: libpq's default is a unix socket.
    let unix = |i: usize| {
        config.get_hostaddrs().get(i).is_none()
            && !matches!(config.get_hosts().get(i), Some(tokio_postgres::config::Host::Tcp(_)))
    };
    let targets = config.get_hosts().len().max(config.get_hostaddrs().len()).max(1);
    if tls.mode.requires_tls() && (0..targets).any(unix) {
        return Err(TlsError::UnixSocket(tls.mode));
    }
    use tokio_postgres::config::SslMode as Tokio;
    config.ssl_mode(match tls.mode {
        SslMode::Disable => Tokio::Disable,
        SslMode::Prefer if (0..targets).all(unix) => Tokio::Disable,
        SslMode::Prefer => Tokio::Prefer,
        _ => Tokio::Require,
    });
    Ok(PgDsn { config, tls })
}

/// Checks a DSN as a connection would, reading `sslrootcert`; for configuration validation.
pub fn check_dsn(dsn: &str) -> Result<(), TlsError> {
    let dsn = parse_dsn(dsn)?;
    MakeRustlsConnect::new(&dsn.tls).map(drop)
}

/// Takes `sslmode` and `sslrootcert` out of a DSN; returns the rest and their (last) values.
fn split_tls(dsn: &str) -> Result<(String, Option<String>, Option<String>), TlsError> {
    let is_tls_key = |key: &str| matches!(key, "sslmode" | "sslrootcert");
    let (mut mode, mut root_cert) = (None, None);
    let mut take = |key: &str, value: String| match key {
        "sslmode" => mode = Some(value),
        _ => root_cert = Some(value),
    };
    let url_body = dsn.strip_prefix("postgresql://").or_else(|| dsn.strip_prefix("postgres://"));
    let rest = if let Some(body) = url_body {
        // Where tokio-postgres's URL parser finds the parameters: the first '?' after the credentials.
        let after_credentials = body.find('@').map_or(0, |at| at + 1);
        let Some(question) = body[after_credentials..].find('?').map(|q| q + after_credentials) else {
            return Ok((dsn.to_owned(), None, None));
        };
        let mut kept = Vec::new();
        for param in body[question + 1..].split('&') {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let key_decoded = percent_decode(key)?;
            if is_tls_key(&key_decoded) {
                take(&key_decoded, percent_decode(value)?);
            } else {
                kept.push(param);
            }
        }
        let base = &dsn[..dsn.len() - body.len() + question];
        if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else {
        let mut rest = String::with_capacity(dsn.len());
        let mut kept_from = 0;
        for (start, end, key, value) in key_values(dsn)? {
            if is_tls_key(key) {
                rest.push_str(&dsn[kept_from..start]);
                kept_from = end;
                take(key, value);
            }
        }
        rest.push_str(&dsn[kept_from..]);
        rest
    };
    Ok((rest, mode, root_cert))
}

/// The `key = value` pairs of a libpq connection string with their byte spans, as tokio-postgres
/// (and libpq) read them: values in single quotes or up to the next white space, `\` escaping.
fn key_values(dsn: &str) -> Result<Vec<(usize, usize, &str, String)>, TlsError> {
    let bytes = dsn.as_bytes();
    let skip_ws = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut pairs = Vec::new();
    let mut i = skip_ws(0);
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'=' {
            i += 1;
        }
        let key = &dsn[start..i];
        i = skip_ws(i);
        if bytes.get(i) != Some(&b'=') {
            return Err(TlsError::Dsn(format!("expected '=' after the keyword at byte {start}")));
        }
        i = skip_ws(i + 1);
        let quoted = bytes.get(i) == Some(&b'\'');
        i += usize::from(quoted);
        let mut value = Vec::new();
        loop {
            match bytes.get(i) {
                None if quoted => {
                    return Err(TlsError::Dsn(format!("unterminated quoted value at byte {start}")))
                }
                None => break,
                Some(b'\'') if quoted => {
                    i += 1;
                    break;
                }
                Some(b) if !quoted && b.is_ascii_whitespace() => break,
                Some(b'\\') => {
                    if let Some(&escaped) = bytes.get(i + 1) {
                        value.push(escaped);
                    }
                    i += 2;
                }
                Some(&b) => {
                    value.push(b);
                    i += 1;
                }
            }
        }
        let end = i.min(bytes.len());
        let value = String::from_utf8(value)
            .map_err(|_| TlsError::Dsn(format!("value at byte {start} is not UTF-8")))?;
        pairs.push((start, end, key, value));
        i = skip_ws(end);
    }
    Ok(pairs)
}

fn percent_decode(text: &str) -> Result<String, TlsError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%').then(|| text.get(i + 1..i + 3)).flatten();
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    // The text is not quoted back: it may be part of a password.
    String::from_utf8(out)
        .map_err(|_| TlsError::Dsn("a URL parameter does not percent-decode to UTF-8".into()))
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let read_error = |cause| TlsError::RootCertRead { path: path.to_owned(), cause };
    let invalid = |reason: String| TlsError::RootCertInvalid { path: path.to_owned(), reason };
    let size = std::fs::metadata(path).map_err(read_error)?.len();
    if size > ROOT_CERT_BYTES_MAX {
        return Err(invalid(format!("{size} bytes, more than the {ROOT_CERT_BYTES_MAX} we read")));
    }
    let pem = std::fs::read(path).map_err(read_error)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| invalid(format!("bad PEM: {e}")))?;
        roots.add(cert).map_err(|e| invalid(format!("unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(invalid("no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)".into()));
    }
    Ok(roots)
}

/// The rustls client configuration for `settings` (reads `sslrootcert`); `None` for `disable`.
pub fn client_config(settings: &TlsSettings) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    if settings.mode == SslMode::Disable {
        return Ok(None);
    }
    crate::install_tls_provider();
    let provider = CryptoProvider::get_default().cloned().expect("install_tls_provider installs one");
    let algorithms = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions");
    let roots = match (&settings.root_cert, settings.verify()) {
        (Some(path), Verify::Chain | Verify::ChainAndName) => Some(Arc::new(load_roots(path)?)),
        _ => None,
    };
    let config = match (settings.verify(), roots) {
        (Verify::ChainAndName, Some(roots)) => builder.with_root_certificates(roots),
        (Verify::Chain, Some(roots)) => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(ChainOnly { roots, algorithms }))
        }
        _ => builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification { algorithms })),
    };
    Ok(Some(Arc::new(config.with_no_client_auth())))
}

/// `require` without `sslrootcert`: any certificate, but the handshake's signatures are checked (the
/// server holds the key of the certificate it sent).
#[derive(Debug)]
struct NoVerification {
    algorithms: WebPkiSupportedAlgorithms,
}

/// `verify-ca`: the chain must lead to a root of `sslrootcert`; the host name is not checked.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algorithms.supported_schemes()
        }
    };
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

/// TLS connections for one DSN's settings: tokio-postgres's `MakeTlsConnect`, and
/// [`handshake`](Self::handshake) for our replication client.
#[derive(Debug, Clone)]
pub struct MakeRustlsConnect {
    config: Option<Arc<ClientConfig>>,
    settings: TlsSettings,
}

impl MakeRustlsConnect {
    /// Builds the rustls configuration (reads `sslrootcert`).
    pub fn new(settings: &TlsSettings) -> Result<MakeRustlsConnect, TlsError> {
        Ok(MakeRustlsConnect { config: client_config(settings)?, settings: settings.clone() })
    }

    /// The TLS handshake on `stream`, after the server answered 'S' to SSLRequest; `host` is the
    /// name (or IP address) the certificate must be for under `verify-full`.
    pub async fn handshake<S>(
        &self,
        host: &str,
        stream: S,
    ) -> Result<tokio_rustls::client::TlsStream<S>, TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let handshake_error = |cause| TlsError::Handshake { host: host.to_owned(), cause };
        let Some(config) = &self.config else {
            return Err(handshake_error(std::io::Error::other("TLS is off (sslmode=disable)")));
        };
        let name =
            ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName(host.to_owned()))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
        connector.connect(name, stream).await.map_err(|error| {
            match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                Some(cause @ rustls::Error::InvalidCertificate(_)) => TlsError::Verification {
                    host: host.to_owned(),
                    settings: self.settings.describe(),
                    cause: cause.clone(),
                },
                _ => handshake_error(error),
            }
        })
    }
}

impl<S> MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = TlsError;

    /// Never fails: tokio-postgres calls this with an empty `domain` for unix sockets too, where the
    /// handshake is never started.
    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, TlsError> {
        Ok(RustlsConnect { tls: self.clone(), host: domain.to_owned() })
    }
}

/// One connection's TLS handshake, for tokio-postgres.
#[derive(Debug)]
pub struct RustlsConnect {
    tls: MakeRustlsConnect,
    host: String,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = TlsError;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, TlsError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move { self.tls.handshake(&self.host, stream).await.map(RustlsStream) })
    }
}

/// A TLS stream for tokio-postgres. No channel binding (SCRAM-SHA-256 without `-PLUS`).
#[derive(Debug)]
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

/// A failed [`connect`]: the DSN or its TLS settings, or the connection itself.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Displayed with its sources (tokio-postgres's own text is only "error performing TLS
    /// handshake", "db error", ...).
    #[error("{}", error_chain(.0))]
    Postgres(tokio_postgres::Error),
}

/// An ordinary (SQL) tokio-postgres connection for `dsn`, with TLS as its `sslmode` says. Spawn the
/// returned connection.
pub async fn connect(
    dsn: &str,
) -> Result<
    (
        tokio_postgres::Client,
        tokio_postgres::Connection<tokio_postgres::Socket, RustlsStream<tokio_postgres::Socket>>,
    ),
    ConnectError,
> {
    let dsn = parse_dsn(dsn)?;
    let tls = MakeRustlsConnect::new(&dsn.tls)?;
    dsn.config.connect(tls).await.map_err(ConnectError::Postgres)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::config::{Host, SslMode as Tokio};

    fn tls(dsn: &str) -> (TlsSettings, Tokio) {
        let parsed = parse_dsn(dsn).unwrap_or_else(|e| panic!("{dsn}: {e}"));
        (parsed.tls, parsed.config.get_ssl_mode())
    }

    #[test]
    fn key_value_form() {
        let parsed =
            parse_dsn("host=db.local sslmode=verify-full  sslrootcert=/etc/ca.pem dbname=shop user=remix")
                .unwrap();
        assert_eq!(
            parsed.tls,
            TlsSettings { mode: SslMode::VerifyFull, root_cert: Some("/etc/ca.pem".into()) }
        );
        assert_eq!(parsed.config.get_ssl_mode(), Tokio::Require);
        assert_eq!(parsed.config.get_hosts(), &[Host::Tcp("db.local".into())]);
        assert_eq!((parsed.config.get_dbname(), parsed.config.get_user()), (Some("shop"), Some("remix")));

        let quoted =
            parse_dsn(r"sslrootcert = '/a b/it\'s.pem' password='p w' host=h sslmode = verify-ca").unwrap();
        assert_eq!(quoted.tls.root_cert, Some(PathBuf::from("/a b/it's.pem")));
        assert_eq!(quoted.tls.mode, SslMode::VerifyCa);
        assert_eq!(quoted.config.get_password(), Some(&b"p w"[..]));
        // The last one wins, as in libpq.
        assert_eq!(tls("host=h sslmode=disable sslmode=require").0.mode, SslMode::Require);
        assert!(matches!(parse_dsn("host=h sslrootcert='/x"), Err(TlsError::Dsn(_))));
        assert!(matches!(parse_dsn("host=h bogus=1"), Err(TlsError::Dsn(_))));
    }

    #[test]
    fn url_form() {
        let parsed = parse_dsn(
            "postgresql://u:p%3F@db.local:6000/shop?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem",
        )
        .unwrap();
        assert_eq!(
            parsed.tls,
            TlsSettings { mode: SslMode::VerifyFull, root_cert: Some("/etc/ca x.pem".into()) }
        );
        assert_eq!(parsed.config.get_application_name(), Some("x"));
        assert_eq!(parsed.config.get_password(), Some(&b"p?"[..]));
        assert_eq!(parsed.config.get_ports(), &[6000]);
        let (only, _) = tls("postgres://db.local/shop?sslmode=require");
        assert_eq!(only, TlsSettings { mode: SslMode::Require, root_cert: None });
        assert_eq!(tls("postgres://db.local/shop").0.mode, SslMode::Prefer);
    }

    #[test]
    fn modes() {
        assert_eq!(tls("host=h"), (TlsSettings::default(), Tokio::Prefer));
        assert_eq!(tls("host=h sslmode=disable").1, Tokio::Disable);
        assert_eq!(tls("host=h sslmode=require").1, Tokio::Require);
        for bad in ["allow", "verify_full", ""] {
            let error = parse_dsn(&format!("host=h sslmode='{bad}'")).unwrap_err();
            assert!(matches!(error, TlsError::InvalidMode(_)), "{bad}: {error}");
        }
        let error = parse_dsn("host=h sslmode=verify-full").unwrap_err();
        assert!(
            error.to_string().contains("needs sslrootcert") && error.to_string().contains("~/.postgresql")
        );
        assert!(matches!(parse_dsn("host=h sslmode=verify-ca"), Err(TlsError::RootCertRequired(_))));
        assert!(matches!(
            parse_dsn("host=h sslnegotiation=direct sslmode=require"),
            Err(TlsError::DirectNegotiation)
        ));
        // require with a root certificate is verify-ca; require without one and prefer verify nothing.
        let with_root = TlsSettings { mode: SslMode::Require, root_cert: Some("/ca.pem".into()) };
        assert_eq!(with_root.verify(), Verify::Chain);
        assert_eq!(tls("host=h sslmode=require").0.verify(), Verify::Nothing);
        assert_eq!(tls("host=h sslmode=prefer sslrootcert=/ca.pem").0.verify(), Verify::Nothing);
        assert_eq!(tls("host=h sslmode=verify-full sslrootcert=/ca.pem").0.verify(), Verify::ChainAndName);
    }

    #[test]
    fn unix_sockets_never_use_tls() {
        assert_eq!(tls("host=/run/postgresql").1, Tokio::Disable);
        assert_eq!(tls("user=x").1, Tokio::Disable);
        assert_eq!(tls("host=/run/postgresql,db.local").1, Tokio::Prefer);
        assert_eq!(tls("host=/run/postgresql hostaddr=127.0.0.1 sslmode=require").1, Tokio::Require);
        for dsn in ["host=/run/postgresql sslmode=require", "user=x sslmode=verify-full sslrootcert=/ca.pem"]
        {
            let error = parse_dsn(dsn).unwrap_err();
            assert!(matches!(error, TlsError::UnixSocket(_)), "{dsn}: {error}");
            assert!(error.to_string().contains("unix socket"));
        }
    }

    #[test]
    fn root_certificates_are_read_when_the_connector_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let settings = TlsSettings { mode: SslMode::VerifyFull, root_cert: Some(missing.clone()) };
        let error = MakeRustlsConnect::new(&settings).unwrap_err();
        assert!(matches!(error, TlsError::RootCertRead { .. }), "{error}");
        assert!(error.to_string().contains(&missing.display().to_string()));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        let settings = TlsSettings { mode: SslMode::VerifyCa, root_cert: Some(empty) };
        let error = MakeRustlsConnect::new(&settings).unwrap_err();
        assert!(error.to_string().contains("no certificate"), "{error}");
        // Without verification nothing is read; disable builds nothing.
        assert!(MakeRustlsConnect::new(&TlsSettings { mode: SslMode::Require, root_cert: None }).is_ok());
        assert!(client_config(&TlsSettings::default()).unwrap().is_some());
        assert!(client_config(&TlsSettings { mode: SslMode::Disable, root_cert: None }).unwrap().is_none());
        assert!(check_dsn(&format!("host=h sslmode=verify-full sslrootcert={}", missing.display())).is_err());
        assert!(check_dsn("host=h sslmode=require").is_ok());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("%2Fa%20b%zz%").unwrap(), "/a b%zz%");
        assert!(percent_decode("%ff").is_err());
    }
}
