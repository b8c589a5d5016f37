//! The `object_store` target writing one large Parquet shard: peak memory (the process's VmHWM) and
//! rate. The shard is streamed to the store as it fills (multipart upload to a staging key, then a
//! create-only copy to its key), so memory stays bounded by a row group and a few parts, not by the
//! shard (goal: under 256 MiB for a 1 GiB shard).
//!
//! Rows: an id and 200 random hex characters (little for zstd to squeeze), generated batch by batch
//! (never all in memory), applied in batches of 20k as the worker would. The shard is sealed at
//! `REMIX_BENCH_SHARD_BYTES` (default 1 GiB).
//!
//! `REMIX_BENCH_STORE=file` (default) writes to a temp dir; `REMIX_BENCH_STORE=seaweedfs` starts a
//! SeaweedFS S3 server (`weed` from `scripts/test-servers.sh`) on free ports and writes there: the
//! end-to-end rate to S3.
//!
//! `cargo bench --bench object_store_memory`

use remix::config::{BatchConfig, OnError, OutputBinding, TargetCommon, TruncatePolicy};
use remix::mapping::Mapping;
use remix::models::Model;
use remix::object_store::config::{Compression, Format, ObjectStoreTarget as Config, ShardLimits};
use remix::object_store::target::ObjectStoreTarget;
use remix::record::Op;
use remix::runtime::delivery::{Batch, Fields, Item, Target};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH_RECORDS: u64 = 20_000;
const PAYLOAD_CHARS: usize = 200;
const KEY: &str = "remixbench";
const SECRET: &str = "remixbenchsecret";

const SCHEMA: &str = r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "blob_row",
  "type": "object", "properties": {"id": {"type": "integer"}, "payload": {"type": "string"}},
  "required": ["id", "payload"], "additionalProperties": false}"#;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Items `first..first + n` (offsets from 1).
fn batch(first: u64, n: u64, state: &mut u64) -> Batch {
    let mut items = Vec::with_capacity(n as usize);
    for offset in first..first + n {
        let mut payload = String::with_capacity(PAYLOAD_CHARS);
        while payload.len() < PAYLOAD_CHARS {
            // xorshift64*
            *state ^= *state >> 12;
            *state ^= *state << 25;
            *state ^= *state >> 27;
            payload.push_str(&format!("{:016x}", state.wrapping_mul(0x2545_f491_4f6c_dd1d)));
        }
        payload.truncate(PAYLOAD_CHARS);
        let text = format!("{{\"id\":{offset},\"payload\":\"{payload}\"}}");
        items.push(Item {
            offset,
            timestamp_ms: 1_790_000_000_000 + offset,
            model: "blob_row".into(),
            op: Op::Upsert,
            key: json!({"id": offset}),
            data: Some(Fields::Raw(serde_json::value::RawValue::from_string(text).unwrap())),
            unchanged: Vec::new(),
            source: "hooks".into(),
        });
    }
    Batch { first_offset: first, last_offset: first + n - 1, items }
}

fn test_bin(name: &str) -> PathBuf {
    let cache = std::env::var("REMIX_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/remix-test"));
    let bin = cache.join("bin").join(name);
    assert!(bin.exists(), "{} is missing: run scripts/test-servers.sh", bin.display());
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A SeaweedFS server with bucket `remix`, killed on drop.
struct Seaweed {
    child: Child,
    endpoint: String,
}

