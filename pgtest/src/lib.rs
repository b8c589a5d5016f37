//! Throwaway PostgreSQL servers for Remix's tests and benchmarks.
//!
//! Every [`PgServer`] is a real PostgreSQL cluster that the test harness creates and starts itself: a
//! private directory under `/tmp`, `wal_level=logical`, a free TCP port on 127.0.0.1 and a unix socket in
//! that directory. Many servers can run in parallel (one per test). The binaries come from
//! `pg_config --bindir` (Debian: the `postgresql` package). When the tests run as root, every PostgreSQL
//! binary runs as the `postgres` user in a directory that user owns.
//!
//! ```no_run
//! let pg = remix_pgtest::PgServer::start();
//! pg.psql("postgres", "CREATE TABLE t (id int PRIMARY KEY)");
//! assert_eq!(pg.psql("postgres", "SHOW wal_level"), "logical");
//! let dsn = pg.dsn("postgres"); // hand this to tokio-postgres
//! # let _ = dsn;
//! ```
//!
//! # Start time
//!
//! `initdb` is the slow part of a start (about 1.5 s), so it runs once per PostgreSQL installation: the
//! first start creates a template cluster in `/tmp/remix-pgtest-template-<uid>-<version>-<hash>` and every
//! server starts from a copy of it (a few hundred milliseconds). The consequence: servers made from the
//! template share one *system identifier*. A test that needs a unique one (e.g. "the source server was
//! replaced") uses [`PgServer::start_fresh`]. Set `REMIX_PGTEST_NO_TEMPLATE=1` to run `initdb` for every
//! server.
//!
//! # Clean-up
//!
//! [`Drop`] stops the server (`pg_ctl stop -m immediate`) and removes its directory. Each server also has a
//! tiny guardian process (`sh`) that does the same if the test process dies without dropping it (a
//! `SIGKILL`, an abort, a Ctrl-C), so no servers are left behind.
//!
//! # Environment
//!
//! - `REMIX_PG_BINDIR`: the directory of `initdb`, `pg_ctl`, `postgres` and `psql` (default:
//!   `pg_config --bindir`, else the newest `/usr/lib/postgresql/<version>/bin`).
//! - `REMIX_PGTEST_NO_TEMPLATE`: see above.
//!
//! # TLS
//!
//! [`PgOptions::ssl`] turns `ssl = on` with a certificate and key (copied into the data directory,
//! mode 0600, owned by the server's user); [`PgOptions::hostssl_only`] makes TCP connections without
//! TLS fail (`hostssl` lines in `pg_hba.conf`). [`TestCerts`] makes a CA and a server certificate.

mod tls;
pub use tls::TestCerts;

use std::env;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// Bump when the way the template cluster is made changes, so old templates are not reused.
const TEMPLATE_FORMAT: &str = "v1";
/// Attempts to start a new server, each on a newly chosen port, when the port was taken meanwhile.
const START_ATTEMPTS: usize = 8;
/// How long `restart` keeps trying to get its old port back.
const RESTART_PORT_PATIENCE: Duration = Duration::from_secs(10);
/// Where servers live. Fixed (not `$TMPDIR`): the `postgres` user must reach it and the unix socket path
/// must stay short (at most 107 bytes).
const BASE_DIR: &str = "/tmp";

/// How the password user of [`PgOptions::password_user`] authenticates over TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// `md5` in `pg_hba.conf`; the password is stored as an MD5 hash (`password_encryption = md5`), so the
    /// MD5 challenge is really used.
    Md5,
    /// `scram-sha-256` in `pg_hba.conf` and `password_encryption`.
    ScramSha256,
    /// `password` in `pg_hba.conf`: the password travels in clear text.
    Password,
}

impl AuthMethod {
    /// The method's name in `pg_hba.conf`.
    pub fn hba_name(self) -> &'static str {
        match self {
            AuthMethod::Md5 => "md5",
            AuthMethod::ScramSha256 => "scram-sha-256",
            AuthMethod::Password => "password",
        }
    }

    fn password_encryption(self) -> &'static str {
        match self {
            AuthMethod::Md5 => "md5",
            AuthMethod::ScramSha256 | AuthMethod::Password => "scram-sha-256",
        }
    }
}

