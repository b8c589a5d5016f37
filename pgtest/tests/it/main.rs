//! Integration tests of remix-pgtest: every test starts real PostgreSQL servers.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use remix_pgtest::{psql_conninfo, wait_for, AuthMethod, PgOptions, PgServer, TestCerts};

fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn two_servers_start_in_parallel_and_are_independent() {
    let started = Instant::now();
    let handles: Vec<_> = (0..2)
        .map(|i| {
            thread::spawn(move || {
                let t = Instant::now();
                let pg = PgServer::start();
                let took = t.elapsed();
                pg.psql("postgres", &format!("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES ({i}, 'server {i}')"));
                (pg, took)
            })
        })
        .collect();
    let servers: Vec<(PgServer, Duration)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    eprintln!(
        "two parallel starts: {:?} and {:?} ({:?} in all)",
        servers[0].1,
        servers[1].1,
        started.elapsed()
    );
    let (a, b) = (&servers[0].0, &servers[1].0);
    assert_ne!(a.port(), b.port());
    assert_ne!(a.socket_dir(), b.socket_dir());
    assert_eq!(a.psql("postgres", "SELECT v FROM t"), "server 0");
    assert_eq!(b.psql("postgres", "SELECT v FROM t"), "server 1");

    for pg in [a, b] {
        assert_eq!(pg.psql("postgres", "SHOW wal_level"), "logical");
        assert_eq!(pg.psql("postgres", "SHOW max_replication_slots"), "16");
        assert_eq!(pg.psql("postgres", "SHOW max_wal_senders"), "16");
        assert_eq!(pg.psql("postgres", "SHOW fsync"), "on");
        assert_eq!(pg.psql("postgres", "SHOW max_connections"), "50");
        assert_eq!(pg.psql("postgres", "SHOW shared_buffers"), "128MB");
        assert_eq!(pg.psql("postgres", "SHOW server_encoding"), "UTF8");
        assert_eq!(pg.psql("postgres", "SHOW unix_socket_directories"), pg.socket_dir().to_str().unwrap());
        // Superuser over TCP is trusted too.
        assert_eq!(psql_conninfo(&pg.tcp_dsn("postgres"), "SELECT current_user", None).unwrap(), "postgres");
        assert!(port_open(pg.port()));
    }
}

#[test]
fn psql_returns_output_and_reports_errors() {
    let pg = PgServer::start();
    assert_eq!(pg.psql("postgres", "SELECT 1 UNION ALL SELECT 2 ORDER BY 1"), "1\n2");
    assert_eq!(pg.psql("postgres", "SELECT 'grüße ✓'"), "grüße ✓");
    let error = pg.try_psql("postgres", "SELECT * FROM no_such_table").unwrap_err();
    assert!(error.contains("no_such_table"), "{error}");
    let panic = std::panic::catch_unwind(|| pg.psql("postgres", "SELEC 1")).unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(message.contains("syntax error"), "{message}");

    pg.create_db("Other DB");
    pg.psql("Other DB", "CREATE TABLE x (a int)");
    assert_eq!(pg.psql("Other DB", "SELECT current_database()"), "Other DB");
    assert_eq!(psql_conninfo(&pg.tcp_dsn("Other DB"), "SELECT count(*) FROM x", None).unwrap(), "0");
}

#[test]
fn replication_connections_are_trusted_for_postgres() {
    let pg = PgServer::start();
    for dsn in [pg.dsn("postgres"), pg.tcp_dsn("postgres")] {
        let out = psql_conninfo(&format!("{dsn} replication=database"), "IDENTIFY_SYSTEM", None).unwrap();
        assert_eq!(out.split('|').nth(3), Some("postgres"), "{out}");
    }
    pg.psql("postgres", "SELECT pg_create_logical_replication_slot('s1', 'pgoutput')");
    assert_eq!(pg.psql("postgres", "SELECT slot_name FROM pg_replication_slots"), "s1");
}

#[test]
fn restart_keeps_the_port_and_the_data() {
    let mut pg = PgServer::start();
    let port = pg.port();
    pg.psql("postgres", "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)");
    let pid = pg.postmaster_pid().unwrap();
    pg.restart();
    assert_eq!(pg.port(), port);
    assert_ne!(pg.postmaster_pid().unwrap(), pid);
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM t"), "2");

    pg.stop();
    assert!(!pg.is_running());
    assert!(!port_open(port));
    pg.stop(); // no-op
    pg.restart();
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM t"), "2");
}

#[test]
fn kill_crashes_and_restart_recovers() {
    let mut pg = PgServer::start();
    pg.psql("postgres", "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000)");
    // A busy backend at the time of the crash.
    let dsn = pg.dsn("postgres");
    let busy = thread::spawn(move || psql_conninfo(&dsn, "SELECT pg_sleep(60)", None));
    assert!(wait_for(Duration::from_secs(10), || {
        pg.psql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'")
            == "1"
    }));
    pg.kill();
    assert!(!pg.is_running());
    assert!(!port_open(pg.port()));
    assert!(busy.join().unwrap().is_err());
    pg.restart();
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM t"), "1000");
    assert!(pg.log_tail(50).contains("not properly shut down"), "{}", pg.log_tail(50));
}