impl Seaweed {
    fn start(dir: &Path) -> Seaweed {
        use std::os::unix::process::CommandExt;
        let config = json!({"identities": [{"name": "remix", "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]});
        std::fs::write(dir.join("s3.json"), config.to_string()).unwrap();
        let s3 = free_port();
        let mut args = vec![
            "mini".to_owned(),
            format!("-dir={}/data", dir.display()),
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
            args.push(format!("-{flag}={}", free_port()));
        }
        args.extend([
            "-s3.port.lance=0".to_owned(),
            "-admin.ui=false".into(),
            "-webdav=false".into(),
            "-master.telemetry=false".into(),
            "-s3.autoCreateBucket=false".into(),
            format!("-filer.localSocket={}/filer.sock", dir.display()),
            format!("-s3.localSocket={}/s3.sock", dir.display()),
            format!("-s3.config={}/s3.json", dir.display()),
        ]);
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let child = Command::new(test_bin("weed"))
            .args(&args)
            .current_dir(dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start weed");
        let endpoint = format!("http://127.0.0.1:{s3}");
        let server = Seaweed { child, endpoint };
        let script = format!(
            "import boto3,time\nfrom botocore.config import Config\n\
             c=boto3.client('s3',endpoint_url='{}',region_name='us-east-1',aws_access_key_id='{KEY}',\
             aws_secret_access_key='{SECRET}',config=Config(s3={{'addressing_style':'path'}},retries={{'max_attempts':1}}))\n\
             for i in range(600):\n\
             \x20   try: c.create_bucket(Bucket='remix')\n\
             \x20   except Exception: pass\n\
             \x20   try:\n\
             \x20       c.list_objects_v2(Bucket='remix'); break\n\
             \x20   except Exception:\n\
             \x20       time.sleep(0.2)\n\
             else:\n\
             \x20   raise SystemExit('no bucket after 120 s')\n",
            server.endpoint
        );
        let out = Command::new(test_bin("python")).args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "SeaweedFS did not create the bucket: {out:?}");
        server
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-s", "KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // A little over 1 GiB: the limit counts the open row group's estimate, the object ends smaller.
    let shard_bytes: u64 = std::env::var("REMIX_BENCH_SHARD_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or((1 << 30) + (16 << 20));
    let store = std::env::var("REMIX_BENCH_STORE").unwrap_or_else(|_| "file".into());
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("blob_row.json");
    std::fs::write(&schema, SCHEMA).unwrap();
    let model = Model::load("blob_row", &schema, &["id".to_owned()]).expect("schema loads");
    let (_server, url, endpoint) = match store.as_str() {
        "file" => (None, format!("file://{}", dir.path().join("lake").display()), None),
        "seaweedfs" => {
            let server = Seaweed::start(dir.path());
            std::env::set_var("AWS_ACCESS_KEY_ID", KEY);
            std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET);
            let endpoint = server.endpoint.clone();
            (Some(server), "s3://remix/bench".to_owned(), Some(endpoint))
        }
        other => panic!("REMIX_BENCH_STORE={other}: file or seaweedfs"),
    };
    let config = Config {
        common: TargetCommon {
            name: "bench".into(),
            rate_limit: None,
            batch: BatchConfig { records_max: Some(BATCH_RECORDS as usize), linger: Duration::ZERO },
            on_error: OnError::Pause,
            truncate: TruncatePolicy::Apply,
        },
        url,
        endpoint,
        region: None,
        format: Format::Parquet,
        compression: Compression::Zstd,
        shard: ShardLimits { rows_max: u64::MAX, bytes_max: shard_bytes, age_max: Duration::from_secs(3600) },
        row_group_rows: 128 * 1024,
        models: [("blob_row".to_owned(), OutputBinding { mapping: Mapping::identity() })]
            .into_iter()
            .collect(),
    };
    let models: BTreeMap<String, Arc<Model>> =
        [("blob_row".to_owned(), Arc::new(model))].into_iter().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let before_mib = peak_rss_mib();
    let (records, elapsed, object_bytes) = runtime.block_on(async {
        let mut target = ObjectStoreTarget::with_models(&config, &models).unwrap();
        target.open(0).await.unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = 1;
        let start = Instant::now();
        loop {
            let b = batch(next, BATCH_RECORDS, &mut state);
            next += BATCH_RECORDS;
            target.apply(&b).await.unwrap();
            // The first shard (from offset 1) sealed by bytes and committed: nothing held from 1.
            if target.held_from().is_none_or(|first| first > 1) {
                break;
            }
        }
        let elapsed = start.elapsed();
        // The first shard's object, as the store lists it.
        let place = remix::object_store::store::open(&config.url, config.endpoint.as_deref(), None).unwrap();
        let mut listing = place.store.list(Some(&place.path(&["blob_row"])));
        let mut object_bytes = 0;
        while let Some(meta) = futures_util::StreamExt::next(&mut listing).await {
            let meta = meta.unwrap();
            if meta.location.as_ref().ends_with(".parquet")
                && meta.location.as_ref().contains("/00000000000000000001-")
            {
                object_bytes = meta.size;
            }
        }
        (next - 1, elapsed, object_bytes)
    });
    let peak_mib = peak_rss_mib();
    let secs = elapsed.as_secs_f64();
    println!(
        "object_store parquet shard ({store}): {records} records applied, first shard {:.0} MiB, {:.1} s: \
         {:.0} records/s, {:.1} MiB/s encoded; peak RSS {peak_mib:.0} MiB (before writing {before_mib:.0} MiB)",
        object_bytes as f64 / (1 << 20) as f64,
        secs,
        records as f64 / secs,
        object_bytes as f64 / (1 << 20) as f64 / secs
    );
    assert!(object_bytes > 0, "no committed shard from offset 1");
}