/// Settings for [`PgServer::start_with`].
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// Extra `postgresql.conf` lines (`"work_mem = '64MB'"`), written after the defaults so they win.
    pub extra_conf: Vec<String>,
    /// `(user, password, method)`: a role `WITH LOGIN REPLICATION PASSWORD` that must authenticate with
    /// `method` over TCP (database connections and replication connections). Over the unix socket it is
    /// trusted like everyone.
    pub password_user: Option<(String, String, AuthMethod)>,
    /// `(certificate, key)` PEM files: `ssl = on` with them.
    pub ssl: Option<(PathBuf, PathBuf)>,
    /// `hostssl` instead of `host` in `pg_hba.conf`: TCP connections must use TLS.
    pub hostssl_only: bool,
}

impl PgOptions {
    /// The defaults: no extra configuration, no password user.
    pub fn new() -> PgOptions {
        PgOptions::default()
    }

    /// Adds one `postgresql.conf` line.
    pub fn conf(mut self, line: impl Into<String>) -> PgOptions {
        self.extra_conf.push(line.into());
        self
    }

    /// Sets the password user.
    pub fn password_user(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
        method: AuthMethod,
    ) -> PgOptions {
        self.password_user = Some((user.into(), password.into(), method));
        self
    }

    /// `ssl = on` with this certificate and private key (PEM files, e.g. of [`TestCerts`]).
    pub fn ssl(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> PgOptions {
        self.ssl = Some((cert.into(), key.into()));
        self
    }

    /// Accepts TCP connections only over TLS (needs [`ssl`](Self::ssl)); the unix socket stays trusted.
    pub fn hostssl_only(mut self) -> PgOptions {
        self.hostssl_only = true;
        self
    }
}

/// A PostgreSQL server in a private temporary directory, stopped and removed on drop.
///
/// Directory layout: `<dir>/data` (the cluster), `<dir>/sock` (the unix socket), `<dir>/server.log`.
#[derive(Debug)]
pub struct PgServer {
    guardian: Option<Child>,
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    port: u16,
    conf: Vec<String>,
    password_user: Option<(String, String, AuthMethod)>,
    hostssl_only: bool,
}

impl PgServer {
    /// Starts a server with the default settings. Panics with a clear message (including the server
    /// log's tail) when it cannot.
    pub fn start() -> PgServer {
        PgServer::start_with(PgOptions::default())
    }

    /// Starts a server with extra settings; see [`PgOptions`].
    pub fn start_with(options: PgOptions) -> PgServer {
        PgServer::launch(options, true)
    }

    /// Like [`start_with`](Self::start_with), but runs `initdb` instead of copying the template cluster,
    /// so the server has a system identifier of its own. About a second slower.
    pub fn start_fresh(options: PgOptions) -> PgServer {
        PgServer::launch(options, false)
    }

    fn launch(options: PgOptions, use_template: bool) -> PgServer {
        let bindir = bindir();
        let dir = private_dir("remix-pgtest-");
        let root = dir.path().to_path_buf();
        let socket_dir = root.join("sock");
        fs::create_dir(&socket_dir)
            .unwrap_or_else(|e| panic!("remix-pgtest: cannot create {}: {e}", socket_dir.display()));
        give_to_postgres(&socket_dir);

        let mut conf = vec![
            "listen_addresses = '127.0.0.1'".to_string(),
            format!("unix_socket_directories = '{}'", conf_escape(&socket_dir.to_string_lossy())),
            "wal_level = logical".to_string(),
            "max_replication_slots = 16".to_string(),
            "max_wal_senders = 16".to_string(),
            "shared_buffers = 128MB".to_string(),
            "max_connections = 50".to_string(),
            "log_min_messages = warning".to_string(),
        ];
        if let Some((_, _, method)) = &options.password_user {
            conf.push(format!("password_encryption = '{}'", method.password_encryption()));
        }
        if options.ssl.is_some() {
            conf.extend(
                ["ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'"].map(String::from),
            );
        }
        conf.extend(options.extra_conf.iter().cloned());

        let mut server = PgServer {
            guardian: None,
            root: root.clone(),
            data: root.join("data"),
            socket_dir,
            log: root.join("server.log"),
            dir: Some(dir),
            port: 0,
            conf,
            password_user: options.password_user.clone(),
            hostssl_only: options.hostssl_only,
        };
        server.guardian = spawn_guardian(&bindir, &server.data, &server.root);

        match template().filter(|_| use_template) {
            Some(template) => {
                let out = pg_command("cp", &server.root)
                    .arg("-a")
                    .arg(template)
                    .arg(&server.data)
                    .output()
                    .unwrap_or_else(|e| panic!("remix-pgtest: cannot run cp: {e}"));
                if !out.status.success() {
                    panic!(
                        "remix-pgtest: copying the template cluster {} failed: {}",
                        template.display(),
                        output_text(&out)
                    );
                }
            }
            None => {
                if let Err(e) = initdb(&server.data, &server.root) {
                    panic!("remix-pgtest: {e}");
                }
            }
        }

        if let Some((cert, key)) = &options.ssl {
            for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
                let to = server.data.join(name);
                fs::copy(from, &to).unwrap_or_else(|e| {
                    panic!("remix-pgtest: cannot copy {} to {}: {e}", from.display(), to.display())
                });
                fs::set_permissions(&to, fs::Permissions::from_mode(0o600))
                    .unwrap_or_else(|e| panic!("remix-pgtest: cannot chmod {}: {e}", to.display()));
                give_to_postgres(&to);
            }
        }
        server.write_hba();
        let mut main_conf = fs::OpenOptions::new()
            .append(true)
            .open(server.data.join("postgresql.conf"))
            .unwrap_or_else(|e| panic!("remix-pgtest: cannot open postgresql.conf: {e}"));
        main_conf
            .write_all(b"\n# remix-pgtest\ninclude = 'remix.conf'\n")
            .unwrap_or_else(|e| panic!("remix-pgtest: cannot write postgresql.conf: {e}"));

