//! Throwaway MariaDB servers for Remix's tests and benchmarks.
//!
//! Every [`MyServer`] is a real MariaDB server that the harness creates and starts itself:
//! `mariadb-install-db` into a private directory under `/tmp`, then `mariadbd` on a free TCP port of
//! 127.0.0.1 and a unix socket in that directory, with the binary log on (`binlog_format=ROW`,
//! `binlog_row_image=FULL`, a `server_id` of its own) as the `mysql` source needs it. Many servers can
//! run in parallel (one per test). When the tests run as root, every MariaDB binary runs as the
//! `mysql` user in a directory that user owns. `root` connects without a password, over the socket and
//! over TCP.
//!
//! ```no_run
//! let my = remix_mytest::MyServer::start();
//! my.sql("", "CREATE DATABASE shop; CREATE TABLE shop.t (id int PRIMARY KEY)");
//! assert_eq!(my.sql("", "SELECT @@binlog_format"), "ROW");
//! let url = my.url("shop"); // mysql://root@127.0.0.1:<port>/shop
//! # let _ = url;
//! ```
//!
//! # Clean-up
//!
//! [`Drop`] kills the server and removes its directory. Each server also has a tiny guardian process
//! (`sh`) that does the same if the test process dies without dropping it.
//!
//! # Binaries
//!
//! `mariadbd`, `mariadb-install-db` and `mariadb` from `PATH` or `/usr/sbin` (Debian: `apt-get install
//! mariadb-server mariadb-client`, which `scripts/test-servers.sh` does). A missing binary panics with a
//! message naming that script.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{chown, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// Attempts to start a server, each on a newly chosen port, when the port was taken meanwhile.
const START_ATTEMPTS: usize = 8;
/// How long a start may take before it counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Where servers live: the `mysql` user must reach it and the socket path must stay short.
const BASE_DIR: &str = "/tmp";

/// Settings for [`MyServer::start_with`].
#[derive(Debug, Clone, Default)]
pub struct MyOptions {
    /// Extra `mariadbd` options (`"--gtid-strict-mode=ON"`), after the defaults so they win.
    pub args: Vec<String>,
    /// The binary log off (for doctor tests).
    pub no_binlog: bool,
    /// `server_id` (default: a number unique in this process, from 1000 up).
    pub server_id: Option<u32>,
}

impl MyOptions {
    pub fn new() -> MyOptions {
        MyOptions::default()
    }

    /// Adds one `mariadbd` option.
    pub fn arg(mut self, arg: impl Into<String>) -> MyOptions {
        self.args.push(arg.into());
        self
    }
}

/// A MariaDB server in a private temporary directory, killed and removed on drop.
///
/// Layout: `<dir>/data` (the data directory, binary logs `binlog.NNNNNN` in it), `<dir>/sock`,
/// `<dir>/server.log`.
#[derive(Debug)]
pub struct MyServer {
    child: Option<Child>,
    guardian: Option<Child>,
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    data: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    port: u16,
    args: Vec<String>,
    server_id: u32,
}

impl MyServer {
    /// Starts a server with the default settings; panics with the server log's tail when it cannot.
    pub fn start() -> MyServer {
        MyServer::start_with(MyOptions::default())
    }

