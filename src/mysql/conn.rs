//! Connecting to MariaDB/MySQL, shared by the source, the target and `remix doctor`: the `url` setting
//! (`mysql://user:password@host:port/database?ssl-mode=...&ssl-ca=...`, the MySQL client's TLS
//! settings on rustls), the session every connection starts with, and the classification of errors.
//!
//! `ssl-mode`: `disabled` (the default), `required` (encrypted, the certificate not checked),
//! `verify_ca` (signed by `ssl-ca` or a public root, any name), `verify_identity` (and the name
//! matches the host). Other query parameters are `mysql_async`'s own (`socket`, `compression`, ...).

use mysql_async::{Opts, OptsBuilder, SslOpts};
use std::time::Duration;

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("invalid url: expected mysql://user:password@host:port/database")]
    Scheme,
    #[error(
        "invalid url: unknown ssl-mode '{0}' (expected disabled, required, verify_ca or verify_identity)"
    )]
    SslMode(String),
    #[error("invalid url: ssl-ca needs ssl-mode verify_ca or verify_identity")]
    CaWithoutVerify,
    #[error("invalid url: {0}")]
    Driver(#[from] mysql_async::UrlError),
}

/// A parsed `url`.
#[derive(Debug, Clone)]
pub struct MyUrl {
    pub opts: Opts,
    pub database: Option<String>,
}

/// Parses a `url` setting (see the module docs).
pub fn parse_url(url: &str) -> Result<MyUrl, UrlError> {
    if !url.starts_with("mysql://") && !url.starts_with("mariadb://") {
        return Err(UrlError::Scheme);
    }
    let url = url.strip_prefix("mariadb://").map_or_else(|| url.to_owned(), |rest| format!("mysql://{rest}"));
    let (base, query) = url.split_once('?').unwrap_or((&url, ""));
    let mut kept = Vec::new();
    let (mut mode, mut ca) = ("disabled".to_owned(), None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key.replace('_', "-").to_ascii_lowercase().as_str() {
            "ssl-mode" | "sslmode" => mode = value.to_ascii_lowercase().replace('-', "_"),
            "ssl-ca" | "sslrootcert" => ca = Some(percent_decode(value)),
            _ => kept.push(pair),
        }
    }
    let rebuilt = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    let parsed = Opts::from_url(&rebuilt)?;
    let ssl = match mode.as_str() {
        "disabled" | "disable" => None,
        "required" | "require" | "preferred" => Some(
            SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        ),
        "verify_ca" => Some(SslOpts::default().with_danger_skip_domain_validation(true)),
        "verify_identity" | "verify_full" => Some(SslOpts::default()),
        other => return Err(UrlError::SslMode(other.to_owned())),
    };
    let ssl = match (ssl, ca) {
        (Some(ssl), Some(ca)) if !ssl.accept_invalid_certs() => {
            Some(ssl.with_root_certs(vec![std::path::PathBuf::from(ca).into()]))
        }
        (_, Some(_)) => return Err(UrlError::CaWithoutVerify),
        (ssl, None) => ssl,
    };
    let database = parsed.db_name().map(str::to_owned).filter(|d| !d.is_empty());
    let opts = OptsBuilder::from_opts(parsed)
        .ssl_opts(ssl)
        .prefer_socket(Some(false))
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .stmt_cache_size(Some(256))
        .into();
    Ok(MyUrl { opts, database })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            if let Some(b) =
                s.get(i + 1..i + 3).and_then(crate::util::decode_hex).and_then(|v| v.first().copied())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Connects (with a timeout) and sets the session up: UTC, utf8mb4, strict mode.
pub async fn connect(opts: &Opts) -> Result<mysql_async::Conn, mysql_async::Error> {
    use mysql_async::prelude::Queryable;
    crate::install_tls_provider();
    let connecting = mysql_async::Conn::new(opts.clone());
    let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(conn) => conn?,
        Err(_) => {
            return Err(mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {CONNECT_TIMEOUT:?}"),
            ))))
        }
    };
    conn.query_drop(
        "SET NAMES utf8mb4, time_zone = '+00:00', \
         sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO'",
    )
    .await?;
    Ok(conn)
}