        server.start_on_new_port();
        server.create_password_user();
        server
    }

    /// The TCP port (on 127.0.0.1); also the number in the unix socket's name.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the unix socket (`host=` for libpq-style connection strings).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The server log (`pg_ctl -l`).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        tail(&text, lines)
    }

    /// Connection string over the unix socket as the superuser `postgres` (trusted):
    /// `host=<socket_dir> port=<port> user=postgres dbname=<db>`.
    pub fn dsn(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={}",
            conninfo_value(&self.socket_dir.to_string_lossy()),
            self.port,
            conninfo_value(db)
        )
    }

    /// Connection string over TCP as the superuser `postgres` (trusted):
    /// `host=127.0.0.1 port=<port> user=postgres dbname=<db>`.
    pub fn tcp_dsn(&self, db: &str) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname={}", self.port, conninfo_value(db))
    }

    /// Connection string over TCP for the password user, with its password, if there is one:
    /// `host=127.0.0.1 port=<port> user=<user> password=<password> dbname=<db>`.
    pub fn password_dsn(&self, db: &str) -> Option<String> {
        self.password_user.as_ref().map(|(user, password, _)| {
            format!(
                "host=127.0.0.1 port={} user={} password={} dbname={}",
                self.port,
                conninfo_value(user),
                conninfo_value(password),
                conninfo_value(db)
            )
        })
    }

    /// Runs `sql` with `psql -X -v ON_ERROR_STOP=1 -At -c` as `postgres` over the unix socket and returns
    /// its output without the final newline. Panics with psql's stderr when it fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql).unwrap_or_else(|e| panic!("psql on database {db:?} failed: {e}\nSQL: {sql}"))
    }

    /// [`psql`](Self::psql) returning psql's stderr as the error instead of panicking.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        psql_conninfo(&self.dsn(db), sql, None)
    }

    /// Creates a database (`CREATE DATABASE "<name>"`).
    pub fn create_db(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE {}", quote_ident(name)));
    }

    /// The directory of the PostgreSQL binaries: `$REMIX_PG_BINDIR`, else `pg_config --bindir`, else the
    /// newest `/usr/lib/postgresql/<version>/bin`. Panics when there are none.
    pub fn bindir() -> PathBuf {
        bindir()
    }

    /// The postmaster's pid, from `postmaster.pid`, while the server runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let pid =
            fs::read_to_string(self.data.join("postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()?;
        process_alive(pid).then_some(pid)
    }

    /// Whether the postmaster is running.
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some()
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`) when it runs, then starts it again on the same port
    /// and data directory. After [`kill`](Self::kill) this is the restart after a crash (the server runs
    /// crash recovery). Panics when the server does not come back.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + RESTART_PORT_PATIENCE;
        loop {
            self.write_conf();
            match self.pg_ctl_start() {
                Ok(()) => return,
                Err(e) if is_port_collision(&e) && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("remix-pgtest: restarting PostgreSQL on port {} failed:\n{e}", self.port),
            }
        }
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`), falling back to an immediate stop and then to
    /// killing its processes. Does nothing when it is not running. Drop does this too (immediate stop).
    pub fn stop(&mut self) {
        if !self.is_running() {
            return;
        }
        if self.pg_ctl_stop("fast").is_ok() || self.pg_ctl_stop("immediate").is_ok() {
            return;
        }
        if !self.kill_all() {
            panic!("remix-pgtest: cannot stop the server; log tail:\n{}", self.log_tail(30));
        }
    }

    /// Crashes the server: `SIGKILL` to the postmaster and every process of the cluster, waiting until they
    /// are gone. Committed (fsynced) data survives; [`restart`](Self::restart) brings the server back.
    /// Panics when the server is not running.
    pub fn kill(&mut self) {
        if !self.is_running() {
            panic!("remix-pgtest: kill: the server is not running");
        }
        if !self.kill_all() {
            panic!("remix-pgtest: kill: processes of the server survived SIGKILL");
        }
    }

    /// SIGKILL for the postmaster, then every process whose working directory is the data directory (all
    /// server processes chdir there), until none is left. Then removes the lock files a real crash would
    /// leave behind, which a zombie postmaster (nobody reaping it) would make the next start refuse.
    fn kill_all(&self) -> bool {
        if let Some(pid) = self.postmaster_pid() {
            send_sigkill(&[pid]);
        }
        let data = fs::canonicalize(&self.data).unwrap_or_else(|_| self.data.clone());
        let finished = wait_for(Duration::from_secs(20), || {
            let pids = processes_in(&data);
            send_sigkill(&pids);
            pids.is_empty()
        });
        if finished {
            let _ = fs::remove_file(self.data.join("postmaster.pid"));
            let _ = fs::remove_file(self.socket_dir.join(format!(".s.PGSQL.{}", self.port)));
            let _ = fs::remove_file(self.socket_dir.join(format!(".s.PGSQL.{}.lock", self.port)));
        }
        finished
    }

    fn start_on_new_port(&mut self) {
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            self.port = free_port();
            self.write_conf();
            match self.pg_ctl_start() {
                Ok(()) => return,
                Err(e) if is_port_collision(&e) => last_error = e,
                Err(e) => panic!("remix-pgtest: starting PostgreSQL failed:\n{e}"),
            }
        }
        panic!("remix-pgtest: no free port after {START_ATTEMPTS} attempts; last failure:\n{last_error}");
    }

    /// `pg_ctl start`; the error holds pg_ctl's output and what the server logged during the attempt.
    fn pg_ctl_start(&self) -> Result<(), String> {
        let log_start = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let out = pg_command(bindir().join("pg_ctl"), &self.root)
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "start"])
            .output()
            .unwrap_or_else(|e| panic!("remix-pgtest: cannot run pg_ctl: {e}"));
        if out.status.success() {
            return Ok(());
        }
        let mut logged = String::new();
        if let Ok(mut file) = fs::File::open(&self.log) {
            let _ = file.seek(SeekFrom::Start(log_start));
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            logged = String::from_utf8_lossy(&bytes).into_owned();
        }
        Err(format!(
            "pg_ctl: {}\nserver log ({}):\n{}",
            output_text(&out).trim_end(),
            self.log.display(),
            tail(&logged, 40)
        ))
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<(), String> {
        let out = pg_command(bindir().join("pg_ctl"), &self.root)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", mode, "-w", "-t", "60", "stop"])
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(output_text(&out))
        }
    }

    fn write_conf(&self) {
        let mut text = format!("# written by remix-pgtest\nport = {}\n", self.port);
        for line in &self.conf {
            text.push_str(line);
            text.push('\n');
        }
        write_file(&self.data.join("remix.conf"), &text);
    }

    fn write_hba(&self) {
        let mut text = String::from("# written by remix-pgtest\n");
        let host = if self.hostssl_only { "hostssl" } else { "host" };
        if let Some((user, _, method)) = &self.password_user {
            text.push_str(&format!(
                "{host} all,replication {} 127.0.0.1/32 {}\n",
                quote_ident(user),
                method.hba_name()
            ));
        }
        text.push_str(&format!(
            "local all all trust\n\
             local replication all trust\n\
             {host} all postgres 127.0.0.1/32 trust\n\
             {host} replication postgres 127.0.0.1/32 trust\n",
        ));
        write_file(&self.data.join("pg_hba.conf"), &text);
    }

    fn create_password_user(&self) {
        if let Some((user, password, _)) = &self.password_user {
            self.psql(
                "postgres",
                &format!(
                    "CREATE ROLE {} WITH LOGIN REPLICATION PASSWORD '{}'",
                    quote_ident(user),
                    password.replace('\'', "''")
                ),
            );
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.is_running() && self.pg_ctl_stop("immediate").is_err() {
            self.kill_all();
        }
        if let Some(mut guardian) = self.guardian.take() {
            if let Some(mut stdin) = guardian.stdin.take() {
                let _ = stdin.write_all(b"done\n");
            }
            let _ = guardian.wait();
        }
        if let Some(dir) = self.dir.take() {
            if let Err(e) = dir.close() {
                eprintln!("remix-pgtest: cannot remove {}: {e}", self.root.display());
            }
        }
    }
}

