//! Our own replication client on `postgres-protocol`: startup with `replication=database`,
//! cleartext/MD5/SCRAM-SHA-256 authentication, simple queries (`IDENTIFY_SYSTEM`,
//! `CREATE_REPLICATION_SLOT`), and the CopyBoth stream of `START_REPLICATION`: XLogData and keepalive
//! messages in, standby status updates out.
//!
//! The walsender session is started with `TimeZone=UTC`, `DateStyle=ISO` and
//! `IntervalStyle=iso_8601`, which fixes the text form of the values pgoutput sends.
//!
//! Over TCP, TLS is negotiated first as the DSN's `sslmode` says (SSLRequest, then the rustls
//! handshake of `tls.rs` on 'S'); no SCRAM channel binding.

use bytes::{Buf, BufMut, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::{backend::Message, frontend};
use std::net::IpAddr;
use std::path::PathBuf;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::tls::{MakeRustlsConnect, SslMode, TlsError, TlsSettings};

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
pub const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
/// Largest protocol message we accept (a pgoutput message holds at most one row).
const MESSAGE_BYTES_MAX: usize = 1 << 30;
/// Each read from the server asks for at least this much room.
const READ_BYTES_MIN: usize = 64 * 1024;

/// Where and as whom to connect, from a libpq-style DSN (`host=... port=... user=... dbname=...`) or
/// a `postgresql://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    pub host: Host,
    /// `hostaddr`: the address to connect to instead of resolving `host` (which TLS still verifies).
    pub hostaddr: Option<IpAddr>,
    pub port: u16,
    pub user: String,
    pub password: Option<Vec<u8>>,
    pub dbname: String,
    /// `sslmode` and `sslrootcert`; see `tls.rs`.
    pub tls: TlsSettings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Tcp(String),
    Unix(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// An error the server sent, with its SQLSTATE.
    #[error("PostgreSQL error {code}: {message}{}", detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Server { code: String, message: String, detail: Option<String> },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("invalid DSN: {0}")]
    Dsn(String),
    #[error(transparent)]
    Tls(TlsError),
}

impl From<TlsError> for PgError {
    fn from(error: TlsError) -> PgError {
        match error {
            TlsError::Dsn(message) => PgError::Dsn(message),
            other => PgError::Tls(other),
        }
    }
}

impl PgError {
    /// Whether retrying later may help (connection trouble, server restarting) as opposed to a
    /// configuration problem (authentication, missing database or privilege).
    pub fn is_transient(&self) -> bool {
        match self {
            PgError::Io(_) => true,
            PgError::Server { code, .. } => {
                code.starts_with("08") || code.starts_with("57") || code == "53300" || code == "55006"
            }
            PgError::Tls(error) => error.is_transient(),
            PgError::Protocol(_) | PgError::Dsn(_) => false,
        }
    }
}

/// Parses a DSN, with its TLS settings (checked, `sslrootcert` not read yet); the first host only.
pub fn parse_dsn(dsn: &str) -> Result<ConnInfo, PgError> {
    let super::tls::PgDsn { config, tls } = super::tls::parse_dsn(dsn)?;
    let hostaddr = config.get_hostaddrs().first().copied();
    let host = match (config.get_hosts().first(), hostaddr) {
        (Some(tokio_postgres::config::Host::Tcp(host)), _) => Host::Tcp(host.clone()),
        (Some(tokio_postgres::config::Host::Unix(path)), None) => Host::Unix(path.clone()),
        (_, Some(addr)) => Host::Tcp(addr.to_string()),
        (None, None) => Host::Unix(PathBuf::from("/var/run/postgresql")),
    };
    let user = config
        .get_user()
        .map(str::to_owned)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "postgres".into());
    Ok(ConnInfo {
        host,
        hostaddr,
        port: config.get_ports().first().copied().unwrap_or(5432),
        dbname: config.get_dbname().map_or_else(|| user.clone(), str::to_owned),
        user,
        password: config.get_password().map(<[u8]>::to_vec),
        tls,
    })
}

