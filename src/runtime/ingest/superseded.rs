//! Whether retrying a dead letter would put an older state after a newer one (per-key order).
//!
//! A dead letter is superseded by the first change record after it with the same model and key
//! (any op), or truncating its model. "After" is: after its offset for a target's dead letter (it is
//! the change at that offset), at or after its time for a source's (it was never in the main log). A
//! change that a retry logged (idempotency key `dlq:<id>`) carries the state of dead letter `<id>`, so
//! it supersedes only dead letters older than that one (smaller ids): retrying an old dead letter
//! after a newer one of the same key is refused, and the other way round is not.
//!
//! Every pending dead letter is checked in one scan of the log from the earliest "after", so that
//! `dlq retry --all` reads the log once however many letters it retries.

use crate::record::{Change, Op, KIND_CHANGE};
use crate::runtime::engine::{EngineError, LogEngine};
use std::collections::HashMap;

/// Where the changes that could supersede a dead letter begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// After this offset.
    Offset(u64),
    /// Appended at or after this time (ms since the epoch).
    Time(u64),
}

/// A dead letter about to be retried, as the change it would log.
#[derive(Debug)]
pub struct Pending<'a> {
    pub id: u64,
    pub change: &'a Change,
    pub since: Since,
}

/// What the scan reads of each change record.
#[derive(Debug, serde::Deserialize)]
struct KeyOf {
    model: String,
    op: Op,
    key: serde_json::Value,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// For each pending dead letter, in order, the offset of the first change that supersedes it.
pub fn superseding(log: &dyn LogEngine, pending: &[Pending<'_>]) -> Result<Vec<Option<u64>>, EngineError> {
    let mut found: Vec<Option<u64>> = vec![None; pending.len()];
    if pending.is_empty() {
        return Ok(found);
    }
    let mut by_key: HashMap<(&str, String), Vec<usize>> = HashMap::new();
    let mut by_model: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, p) in pending.iter().enumerate() {
        by_key.entry((p.change.model.as_str(), p.change.key.to_string())).or_default().push(i);
        by_model.entry(p.change.model.as_str()).or_default().push(i);
    }
    let after_offset = pending.iter().filter_map(|p| match p.since {
        Since::Offset(offset) => Some(offset + 1),
        Since::Time(_) => None,
    });
    let at_time = pending.iter().filter_map(|p| match p.since {
        Since::Time(time_ms) => Some(time_ms),
        Since::Offset(_) => None,
    });
    // One segment lookup, for the earliest time.
    let from = after_offset.chain(at_time.min().map(|t| first_offset_at(log, t))).min().expect("not empty");
    log.scan_blocking(from.max(log.first_offset()), &mut |record| {
        if record.kind != KIND_CHANGE {
            return true;
        }
        let Ok(other) = serde_json::from_slice::<KeyOf>(&record.payload) else { return true };
        let candidates = match other.op {
            Op::Truncate => by_model.get(other.model.as_str()),
            _ => by_key.get(&(other.model.as_str(), other.key.to_string())),
        };
        let retried_id =
            other.idempotency_key.as_deref().and_then(|k| k.strip_prefix("dlq:")?.parse::<u64>().ok());
        for &i in candidates.into_iter().flatten() {
            let p = &pending[i];
            let after = match p.since {
                Since::Offset(offset) => record.offset > offset,
                Since::Time(time_ms) => record.timestamp_ms >= time_ms,
            };
            let newer = retried_id.is_none_or(|retried| retried > p.id);
            if found[i].is_none() && after && newer {
                found[i] = Some(record.offset);
            }
        }
        true
    })?;
    Ok(found)
}

/// The first offset that can hold a change appended at or after `time_ms`: the base of the first
/// segment that ends at or after it (segments are in append order).
fn first_offset_at(log: &dyn LogEngine, time_ms: u64) -> u64 {
    let segments = log.stat().segments;
    let newer = segments.iter().find(|s| s.records > 0 && s.last_timestamp_ms >= time_ms);
    newer.map_or(log.durable_offset() + 1, |s| s.base_offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::engine::LocalLog;
    use remix_storage::{AppendRecord, Log, LogOptions, OsFs};
    use std::sync::Arc;

    fn change(op: Op, id: u64, retried: Option<u64>) -> Change {
        Change {
            source: "hooks".into(),
            position: format!("req:{id}"),
            model: "customer".into(),
            op,
            key: if op == Op::Truncate { serde_json::Value::Null } else { serde_json::json!({ "id": id }) },
            data: None,
            unchanged: Vec::new(),
            idempotency_key: retried.map(|r| format!("dlq:{r}")),
        }
    }

    fn append(log: &Log, changes: &[Change]) -> u64 {
        let records = changes
            .iter()
            .map(|c| AppendRecord { kind: KIND_CHANGE, payload: serde_json::to_vec(c).unwrap() })
            .collect();
        log.append_blocking(records).unwrap().first_offset
    }

    fn check(log: &Arc<Log>, id: u64, key: u64, since: Since) -> Option<u64> {
        let change = change(Op::Upsert, key, None);
        superseding(&LocalLog::new(Arc::clone(log)), &[Pending { id, change: &change, since }]).unwrap()[0]
    }

    #[test]
    fn newer_changes_of_the_key_and_truncates_of_the_model_supersede() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(Arc::new(OsFs), dir.path(), LogOptions::default()).unwrap());
        append(&log, &[change(Op::Upsert, 1, None), change(Op::Upsert, 2, None)]);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let time_ms = crate::time::now_ms();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let delete = append(&log, &[change(Op::Delete, 1, None), change(Op::Upsert, 3, None)]);
        assert_eq!(
            check(&log, 100, 1, Since::Time(time_ms)),
            Some(delete),
            "a delete of the key after the time"
        );
        assert_eq!(check(&log, 100, 2, Since::Time(time_ms)), None, "key 2 changed only before the time");
        assert_eq!(check(&log, 100, 2, Since::Offset(0)), Some(2));
        assert_eq!(check(&log, 100, 2, Since::Offset(2)), None);
        let truncate = append(&log, &[change(Op::Truncate, 0, None)]);
        assert_eq!(check(&log, 100, 2, Since::Time(time_ms)), Some(truncate), "a truncate of the model");
    }

    #[test]
    fn a_retried_dead_letter_supersedes_only_older_ones() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(Arc::new(OsFs), dir.path(), LogOptions::default()).unwrap());
        let retried = append(&log, &[change(Op::Upsert, 7, Some(50))]);
        assert_eq!(check(&log, 40, 7, Since::Offset(0)), Some(retried), "dead letter 40 is older than 50");
        assert_eq!(check(&log, 60, 7, Since::Offset(0)), None, "dead letter 60 is newer than 50");
        // Several at once, in one scan.
        let (a, b) = (change(Op::Upsert, 7, None), change(Op::Upsert, 8, None));
        let pending = [
            Pending { id: 40, change: &a, since: Since::Offset(0) },
            Pending { id: 41, change: &b, since: Since::Offset(0) },
        ];
        assert_eq!(
            superseding(&LocalLog::new(Arc::clone(&log)), &pending).unwrap(),
            vec![Some(retried), None]
        );
    }
}