/// Runs `sql` with `psql -X -v ON_ERROR_STOP=1 -At` on any libpq connection string (e.g.
/// [`PgServer::password_dsn`], or one with `replication=database`), with `PGPASSWORD` set when `password`
/// is given. Returns stdout without the final newline, or stderr.
pub fn psql_conninfo(conninfo: &str, sql: &str, password: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new(bindir().join("psql"));
    clean_env(&mut cmd);
    cmd.env("PGCONNECT_TIMEOUT", "10").env("PGPASSFILE", "/dev/null").env("PGCLIENTENCODING", "UTF8");
    if let Some(password) = password {
        cmd.env("PGPASSWORD", password);
    }
    let out = cmd
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-At", "-d", conninfo, "-c", sql])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.ends_with('\n') {
            text.pop();
        }
        Ok(text)
    } else {
        Err(output_text(&out))
    }
}

/// Polls `condition` (at most every 100 ms, more often at first) until it holds or `timeout` passes;
/// returns whether it held.
#[must_use = "assert on the result: false means the timeout passed"]
pub fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if condition() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

// ---- users and commands ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Account {
    uid: u32,
    gid: u32,
}

/// The `postgres` account when running as root (the binaries refuse root), else `None` (run as is).
fn run_as() -> Option<Account> {
    static RUN_AS: OnceLock<Option<Account>> = OnceLock::new();
    *RUN_AS.get_or_init(|| {
        if current_uid() != 0 {
            return None;
        }
        Some(postgres_account().unwrap_or_else(|| {
            panic!(
                "remix-pgtest: running as root, so PostgreSQL must run as the `postgres` user, which does \
                 not exist: install the postgresql package (Debian: apt-get install postgresql)"
            )
        }))
    })
}