/// SSLRequest, then the TLS handshake when the server answers 'S'; plaintext under `disable`, or
/// under `prefer` when the server answers 'N'.
async fn negotiate_tls(
    mut stream: tokio::net::TcpStream,
    host: &str,
    tls: &TlsSettings,
) -> Result<Box<dyn Stream>, PgError> {
    if tls.mode == SslMode::Disable {
        return Ok(Box::new(stream));
    }
    let connector = MakeRustlsConnect::new(tls)?;
    let mut request = BytesMut::with_capacity(8);
    frontend::ssl_request(&mut request);
    stream.write_all(&request).await?;
    // One byte, unbuffered: nothing the server sends before the handshake may count as TLS data.
    match stream.read_u8().await? {
        b'S' => Ok(Box::new(connector.handshake(host, stream).await?)),
        b'N' if tls.mode == SslMode::Prefer => Ok(Box::new(stream)),
        b'N' => Err(TlsError::Refused(tls.mode).into()),
        other => Err(PgError::Protocol(format!("unexpected answer {other:#04x} to SSLRequest"))),
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One message of the replication stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// WAL data: one pgoutput message.
    XLogData { wal_start: u64, wal_end: u64, time_us: i64, data: bytes::Bytes },
    /// The server's position; `reply_requested` asks for a status update at once.
    Keepalive { wal_end: u64, time_us: i64, reply_requested: bool },
}

/// A walsender connection (`replication=database`).
pub struct ReplicationConn {
    stream: Box<dyn Stream>,
    read: BytesMut,
    write: BytesMut,
}

impl std::fmt::Debug for ReplicationConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationConn").finish_non_exhaustive()
    }
}

/// A frame read off the wire: its tag and the whole message (tag and length included).
struct Frame {
    tag: u8,
    bytes: BytesMut,
}

impl ReplicationConn {
    pub async fn connect(info: &ConnInfo) -> Result<ReplicationConn, PgError> {
        let stream: Box<dyn Stream> = match &info.host {
            Host::Tcp(host) => {
                let address = info.hostaddr.map_or_else(|| host.clone(), |addr| addr.to_string());
                let stream = tokio::net::TcpStream::connect((address.as_str(), info.port)).await?;
                stream.set_nodelay(true)?;
                negotiate_tls(stream, host, &info.tls).await?
            }
            // PostgreSQL never does TLS here; `parse_dsn` refused `sslmode=require` and above.
            Host::Unix(dir) => {
                Box::new(tokio::net::UnixStream::connect(dir.join(format!(".s.PGSQL.{}", info.port))).await?)
            }
        };
        let mut conn =
            ReplicationConn { stream, read: BytesMut::with_capacity(READ_BYTES_MIN), write: BytesMut::new() };
        let options = "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=iso_8601 -c extra_float_digits=3";
        let parameters = [
            ("user", info.user.as_str()),
            ("database", info.dbname.as_str()),
            ("replication", "database"),
            ("options", options),
            ("application_name", "remix"),
        ];
        frontend::startup_message(parameters.iter().copied(), &mut conn.write)?;
        conn.flush().await?;
        conn.authenticate(info).await?;
        conn.until_ready().await?;
        Ok(conn)
    }

    async fn flush(&mut self) -> Result<(), PgError> {
        self.stream.write_all(&self.write).await?;
        self.stream.flush().await?;
        self.write.clear();
        Ok(())
    }

