//! `remix dataset export`: the state of a model as of an offset, reproducible byte for byte, read by
//! DuckDB and Hugging Face `datasets` with the row count and a checksum of the state the log leads
//! to at that offset, split by key hash within 1% of the ratios.

use crate::conformance::model::{self, dump, fold, select, Workload, ACCOUNT};
use crate::support::{Node, Rng};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn python() -> std::path::PathBuf {
    crate::conformance::object_store::test_bin("python")
}

/// Every file under `dir` (relative path -> bytes).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

const READ: &str = r#"
import json, os, sys
import duckdb
root = sys.argv[1]
con = duckdb.connect()
out = {}
for split in ("train", "validation"):
    row = con.execute(f"SELECT count(*), coalesce(sum(id), 0), coalesce(sum(score), 0), "
                      f"coalesce(sum(CASE WHEN active THEN 1 ELSE 0 END), 0) "
                      f"FROM read_parquet('{root}/data/{split}-*.parquet')").fetchone()
    out[split] = [int(v) for v in row]
import datasets
ds = datasets.load_dataset("parquet", data_files={s: f"{root}/data/{s}-00000-of-00001.parquet" for s in ("train", "validation")})
out["hf"] = {s: ds[s].num_rows for s in ds}
out["hf_sum_id"] = sum(sum(ds[s]["id"]) for s in ds)
print(json.dumps(out))
"#;

#[test]
fn export_is_reproducible_and_read_by_duckdb_and_datasets() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let config = format!(
        "data_dir: \"${{REMIX_DATA_DIR}}\"\nadmin: {{ listen: \"${{REMIX_ADMIN_ADDR}}\" }}\n{}sources:\n  - name: hooks\n    kind: webhook\n    listen: \"${{REMIX_WEBHOOK_ADDR}}\"\n    routes:\n      /account: {{ model: account }}\ntargets:\n  - name: files\n    kind: jsonl\n    dir: \"${{REMIX_DATASET_DIR}}\"\n    models: {{ account: {{}} }}\n",
        model::write_schemas(root)
    );
    let node = Node::new(root, &config, &[]);
    let mut rng = Rng::from_clock("dataset_export");
    let mut workload = Workload::new(rng.next(), 30_000);
    model::append(&node.data_dir, &workload.changes(90_000));
    let records = dump(&node);
    let at = model::offset(&records[records.len() * 2 / 3]);

    let export = |dir: &Path| {
        let to = format!("file://{}", dir.display());
        node.cli_json(&[
            "dataset",
            "export",
            ACCOUNT,
            "--to",
            &to,
            "--at-offset",
            &at.to_string(),
            "--split",
            "train=0.9,validation=0.1",
        ])
    };
    let (a, b) = (root.join("export-a"), root.join("export-b"));
    let manifest = export(&a);
    export(&b);
    let (fa, fb) = (files(&a), files(&b));
    assert!(fa.contains_key("README.md") && fa.contains_key("manifest.json"), "{:?}", fa.keys());
    assert_eq!(fa, fb, "two exports of the same offset differ");
    assert_eq!(manifest["offset"], at);

    // The state the log leads to at `at`.
    let upto: Vec<Value> = records.iter().filter(|r| model::offset(r) <= at).cloned().collect();
    let state = fold(&select(&upto, &[ACCOUNT], true, &[], 0));
    let rows = state.len() as i64;
    let sum = |f: &str| state.values().map(|o| o.get(f).and_then(Value::as_i64).unwrap_or(0)).sum::<i64>();
    let active = state.values().filter(|o| o.get("active") == Some(&Value::Bool(true))).count() as i64;

    let cache = root.join("hf");
    let out = Command::new(python())
        .args(["-c", READ, &a.display().to_string()])
        .env("HF_HOME", &cache)
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "the readers failed: {}", String::from_utf8_lossy(&out.stderr));
    let read: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (train, validation) = (&read["train"], &read["validation"]);
    let total = |i: usize| train[i].as_i64().unwrap() + validation[i].as_i64().unwrap();
    assert_eq!([total(0), total(1), total(2), total(3)], [rows, sum("id"), sum("score"), active], "{read}");
    assert_eq!(read["hf"]["train"].as_i64().unwrap() + read["hf"]["validation"].as_i64().unwrap(), rows);
    assert_eq!(read["hf_sum_id"].as_i64().unwrap(), sum("id"));
    let share = train[0].as_f64().unwrap() / rows as f64;
    assert!((share - 0.9).abs() < 0.01, "train holds {share} of the rows");
    let readme = String::from_utf8(fa["README.md"].clone()).unwrap();
    assert!(readme.starts_with("---\nconfigs:\n- config_name: default\n"), "{readme}");
    assert!(readme.contains(&format!("log offset {at}")), "{readme}");
    eprintln!("dataset_export: {rows} rows at offset {at}, train share {share:.4}: {read}");
}
