//! Helpers shared by the binary's integration tests.

use remix::record::{Change, Op, KIND_CHANGE};
use remix_storage::{AppendRecord, Log, LogOptions, OsFs};
use serde_json::json;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

pub fn remix() -> Command {
    Command::new(env!("CARGO_BIN_EXE_remix"))
}

/// Runs `remix ARGS` and returns its output.
pub fn run(args: &[&str]) -> Output {
    remix().args(args).output().expect("run remix")
}

pub fn change(i: u64) -> AppendRecord {
    let model = if i.is_multiple_of(2) { "customer" } else { "order" };
    let change = Change {
        source: "test".into(),
        position: format!("req-{i}"),
        model: model.into(),
        op: Op::Upsert,
        key: json!({"id": i}),
        data: Some(json!({"id": i, "name": format!("n{i}")}).as_object().unwrap().clone()),
        unchanged: vec![],
        idempotency_key: None,
    };
    AppendRecord { kind: KIND_CHANGE, payload: serde_json::to_vec(&change).unwrap() }
}

pub fn open_log(dir: &Path) -> Log {
    let options = LogOptions { segment_bytes: 64 * 1024, ..LogOptions::default() };
    Log::open(Arc::new(OsFs), dir, options).expect("open log")
}

pub fn append_changes(log: &Log, from: u64, to: u64) {
    for i in from..to {
        log.append_blocking(vec![change(i)]).expect("append");
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------------------
// A real `remix run` child process, HTTP without a client library, datasets.
// ---------------------------------------------------------------------------------------------------

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to become ready, and other waits may take, before a test fails.
pub const WAIT_MAX: Duration = Duration::from_secs(90);

/// A free loopback address (`127.0.0.1:port`), picked by binding port 0.
pub fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().to_string()
}

/// The directory of the canonical model schemas of this repository.
pub fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

/// An example configuration of `config/examples/`, with its schema paths made absolute.
pub fn example_config(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples").join(name);
    let text = std::fs::read_to_string(&path).expect("read the example configuration");
    let schemas = format!("{}/", schemas_dir().display());
    assert!(text.contains("../../schemas/"), "{} no longer names ../../schemas/", path.display());
    text.replace("../../schemas/", &schemas)
}

/// Polls `probe` every 50 ms until it returns `Some`, failing the test after `WAIT_MAX`.
pub fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("HTTP {} body is not JSON ({e}): {}", self.status, self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`). `Err` for anything short of a
/// complete answer: connection refused or reset, a timeout, a truncated response.
pub fn http(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let socket: SocketAddr = addr.parse().expect("a socket address");
    let mut stream = TcpStream::connect_timeout(&socket, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    // A server may answer (413) and close before reading everything: read the answer regardless.
    let written = stream.write_all(&bytes);
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    if raw.is_empty() {
        written?;
        read?;
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, what.to_owned());
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no complete head"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 =
        status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("no status"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let header = |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v);
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body).ok_or_else(|| bad("truncated chunked body"))?;
    } else if let Some(length) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if body.len() < length {
            return Err(bad("truncated body"));
        }
        body.truncate(length);
    }
    Ok(Response { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// `POST` of a JSON body.
pub fn post_json(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> std::io::Result<Response> {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    http("POST", addr, path, &all, &serde_json::to_vec(body).unwrap())
}

/// The lines of a model's dataset: its `.jsonl` files concatenated in name order.
pub fn dataset_lines(dataset_dir: &Path, model: &str) -> Vec<String> {
    let dir = dataset_dir.join(model);
    let mut names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().into_string().unwrap()).collect(),
        Err(_) => return Vec::new(),
    };
    names.retain(|n| n.ends_with(".jsonl"));
    names.sort();
    names
        .iter()
        .flat_map(|name| {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            assert!(text.is_empty() || text.ends_with('\n'), "{name} ends mid-line");
            text.lines().map(str::to_owned).collect::<Vec<_>>()
        })
        .collect()
}

/// A multiset of JSON values, by their canonical text.
pub fn multiset<'a>(
    values: impl IntoIterator<Item = &'a Value>,
) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for value in values {
        *counts.entry(value.to_string()).or_insert(0) += 1;
    }
    counts
}

/// A `remix run` child process with its configuration, addresses and directories. Killed when
/// dropped (also when a test fails), printing the end of its output if the test is failing.
#[derive(Debug)]
pub struct Node {
    pub root: PathBuf,
    pub config: PathBuf,
    pub admin: String,
    pub webhook: String,
    pub data_dir: PathBuf,
    pub dataset_dir: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    starts: usize,
}

impl Node {
    /// Writes `config` (with `${REMIX_*}` variables for addresses and directories) into `root` and
    /// sets the variables: `REMIX_DATA_DIR`, `REMIX_DATASET_DIR`, `REMIX_ADMIN_ADDR`,
    /// `REMIX_WEBHOOK_ADDR`, plus `extra`. Does not start the node.
    pub fn new(root: &Path, config: &str, extra: &[(&str, &str)]) -> Node {
        let config_path = root.join("remix.yaml");
        std::fs::write(&config_path, config).unwrap();
        let (admin, webhook) = (free_addr(), free_addr());
        let data_dir = root.join("data");
        let dataset_dir = root.join("dataset");
        let mut env: Vec<(String, String)> = vec![
            ("REMIX_DATA_DIR".into(), data_dir.display().to_string()),
            ("REMIX_DATASET_DIR".into(), dataset_dir.display().to_string()),
            ("REMIX_ADMIN_ADDR".into(), admin.clone()),
            ("REMIX_WEBHOOK_ADDR".into(), webhook.clone()),
        ];
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        Node {
            root: root.to_path_buf(),
            config: config_path,
            admin,
            webhook,
            data_dir,
            dataset_dir,
            env,
            child: None,
            starts: 0,
        }
    }

    fn command(&self) -> Command {
        let mut command = remix();
        command.env_remove("REMIX_CONFIG");
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }

    fn output_path(&self) -> PathBuf {
        self.root.join("node-output.txt")
    }

    /// Starts `remix run` and waits for `/readyz`: the servers listen and every PostgreSQL source is
    /// connected. When the admin or webhook port was taken between [`free_addr`] picking it and the
    /// node binding it (another test's connection can get it), picks new ones and starts again.
    pub fn start(&mut self) {
        self.start_until("/readyz");
    }

    /// Starts `remix run` and waits for `/healthz` only: the servers listen, the PostgreSQL sources
    /// may still be connecting (or failing to).
    pub fn start_live(&mut self) {
        self.start_until("/healthz");
    }

    /// Starts the node and waits until `GET probe` answers 200.
    fn start_until(&mut self, probe: &str) {
        const START_ATTEMPTS_MAX: usize = 5;
        for attempt in 1..=START_ATTEMPTS_MAX {
            if self.try_start(probe) {
                return;
            }
            assert!(
                attempt < START_ATTEMPTS_MAX,
                "no free ports after {attempt} attempts:\n{}",
                self.output()
            );
            let (admin, webhook) = (free_addr(), free_addr());
            for (name, value) in &mut self.env {
                match name.as_str() {
                    "REMIX_ADMIN_ADDR" => value.clone_from(&admin),
                    "REMIX_WEBHOOK_ADDR" => value.clone_from(&webhook),
                    _ => {}
                }
            }
            (self.admin, self.webhook) = (admin, webhook);
        }
    }

    /// One start; `false` when the node exited because an address was in use.
    fn try_start(&mut self, probe: &str) -> bool {
        assert!(self.child.is_none(), "the node is already running");
        self.starts += 1;
        let marker = format!("---- start {} ----", self.starts);
        let output = std::fs::OpenOptions::new().create(true).append(true).open(self.output_path()).unwrap();
        writeln!(&output, "{marker}").unwrap();
        let child = self
            .command()
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .expect("spawn remix run");
        self.child = Some(child);
        let admin = self.admin.clone();
        let mut port_taken = false;
        wait_for(&format!("the node to answer {probe}"), || {
            if port_taken {
                return Some(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let output = self.output();
                let this_start = output.rsplit(&marker).next().unwrap_or_default();
                // The lock: the test process itself opens the log between starts (conformance
                // `append`), and a child forked meanwhile by another test thread holds a copy of
                // that descriptor until it execs, so the lock can outlive the close by a moment.
                if this_start.contains("Address already in use")
                    || this_start.contains("is locked by another process")
                {
                    port_taken = true;
                    std::thread::sleep(Duration::from_millis(200));
                    return Some(());
                }
                panic!("remix run exited with {status} before it was ready:\n{output}");
            }
            http("GET", &admin, probe, &[], b"").ok().filter(|r| r.status == 200).map(|_| ())
        });
        if port_taken {
            self.child = None;
        }
        !port_taken
    }

    /// SIGKILL, and reaps the process.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().unwrap();
        }
    }

    /// SIGTERM (graceful shutdown), and waits for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
            assert!(status.success(), "kill -TERM");
            let deadline = Instant::now() + WAIT_MAX;
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(status.success(), "remix run exited with {status}:\n{}", self.output());
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("remix run did not stop on SIGTERM:\n{}", self.output());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Everything the node printed so far (all starts).
    /// Whether the postgres source `source` has its slot and, if it takes one, its initial snapshot:
    /// from then on every committed change reaches the log.
    pub fn snapshot_done(&self, source: &str) -> bool {
        let state = std::fs::read(self.data_dir.join(format!("sources/{source}.json"))).unwrap_or_default();
        serde_json::from_slice::<Value>(&state).is_ok_and(|s| s["snapshot_done"] == true)
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(self.output_path()).unwrap_or_default()
    }

    /// Runs `remix ARGS --config <this config>` with the node's environment.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command().args(args).arg("--config").arg(&self.config).output().expect("run remix")
    }

    /// Runs a `--json` command that must succeed and returns its parsed output.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cli(&all);
        assert!(out.status.success(), "remix {args:?} failed: {out:?}");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("remix {args:?} --json printed no JSON ({e}): {}", stdout(&out)))
    }

    /// `remix target list --json`, the entry of target `name`.
    pub fn target(&self, name: &str) -> Value {
        let list = self.cli_json(&["target", "list"]);
        let entry = list.as_array().expect("an array").iter().find(|t| t["name"] == name).cloned();
        entry.unwrap_or_else(|| panic!("no target {name} in {list}"))
    }

    /// `remix log stat --json`.
    pub fn log_stat(&self) -> Value {
        self.cli_json(&["log", "stat"])
    }

    /// Waits until target `name` has applied everything in the log now (lag 0, state running).
    ///
    /// "In the log" is what `log stat` and `log dump` see: written records, which may be a group
    /// commit ahead of the fsync. Lag counts only durable records, so lag 0 alone could come before
    /// the target sees the records a test has just read in the log; the cursor must reach them.
    pub fn wait_caught_up(&self, name: &str) -> Value {
        let last_offset = self.log_stat()["last_offset"].as_u64().expect("log stat has last_offset");
        wait_for(&format!("target {name} to catch up to offset {last_offset}"), || {
            let t = self.target(name);
            let reached = t["cursor"].as_u64().is_some_and(|c| c >= last_offset);
            (reached && t["lag_records"] == 0 && t["state"] == "running").then_some(t)
        })
    }

    /// `remix log verify` must pass.
    pub fn verify_log(&self) {
        let out = self.cli(&["log", "verify"]);
        assert!(out.status.success(), "remix log verify: {out:?}");
    }

    /// Sends a webhook `POST` to this node.
    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> std::io::Result<Response> {
        post_json(&self.webhook, path, headers, body)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let output = self.output();
            let tail: String =
                output.chars().rev().take(6000).collect::<Vec<_>>().into_iter().rev().collect();
            eprintln!("---- end of the node's output ({}) ----\n{tail}", self.root.display());
            if let Ok(keep) = std::env::var("REMIX_TEST_KEEP") {
                // The test's directory is about to go: a copy for the post-mortem.
                let copy = Path::new(&keep).join(format!(
                    "node-{}-{}",
                    std::process::id(),
                    self.admin.replace(':', "-")
                ));
                let copied = Command::new("cp").arg("-a").arg(&self.root).arg(&copy).status();
                eprintln!("---- REMIX_TEST_KEEP: copied to {} ({copied:?}) ----", copy.display());
            }
        }
    }
}

/// A small deterministic pseudo-random generator (SplitMix64), seeded per test.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A seed from the clock, printed so that a failing run can be repeated.
    pub fn from_clock(test: &str) -> Rng {
        let seed = match std::env::var("REMIX_TEST_SEED") {
            Ok(seed) => seed.parse().expect("REMIX_TEST_SEED is a number"),
            Err(_) => {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
            }
        };
        eprintln!("{test}: REMIX_TEST_SEED={seed}");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `range` (inclusive).
    pub fn range(&mut self, range: std::ops::RangeInclusive<u64>) -> u64 {
        range.start() + self.next() % (range.end() - range.start() + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// A request the test API received, and the status it answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub key: String,
    pub body: Value,
    pub status: u16,
}

/// Decides the status of each request: (path, idempotency key, body) -> status.
type Responder = Box<dyn FnMut(&str, &str, &Value) -> u16 + Send>;

/// An HTTP API for the `http` target to deliver to (axum, in its own runtime), recording every
/// request it receives and answering what its responder says (200 by default).
pub struct TestApi {
    pub addr: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    responder: std::sync::Arc<std::sync::Mutex<Responder>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for TestApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApi").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl TestApi {
    pub fn start() -> TestApi {
        use std::sync::{Arc, Mutex};
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let responder: Arc<Mutex<Responder>> = Arc::new(Mutex::new(Box::new(|_, _, _| 200)));
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (r, s) = (Arc::clone(&received), Arc::clone(&responder));
        let handler = move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let (received, responder) = (Arc::clone(&r), Arc::clone(&s));
            async move {
                let key =
                    headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let path = uri.path().to_owned();
                let status = (responder.lock().unwrap())(&path, &key, &body);
                received.lock().unwrap().push(Received { path, key, body, status });
                let status = axum::http::StatusCode::from_u16(status).unwrap();
                (status, format!("{{\"status\": {}}}", status.as_u16()))
            }
        };
        let router = axum::Router::new().fallback(handler);
        runtime.spawn(async move { axum::serve(listener, router).await.unwrap() });
        TestApi { addr, received, responder, runtime: Some(runtime) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Replaces the responder.
    pub fn respond(&self, responder: impl FnMut(&str, &str, &Value) -> u16 + Send + 'static) {
        *self.responder.lock().unwrap() = Box::new(responder);
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The records of the requests to `path` that were answered 2xx, after checking that each
    /// idempotency key was answered 2xx exactly once, that every attempt under one key carried the same
    /// body, and that the key names the body's offset range (`<target>:<first>-<last>`).
    pub fn delivered(&self, path: &str, target: &str) -> Vec<Value> {
        let received: Vec<Received> = self.received().into_iter().filter(|r| r.path == path).collect();
        let mut bodies: std::collections::BTreeMap<&str, &Value> = Default::default();
        let mut accepted: std::collections::BTreeMap<&str, usize> = Default::default();
        for r in &received {
            let range = format!("{target}:{}-{}", r.body["first_offset"], r.body["last_offset"]);
            // After the N-th rewind the key ends in `:g<N>`.
            let generation = r.key.strip_prefix(&range).and_then(|g| g.strip_prefix(":g"));
            let names_range =
                r.key == range || generation.is_some_and(|g| g.parse::<u64>().is_ok_and(|g| g > 0));
            assert!(names_range, "the idempotency key {} names the offset range of {}", r.key, r.body);
            if let Some(first) = bodies.insert(&r.key, &r.body) {
                assert_eq!(first, &r.body, "two different bodies under idempotency key {}", r.key);
            }
            if (200..300).contains(&r.status) {
                *accepted.entry(&r.key).or_default() += 1;
            }
        }
        for (key, count) in &accepted {
            assert_eq!(*count, 1, "idempotency key {key} was delivered {count} times");
        }
        received
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .flat_map(|r| r.body["records"].as_array().expect("records").clone())
            .collect()
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Checks that no offset appears twice among `records` and returns them by offset.
pub fn by_offset(records: &[Value]) -> std::collections::BTreeMap<u64, Value> {
    let mut out = std::collections::BTreeMap::new();
    for r in records {
        let offset = r["offset"].as_u64().expect("an offset");
        assert!(out.insert(offset, r.clone()).is_none(), "offset {offset} delivered twice");
    }
    out
}
