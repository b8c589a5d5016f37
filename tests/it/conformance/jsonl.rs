//! The `jsonl` target (dataset files) through the suite: a history target whose files a rewind
//! rewrites. Checked: every model's lines equal the log's changes for it, in order, each once
//! (upserts with only the fields they carry, `{"_op":"delete","key"}`, `{"_op":"truncate"}`), with
//! `item` renamed by an output mapping; the state folded from the lines equals the model state.
//! Unreachable: the dataset directory replaced by a file (every write fails, as with a lost mount).
//! Not applicable: case 5 (see [`NO_PERMANENT_ERROR`]).

use super::cases;
use super::model::{canonical, key_fields, normalize, ModelState, ITEM};
use super::{Adapter, History, Rewound, State, TargetSpec};
use crate::support::{dataset_lines, Node};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

const NO_PERMANENT_ERROR: &str = "the jsonl target has no permanent error a test can provoke: model \
    names are checked by the configuration (so they always make valid file names), every logged object \
    serializes, and I/O errors (disk full, permissions, a missing directory) are transient by design \
    (case 6 covers them)";

/// `item` renamed in the files: (file field, model field).
const ITEM_FIELDS: [(&str, &str); 5] = [
    ("id", "sku"),
    ("name", "title"),
    ("price_cents", "price"),
    ("tags", "tags"),
    ("description", "description"),
];

#[derive(Debug)]
pub struct Jsonl {
    dir: PathBuf,
}

impl Jsonl {
    pub fn new(root: &Path) -> Jsonl {
        // `${REMIX_DATASET_DIR}`, which `Node` sets to `<root>/dataset`.
        Jsonl { dir: root.join("dataset") }
    }

    fn away(&self) -> PathBuf {
        self.dir.with_extension("away")
    }
}

/// A model object (or key) in the files' field names.
fn rename(model: &str, object: &Map<String, Value>) -> Map<String, Value> {
    if model != ITEM {
        return object.clone();
    }
    ITEM_FIELDS
        .iter()
        .filter_map(|(to, from)| object.get(*from).map(|v| ((*to).to_owned(), v.clone())))
        .collect()
}

/// The key fields of a model in the files.
fn file_key_fields(model: &str) -> Vec<&'static str> {
    if model == ITEM {
        vec!["id"]
    } else {
        key_fields(model).to_vec()
    }
}