fn check_password_login(method: AuthMethod, stored_prefix: &str) {
    let pg = PgServer::start_with(PgOptions::new().password_user("remix", "s3cr'et pw", method));
    let dsn = pg.password_dsn("postgres").unwrap();
    assert_eq!(psql_conninfo(&dsn, "SELECT current_user", None).unwrap(), "remix");
    // PGPASSWORD instead of password= in the string.
    let tcp = format!("host=127.0.0.1 port={} user=remix dbname=postgres", pg.port());
    assert_eq!(psql_conninfo(&tcp, "SELECT current_user", Some("s3cr'et pw")).unwrap(), "remix");
    let error = psql_conninfo(&tcp, "SELECT 1", Some("wrong")).unwrap_err();
    assert!(error.contains("password authentication failed"), "{error}");
    // Replication connections need the password too.
    let out = psql_conninfo(&format!("{dsn} replication=database"), "IDENTIFY_SYSTEM", None).unwrap();
    assert_eq!(out.split('|').nth(3), Some("postgres"), "{out}");
    assert!(psql_conninfo(&format!("{tcp} replication=database"), "IDENTIFY_SYSTEM", Some("wrong")).is_err());

    let stored = pg.psql("postgres", "SELECT rolpassword FROM pg_authid WHERE rolname = 'remix'");
    assert!(stored.starts_with(stored_prefix), "{stored}");
    assert_eq!(
        pg.psql("postgres", "SELECT rolcanlogin AND rolreplication FROM pg_roles WHERE rolname = 'remix'"),
        "t"
    );
    let hba = pg.psql("postgres", "SELECT auth_method FROM pg_hba_file_rules WHERE 'remix' = ANY(user_name)");
    assert_eq!(hba, method.hba_name());
}

#[test]
fn password_user_with_md5() {
    check_password_login(AuthMethod::Md5, "md5");
}

#[test]
fn password_user_with_scram() {
    check_password_login(AuthMethod::ScramSha256, "SCRAM-SHA-256$");
}

#[test]
fn password_user_with_cleartext_password() {
    check_password_login(AuthMethod::Password, "SCRAM-SHA-256$");
}

#[test]
fn extra_conf_lines_win() {
    let pg = PgServer::start_with(
        PgOptions { extra_conf: vec!["work_mem = '7MB'".into()], ..PgOptions::default() }
            .conf("max_connections = 20"),
    );
    assert_eq!(pg.psql("postgres", "SHOW work_mem"), "7MB");
    assert_eq!(pg.psql("postgres", "SHOW max_connections"), "20");
}

#[test]
fn ssl_with_test_certificates_and_hostssl_only() {
    let certs = TestCerts::generate(&["localhost", "127.0.0.1"]);
    let pg = PgServer::start_with(PgOptions::new().ssl(&certs.cert, &certs.key).hostssl_only());
    assert_eq!(pg.psql("postgres", "SHOW ssl"), "on");
    let tcp =
        |options: &str| psql_conninfo(&format!("{} {options}", pg.tcp_dsn("postgres")), "SELECT 1", None);
    let full = format!("host=localhost sslmode=verify-full sslrootcert={}", certs.ca.display());
    assert_eq!(tcp(&full).as_deref(), Ok("1"));
    let error = tcp("sslmode=disable").unwrap_err();
    assert!(error.contains("no pg_hba.conf entry"), "{error}");
    // The unix socket stays trusted and plaintext.
    assert_eq!(pg.psql("postgres", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"), "f");
}

#[test]
fn fresh_servers_have_their_own_system_identifier() {
    let sysid = |pg: &PgServer| pg.psql("postgres", "SELECT system_identifier FROM pg_control_system()");
    let t = Instant::now();
    let fresh = PgServer::start_fresh(PgOptions::default());
    eprintln!("start_fresh took {:?}", t.elapsed());
    let templated = PgServer::start();
    assert_ne!(sysid(&fresh), sysid(&templated));
    assert_eq!(fresh.psql("postgres", "SHOW wal_level"), "logical");
}

#[test]
fn drop_stops_the_server_and_removes_its_directory() {
    let pg = PgServer::start();
    let port = pg.port();
    let dir: PathBuf = pg.data_dir().parent().unwrap().to_path_buf();
    let pid = pg.postmaster_pid().unwrap();
    assert!(port_open(port));
    drop(pg);
    assert!(!port_open(port));
    assert!(!dir.exists());
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z"), "postmaster still alive: {stat}");
}

/// The guardian process cleans up after a test process that dies without dropping its server.
#[test]
fn guardian_cleans_up_after_an_abort() {
    if std::env::var_os("REMIX_PGTEST_ABORT_CHILD").is_some() {
        let pg = PgServer::start();
        println!("SERVER {} {}", pg.port(), pg.data_dir().parent().unwrap().display());
        std::process::abort();
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "guardian_cleans_up_after_an_abort", "--nocapture", "--test-threads=1"])
        .env("REMIX_PGTEST_ABORT_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line =
        stdout.lines().find_map(|l| l.split_once("SERVER ").map(|(_, rest)| rest)).unwrap_or_else(|| {
            panic!("child printed no server: {stdout}\n{}", String::from_utf8_lossy(&out.stderr))
        });
    let (port, dir) = line.split_once(' ').unwrap();
    let port: u16 = port.parse().unwrap();
    let dir = PathBuf::from(dir);
    assert!(!out.status.success());
    assert!(
        wait_for(Duration::from_secs(30), || !dir.exists() && !port_open(port)),
        "server of the aborted process left behind: {} port {port}",
        dir.display()
    );
}
