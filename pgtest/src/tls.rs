//! Throwaway certificates for servers with `ssl = on`, made with the `openssl` command-line tool.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Validity of the certificates, in days: long enough for any test run.
const VALID_DAYS: &str = "3";
/// `openssl req` arguments for a new unencrypted P-256 key.
const NEW_KEY: [&str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/// A private CA and one server certificate it signed, in a temporary directory removed on drop.
///
/// ```no_run
/// use remix_pgtest::{PgOptions, PgServer, TestCerts};
/// let certs = TestCerts::generate(&["localhost", "127.0.0.1"]);
/// let pg = PgServer::start_with(PgOptions::new().ssl(&certs.cert, &certs.key).hostssl_only());
/// let dsn = format!("{} sslmode=verify-full sslrootcert={}", pg.tcp_dsn("postgres"), certs.ca.display());
/// # let _ = dsn;
/// ```
#[derive(Debug)]
pub struct TestCerts {
    _dir: tempfile::TempDir,
    /// The CA certificate (PEM): what a client's `sslrootcert` names.
    pub ca: PathBuf,
    /// The server certificate (PEM), for the names given to [`generate`](Self::generate).
    pub cert: PathBuf,
    /// The server's private key (PEM, unencrypted).
    pub key: PathBuf,
}

impl TestCerts {
    /// A new CA (P-256) and a server certificate signed by it whose subject alternative names are
    /// `names`: DNS names or IP addresses (the first is also the common name). Panics with openssl's
    /// output when it fails.
    pub fn generate(names: &[&str]) -> TestCerts {
        assert!(!names.is_empty(), "remix-pgtest: a certificate needs at least one name");
        let dir = tempfile::Builder::new()
            .prefix("remix-pgtest-certs-")
            .tempdir()
            .unwrap_or_else(|e| panic!("remix-pgtest: cannot create a directory for certificates: {e}"));
        let path = |name: &str| dir.path().join(name);
        // Unique: two test CAs of one name would make a foreign chain look like a bad signature.
        let ca_id = dir.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let ca_conf = format!(
            "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = ca\n\
             [dn]\nCN = remix-pgtest CA {ca_id}\n\
             [ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\n"
        );
        write(&path("ca.cnf"), &ca_conf);
        let alt_name = |n: &&str| {
            if n.parse::<std::net::IpAddr>().is_ok() {
                format!("IP:{n}")
            } else {
                format!("DNS:{n}")
            }
        };
        let alt_names: Vec<String> = names.iter().map(alt_name).collect();
        write(
            &path("server.ext"),
            &format!(
                "basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature,keyEncipherment\n\
                 extendedKeyUsage = serverAuth\nsubjectAltName = {}\nsubjectKeyIdentifier = hash\n\
                 authorityKeyIdentifier = keyid\n",
                alt_names.join(",")
            ),
        );
        let mut ca_args = vec!["req", "-x509", "-new", "-keyout", "ca.key", "-out", "ca.pem"];
        ca_args.extend(["-days", VALID_DAYS, "-config", "ca.cnf"]);
        ca_args.extend(NEW_KEY);
        openssl(dir.path(), &ca_args);
        let subject = format!("/CN={}", names[0]);
        let mut csr_args = vec!["req", "-new", "-keyout", "server.key", "-out", "server.csr"];
        csr_args.extend(["-subj", subject.as_str()]);
        csr_args.extend(NEW_KEY);
        openssl(dir.path(), &csr_args);
        openssl(
            dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                VALID_DAYS,
                "-extfile",
                "server.ext",
            ],
        );
        TestCerts { ca: path("ca.pem"), cert: path("server.crt"), key: path("server.key"), _dir: dir }
    }
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("remix-pgtest: cannot write {}: {e}", path.display()));
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("remix-pgtest: cannot run openssl (the command-line tool): {e}"));
    if !out.status.success() {
        panic!(
            "remix-pgtest: openssl {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
