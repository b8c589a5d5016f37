//! Throwaway servers for the stream targets' adapters: a binary from the test-server cache
//! (`scripts/test-servers.sh`), started in its own process group on a free port, killed with its
//! group when dropped; and the cache's Python for the independent readers.

use crate::support::{free_addr, wait_for};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// `$REMIX_TEST_CACHE` or `$HOME/.cache/remix-test`.
pub fn cache() -> PathBuf {
    match std::env::var_os("REMIX_TEST_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/remix-test"),
    }
}

/// A server binary of the cache; fails the test, naming the installer, when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let path = cache().join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/test-servers.sh to install the test servers",
        path.display()
    );
    path
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    free_addr().rsplit(':').next().unwrap().parse().unwrap()
}

/// Runs a reader script of `tests/it/conformance/readers/` with the cache's Python.
pub fn python(script: &str, args: &[&str]) -> Output {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/conformance/readers").join(script);
    Command::new(binary("python")).arg(path).args(args).output().expect("run the cache's python")
}

/// A reader's JSON answer, or its error output.
pub fn python_json(script: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    let out = python(script, args);
    if !out.status.success() {
        return Err(format!("{script} {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{script}: not JSON: {e}"))
}

/// A server process (and its process group).
#[derive(Debug)]
pub struct Daemon {
    command: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Starts `program args` with its output in `log`, and waits until `ready` says so.
    pub fn start(program: &Path, args: &[String], log: PathBuf, ready: impl FnMut() -> bool) -> Daemon {
        let mut command = vec![program.display().to_string()];
        command.extend(args.iter().cloned());
        let mut daemon = Daemon { command, log, child: None };
        daemon.spawn(ready);
        daemon
    }

    fn spawn(&mut self, mut ready: impl FnMut() -> bool) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.command[0]));
        self.child = Some(child);
        wait_for(&format!("{} to be ready (log {})", self.command[0], self.log.display()), || {
            ready().then_some(())
        });
    }

    /// kill -9 of the server's group.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-s", "KILL", "--", &format!("-{}", child.id())]).status();
            let _ = child.wait();
        }
    }

    /// Starts it again with the same command (same port, same data).
    pub fn restart(&mut self, ready: impl FnMut() -> bool) {
        self.kill();
        self.spawn(ready);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}