    pub fn start_with(options: MyOptions) -> MyServer {
        static NEXT_ID: AtomicU32 = AtomicU32::new(1000);
        let dir = private_dir("remix-mytest-");
        let root = dir.path().to_path_buf();
        let data = root.join("data");
        let server_id = options.server_id.unwrap_or_else(|| NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let mut args = vec![
            "--skip-name-resolve".to_string(),
            "--character-set-server=utf8mb4".to_string(),
            "--collation-server=utf8mb4_bin".to_string(),
            "--innodb-buffer-pool-size=64M".to_string(),
            "--innodb-log-file-size=48M".to_string(),
            "--max-connections=100".to_string(),
            "--default-time-zone=+00:00".to_string(),
        ];
        if !options.no_binlog {
            args.extend([
                format!("--log-bin={}", data.join("binlog").display()),
                "--binlog-format=ROW".into(),
                "--binlog-row-image=FULL".into(),
            ]);
        }
        args.extend(options.args.iter().cloned());
        let mut server = MyServer {
            child: None,
            guardian: None,
            socket: root.join("sock"),
            log: root.join("server.log"),
            data,
            root,
            dir: Some(dir),
            port: 0,
            args,
            server_id,
        };
        server.guardian = spawn_guardian(&server.root);
        // A temp directory of its own: parallel bootstraps in one /tmp clash on temp table names.
        let tmp = server.root.join("tmp");
        fs::create_dir(&tmp).unwrap_or_else(|e| panic!("remix-mytest: cannot create {}: {e}", tmp.display()));
        if let Some(account) = run_as() {
            chown(&tmp, Some(account.uid), Some(account.gid))
                .unwrap_or_else(|e| panic!("remix-mytest: cannot chown {}: {e}", tmp.display()));
        }
        let out = my_command(binary("mariadb-install-db"), &server.root)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", server.data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"])
            .output()
            .unwrap_or_else(|e| panic!("remix-mytest: cannot run mariadb-install-db: {e}"));
        if !out.status.success() {
            panic!("remix-mytest: mariadb-install-db failed:\n{}", output_text(&out));
        }
        server.start_on_new_port();
        server
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn server_id(&self) -> u32 {
        self.server_id
    }

    /// `mysql://root@127.0.0.1:<port>/<db>` (no database when `db` is empty).
    pub fn url(&self, db: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{db}", self.port)
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        tail(&text, lines)
    }

    /// Runs `sql` (several statements allowed) with the `mariadb` client over the socket, in database
    /// `db` (none when empty); returns the rows tab-separated, one per line, without column names
    /// (`NULL` as `NULL`, tabs, newlines and backslashes escaped). Panics on an error.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.try_sql(db, sql).unwrap_or_else(|e| panic!("remix-mytest: {sql}: {e}"))
    }

    pub fn try_sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new(binary("mariadb"));
        cmd.arg("--no-defaults").arg(format!("--socket={}", self.socket.display())).args([
            "-uroot",
            "-N",
            "-B",
            "--default-character-set=utf8mb4",
            "-e",
            sql,
        ]);
        if !db.is_empty() {
            cmd.arg(db);
        }
        let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("cannot run mariadb: {e}"))?;
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

    pub fn create_db(&self, name: &str) {
        self.sql("", &format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"));
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the server cleanly (`SHUTDOWN`), killing it after 30 s.
    pub fn stop(&mut self) {
        if !self.is_running() {
            return;
        }
        let _ = self.try_sql("", "SHUTDOWN");
        let mut child = self.child.take().expect("running");
        let stopped = wait_for(Duration::from_secs(30), || matches!(child.try_wait(), Ok(Some(_))));
        if !stopped {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Crashes the server (`SIGKILL`); committed data survives, [`restart`](Self::restart) brings it back.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (after `stop` or `kill`).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.launch() {
                Ok(()) => return,
                Err(e) if is_port_collision(&e) && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(200))
                }
                Err(e) => panic!("remix-mytest: restarting MariaDB on port {} failed:\n{e}", self.port),
            }
        }
    }

    fn start_on_new_port(&mut self) {
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            self.port = free_port();
            match self.launch() {
                Ok(()) => return,
                Err(e) if is_port_collision(&e) => last_error = e,
                Err(e) => panic!("remix-mytest: starting MariaDB failed:\n{e}"),
            }
        }
        panic!("remix-mytest: no free port after {START_ATTEMPTS} attempts; last failure:\n{last_error}");
    }

    /// Spawns `mariadbd` and waits until it answers on its socket.
    fn launch(&mut self) -> Result<(), String> {
        let log_start = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let _ = fs::remove_file(&self.socket);
        let mut cmd = my_command(binary("mariadbd"), &self.root);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.data.display()))
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--tmpdir={}", self.root.join("tmp").display()))
            .arg(format!("--pid-file={}", self.root.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", self.log.display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--server-id={}", self.server_id))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().map_err(|e| format!("cannot run mariadbd: {e}"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let logged = fs::read(&self.log).unwrap_or_default();
                let logged =
                    String::from_utf8_lossy(&logged[(log_start as usize).min(logged.len())..]).into_owned();
                return Err(format!("mariadbd exited ({status}); log:\n{}", tail(&logged, 30)));
            }
            if self.socket.exists() && self.try_sql("", "SELECT 1").is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "mariadbd did not start in {START_TIMEOUT:?}; log:\n{}",
                    self.log_tail(30)
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for MyServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(mut guardian) = self.guardian.take() {
            if let Some(mut stdin) = guardian.stdin.take() {
                let _ = stdin.write_all(b"done\n");
            }
            let _ = guardian.wait();
        }
        if let Some(dir) = self.dir.take() {
            if let Err(e) = dir.close() {
                eprintln!("remix-mytest: cannot remove {}: {e}", self.root.display());
            }
        }
    }
}

