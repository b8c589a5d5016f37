//! TLS to PostgreSQL (`sslmode`, `sslrootcert`) against real servers: one with `ssl = on` that accepts
//! TCP connections only over TLS (certificate for `localhost` and `127.0.0.1`, signed by a throwaway
//! CA), one with `ssl = off`. The source and target stream over `verify-full`; every mode is checked on
//! both our replication client and tokio-postgres; `remix check` names bad TLS settings.

use crate::support::*;
use remix::postgres::{conn, tls};
use remix_pgtest::{PgOptions, PgServer, TestCerts};
use serde_json::Value;

const CUSTOMERS: &str =
    "CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, full_name text, created_at timestamptz)";

const CONFIG: &str = r#"
data_dir: "${REMIX_DATA_DIR}"
admin: { listen: "${REMIX_ADMIN_ADDR}" }
models:
  customer: { schema: "${REMIX_SCHEMAS}/customer.json", key: [id] }
sources:
  - name: shop_db
    kind: postgres
    dsn: "${REMIX_PG_SOURCE}"
    snapshot: initial
    tables:
      public.customers: { model: customer, fields: { id: id, email: email, name: full_name } }
targets:
  - name: warehouse
    kind: postgres
    dsn: "${REMIX_PG_TARGET}"
    create_tables: true
    batch: { linger_ms: 10 }
    models:
      customer: { table: public.customers, fields: { id: id, email: email, name: name } }
"#;

