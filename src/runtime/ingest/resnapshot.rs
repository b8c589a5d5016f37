//! Redoing an interrupted initial snapshot (the `postgres` and `mysql` sources): the rows an earlier
//! attempt logged stay at the targets, and the new copy overwrites those it holds (snapshot rows are
//! upserts). The rows it does not hold were deleted at the source between the attempts; without a
//! delete for each, they would stay at the targets for good. So a source redoing its snapshot loads
//! the keys its changes in the log leave at the targets ([`LoggedKeys::load`]), takes out each key it
//! copies ([`LoggedKeys::copied`]) and, after the last table, logs a delete for every key left
//! ([`LoggedKeys::delete_gone`]), before it records the snapshot as done. A kill during those deletes
//! is harmless: the next attempt's scan folds them in (a deleted key is no longer logged).

use super::{AppendError, ChangeBatch, ChangeFold, Ingest};
use crate::record::{Change, Op};
use crate::runtime::engine::EngineError;
use std::collections::{HashMap, HashSet};

/// Keys (as JSON text) by model that a source's changes in the log leave at the targets.
#[derive(Debug, Default)]
pub struct LoggedKeys(HashMap<String, HashSet<String>>);

impl ChangeFold for LoggedKeys {
    fn fold(&mut self, change: Change) {
        let model = self.0.entry(change.model).or_default();
        match change.op {
            Op::Upsert => model.insert(change.key.to_string()),
            Op::Delete => model.remove(&change.key.to_string()),
            Op::Truncate => {
                model.clear();
                true
            }
        };
    }
}

impl LoggedKeys {
    /// The keys `source`'s changes in the log leave at the targets (none, without reading the log,
    /// when the source logged nothing): before a snapshot, the rows of interrupted attempts.
    pub async fn load(ingest: &Ingest, source: &str) -> Result<LoggedKeys, EngineError> {
        if ingest.last_position(source).is_none() {
            return Ok(LoggedKeys::default());
        }
        ingest.scan_changes(source, LoggedKeys::default()).await
    }

    /// The new snapshot holds this change's object.
    pub fn copied(&mut self, change: &Change) {
        if let Some(model) = self.0.get_mut(&change.model) {
            model.remove(&change.key.to_string());
        }
    }

    /// How many keys are left.
    pub fn len(&self) -> usize {
        self.0.values().map(HashSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Logs a delete for every key left (the new snapshot did not hold it), `chunk_rows` per append;
    /// positions are `<position_prefix>:gone:<model>:<n>`. Returns how many.
    pub async fn delete_gone(
        self,
        ingest: &Ingest,
        source: &str,
        position_prefix: &str,
        chunk_rows: usize,
    ) -> Result<u64, AppendError> {
        let mut batch = ChangeBatch::new();
        let mut n = 0u64;
        for (model, keys) in self.0 {
            for key in keys {
                let change = Change {
                    source: source.to_owned(),
                    position: format!("{position_prefix}:gone:{model}:{n}"),
                    model: model.clone(),
                    op: Op::Delete,
                    key: serde_json::from_str(&key).expect("a logged key is JSON"),
                    data: None,
                    unchanged: Vec::new(),
                    idempotency_key: None,
                };
                n += 1;
                batch.push(&change);
                if batch.len() >= chunk_rows {
                    ingest.append(source, std::mem::take(&mut batch)).await?;
                }
            }
        }
        if !batch.is_empty() {
            ingest.append(source, batch).await?;
        }
        if n > 0 {
            tracing::info!(source = %source, "snapshot: {n} rows an interrupted snapshot had copied are gone; deleted");
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(model: &str, op: Op, id: i64) -> Change {
        Change {
            source: "s".into(),
            position: String::new(),
            model: model.into(),
            op,
            key: if op == Op::Truncate { serde_json::Value::Null } else { json!({ "id": id }) },
            data: None,
            unchanged: Vec::new(),
            idempotency_key: None,
        }
    }

    #[test]
    fn folds_upserts_deletes_and_truncates_then_takes_out_copies() {
        let mut keys = LoggedKeys::default();
        for id in 1..=5 {
            keys.fold(change("a", Op::Upsert, id));
        }
        keys.fold(change("a", Op::Delete, 2));
        keys.fold(change("b", Op::Upsert, 1));
        keys.fold(change("b", Op::Truncate, 0));
        keys.fold(change("b", Op::Upsert, 9));
        assert_eq!(keys.len(), 5);
        keys.copied(&change("a", Op::Upsert, 1));
        keys.copied(&change("a", Op::Upsert, 7));
        keys.copied(&change("c", Op::Upsert, 1));
        let mut left: Vec<(String, String)> =
            keys.0.iter().flat_map(|(m, ks)| ks.iter().map(move |k| (m.clone(), k.clone()))).collect();
        left.sort();
        let expected = [("a", 3), ("a", 4), ("a", 5), ("b", 9)];
        let expected: Vec<(String, String)> =
            expected.iter().map(|(m, id)| ((*m).to_owned(), json!({ "id": id }).to_string())).collect();
        assert_eq!(left, expected);
    }
}
