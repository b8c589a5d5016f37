//! What the benchmark harnesses share: a running `remix run` (the real binary) and a tiny HTTP client
//! for its admin API. Included with `mod support;` by each harness (`harness = false`).

#![allow(dead_code)] // each harness uses a part

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How often the harnesses poll (each poll of the admin API costs Remix a little CPU).
pub const POLL: Duration = Duration::from_millis(20);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A running `remix run`; SIGKILLed if dropped while running.
pub struct Remix {
    child: Child,
    admin: String,
}

impl Remix {
    /// Starts `remix run`, its output appended to `remix.out` beside the configuration.
    pub fn start(config: &Path, admin: &str) -> Remix {
        Remix::start_with_env(config, &config.with_file_name("remix.out"), admin, &[])
    }

    /// Starts `remix run` with more environment variables, its output appended to `out`. The binary
    /// is this build's, or `REMIX_BENCH_BIN` (to compare two builds in the same harness).
    pub fn start_with_env(config: &Path, out: &Path, admin: &str, env: &[(&str, &str)]) -> Remix {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(out).expect("remix.out");
        let binary =
            std::env::var_os("REMIX_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_remix").into());
        let child = Command::new(binary)
            .args(["run", "--config", config.to_str().expect("utf-8 path")])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("remix.out"))
            .stderr(out)
            .spawn()
            .expect("start remix");
        Remix { child, admin: admin.to_owned() }
    }

    /// Panics if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("remix exited with {status}");
        }
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(&self.admin, "/readyz").map(|(status, _)| status) != Some(200) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("remix exited with {status}");
            }
            assert!(Instant::now() < deadline, "remix did not become ready");
            std::thread::sleep(POLL);
        }
    }

    /// Peak resident set size so far, in bytes (`VmHWM`).
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        kib * 1024
    }

    /// `remix_log_durable_offset` from `/metrics`, once the admin API answers.
    pub fn log_durable_offset(&mut self) -> Option<u64> {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("remix exited with {status}");
        }
        let (_, body) = http_get(&self.admin, "/metrics")?;
        let line = body.lines().find(|l| l.starts_with("remix_log_durable_offset "))?;
        line.split_whitespace().nth(1)?.parse::<f64>().ok().map(|v| v as u64)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the first target's cursor is at `offset` or beyond.
    pub fn target_caught_up(&self, offset: u64) -> bool {
        let Some((_, body)) = http_get(&self.admin, "/targets") else { return false };
        let targets: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        targets[0]["cursor"].as_u64().is_some_and(|cursor| cursor >= offset)
    }

    /// CPU time used so far (user + system).
    pub fn cpu_time(&self) -> Duration {
        process_cpu(self.child.id())
    }

    /// The log's durable offset, from the admin API (`cursor + lag_records` of the first target).
    pub fn target_durable_offset(&self) -> Option<u64> {
        let (_, body) = http_get(&self.admin, "/targets")?;
        let targets: serde_json::Value = serde_json::from_str(&body).ok()?;
        let target = targets.as_array()?.first()?;
        Some(target["cursor"].as_u64()? + target["lag_records"].as_u64()?)
    }

    pub fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(Instant::now() < deadline, "remix did not stop");
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Remix {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU time a process used so far (user + system), from `/proc/<pid>/stat`: a figure that, unlike the
/// elapsed time, does not depend on what else the machine runs. Zero if the process is gone.
pub fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name (which may hold spaces), utime and stime are the 12th and 13th fields,
    // in clock ticks (100 per second on Linux).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// A blocking `GET` over a raw TCP stream: `(status, body)`.
pub fn http_get(host: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some((status, body))
}

fn dechunk(mut data: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = data.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        data = rest[size..].trim_start_matches("\r\n");
    }
    out
}