    /// Reads one whole frame. Cancellation-safe: bytes read stay in the buffer.
    async fn frame(&mut self) -> Result<Frame, PgError> {
        loop {
            if self.read.len() >= 5 {
                let len = u32::from_be_bytes(self.read[1..5].try_into().expect("4 bytes")) as usize;
                if !(4..=MESSAGE_BYTES_MAX).contains(&len) {
                    return Err(PgError::Protocol(format!("invalid message length {len}")));
                }
                if self.read.len() > len {
                    let tag = self.read[0];
                    return Ok(Frame { tag, bytes: self.read.split_to(len + 1) });
                }
                self.read.reserve(len + 1 - self.read.len());
            }
            // Frames are split off the front, so the spare room shrinks; without this a read could
            // fill only the few bytes left (one syscall per small message).
            if self.read.capacity() - self.read.len() < READ_BYTES_MIN {
                self.read.reserve(READ_BYTES_MIN);
            }
            if self.stream.read_buf(&mut self.read).await? == 0 {
                return Err(PgError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// The next backend message that `postgres-protocol` knows (CopyBothResponse is handled by the
    /// caller, it is not in its parser).
    async fn message(&mut self) -> Result<Message, PgError> {
        loop {
            let mut frame = self.frame().await?;
            if frame.tag == b'W' {
                return Err(PgError::Protocol("unexpected CopyBothResponse".into()));
            }
            let message =
                Message::parse(&mut frame.bytes)?.ok_or_else(|| PgError::Protocol("short message".into()))?;
            match message {
                Message::ErrorResponse(body) => return Err(server_error(body.fields())),
                Message::NoticeResponse(_) | Message::ParameterStatus(_) => continue,
                other => return Ok(other),
            }
        }
    }

    async fn authenticate(&mut self, info: &ConnInfo) -> Result<(), PgError> {
        let password = || {
            info.password.clone().ok_or_else(|| {
                PgError::Protocol("the server asks for a password; put it in the DSN (password=...)".into())
            })
        };
        loop {
            match self.message().await? {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(&password()?, &mut self.write)?;
                    self.flush().await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = postgres_protocol::authentication::md5_hash(
                        info.user.as_bytes(),
                        &password()?,
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.write)?;
                    self.flush().await?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut scram = false;
                    while let Some(mechanism) = mechanisms.next()? {
                        scram |= mechanism == SCRAM_SHA_256;
                    }
                    if !scram {
                        return Err(PgError::Protocol(
                            "the server offers no SASL mechanism we support (SCRAM-SHA-256)".into(),
                        ));
                    }
                    self.scram(&password()?).await?;
                }
                other => {
                    return Err(PgError::Protocol(format!(
                        "unsupported authentication request {}",
                        message_name(&other)
                    )))
                }
            }
        }
    }

    async fn scram(&mut self, password: &[u8]) -> Result<(), PgError> {
        let mut scram = ScramSha256::new(password, ChannelBinding::unsupported());
        frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut self.write)?;
        self.flush().await?;
        let Message::AuthenticationSaslContinue(body) = self.message().await? else {
            return Err(PgError::Protocol("expected SASL continue".into()));
        };
        scram.update(body.data())?;
        frontend::sasl_response(scram.message(), &mut self.write)?;
        self.flush().await?;
        let Message::AuthenticationSaslFinal(body) = self.message().await? else {
            return Err(PgError::Protocol("expected SASL final".into()));
        };
        scram.finish(body.data())?;
        Ok(())
    }

    async fn until_ready(&mut self) -> Result<(), PgError> {
        loop {
            if let Message::ReadyForQuery(_) = self.message().await? {
                return Ok(());
            }
        }
    }

    /// Runs a simple query and returns its rows as text (NULL as `None`). For replication commands
    /// and the few SQL statements a walsender accepts.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
        frontend::query(sql, &mut self.write)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut failure = None;
        loop {
            let frame = self.frame().await?;
            let mut bytes = frame.bytes;
            match Message::parse(&mut bytes)?.ok_or_else(|| PgError::Protocol("short message".into()))? {
                Message::DataRow(row) => {
                    let buffer = row.buffer();
                    let values = row
                        .ranges()
                        .map(|range| Ok(range.map(|r| String::from_utf8_lossy(&buffer[r]).into_owned())))
                        .collect()?;
                    rows.push(values);
                }
                Message::ErrorResponse(body) => failure = Some(server_error(body.fields())),
                Message::ReadyForQuery(_) => return failure.map_or(Ok(rows), Err),
                _ => {}
            }
        }
    }

    /// `CREATE_REPLICATION_SLOT <slot> LOGICAL pgoutput`, exporting a snapshot when asked; returns the
    /// consistent point and the snapshot name.
    pub async fn create_slot(
        &mut self,
        slot: &str,
        export_snapshot: bool,
    ) -> Result<(u64, Option<String>), PgError> {
        let snapshot = if export_snapshot { "EXPORT_SNAPSHOT" } else { "NOEXPORT_SNAPSHOT" };
        let rows = self
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {snapshot}",
                quote_ident(slot)
            ))
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| PgError::Protocol("CREATE_REPLICATION_SLOT returned no row".into()))?;
        let lsn =
            row.get(1).cloned().flatten().ok_or_else(|| PgError::Protocol("no consistent point".into()))?;
        Ok((parse_lsn(&lsn)?, row.get(2).cloned().flatten()))
    }

    /// Starts streaming from `start_lsn` (0: from the slot's confirmed position).
    pub async fn start_replication(
        mut self,
        slot: &str,
        start_lsn: u64,
        publication: &str,
    ) -> Result<ReplicationStream, PgError> {
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {} (\"proto_version\" '1', \"publication_names\" {}, \"messages\" 'true')",
            quote_ident(slot),
            format_lsn(start_lsn),
            quote_literal(&quote_ident(publication)),
        );
        frontend::query(&sql, &mut self.write)?;
        self.flush().await?;
        loop {
            let mut frame = self.frame().await?;
            if frame.tag == b'W' {
                return Ok(ReplicationStream { conn: self });
            }
            match Message::parse(&mut frame.bytes)? {
                Some(Message::ErrorResponse(body)) => return Err(server_error(body.fields())),
                Some(Message::NoticeResponse(_) | Message::ParameterStatus(_)) => {}
                _ => {
                    return Err(PgError::Protocol(format!(
                        "unexpected message '{}' after START_REPLICATION",
                        frame.tag as char
                    )))
                }
            }
        }
    }
}