fn current_uid() -> u32 {
    if let Ok(meta) = fs::metadata("/proc/self") {
        return meta.uid();
    }
    let out = Command::new("id").arg("-u").output().expect("remix-pgtest: cannot run `id -u`");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("remix-pgtest: unexpected `id -u` output")
}

fn postgres_account() -> Option<Account> {
    if let Ok(passwd) = fs::read_to_string("/etc/passwd") {
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() >= 4 && fields[0] == "postgres" {
                if let (Ok(uid), Ok(gid)) = (fields[2].parse(), fields[3].parse()) {
                    return Some(Account { uid, gid });
                }
            }
        }
    }
    // Not in /etc/passwd (NSS, LDAP, ...): ask `id`.
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some(Account { uid: id("-u")?, gid: id("-g")? })
}

/// Hands a path we created to the `postgres` user when running as root.
fn give_to_postgres(path: &Path) {
    if let Some(account) = run_as() {
        chown(path, Some(account.uid), Some(account.gid))
            .unwrap_or_else(|e| panic!("remix-pgtest: cannot chown {} to postgres: {e}", path.display()));
    }
}

fn write_file(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("remix-pgtest: cannot write {}: {e}", path.display()));
    give_to_postgres(path);
}

/// A private (mode 0700) directory under /tmp owned by whoever runs the PostgreSQL binaries.
fn private_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(BASE_DIR)
        .unwrap_or_else(|e| panic!("remix-pgtest: cannot create a directory in {BASE_DIR}: {e}"));
    give_to_postgres(dir.path());
    dir
}