/// A server that takes TCP connections only over TLS, with its certificates.
fn tls_server() -> (PgServer, TestCerts) {
    let certs = TestCerts::generate(&["localhost", "127.0.0.1"]);
    let server = PgServer::start_with(PgOptions::new().ssl(&certs.cert, &certs.key).hostssl_only());
    (server, certs)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Connects with tokio-postgres and returns whether the session uses TLS (`pg_stat_ssl`), or the
/// error's text.
fn sql_connect(dsn: &str) -> Result<bool, String> {
    runtime().block_on(async {
        let (client, connection) = tls::connect(dsn).await.map_err(|e| e.to_string())?;
        let connection = tokio::spawn(connection);
        let row = client
            .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
            .await
            .map_err(|e| remix::error_chain(&e))?;
        connection.abort();
        Ok(row.get(0))
    })
}

/// Connects with our replication client and runs `IDENTIFY_SYSTEM`; the error's text.
fn replication_connect(dsn: &str) -> Result<(), String> {
    runtime().block_on(async {
        let info = conn::parse_dsn(dsn).map_err(|e| e.to_string())?;
        let mut repl = conn::ReplicationConn::connect(&info).await.map_err(|e| e.to_string())?;
        repl.simple_query("IDENTIFY_SYSTEM").await.map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// Both clients must fail, each with a message containing every one of `needles`.
fn assert_both_fail(dsn: &str, needles: &[&str]) {
    let sql = sql_connect(dsn).expect_err(dsn);
    let replication = replication_connect(dsn).expect_err(dsn);
    for error in [&sql, &replication] {
        for needle in needles {
            assert!(error.contains(needle), "{dsn}: no '{needle}' in: {error}");
        }
    }
}

#[test]
fn source_and_target_stream_over_tls_with_verify_full() {
    let (server, certs) = tls_server();
    server.create_db("shop");
    server.create_db("warehouse");
    server.psql("shop", CUSTOMERS);
    let insert = |from: u32, to: u32| {
        server.psql(
            "shop",
            &format!("INSERT INTO customers SELECT i, 'c' || i || '@example.com', 'C' || i FROM generate_series({from}, {to}) i"),
        )
    };
    insert(1, 3);
    let ca = certs.ca.display().to_string();
    // Both DSN forms; a host name and an IP address, both in the certificate.
    let source = format!(
        "host=localhost port={} user=postgres dbname=shop sslmode=verify-full sslrootcert='{ca}'",
        server.port()
    );
    let target = format!(
        "postgresql://postgres@127.0.0.1:{}/warehouse?sslmode=verify-full&sslrootcert={ca}",
        server.port()
    );
    let dir = tempfile::tempdir().unwrap();
    let schemas = schemas_dir().display().to_string();
    let mut node = Node::new(
        dir.path(),
        CONFIG,
        &[("REMIX_PG_SOURCE", &source), ("REMIX_PG_TARGET", &target), ("REMIX_SCHEMAS", &schemas)],
    );
    node.start();
    insert(4, 6);
    let count = || server.try_psql("warehouse", "SELECT count(*) FROM public.customers").ok();
    wait_for("6 customers in the target", || (count().as_deref() == Some("6")).then_some(()));
    node.wait_caught_up("warehouse");

    // The log holds the six rows: three from the snapshot, three streamed.
    let dump = node.cli(&["log", "dump", "--json"]);
    assert!(dump.status.success(), "{dump:?}");
    let mut ids: Vec<i64> = stdout(&dump)
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter_map(|record| record["key"]["id"].as_i64())
        .collect();
    ids.sort();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6], "{}", stdout(&dump));
    assert_eq!(
        server.psql("warehouse", "SELECT string_agg(id || ':' || email, ',' ORDER BY id) FROM customers"),
        "1:c1@example.com,2:c2@example.com,3:c3@example.com,4:c4@example.com,5:c5@example.com,6:c6@example.com"
    );
    // The walsender and the target's session are TLS sessions (plaintext TCP is refused anyway).
    let tls_sessions = server.psql(
        "postgres",
        "SELECT string_agg(DISTINCT a.backend_type || '/' || a.application_name, ',') FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE s.ssl AND a.application_name LIKE 'remix%'",
    );
    assert!(tls_sessions.contains("walsender/remix"), "{tls_sessions}");
    assert!(tls_sessions.contains("client backend/remix/warehouse"), "{tls_sessions}");
    node.stop();
}

#[test]
fn connections_follow_sslmode() {
    let (server, certs) = tls_server();
    let plain = PgServer::start();
    let other = TestCerts::generate(&["localhost", "127.0.0.1"]);
    let ca = certs.ca.display().to_string();
    let tcp = |server: &PgServer, extra: &str| format!("{} {extra}", server.tcp_dsn("postgres"));

    // require: TLS without verification, on a server that refuses plaintext TCP.
    let require = tcp(&server, "sslmode=require");
    assert_eq!(sql_connect(&require), Ok(true));
    replication_connect(&require).unwrap();
    // The default (prefer) uses TLS when offered.
    assert_eq!(sql_connect(&tcp(&server, "")), Ok(true));
    replication_connect(&tcp(&server, "")).unwrap();
    let disable = tcp(&server, "sslmode=disable");
    assert!(sql_connect(&disable).unwrap_err().contains("no pg_hba.conf entry"));
    assert!(replication_connect(&disable).unwrap_err().contains("no pg_hba.conf entry"));

    // verify-full: the CA and a name in the certificate.
    let full =
        format!("host=localhost port={} user=postgres sslmode=verify-full sslrootcert={ca}", server.port());
    assert_eq!(sql_connect(&full), Ok(true));
    replication_connect(&full).unwrap();
    // Another CA: refused, naming certificate verification.
    let wrong_ca = tcp(&server, &format!("sslmode=verify-full sslrootcert={}", other.ca.display()));
    assert_both_fail(&wrong_ca, &["certificate verification failed", "UnknownIssuer", "sslmode=verify-full"]);
    // require with sslrootcert is verify-ca: the chain is checked too.
    let require_ca = tcp(&server, &format!("sslmode=require sslrootcert={}", other.ca.display()));
    assert_both_fail(&require_ca, &["certificate verification failed", "UnknownIssuer"]);
    // A name the certificate does not have: verify-full refuses it, verify-ca does not check it.
    let name = |mode: &str| {
        format!(
            "host=db.example hostaddr=127.0.0.1 port={} user=postgres sslmode={mode} sslrootcert={ca}",
            server.port()
        )
    };
    assert_both_fail(
        &name("verify-full"),
        &["certificate verification failed", "not valid for name \"db.example\""],
    );
    assert_eq!(sql_connect(&name("verify-ca")), Ok(true));
    replication_connect(&name("verify-ca")).unwrap();

    // ssl = off: require fails clearly, prefer falls back to plaintext.
    let error = sql_connect(&tcp(&plain, "sslmode=require")).unwrap_err();
    assert!(error.contains("server does not support TLS"), "{error}");
    let error = replication_connect(&tcp(&plain, "sslmode=require")).unwrap_err();
    assert!(error.contains("the server refuses TLS"), "{error}");
    assert_eq!(sql_connect(&tcp(&plain, "sslmode=prefer")), Ok(false));
    replication_connect(&tcp(&plain, "sslmode=prefer")).unwrap();

    // Unix sockets never use TLS: prefer is plaintext there, require is refused before connecting.
    assert_eq!(sql_connect(&server.dsn("postgres")), Ok(false));
    replication_connect(&server.dsn("postgres")).unwrap();
    assert_both_fail(&format!("{} sslmode=require", server.dsn("postgres")), &["unix socket"]);
}

#[test]
fn check_names_bad_tls_settings_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let config = format!(
        r#"data_dir: ./data
models:
  customer: {{ schema: "{schemas}/customer.json", key: [id] }}
sources:
  - name: shop_db
    kind: postgres
    dsn: "host=db.example dbname=shop sslmode=verify-full"
    tables: {{ public.customers: {{ model: customer }} }}
  - name: other_db
    kind: postgres
    dsn: "postgresql://db.example/shop?sslmode=requires"
    tables: {{ public.customers: {{ model: customer }} }}
targets:
  - {{ name: warehouse, kind: postgres, dsn: "host=db.example sslmode=verify-ca sslrootcert={missing}", models: {{ customer: {{ table: customers }} }} }}
"#,
        schemas = schemas_dir().display(),
        missing = missing.display()
    );
    let path = dir.path().join("remix.yaml");
    std::fs::write(&path, config).unwrap();
    let out = run(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    for (line, path, detail) in [
        (7, "sources[0].dsn", "sslmode=verify-full needs sslrootcert"),
        (11, "sources[1].dsn", "invalid sslmode 'requires'"),
        (14, "targets[0].dsn", "cannot read sslrootcert"),
    ] {
        let found =
            text.lines().any(|l| l.contains(&format!("remix.yaml:{line}: {path}: ")) && l.contains(detail));
        assert!(found, "no `remix.yaml:{line}: {path}: ...{detail}...` in:\n{text}");
    }
}

/// The `encryption` check of `remix doctor --json` for a source at `dsn`: `(status, message)`.
fn doctor_encryption(dsn: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"data_dir: "{data}"
models:
  customer: {{ schema: "{schemas}/customer.json", key: [id] }}
sources:
  - name: shop_db
    kind: postgres
    dsn: "{dsn}"
    tables: {{ public.customers: {{ model: customer }} }}
"#,
        data = dir.path().join("data").display(),
        schemas = schemas_dir().display(),
    );
    let path = dir.path().join("remix.yaml");
    std::fs::write(&path, config).unwrap();
    let out = run(&["doctor", "--json", "--config", path.to_str().unwrap()]);
    let checks: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let check = checks.iter().find(|c| c["check"] == "encryption").unwrap_or_else(|| panic!("{checks:#?}"));
    (check["status"].as_str().unwrap().to_owned(), check["message"].as_str().unwrap().to_owned())
}

#[test]
fn doctor_warns_of_plaintext_and_unverified_connections() {
    let (server, certs) = tls_server();
    let plain = PgServer::start();
    let full = format!(
        "host=localhost port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
        server.port(),
        certs.ca.display()
    );
    let (status, message) = doctor_encryption(&full);
    assert_eq!(status, "ok", "{message}");
    assert!(message.contains("TLSv1.") && message.contains("name verified"), "{message}");
    let (status, message) = doctor_encryption(&format!("{} sslmode=require", server.tcp_dsn("postgres")));
    assert_eq!(status, "warn", "{message}");
    assert!(message.contains("not verified (sslmode=require)"), "{message}");
    // prefer against a server without TLS falls back to plaintext: said, not silent.
    let (status, message) = doctor_encryption(&plain.tcp_dsn("postgres"));
    assert_eq!(status, "warn", "{message}");
    assert!(message.contains("not encrypted"), "{message}");
    let (status, message) = doctor_encryption(&plain.dsn("postgres"));
    assert_eq!(status, "ok", "{message}");
    assert!(message.contains("unix socket"), "{message}");
}
