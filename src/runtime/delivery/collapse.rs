//! Collapsing a batch per key: for targets that hold state, only the last change to each key in a
//! batch matters, and a partial upsert (unchanged fields left out) merges into the full one before it.
//! A truncate is a barrier: nothing is moved across it.

use super::{Fields, Item};
use crate::record::Op;
use serde_json::Value;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Collapses `items` (in log order) and returns them in log order of their last change.
pub fn collapse(items: Vec<Item>) -> Vec<Item> {
    let mut out: Vec<Option<Item>> = Vec::with_capacity(items.len());
    let mut slots = Slots::with_capacity(items.len());
    let mut merged_any = false;
    for item in items {
        if item.op == Op::Truncate {
            slots.clear();
            out.push(Some(item));
            continue;
        }
        let hash = key_hash(&item.model, &item.key);
        let same_key =
            |slot: usize| out[slot].as_ref().is_some_and(|o| o.model == item.model && o.key == item.key);
        match slots.find(hash, same_key) {
            Some(slot) => {
                let earlier = out[slot].take().expect("a slot holds its key's item");
                out[slot] = Some(merge(earlier, item));
                merged_any = true;
            }
            None => {
                slots.insert(hash, out.len());
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

/// The slot of each (model, key) seen, by a hash of it: nothing is allocated per item. Keys whose
/// hashes collide (rare) go to a short list compared one by one.
struct Slots {
    /// Keyed by the key's hash, hashed again only by one multiply.
    by_hash: HashMap<u64, usize, std::hash::BuildHasherDefault<KeyHasher>>,
    collided: Vec<usize>,
}

impl Slots {
    fn with_capacity(n: usize) -> Slots {
        Slots { by_hash: HashMap::with_capacity_and_hasher(n, Default::default()), collided: Vec::new() }
    }

    fn clear(&mut self) {
        self.by_hash.clear();
        self.collided.clear();
    }

    fn find(&self, hash: u64, same_key: impl Fn(usize) -> bool) -> Option<usize> {
        match self.by_hash.get(&hash) {
            Some(&slot) if same_key(slot) => Some(slot),
            Some(_) => self.collided.iter().copied().find(|&slot| same_key(slot)),
            None => None,
        }
    }

    fn insert(&mut self, hash: u64, slot: usize) {
        if let std::collections::hash_map::Entry::Vacant(entry) = self.by_hash.entry(hash) {
            entry.insert(slot);
        } else {
            self.collided.push(slot);
        }
    }
}

fn key_hash(model: &str, key: &Value) -> u64 {
    let mut hasher = KeyHasher::default();
    model.hash(&mut hasher);
    hash_value(key, &mut hasher);
    hasher.finish()
}

/// A multiply-rotate hash of 8-byte words (the Fx hash): several times cheaper than SipHash on short
/// keys. Not keyed, like the `DefaultHasher::new()` it replaces; colliding keys only share a list,
/// bounded by the batch (`records_max`).
#[derive(Default)]
struct KeyHasher(u64);

impl KeyHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Hashes a JSON value consistently with its `==` (objects by their entries).
fn hash_value(value: &Value, hasher: &mut impl Hasher) {
    match value {
        Value::Null => 0u8.hash(hasher),
        Value::Bool(b) => (1u8, b).hash(hasher),
        // Equal numbers are the same kind of number with the same value.
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => (2u8, u).hash(hasher),
            (None, Some(i)) => (6u8, i).hash(hasher),
            (None, None) => (7u8, n.as_f64().map(f64::to_bits)).hash(hasher),
        },
        Value::String(s) => (3u8, s).hash(hasher),
        Value::Array(items) => {
            (4u8, items.len()).hash(hasher);
            items.iter().for_each(|v| hash_value(v, hasher));
        }
        Value::Object(map) => {
            (5u8, map.len()).hash(hasher);
            for (k, v) in map {
                k.hash(hasher);
                hash_value(v, hasher);
            }
        }
    }
}

/// The effect of `earlier` then `later` on one key.
fn merge(earlier: Item, later: Item) -> Item {
    if later.op != Op::Upsert || later.unchanged.is_empty() || earlier.op != Op::Upsert {
        return later;
    }
    // A partial upsert after an upsert: take the earlier values of the fields it left unchanged.
    let mut data = earlier.data.map(Fields::into_map).unwrap_or_default();
    for (field, value) in later.data.map(Fields::into_map).unwrap_or_default() {
        data.insert(field, value);
    }
    let unchanged = earlier.unchanged.into_iter().filter(|f| !data.contains_key(f)).collect();
    Item { data: Some(Fields::Map(data)), unchanged, ..later }
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
            source: "s".into(),
            op,
            key: json!({ "id": id }),
            data: data.as_object().cloned().map(Fields::Map),
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
        assert_eq!(out[0].data.as_ref().unwrap().to_map()["b"], 1);
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

    #[test]
    fn keys_are_compared_by_value_not_by_hash() {
        let keyed =
            |offset: u64, key: serde_json::Value| Item { key, ..item(offset, 0, Op::Upsert, json!({}), &[]) };
        let items = vec![
            keyed(1, json!({"id": 1})),
            keyed(2, json!({"id": 1.0})),
            keyed(3, json!({"id": "1"})),
            keyed(4, json!({"a": 1, "b": [1, {"c": null}]})),
            keyed(5, json!({"id": -1})),
            keyed(6, json!({"b": [1, {"c": null}], "a": 1})),
            keyed(7, json!({"id": 1})),
        ];
        let offsets: Vec<u64> = collapse(items).iter().map(|i| i.offset).collect();
        assert_eq!(offsets, vec![2, 3, 5, 6, 7]);
    }

    #[test]
    fn colliding_hashes_keep_their_own_slots() {
        let mut slots = Slots::with_capacity(4);
        slots.insert(9, 0);
        slots.insert(9, 1);
        slots.insert(9, 2);
        assert_eq!(slots.find(9, |s| s == 1), Some(1));
        assert_eq!(slots.find(9, |s| s == 2), Some(2));
        assert_eq!(slots.find(9, |s| s == 0), Some(0));
        assert_eq!(slots.find(9, |_| false), None);
        assert_eq!(slots.find(8, |_| true), None);
        slots.clear();
        assert_eq!(slots.find(9, |_| true), None);
    }
}