/// The CopyBoth stream after `START_REPLICATION`.
#[derive(Debug)]
pub struct ReplicationStream {
    conn: ReplicationConn,
}

impl ReplicationStream {
    /// The next message. Cancellation-safe (for use in `select!` with a status timer).
    pub async fn recv(&mut self) -> Result<Replication, PgError> {
        loop {
            let mut frame = self.conn.frame().await?;
            if frame.tag != b'd' {
                let message = Message::parse(&mut frame.bytes)?;
                match message {
                    Some(Message::ErrorResponse(body)) => return Err(server_error(body.fields())),
                    Some(Message::CopyDone) => {
                        return Err(PgError::Protocol("the server ended the replication stream".into()))
                    }
                    _ => continue,
                }
            }
            let mut body = frame.bytes.split_off(5).freeze();
            if body.is_empty() {
                return Err(PgError::Protocol("empty CopyData".into()));
            }
            match body.get_u8() {
                b'w' if body.len() >= 24 => {
                    let (wal_start, wal_end, time_us) = (body.get_u64(), body.get_u64(), body.get_i64());
                    return Ok(Replication::XLogData { wal_start, wal_end, time_us, data: body });
                }
                b'k' if body.len() >= 17 => {
                    let (wal_end, time_us, reply) = (body.get_u64(), body.get_i64(), body.get_u8());
                    return Ok(Replication::Keepalive { wal_end, time_us, reply_requested: reply == 1 });
                }
                other => {
                    return Err(PgError::Protocol(format!("unknown replication message '{}'", other as char)))
                }
            }
        }
    }

    /// Standby status update: `flushed` is what the server may discard (confirmed_flush_lsn).
    pub async fn send_status(&mut self, flushed: u64, reply_requested: bool) -> Result<(), PgError> {
        let mut body = BytesMut::with_capacity(34);
        body.put_u8(b'r');
        body.put_u64(flushed); // written
        body.put_u64(flushed); // flushed
        body.put_u64(flushed); // applied
        body.put_i64(now_pg_us());
        body.put_u8(u8::from(reply_requested));
        frontend::CopyData::new(&body[..])?.write(&mut self.conn.write);
        self.conn.flush().await
    }

