//! Collapsing a batch per key: for targets that hold state, only the last change to each key in a
//! batch matters, and a partial upsert (unchanged fields left out) merges into the full one before it.
//! A truncate is a barrier: nothing is moved across it.

use super::Item;
use crate::record::Op;
use std::collections::HashMap;

/// Collapses `items` (in log order) and returns them in log order of their last change.
pub fn collapse(items: Vec<Item>) -> Vec<Item> {
    let mut out: Vec<Option<Item>> = Vec::with_capacity(items.len());
    let mut slot_of: HashMap<(String, String), usize> = HashMap::with_capacity(items.len());
    let mut merged_any = false;
    for item in items {
        if item.op == Op::Truncate {
            slot_of.clear();
            out.push(Some(item));
            continue;
        }
        let id = (item.model.clone(), item.key.to_string());
        match slot_of.get(&id).copied() {
            Some(slot) => {
                let earlier = out[slot].take().expect("a slot holds its key's item");
                out[slot] = Some(merge(earlier, item));
                merged_any = true;
            }
            None => {
                slot_of.insert(id, out.len());
                out.push(Some(item));
            }
        }
    }
    let mut kept: Vec<Item> = out.into_iter().flatten().collect();
    if merged_any {
        kept.sort_by_key(|item| item.offset);
    }
    kept
}

/// The effect of `earlier` then `later` on one key.
fn merge(earlier: Item, later: Item) -> Item {
    if later.op != Op::Upsert || later.unchanged.is_empty() || earlier.op != Op::Upsert {
        return later;
    }
    // A partial upsert after an upsert: take the earlier values of the fields it left unchanged.
    let mut data = earlier.data.unwrap_or_default();
    for (field, value) in later.data.unwrap_or_default() {
        data.insert(field, value);
    }
    let unchanged = earlier.unchanged.into_iter().filter(|f| !data.contains_key(f)).collect();
    Item { data: Some(data), unchanged, ..later }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(offset: u64, id: i64, op: Op, data: serde_json::Value, unchanged: &[&str]) -> Item {
        Item {
            offset,
            timestamp_ms: 0,
            model: "m".into(),
            op,
            key: json!({ "id": id }),
            data: data.as_object().cloned(),
            unchanged: unchanged.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn last_change_per_key_wins_and_partials_merge() {
        let items = vec![
            item(1, 1, Op::Upsert, json!({"id": 1, "a": 1, "b": 1}), &[]),
            item(2, 2, Op::Upsert, json!({"id": 2}), &[]),
            item(3, 1, Op::Upsert, json!({"id": 1, "a": 2}), &["b"]),
            item(4, 2, Op::Delete, json!(null), &[]),
        ];
        let out = collapse(items);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].offset, 3);
        assert_eq!(out[0].data.as_ref().unwrap()["b"], 1);
        assert!(out[0].unchanged.is_empty());
        assert_eq!((out[1].offset, out[1].op), (4, Op::Delete));
    }

    #[test]
    fn truncate_is_a_barrier() {
        let truncate =
            Item { op: Op::Truncate, key: json!(null), ..item(2, 0, Op::Truncate, json!(null), &[]) };
        let items = vec![
            item(1, 1, Op::Upsert, json!({"id": 1}), &[]),
            truncate,
            item(3, 1, Op::Upsert, json!({"id": 1}), &[]),
        ];
        let offsets: Vec<u64> = collapse(items).iter().map(|i| i.offset).collect();
        assert_eq!(offsets, vec![1, 2, 3]);
    }
}