/// What an error means for the one who got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The connection is gone or unusable: reconnect, then retry.
    Broken,
    /// Retry on the same connection (deadlock, lock wait timeout, ...).
    Transient,
    /// Will fail again.
    Permanent,
}

/// Server error codes worth retrying: deadlock (1213), lock wait timeout (1205), too many
/// connections (1040, 1203), out of memory/resources (1037, 1038, 1041), disk full (1021), query
/// interrupted (1317), statement timeout (1969), read-only (1290, 1836: a failover in progress),
/// XA/Galera conflicts (1180, 1614).
const TRANSIENT_CODES: &[u16] =
    &[1213, 1205, 1040, 1203, 1037, 1038, 1041, 1021, 1317, 1969, 1290, 1836, 1180, 1614];
/// Server error codes that mean the connection is going away: shutdown (1053, 1077, 1078, 1079,
/// 1080), killed (1927), server gone (2006, 2013), network errors (1158-1161).
const BROKEN_CODES: &[u16] = &[1053, 1077, 1078, 1079, 1080, 1927, 2006, 2013, 1158, 1159, 1160, 1161, 1184];

pub fn classify(e: &mysql_async::Error) -> ErrorClass {
    match e {
        mysql_async::Error::Server(s) if BROKEN_CODES.contains(&s.code) => ErrorClass::Broken,
        mysql_async::Error::Server(s) if TRANSIENT_CODES.contains(&s.code) => ErrorClass::Transient,
        mysql_async::Error::Server(_) => ErrorClass::Permanent,
        mysql_async::Error::Url(_) => ErrorClass::Permanent,
        _ => ErrorClass::Broken,
    }
}

/// The server's error code, if it is a server error.
pub fn code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// An error on one line: the server's message with its code, or the chain of causes.
pub fn describe(e: &mysql_async::Error) -> String {
    let text = match e {
        mysql_async::Error::Server(s) => format!("{} (error {}, SQLSTATE {})", s.message, s.code, s.state),
        other => crate::util::error_chain(other),
    };
    crate::util::excerpt(&text, 600)
}

/// A quoted identifier: backticks, doubled inside.
pub fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_tls_settings() {
        let u = parse_url("mysql://u:p@db.example:3307/shop").unwrap();
        assert_eq!(u.database.as_deref(), Some("shop"));
        assert_eq!(u.opts.tcp_port(), 3307);
        assert!(u.opts.ssl_opts().is_none());
        let u = parse_url("mysql://u@h/?ssl-mode=required").unwrap();
        assert_eq!(u.database, None);
        assert!(u.opts.ssl_opts().unwrap().accept_invalid_certs());
        let u = parse_url("mysql://u@h/d?ssl-mode=VERIFY_CA&ssl-ca=%2Fetc%2Fca.pem").unwrap();
        let ssl = u.opts.ssl_opts().unwrap();
        assert!(ssl.skip_domain_validation() && !ssl.accept_invalid_certs());
        assert_eq!(ssl.root_certs().len(), 1);
        assert!(parse_url("mariadb://u@h:3306/d?ssl-mode=verify_identity")
            .unwrap()
            .opts
            .ssl_opts()
            .is_some());
        assert!(matches!(parse_url("postgres://h/d"), Err(UrlError::Scheme)));
        assert!(matches!(parse_url("mysql://h/d?ssl-mode=sometimes"), Err(UrlError::SslMode(_))));
        assert!(matches!(parse_url("mysql://h/d?ssl-ca=/x"), Err(UrlError::CaWithoutVerify)));
        assert!(matches!(parse_url("mysql://h/d?pool_min=x"), Err(UrlError::Driver(_))));
    }

    #[test]
    fn errors_are_classified_by_code() {
        let server = |code| {
            mysql_async::Error::Server(mysql_async::ServerError {
                code,
                message: "m".into(),
                state: "HY000".into(),
            })
        };
        for code in [1213, 1205] {
            assert_eq!(classify(&server(code)), ErrorClass::Transient);
        }
        for code in [1062, 1406, 1264, 1048, 1146, 4025] {
            assert_eq!(classify(&server(code)), ErrorClass::Permanent);
        }
        assert_eq!(classify(&server(1927)), ErrorClass::Broken);
        assert_eq!(
            classify(&mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed)),
            ErrorClass::Broken
        );
        assert_eq!(quote("we`ird"), "`we``ird`");
    }
}
