//! The `object_store` target through the suite: a history target whose shards a rewind rewrites.
//! Backends: SeaweedFS (a real S3 server with SigV4 and conditional puts, started per test on free
//! ports), azurite (Microsoft's Azure Blob emulator, `azurite.rs`) and `file://`; formats Parquet
//! and JSONL. What the target holds is read back with pyarrow (`object_store_read.py`: committed
//! shards only, each checked against its manifest's size, sha256, rows and offsets; Azure blobs are
//! downloaded with the Azure SDK first). Checked: every model's rows equal the log's changes for it, in order, each once
//! (`_offset` included), with `item` renamed by an output mapping; the state folded from the rows
//! equals the model state. Unreachable: S3 behind a closed [`Gate`]; `file://`: the directory
//! replaced by a file. Not applicable: case 5 (see [`NO_PERMANENT_ERROR`]).

use super::azurite::{self, Azurite};
use super::cases;
use super::gate::Gate;
use super::model::{canonical, key_fields, normalize, ModelState, ITEM};
use super::{Adapter, History, Rewound, State, TargetSpec};
use crate::support::{free_addr, wait_for, Node};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const NO_PERMANENT_ERROR: &str = "the object_store target has no permanent error a test can provoke \
    from the store's side: a refused put (missing bucket, refused credentials) is retried with the \
    provider's message, since a sealed shard's rows cannot be blamed on one record (case 6 covers it); \
    a value Arrow cannot hold is a permanent error of its item (unit test \
    a_value_arrow_cannot_hold_is_permanent_with_its_item), but the suite's models always fit";

pub const S3_KEY: &str = "remixtest";
pub const S3_SECRET: &str = "remixtestsecret";
pub const BUCKET: &str = "remix";

/// `item` renamed in the shards: (shard column, model field).
const ITEM_FIELDS: [(&str, &str); 5] = [
    ("id", "sku"),
    ("name", "title"),
    ("price_cents", "price"),
    ("tags", "tags"),
    ("description", "description"),
];

/// The test servers' binaries and Python.
pub fn test_bin(name: &str) -> PathBuf {
    let cache = std::env::var("REMIX_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/remix-test"));
    let bin = cache.join("bin").join(name);
    assert!(bin.exists(), "{} is missing: run scripts/test-servers.sh", bin.display());
    bin
}

/// A SeaweedFS server (`weed mini`) with one bucket, stopped on drop.
#[derive(Debug)]
pub struct Seaweed {
    child: Child,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

fn port() -> String {
    free_addr().rsplit_once(':').unwrap().1.to_owned()
}

/// What `weed` logs when a port it was given was taken between `port()` and its bind.
const PORT_TAKEN: &str = "address already in use";

/// Attempts at starting SeaweedFS, each on fresh ports.
const SEAWEED_START_ATTEMPTS_MAX: usize = 3;

impl Seaweed {
    /// Starts one, again on other ports when another process took one of them first (free ports are
    /// picked before `weed` binds them, and tests run in parallel).
    pub fn start() -> Seaweed {
        for attempt in 1..=SEAWEED_START_ATTEMPTS_MAX {
            match Seaweed::start_once() {
                Some(server) => return server,
                None => eprintln!("SeaweedFS: a port was taken before it bound it (attempt {attempt})"),
            }
        }
        panic!("SeaweedFS did not start in {SEAWEED_START_ATTEMPTS_MAX} attempts: its ports were taken");
    }