fn as_map(value: &Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

impl Adapter for Jsonl {
    fn kind(&self) -> &'static str {
        "jsonl"
    }

    fn history(&self) -> Option<Rewound> {
        Some(Rewound::Rewritten)
    }

    fn target_yaml(&self, spec: &TargetSpec) -> String {
        let item: Vec<String> = ITEM_FIELDS.iter().map(|(to, from)| format!("{to}: {from}")).collect();
        format!(
            "{}    dir: \"${{REMIX_DATASET_DIR}}\"\n    models:\n      account: {{}}\n      item: {{ fields: {{ {} }} }}\n      line: {{}}\n",
            spec.common_yaml("jsonl"),
            item.join(", ")
        )
    }

    fn expected_state(&self, state: &ModelState) -> State {
        state
            .iter()
            .map(|((model, _), object)| {
                let object = rename(model, object);
                let key: Map<String, Value> =
                    file_key_fields(model).iter().map(|f| ((*f).to_owned(), object[*f].clone())).collect();
                ((model.clone(), canonical(&Value::Object(key))), normalize(&Value::Object(object)))
            })
            .collect()
    }

    fn read_state(&self, node: &Node) -> Result<State, String> {
        let mut state = State::new();
        for (model, lines) in self.read_history(node)? {
            for line in lines {
                match line.get("_op").and_then(Value::as_str) {
                    None => {
                        let key: Map<String, Value> = file_key_fields(&model)
                            .iter()
                            .map(|f| ((*f).to_owned(), line.get(*f).cloned().unwrap_or(Value::Null)))
                            .collect();
                        let entry = state
                            .entry((model.clone(), canonical(&Value::Object(key))))
                            .or_insert_with(|| json!({}));
                        // A partial upsert's line holds only the fields it carries.
                        entry.as_object_mut().unwrap().extend(as_map(&line));
                    }
                    Some("delete") => {
                        state.remove(&(model.clone(), canonical(&line["key"])));
                    }
                    Some("truncate") => state.retain(|(m, _), _| *m != model),
                    Some(other) => return Err(format!("{model}: a line with _op {other}: {line}")),
                }
            }
        }
        Ok(state.into_iter().map(|(k, v)| (k, normalize(&v))).collect())
    }

    fn expected_history(&self, records: &[Value]) -> History {
        let mut history = History::new();
        for model in self.models() {
            let lines = records
                .iter()
                .filter(|r| r["model"] == *model)
                .map(|r| match r["op"].as_str().unwrap() {
                    "upsert" => Value::Object(rename(model, &as_map(&r["data"]))),
                    "delete" => json!({"_op": "delete", "key": rename(model, &as_map(&r["key"]))}),
                    _ => json!({"_op": "truncate"}),
                })
                .map(|v| normalize(&v))
                .collect();
            history.insert((*model).to_owned(), lines);
        }
        history
    }

    fn read_history(&self, _node: &Node) -> Result<History, String> {
        let mut history = History::new();
        for model in self.models() {
            let lines = dataset_lines(&self.dir, model)
                .iter()
                .map(|l| serde_json::from_str::<Value>(l).map(|v| normalize(&v)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{model}: a line is not JSON: {e}"))?;
            history.insert((*model).to_owned(), lines);
        }
        Ok(history)
    }

    fn damage(&mut self, _node: &Node) -> String {
        let mut done = Vec::new();
        for (model, how) in [("account", "removed"), ("item", "emptied")] {
            let dir = self.dir.join(model);
            let mut files: Vec<PathBuf> =
                std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
            files.sort();
            let file = files.last().expect("a dataset file").clone();
            if how == "removed" {
                std::fs::remove_file(&file).unwrap();
            } else {
                std::fs::write(&file, b"").unwrap();
            }
            done.push(format!("{how} {}", file.display()));
        }
        done.join(", ")
    }

    fn set_reachable(&mut self, _node: &Node, reachable: bool) {
        if reachable {
            std::fs::remove_file(&self.dir).unwrap();
            std::fs::rename(self.away(), &self.dir).unwrap();
        } else {
            // Every write into the dataset directory fails (ENOTDIR) until it is back.
            std::fs::rename(&self.dir, self.away()).unwrap();
            std::fs::write(&self.dir, b"not a directory").unwrap();
        }
    }

    fn poison(&mut self, _marker: Option<&str>) -> Result<(), &'static str> {
        Err(NO_PERMANENT_ERROR)
    }
}

#[test]
fn mixed_changes() {
    cases::mixed_changes(Jsonl::new);
}

#[test]
fn kill9_during_delivery() {
    cases::kill9_during_delivery(Jsonl::new);
}

#[test]
fn rewind_to_start_repairs() {
    cases::rewind_to_start_repairs(Jsonl::new);
}

#[test]
fn rewind_to_middle() {
    cases::rewind_to_middle(Jsonl::new);
}

#[test]
fn per_key_order_under_collapse() {
    cases::per_key_order_under_collapse(Jsonl::new);
}

#[test]
fn permanent_error_pauses() {
    cases::permanent_error_pauses(Jsonl::new);
}

#[test]
fn permanent_error_dead_letters() {
    cases::permanent_error_dead_letters(Jsonl::new);
}

#[test]
fn server_down() {
    cases::server_down(Jsonl::new);
}

#[test]
fn truncate_applied() {
    cases::truncate_applied(Jsonl::new);
}

#[test]
fn truncate_ignored() {
    cases::truncate_ignored(Jsonl::new);
}