    /// Ends the stream politely.
    pub async fn close(mut self) -> Result<(), PgError> {
        frontend::copy_done(&mut self.conn.write);
        frontend::terminate(&mut self.conn.write);
        self.conn.flush().await
    }
}

fn now_pg_us() -> i64 {
    let unix_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    unix_us - PG_EPOCH_OFFSET_US
}

fn server_error(mut fields: postgres_protocol::message::backend::ErrorFields<'_>) -> PgError {
    let (mut code, mut message, mut detail) = (String::new(), String::new(), None);
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'C' => code = value,
            b'M' => message = value,
            b'D' => detail = Some(value),
            _ => {}
        }
    }
    PgError::Server { code, message, detail }
}

fn message_name(message: &Message) -> &'static str {
    match message {
        Message::AuthenticationGss | Message::AuthenticationGssContinue(_) => "GSS",
        Message::AuthenticationSspi => "SSPI",
        Message::AuthenticationKerberosV5 => "Kerberos",
        Message::AuthenticationScmCredential => "SCM credential",
        _ => "message",
    }
}

/// `X/Y` hexadecimal LSN text form.
pub fn parse_lsn(text: &str) -> Result<u64, PgError> {
    let invalid = || PgError::Protocol(format!("invalid LSN '{text}'"));
    let (high, low) = text.split_once('/').ok_or_else(invalid)?;
    let high = u32::from_str_radix(high, 16).map_err(|_| invalid())?;
    let low = u32::from_str_radix(low, 16).map_err(|_| invalid())?;
    Ok((u64::from(high) << 32) | u64::from(low))
}

pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn as u32)
}

/// A quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A quoted SQL string literal.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trip() {
        assert_eq!(parse_lsn("0/1A2B3C8").unwrap(), 0x1A2B3C8);
        assert_eq!(parse_lsn("16/B374D848").unwrap(), 0x16_B374_D848);
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert!(parse_lsn("nope").is_err());
    }

    #[test]
    fn dsn_forms() {
        let info = parse_dsn("host=/tmp/sock port=5433 user=remix dbname=shop password=pw").unwrap();
        assert_eq!(info.host, Host::Unix("/tmp/sock".into()));
        assert_eq!((info.port, info.user.as_str(), info.dbname.as_str()), (5433, "remix", "shop"));
        assert_eq!(info.password.as_deref(), Some(&b"pw"[..]));
        assert_eq!(info.tls, TlsSettings::default());
        let url = parse_dsn("postgresql://u:p@127.0.0.1:6000/db").unwrap();
        assert_eq!(url.host, Host::Tcp("127.0.0.1".into()));
        assert!(matches!(parse_dsn("host=x port=notaport"), Err(PgError::Dsn(_))));
    }

    #[test]
    fn dsn_tls() {
        let info = parse_dsn("host=x sslmode=require").unwrap();
        assert_eq!(info.tls, TlsSettings { mode: SslMode::Require, root_cert: None });
        let url = parse_dsn("postgresql://u@db.local/shop?sslmode=verify-full&sslrootcert=/ca.pem").unwrap();
        assert_eq!((url.host, url.dbname.as_str()), (Host::Tcp("db.local".into()), "shop"));
        assert_eq!(url.tls, TlsSettings { mode: SslMode::VerifyFull, root_cert: Some("/ca.pem".into()) });
        // Connect to hostaddr, verify the certificate for host.
        let info =
            parse_dsn("host=db.local hostaddr=127.0.0.1 sslmode=verify-full sslrootcert=/ca.pem").unwrap();
        assert_eq!((info.host, info.hostaddr), (Host::Tcp("db.local".into()), Some([127, 0, 0, 1].into())));
        assert_eq!(parse_dsn("hostaddr=127.0.0.1").unwrap().host, Host::Tcp("127.0.0.1".into()));
        for bad in ["host=/tmp sslmode=require", "host=x sslmode=verify-ca", "host=x sslmode=bogus"] {
            let error = parse_dsn(bad).unwrap_err();
            assert!(matches!(error, PgError::Tls(_)), "{bad}: {error}");
            assert!(!error.is_transient());
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