/// Drops every `PG*` variable (PGDATA, PGPORT, PGPASSWORD, ...) so the caller's environment cannot
/// redirect the commands, and makes messages English (the log is searched for some).
fn clean_env(cmd: &mut Command) {
    for (name, _) in env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&name);
        }
    }
    cmd.env_remove("LC_ALL").env("LC_MESSAGES", "C");
}

/// A command for a PostgreSQL binary (or a helper like `cp` working on the clusters): as `postgres` when
/// running as root, in `cwd` (which that user can enter), with a clean environment and no stdin.
fn pg_command(program: impl AsRef<OsStr>, cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    if let Some(account) = run_as() {
        cmd.uid(account.uid).gid(account.gid);
    }
    clean_env(&mut cmd);
    cmd.current_dir(cwd).stdin(Stdio::null());
    cmd
}

fn output_text(out: &Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.trim().is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&stdout);
    }
    if text.trim().is_empty() {
        text = format!("({}, no output)", out.status);
    }
    text
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---- binaries, initdb and the template cluster --------------------------------------------------

fn bindir() -> PathBuf {
    static BINDIR: OnceLock<PathBuf> = OnceLock::new();
    BINDIR.get_or_init(find_bindir).clone()
}

fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres", "psql"].iter().all(|b| dir.join(b).is_file())
}

fn find_bindir() -> PathBuf {
    if let Some(dir) = env::var_os("REMIX_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if !has_server_binaries(&dir) {
            panic!("remix-pgtest: REMIX_PG_BINDIR={} lacks initdb/pg_ctl/postgres/psql", dir.display());
        }
        return dir;
    }
    let mut tried = Vec::new();
    match Command::new("pg_config").arg("--bindir").output() {
        Ok(out) if out.status.success() => {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_server_binaries(&dir) {
                return dir;
            }
            tried.push(format!("pg_config --bindir = {} (no server binaries there)", dir.display()));
        }
        Ok(out) => tried.push(format!("pg_config --bindir failed: {}", output_text(&out).trim())),
        Err(e) => tried.push(format!("pg_config: {e}")),
    }
    // Debian: pg_config may come from libpq-dev of another major version than the server.
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let dir = entry.path().join("bin");
            has_server_binaries(&dir).then_some((version, dir))
        })
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return dir;
    }
    tried.push("no /usr/lib/postgresql/<version>/bin with server binaries".to_string());
    panic!(
        "remix-pgtest: PostgreSQL server binaries not found ({}): install the postgresql package \
         (Debian: apt-get install postgresql) or set REMIX_PG_BINDIR",
        tried.join("; ")
    );
}

fn initdb(data: &Path, cwd: &Path) -> Result<(), String> {
    let out = pg_command(bindir().join("initdb"), cwd)
        .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C", "-D"])
        .arg(data)
        .output()
        .map_err(|e| format!("cannot run initdb: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("initdb -D {} failed:\n{}", data.display(), output_text(&out)))
    }
}

/// The template cluster of this PostgreSQL installation, made on first use; `None` when disabled or it
/// cannot be made (then every server runs initdb).
fn template() -> Option<&'static Path> {
    static TEMPLATE: OnceLock<Option<PathBuf>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            if env::var_os("REMIX_PGTEST_NO_TEMPLATE").is_some_and(|v| !v.is_empty() && v != "0") {
                return None;
            }
            match make_template() {
                Ok(path) => Some(path),
                Err(e) => {
                    eprintln!("remix-pgtest: no template cluster ({e}); running initdb for every server");
                    None
                }
            }
        })
        .as_deref()
}