/// Polls `condition` (at most every 100 ms) until it holds or `timeout` passes; returns whether it held.
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

/// A MariaDB binary: from `PATH`, else `/usr/sbin` and `/usr/bin`.
pub fn binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/usr/bin".into()]);
    for dir in dirs {
        let candidate: PathBuf = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "remix-mytest: `{name}` not found: install MariaDB with scripts/test-servers.sh (Debian: apt-get \
         install mariadb-server mariadb-client)"
    )
}

// ---- users and commands ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Account {
    uid: u32,
    gid: u32,
}

/// The `mysql` account when running as root, else `None` (run as is).
fn run_as() -> Option<Account> {
    static RUN_AS: OnceLock<Option<Account>> = OnceLock::new();
    *RUN_AS.get_or_init(|| {
        let uid = fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
        if uid != 0 {
            return None;
        }
        Some(mysql_account().unwrap_or_else(|| {
            panic!(
                "remix-mytest: running as root, so MariaDB must run as the `mysql` user, which does not \
                 exist: run scripts/test-servers.sh (apt-get install mariadb-server)"
            )
        }))
    })
}

fn mysql_account() -> Option<Account> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 4 && fields[0] == "mysql")
            .then(|| Some(Account { uid: fields[2].parse().ok()?, gid: fields[3].parse().ok()? }))
            .flatten()
    })
}

fn private_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(BASE_DIR)
        .unwrap_or_else(|e| panic!("remix-mytest: cannot create a directory in {BASE_DIR}: {e}"));
    if let Some(account) = run_as() {
        chown(dir.path(), Some(account.uid), Some(account.gid))
            .unwrap_or_else(|e| panic!("remix-mytest: cannot chown {}: {e}", dir.path().display()));
    }
    dir
}

/// A command for a MariaDB binary: as `mysql` when running as root, in `cwd`, no stdin, English.
fn my_command(program: impl AsRef<OsStr>, cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    if let Some(account) = run_as() {
        cmd.uid(account.uid).gid(account.gid);
    }
    cmd.env_remove("MYSQL_HOST").env_remove("MYSQL_TCP_PORT").env_remove("MYSQL_UNIX_PORT");
    cmd.env_remove("LC_ALL").env("LC_MESSAGES", "C");
    cmd.current_dir(cwd).stdin(Stdio::null());
    cmd
}

fn output_text(out: &Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    text
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A process that kills the server and removes its directory when the test process dies without
/// dropping the `MyServer`: it waits for a line on its stdin, which only the `MyServer` holds.
fn spawn_guardian(root: &Path) -> Option<Child> {
    const SCRIPT: &str = r#"trap '' INT HUP TERM QUIT
read -r line
if [ "$line" != done ]; then
  pid=$(cat "$1/mariadbd.pid" 2>/dev/null) && kill -KILL "$pid" 2>/dev/null
  sleep 1
  rm -rf "$1"
fi"#;
    let mut cmd = Command::new("sh");
    cmd.args(["-c", SCRIPT, "remix-mytest-guardian"])
        .arg(root)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match cmd.spawn() {
        Ok(child) => Some(child),
        Err(e) => {
            eprintln!("remix-mytest: no guardian process ({e}); a crashed test may leave a server behind");
            None
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("remix-mytest: cannot bind 127.0.0.1:0 to find a free port: {e}"))
}

fn is_port_collision(error: &str) -> bool {
    error.contains("Address already in use") || error.contains("Can't start server: Bind on TCP/IP port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
