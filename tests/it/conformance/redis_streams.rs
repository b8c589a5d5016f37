//! The `redis_streams` target through the suite, against a throwaway `redis-server` (`appendonly
//! yes`, `appendfsync always`) read back with redis-py. A history target whose rewind rewrites the
//! streams (entries after the point deleted and sent again under their offsets). Checked: every
//! entry's id is `<remix-offset>-0` and its `remix-target` is the target; no offset twice (exactly
//! once); each model's entries equal the log's changes, in order (`value: object`, tombstones for
//! deletes and truncates, `item` renamed by an output mapping); the folded state equals the model
//! state. Unreachable: the server killed (-9) and started again on its port and data.
//! Not applicable: case 5 (see [`NO_PERMANENT_ERROR`]).

use super::cases;
use super::daemon::{binary, free_port, listening, python_json, Daemon};
use super::messages::{self, Mode};
use super::model::ModelState;
use super::{Adapter, History, Rewound, State, TargetSpec, TARGET};
use crate::support::Node;
use serde_json::{json, Value};
use std::path::Path;

const NO_PERMANENT_ERROR: &str = "Redis refuses no single entry of a well-formed XADD by its content: \
    a permanent error (a stream key holding another type, a stream another producer writes) refuses \
    every entry of the stream alike";

#[derive(Debug)]
pub struct RedisStreams {
    port: u16,
    server: Daemon,
}

impl RedisStreams {
    pub fn new(root: &Path) -> RedisStreams {
        let port = free_port();
        let dir = root.join("redis");
        std::fs::create_dir_all(&dir).unwrap();
        let args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir.display().to_string(),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "no",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let server =
            Daemon::start(&binary("redis-server"), &args, root.join("redis.log"), || listening(port));
        RedisStreams { port, server }
    }
}

impl Adapter for RedisStreams {
    fn kind(&self) -> &'static str {
        "redis_streams"
    }

    fn history(&self) -> Option<Rewound> {
        Some(Rewound::Rewritten)
    }

    fn target_yaml(&self, spec: &TargetSpec) -> String {
        format!(
            "{}    url: redis://127.0.0.1:{}\n    stream: \"remix:{{model}}\"\n    maxlen: 1000000\n{}",
            spec.common_yaml("redis_streams"),
            self.port,
            messages::models_yaml()
        )
    }

    fn expected_state(&self, state: &ModelState) -> State {
        messages::expected_state(state)
    }

    fn read_state(&self, node: &Node) -> Result<State, String> {
        messages::fold(&self.read_history(node)?, Mode::Object)
    }

    fn expected_history(&self, records: &[Value]) -> History {
        messages::expected(records, self.models(), Mode::Object)
    }

    fn read_history(&self, _node: &Node) -> Result<History, String> {
        let dump = python_json("redis_streams.py", &["dump", &self.port.to_string(), "remix:*"])?;
        let mut history = History::new();
        for (stream, entries) in dump.as_object().ok_or("dump: not an object")? {
            let model = stream.strip_prefix("remix:").ok_or_else(|| format!("stream {stream}"))?.to_owned();
            let mut list = Vec::new();
            for entry in entries.as_array().unwrap() {
                let (id, fields) = (entry["id"].as_str().unwrap(), &entry["fields"]);
                let offset: u64 = fields["remix-offset"]
                    .as_str()
                    .and_then(|o| o.parse().ok())
                    .ok_or_else(|| format!("{stream} {id}: no remix-offset: {fields}"))?;
                if id != format!("{offset}-0") {
                    return Err(format!("{stream}: entry {id} has remix-offset {offset}"));
                }
                if fields["remix-target"] != TARGET || fields["remix-model"] != model.as_str() {
                    return Err(format!("{stream} {id}: remix-target/remix-model wrong: {fields}"));
                }
                let value = match fields["value"].as_str() {
                    Some(text) => {
                        serde_json::from_str(text).map_err(|e| format!("{stream} {id}: value: {e}"))?
                    }
                    None => Value::Null,
                };
                let key = messages::parse_key(fields["key"].as_str())?;
                list.push(super::model::normalize(
                    &json!({"offset": offset, "op": fields["remix-op"], "key": key, "value": value}),
                ));
            }
            history.insert(model, list);
        }
        messages::dedupe_exactly_once(&history)?;
        for model in self.models() {
            history.entry((*model).to_owned()).or_default();
        }
        Ok(history)
    }

    fn damage(&mut self, _node: &Node) -> String {
        python_json("redis_streams.py", &["damage", &self.port.to_string()]).unwrap().to_string()
    }

    fn set_reachable(&mut self, _node: &Node, reachable: bool) {
        if reachable {
            let port = self.port;
            self.server.restart(|| listening(port));
        } else {
            self.server.kill();
        }
    }

    fn poison(&mut self, _marker: Option<&str>) -> Result<(), &'static str> {
        Err(NO_PERMANENT_ERROR)
    }
}

#[test]
fn mixed_changes() {
    cases::mixed_changes(RedisStreams::new);
}

#[test]
fn kill9_during_delivery() {
    cases::kill9_during_delivery(RedisStreams::new);
}

#[test]
fn rewind_to_start_repairs() {
    cases::rewind_to_start_repairs(RedisStreams::new);
}

#[test]
fn rewind_to_middle() {
    cases::rewind_to_middle(RedisStreams::new);
}

#[test]
fn per_key_order_under_collapse() {
    cases::per_key_order_under_collapse(RedisStreams::new);
}

#[test]
fn permanent_error_pauses() {
    cases::permanent_error_pauses(RedisStreams::new);
}

#[test]
fn permanent_error_dead_letters() {
    cases::permanent_error_dead_letters(RedisStreams::new);
}

#[test]
fn server_down() {
    cases::server_down(RedisStreams::new);
}

#[test]
fn truncate_applied() {
    cases::truncate_applied(RedisStreams::new);
}

#[test]
fn truncate_ignored() {
    cases::truncate_ignored(RedisStreams::new);
}