fn make_template() -> Result<PathBuf, String> {
    let bindir = bindir();
    let version = Command::new(bindir.join("postgres"))
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run postgres --version: {e}"))?;
    let version: String = String::from_utf8_lossy(&version.stdout)
        .trim()
        .trim_start_matches("postgres (PostgreSQL) ")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '_' })
        .take(40)
        .collect();
    // FNV-1a: stable across Rust versions, unlike DefaultHasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bindir.as_os_str().as_encoded_bytes() {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let owner = run_as().map(|a| a.uid).unwrap_or_else(current_uid);
    let path = PathBuf::from(format!(
        "{BASE_DIR}/remix-pgtest-template-{owner}-{TEMPLATE_FORMAT}-{version}-{hash:016x}"
    ));
    if template_ok(&path, owner) {
        return Ok(path);
    }
    let work = private_dir("remix-pgtest-initdb-");
    let data = work.path().join("data");
    initdb(&data, work.path())?;
    if template_ok(&path, owner) {
        return Ok(path); // another process made it meanwhile
    }
    if fs::symlink_metadata(&path).is_ok() {
        // Broken or foreign (renames are atomic, so it is not one being made): replace it.
        let _ = fs::remove_dir_all(&path);
    }
    match fs::rename(&data, &path) {
        Ok(()) => Ok(path),
        Err(_) if template_ok(&path, owner) => Ok(path), // another process made it meanwhile
        Err(e) => Err(format!("cannot move the template cluster to {}: {e}", path.display())),
    }
}

/// A complete template, owned by `owner` and private to it (/tmp is shared).
fn template_ok(path: &Path, owner: u32) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else { return false };
    meta.is_dir()
        && meta.uid() == owner
        && meta.permissions().mode() & 0o077 == 0
        && ["PG_VERSION", "global/pg_control", "base/1/PG_VERSION", "postgresql.conf", "pg_hba.conf"]
            .iter()
            .all(|file| path.join(file).is_file())
}

// ---- processes ---------------------------------------------------------------------------------

/// A process that stops the server and removes its directory when the test process dies without dropping
/// the `PgServer`: it waits for a line on its stdin, which only the `PgServer` holds; end of file (the
/// test process is gone) means clean up, `done` means the `PgServer` did it already.
fn spawn_guardian(bindir: &Path, data: &Path, root: &Path) -> Option<Child> {
    const SCRIPT: &str = r#"trap '' INT HUP TERM QUIT
read -r line
if [ "$line" != done ]; then
  "$1" -D "$2" -m immediate -w -t 30 stop >/dev/null 2>&1
  rm -rf "$3"
fi"#;
    let mut cmd = pg_command("sh", Path::new("/"));
    cmd.args(["-c", SCRIPT, "remix-pgtest-guardian"])
        .arg(bindir.join("pg_ctl"))
        .arg(data)
        .arg(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match cmd.spawn() {
        Ok(child) => Some(child),
        Err(e) => {
            eprintln!("remix-pgtest: no guardian process ({e}); a crashed test may leave a server behind");
            None
        }
    }
}

/// Alive and not a zombie.
fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match stat.rfind(')') {
            Some(end) => !matches!(stat[end + 1..].trim_start().chars().next(), Some('Z' | 'X') | None),
            None => false,
        },
        Err(_) => false,
    }
}

/// Live processes whose working directory is `dir`.
fn processes_in(dir: &Path) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir))
        .filter(|pid| process_alive(*pid))
        .collect()
}

fn send_sigkill(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    // The shell's kill builtin: no libc, and no dependency on procps' /bin/kill.
    let _ = Command::new("sh")
        .args(["-c", r#"kill -KILL "$@" 2>/dev/null"#, "sh"])
        .args(pids.iter().map(u32::to_string))
        .stdin(Stdio::null())
        .status();
}

// ---- ports and quoting -----------------------------------------------------------------------------

/// A port that was free a moment ago (another process may take it before the server binds it; callers
/// retry).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("remix-pgtest: cannot bind 127.0.0.1:0 to find a free port: {e}"))
}

fn is_port_collision(error: &str) -> bool {
    error.contains("Address already in use") || error.contains("could not create any TCP/IP sockets")
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn conf_escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "''")
}

/// A value in a libpq `key=value` connection string, quoted when needed.
fn conninfo_value(value: &str) -> String {
    if !value.is_empty() && !value.chars().any(|c| c.is_whitespace() || c == '\'' || c == '\\') {
        return value.to_string();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_values_are_quoted_when_needed() {
        assert_eq!(conninfo_value("postgres"), "postgres");
        assert_eq!(conninfo_value("a b"), "'a b'");
        assert_eq!(conninfo_value("it's"), r"'it\'s'");
        assert_eq!(conninfo_value(""), "''");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }

    #[test]
    fn wait_for_polls_until_true_or_timeout() {
        let mut calls = 0;
        assert!(wait_for(Duration::from_secs(5), || {
            calls += 1;
            calls == 3
        }));
        let started = Instant::now();
        assert!(!wait_for(Duration::from_millis(50), || false));
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