    /// `None` when a port was taken.
    fn start_once() -> Option<Seaweed> {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = json!({"identities": [{"name": "remix", "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]});
        std::fs::write(d.join("s3.json"), config.to_string()).unwrap();
        let s3 = port();
        let mut args = vec![
            "mini".to_owned(),
            format!("-dir={}/data", d.display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-s3.port={s3}"),
        ];
        for flag in [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "s3.port.iceberg",
            "admin.port",
            "admin.port.grpc",
        ] {
            args.push(format!("-{flag}={}", port()));
        }
        args.extend([
            "-s3.port.lance=0".to_owned(),
            "-admin.ui=false".into(),
            "-webdav=false".into(),
            "-master.telemetry=false".into(),
            "-s3.autoCreateBucket=false".into(),
            format!("-filer.localSocket={}/filer.sock", d.display()),
            format!("-s3.localSocket={}/s3.sock", d.display()),
            format!("-s3.config={}/s3.json", d.display()),
        ]);
        let log = std::fs::File::create(d.join("server.log")).unwrap();
        let child = Command::new(test_bin("weed"))
            .args(&args)
            .current_dir(d)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start weed");
        let endpoint = format!("http://127.0.0.1:{s3}");
        let log_path = d.join("server.log");
        let server = Seaweed { child, endpoint, _dir: dir };
        // The S3 port answers first (cheap to poll), then one Python run creates the bucket,
        // retrying while the filer behind the gateway starts.
        let addr = format!("127.0.0.1:{s3}");
        let port_taken = || std::fs::read_to_string(&log_path).unwrap_or_default().contains(PORT_TAKEN);
        wait_for("SeaweedFS to listen for S3", || {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            assert!(!log.contains("panic:"), "weed failed: {log}");
            (log.contains(PORT_TAKEN) || std::net::TcpStream::connect(&addr).is_ok()).then_some(())
        });
        if port_taken() {
            return None;
        }
        let script = format!(
            "import boto3,time\nfrom botocore.config import Config\n\
             c=boto3.client('s3',endpoint_url='{}',region_name='us-east-1',aws_access_key_id='{S3_KEY}',\
             aws_secret_access_key='{S3_SECRET}',config=Config(s3={{'addressing_style':'path'}},retries={{'max_attempts':1}}))\n\
             for i in range(600):\n\
             \x20   if '{PORT_TAKEN}' in open('{}').read(): raise SystemExit(3)\n\
             \x20   try: c.create_bucket(Bucket='{BUCKET}')\n\
             \x20   except Exception: pass\n\
             \x20   try:\n\
             \x20       c.list_objects_v2(Bucket='{BUCKET}'); break\n\
             \x20   except Exception:\n\
             \x20       time.sleep(0.2)\n\
             else:\n\
             \x20   raise SystemExit('no bucket after 120 s')\n",
            server.endpoint,
            log_path.display()
        );
        let out = Command::new(test_bin("python")).args(["-c", &script]).output().unwrap();
        if port_taken() {
            return None;
        }
        assert!(
            out.status.success(),
            "SeaweedFS did not create the bucket: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        Some(server)
    }

    /// The environment the node needs for it.
    pub fn env() -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), S3_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), S3_SECRET.into()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        // Kill the process group (the child leads it: `process_group(0)`).
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-s", "KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// A committed row and its model.
type Row = (String, Map<String, Value>);

#[derive(Debug)]
enum Backend {
    S3 { server: Seaweed, gate: Gate },
    Azure { server: Azurite, gate: Gate },
    File { dir: PathBuf },
}

#[derive(Debug)]
pub struct ObjectStore {
    backend: Backend,
    format: &'static str,
}

impl ObjectStore {
    fn s3(format: &'static str) -> ObjectStore {
        let server = Seaweed::start();
        let gate = Gate::start(server.endpoint.trim_start_matches("http://"));
        ObjectStore { backend: Backend::S3 { server, gate }, format }
    }

    fn azure(format: &'static str) -> ObjectStore {
        let server = Azurite::start();
        let gate = Gate::start(server.endpoint.trim_start_matches("http://"));
        ObjectStore { backend: Backend::Azure { server, gate }, format }
    }

    pub fn azure_parquet(_root: &Path) -> ObjectStore {
        ObjectStore::azure("parquet")
    }

    pub fn azure_jsonl(_root: &Path) -> ObjectStore {
        ObjectStore::azure("jsonl")
    }

    fn file(root: &Path, format: &'static str) -> ObjectStore {
        ObjectStore { backend: Backend::File { dir: root.join("lake") }, format }
    }

    pub fn s3_parquet(_root: &Path) -> ObjectStore {
        ObjectStore::s3("parquet")
    }

    pub fn s3_jsonl(_root: &Path) -> ObjectStore {
        ObjectStore::s3("jsonl")
    }

    pub fn file_parquet(root: &Path) -> ObjectStore {
        ObjectStore::file(root, "parquet")
    }

    pub fn file_jsonl(root: &Path) -> ObjectStore {
        ObjectStore::file(root, "jsonl")
    }

    /// Every committed row, by model, in shard and row order (pyarrow).
    fn rows(&self) -> Result<Vec<Row>, String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/conformance/object_store_read.py");
        let mut command = Command::new(test_bin("python"));
        command.arg(script);
        match &self.backend {
            Backend::S3 { server, .. } => {
                command.arg(format!("{BUCKET}/lake"));
                command.args(super::model::MODELS);
                command.args(["--s3", &server.endpoint, S3_KEY, S3_SECRET]);
            }
            Backend::Azure { server, .. } => {
                command.arg(format!("{}/lake", azurite::CONTAINER));
                command.args(super::model::MODELS);
                command.args(["--azure", &server.connection_string()]);
            }
            Backend::File { dir } => {
                command.arg(dir);
                command.args(super::model::MODELS);
            }
        }
        let out = command.stderr(Stdio::piped()).output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("the reader failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let text = String::from_utf8(out.stdout).unwrap();
        Ok(text
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (v["model"].as_str().unwrap().to_owned(), v["row"].as_object().unwrap().clone())
            })
            .collect())
    }
}

/// A model object (or key) in the shards' field names.
fn rename(model: &str, object: &Map<String, Value>) -> Map<String, Value> {
    if model != ITEM {
        return object.clone();
    }
    ITEM_FIELDS
        .iter()
        .filter_map(|(to, from)| object.get(*from).map(|v| ((*to).to_owned(), v.clone())))
        .collect()
}

fn shard_key_fields(model: &str) -> Vec<&'static str> {
    if model == ITEM {
        vec!["id"]
    } else {
        key_fields(model).to_vec()
    }
}

fn without_nulls(object: &Map<String, Value>) -> Map<String, Value> {
    object.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A row as a history entry: `_op`, `_offset`, `_unchanged` (when any) and the non-null fields it
/// carries (a partial upsert's unchanged fields are null in Parquet and absent in JSONL).
fn entry(model: &str, row: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    let unchanged: Vec<String> = row
        .get("_unchanged")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    for (field, value) in row {
        match field.as_str() {
            "_time" => assert!(value.is_string(), "a row without _time: {row:?}"),
            "_unchanged" => {}
            "_op" | "_offset" => {
                out.insert(field.clone(), value.clone());
            }
            // Open objects are stored as their JSON text in Parquet (as objects in JSONL).
            "prefs" if model == "account" && !unchanged.contains(field) => match value {
                Value::String(text) => {
                    out.insert(field.clone(), serde_json::from_str(text).expect("JSON text"));
                }
                Value::Null => {}
                other => {
                    out.insert(field.clone(), other.clone());
                }
            },
            _ if value.is_null() || unchanged.contains(field) => {}
            _ => {
                out.insert(field.clone(), value.clone());
            }
        }
    }
    if !unchanged.is_empty() {
        let mut sorted = unchanged;
        sorted.sort();
        out.insert("_unchanged".into(), json!(sorted));
    }
    normalize(&Value::Object(out))
}

impl Adapter for ObjectStore {
    fn kind(&self) -> &'static str {
        "object_store"
    }

    fn history(&self) -> Option<Rewound> {
        Some(Rewound::Rewritten)
    }

    fn target_yaml(&self, spec: &TargetSpec) -> String {
        let item: Vec<String> = ITEM_FIELDS.iter().map(|(to, from)| format!("{to}: {from}")).collect();
        let place = match &self.backend {
            Backend::S3 { gate, .. } => {
                format!("    url: s3://{BUCKET}/lake\n    endpoint: http://{}\n", gate.addr)
            }
            Backend::Azure { gate, .. } => format!(
                "    url: az://{}/lake\n    endpoint: http://{}/{}\n",
                azurite::CONTAINER,
                gate.addr,
                azurite::ACCOUNT
            ),
            Backend::File { dir } => format!("    url: \"file://{}\"\n", dir.display()),
        };
        format!(
            "{}{place}    format: {}\n    shard: {{ rows_max: 2500, age_max: 300ms }}\n    models:\n      account: {{}}\n      item: {{ fields: {{ {} }} }}\n      line: {{}}\n",
            spec.common_yaml("object_store"),
            self.format,
            item.join(", ")
        )
    }

    fn env(&self) -> Vec<(String, String)> {
        match &self.backend {
            Backend::Azure { .. } => Azurite::env(),
            _ => Seaweed::env(),
        }
    }

    fn expected_state(&self, state: &ModelState) -> State {
        state
            .iter()
            .map(|((model, _), object)| {
                let object = without_nulls(&rename(model, object));
                let key: Map<String, Value> =
                    shard_key_fields(model).iter().map(|f| ((*f).to_owned(), object[*f].clone())).collect();
                ((model.clone(), canonical(&Value::Object(key))), normalize(&Value::Object(object)))
            })
            .collect()
    }

    fn read_state(&self, node: &Node) -> Result<State, String> {
        let mut state = State::new();
        for (model, entries) in self.read_history(node)? {
            for mut entry in entries {
                let fields = entry.as_object_mut().unwrap();
                let op = fields.remove("_op").unwrap();
                fields.remove("_offset");
                let unchanged = fields.remove("_unchanged");
                let key: Map<String, Value> = shard_key_fields(&model)
                    .iter()
                    .map(|f| ((*f).to_owned(), fields.get(*f).cloned().unwrap_or(Value::Null)))
                    .collect();
                let key = (model.clone(), canonical(&Value::Object(key)));
                match op.as_str().unwrap() {
                    "upsert" => {
                        let mut object = fields.clone();
                        if let (Some(previous), Some(unchanged)) = (state.get(&key), unchanged) {
                            for field in unchanged.as_array().unwrap().iter().filter_map(Value::as_str) {
                                if let Some(value) = previous.get(field) {
                                    object.insert(field.to_owned(), value.clone());
                                }
                            }
                        }
                        state.insert(key, Value::Object(object));
                    }
                    "delete" => {
                        state.remove(&key);
                    }
                    "truncate" => state.retain(|(m, _), _| *m != model),
                    other => return Err(format!("{model}: a row with _op {other}")),
                }
            }
        }
        Ok(state.into_iter().map(|(k, v)| (k, normalize(&v))).collect())
    }

    fn expected_history(&self, records: &[Value]) -> History {
        let mut history = History::new();
        for model in self.models() {
            let entries = records
                .iter()
                .filter(|r| r["model"] == *model)
                .map(|r| {
                    let op = r["op"].as_str().unwrap();
                    let mut row = match op {
                        "upsert" => without_nulls(&rename(model, r["data"].as_object().unwrap())),
                        "delete" => rename(model, r["key"].as_object().unwrap()),
                        _ => Map::new(),
                    };
                    row.insert("_op".into(), json!(op));
                    row.insert("_offset".into(), r["offset"].clone());
                    if let Some(unchanged) = r["unchanged"].as_array().filter(|u| !u.is_empty()) {
                        let names: Vec<Value> =
                            rename_fields(model, unchanged).into_iter().map(Value::String).collect();
                        let mut names: Vec<String> =
                            names.iter().map(|v| v.as_str().unwrap().to_owned()).collect();
                        names.sort();
                        row.insert("_unchanged".into(), json!(names));
                    }
                    normalize(&Value::Object(row))
                })
                .collect();
            history.insert((*model).to_owned(), entries);
        }
        history
    }

    fn read_history(&self, _node: &Node) -> Result<History, String> {
        let mut history: History = self.models().iter().map(|m| ((*m).to_owned(), Vec::new())).collect();
        for (model, row) in self.rows()? {
            let entry = entry(&model, &row);
            history.entry(model).or_default().push(entry);
        }
        Ok(history)
    }

    fn damage(&mut self, _node: &Node) -> String {
        match &self.backend {
            Backend::File { dir } => {
                let model = dir.join("account");
                let mut files: Vec<PathBuf> =
                    std::fs::read_dir(&model).unwrap().map(|e| e.unwrap().path()).collect();
                files.sort();
                let shard = files.iter().rfind(|f| !f.to_string_lossy().ends_with(".manifest.json")).unwrap();
                std::fs::remove_file(shard).unwrap();
                format!("removed {}", shard.display())
            }
            Backend::S3 { server, .. } => {
                let script = format!(
                    "import boto3\nfrom botocore.config import Config\n\
                     c=boto3.client('s3',endpoint_url='{}',region_name='us-east-1',aws_access_key_id='{S3_KEY}',\
                     aws_secret_access_key='{S3_SECRET}',config=Config(s3={{'addressing_style':'path'}}))\n\
                     keys=sorted(o['Key'] for o in c.list_objects_v2(Bucket='{BUCKET}',Prefix='lake/account/')['Contents'] if not o['Key'].endswith('.manifest.json'))\n\
                     c.delete_object(Bucket='{BUCKET}',Key=keys[-1])\nprint(keys[-1])\n",
                    server.endpoint
                );
                let out = Command::new(test_bin("python")).args(["-c", &script]).output().unwrap();
                assert!(out.status.success(), "{out:?}");
                format!("deleted s3://{BUCKET}/{}", String::from_utf8_lossy(&out.stdout).trim())
            }
            Backend::Azure { server, .. } => {
                let deleted = server.python(&format!(
                    "b=c.get_container_client('{}')\n\
                     names=sorted(n for n in b.list_blob_names(name_starts_with='lake/account/') if not n.endswith('.manifest.json'))\n\
                     b.delete_blob(names[-1])\nprint(names[-1])\n",
                    azurite::CONTAINER
                ));
                format!("deleted az://{}/{}", azurite::CONTAINER, deleted.trim())
            }
        }
    }

    fn set_reachable(&mut self, _node: &Node, reachable: bool) {
        match &mut self.backend {
            Backend::S3 { gate, .. } | Backend::Azure { gate, .. } => {
                if reachable {
                    gate.open()
                } else {
                    gate.close()
                }
            }
            Backend::File { dir } => {
                let away = dir.with_extension("away");
                if reachable {
                    std::fs::remove_file(&*dir).unwrap();
                    std::fs::rename(&away, &*dir).unwrap();
                } else {
                    std::fs::rename(&*dir, &away).unwrap();
                    std::fs::write(&*dir, b"not a directory").unwrap();
                }
            }
        }
    }

    fn poison(&mut self, _marker: Option<&str>) -> Result<(), &'static str> {
        Err(NO_PERMANENT_ERROR)
    }
}

/// Model field names in `unchanged` as the shard names them.
fn rename_fields(model: &str, unchanged: &[Value]) -> Vec<String> {
    let names = unchanged.iter().filter_map(Value::as_str);
    if model != ITEM {
        return names.map(str::to_owned).collect();
    }
    names
        .filter_map(|n| ITEM_FIELDS.iter().find(|(_, from)| *from == n).map(|(to, _)| (*to).to_owned()))
        .collect()
}

macro_rules! cases {
    ($module:ident, $make:expr, [$($case:ident),*]) => {
        mod $module {
            use super::*;
            $(
                #[test]
                fn $case() {
                    cases::$case($make);
                }
            )*
        }
    };
}

cases!(
    s3_parquet,
    ObjectStore::s3_parquet,
    [
        mixed_changes,
        kill9_during_delivery,
        rewind_to_start_repairs,
        rewind_to_middle,
        per_key_order_under_collapse,
        permanent_error_pauses,
        server_down,
        truncate_applied,
        truncate_ignored
    ]
);
cases!(
    s3_jsonl,
    ObjectStore::s3_jsonl,
    [mixed_changes, kill9_during_delivery, rewind_to_middle, server_down]
);
cases!(
    file_parquet,
    ObjectStore::file_parquet,
    [
        mixed_changes,
        kill9_during_delivery,
        rewind_to_start_repairs,
        rewind_to_middle,
        server_down,
        truncate_applied
    ]
);
cases!(
    azure_parquet,
    ObjectStore::azure_parquet,
    [
        mixed_changes,
        kill9_during_delivery,
        rewind_to_start_repairs,
        rewind_to_middle,
        per_key_order_under_collapse,
        permanent_error_pauses,
        server_down,
        truncate_applied,
        truncate_ignored
    ]
);
cases!(
    azure_jsonl,
    ObjectStore::azure_jsonl,
    [mixed_changes, kill9_during_delivery, rewind_to_middle, server_down]
);
cases!(file_jsonl, ObjectStore::file_jsonl, [mixed_changes, kill9_during_delivery, rewind_to_middle]);
