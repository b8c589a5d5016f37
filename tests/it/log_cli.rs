//! `remix log ...` against a log that a writer in this process keeps open (a running node's view).

use crate::support::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::Stdio;

#[test]
fn ls_stat_dump_work_beside_a_running_writer_with_and_without_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let log = open_log(dir.path());
    append_changes(&log, 0, 1500);
    log.store_cursor("dataset", 1000).unwrap();

    let out = run(&["log", "ls", "--data-dir", data]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("BASE"));
    let out = run(&["log", "ls", "--json", "--data-dir", data]);
    let segments: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(segments.len() > 1);
    assert_eq!(segments.iter().map(|s| s["records"].as_u64().unwrap()).sum::<u64>(), 1500);

    let out = run(&["log", "stat", "--json", "--data-dir", data]);
    let stat: Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["first_offset", "last_offset", "durable_offset", "records", "bytes", "segments", "targets"] {
        assert!(stat.get(key).is_some(), "{key} in {stat}");
    }
    assert_eq!(stat["records"], 1500);
    assert_eq!(stat["targets"][0]["name"], "dataset");
    assert_eq!(stat["targets"][0]["lag_records"], 500);
    let out = run(&["log", "stat", "--data-dir", data]);
    assert!(stdout(&out).contains("durable offset  1500"), "{}", stdout(&out));

    let out = run(&["log", "dump", "--json", "--from", "11", "--limit", "5", "--data-dir", data]);
    let rows: Vec<Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0]["offset"], 11);
    for key in ["offset", "time", "source", "position", "model", "op", "key", "data"] {
        assert!(rows[0].get(key).is_some(), "{key}");
    }
    assert_eq!(rows[0]["key"], serde_json::json!({"id": 10}));
    let out = run(&["log", "dump", "--json", "--model", "order", "--limit", "3", "--data-dir", data]);
    let rows: Vec<Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(rows.len() == 3 && rows.iter().all(|r| r["model"] == "order"));
    let out = run(&["log", "dump", "--limit", "2", "--data-dir", data]);
    assert_eq!(stdout(&out).lines().count(), 2);
    assert!(stdout(&out).contains("customer upsert"));
    drop(log);
}

#[test]
fn tail_follow_prints_new_records_as_they_become_durable() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    append_changes(&log, 0, 20);
    let out = run(&["log", "tail", "-n", "3", "--json", "--data-dir", dir.path().to_str().unwrap()]);
    let offsets: Vec<u64> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![18, 19, 20]);

    let mut child = remix()
        .args(["log", "tail", "-n", "1", "--follow", "--json", "--data-dir", dir.path().to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["offset"], 20);
    // Enough to roll into new segments while the follower waits.
    append_changes(&log, 20, 1200);
    for expected in 21..=1200u64 {
        let line: Value = serde_json::from_str(&lines.next().expect("a line").unwrap()).unwrap();
        assert_eq!(line["offset"], expected);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn verify_exits_0_on_a_clean_log_and_1_naming_segment_position_offset_on_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let log = open_log(dir.path());
    append_changes(&log, 0, 1500);
    let out = run(&["log", "verify", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    drop(log);

    let segment = dir.path().join("log").join("00000000000000000001.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[3000] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();
    let out = run(&["log", "verify", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("00000000000000000001.log") && text.contains("byte ") && text.contains("offset "),
        "{text}"
    );
    let out = run(&["log", "verify", "--json", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let problem = &report["problems"][0];
    assert!(
        problem["position"].as_u64().unwrap() <= 3000 && problem["offset"].as_u64().unwrap() > 1,
        "{report}"
    );

    // Reading through the damage fails loudly (exit 1, the same place named).
    let out = run(&["log", "dump", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("corruption in segment"), "{out:?}");

    // Repair is refused while a node holds the lock, then cuts the damage off.
    let log =
        remix_storage::Log::open(std::sync::Arc::new(remix_storage::OsFs), dir.path(), Default::default())
            .unwrap();
    let out = run(&["log", "repair", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("locked"), "{out:?}");
    drop(log);
    let out = run(&["log", "repair", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(dir.path().join("quarantine").read_dir().unwrap().next().is_some());
    let out = run(&["log", "verify", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&["log", "frobnicate"]).status.code(), Some(2));
    assert_eq!(run(&["log", "stat", "--config", "/nonexistent/remix.yaml"]).status.code(), Some(2));
}

#[test]
fn verify_and_repair_cover_the_dead_letter_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    append_changes(&open_log(dir.path()), 0, 10);
    append_changes(&open_log(&dir.path().join("dlq")), 0, 1500);
    let out = run(&["log", "verify", "--json", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["dlq"]["records"], 1500, "{report}");

    let segment = dir.path().join("dlq/log/00000000000000000001.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[3000] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();
    let out = run(&["log", "verify", "--json", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["ok"].clone(), report["problems"].clone()), (json!(false), json!([])), "{report}");
    assert!(report["dlq"]["problems"][0]["path"].as_str().unwrap().contains("dlq/log/"), "{report}");
    let out = run(&["log", "repair", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout(&out).contains("dead-letter log: "), "{}", stdout(&out));
    let out = run(&["log", "verify", "--data-dir", data]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}
