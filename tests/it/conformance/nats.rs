//! The `nats` target through the suite, against a throwaway `nats-server -js` read back with nats-py.
//! A history target whose rewind delivers again (a new generation after what the stream holds).
//! Checked: every message's `Nats-Msg-Id` is `sink:<remix-offset>` (`:g<G>` after a rewind) and its
//! `remix-target` the target; since the last rewind no offset twice (exactly once, beyond the
//! duplicate window, which the adapter sets to 100 ms when it creates the stream: the target
//! resumes after the stream's last message); each model's messages
//! equal the log's changes, in order (`value: envelope`, `item` renamed by an output mapping); the
//! state folded from the whole stream equals the model state. Unreachable: the server killed (-9) and
//! started again on its port and store. Not applicable: case 5 (see [`NO_PERMANENT_ERROR`]).

use super::cases;
use super::daemon::{binary, free_port, listening, python_json, Daemon};
use super::messages::{self, Mode};
use super::model::{normalize, ModelState};
use super::{Adapter, History, Rewound, State, TargetSpec, TARGET};
use crate::support::Node;
use serde_json::{json, Value};
use std::path::Path;

const NO_PERMANENT_ERROR: &str = "JetStream refuses no single message by its content but one larger \
    than the server's max_payload (1 MiB), which the suite's records never are";

const STREAM: &str = "remix-sink";
const SUBJECT: &str = "remix.*";

#[derive(Debug)]
pub struct Nats {
    port: u16,
    server: Daemon,
    /// The stream's last sequence when the current epoch began.
    epoch: u64,
}

impl Nats {
    /// A server with JetStream's default `sync_interval` (2 minutes).
    pub fn new(root: &Path) -> Nats {
        Nats::start(root, false)
    }

    /// A server with `sync_interval: always`. Case 6 kills the server with -9. With the default
    /// setting, JetStream acknowledges a message before its buffered write reaches the file, so the
    /// kill can lose messages that Remix was right to count as delivered (README: durability is
    /// JetStream's).
    pub fn syncing(root: &Path) -> Nats {
        Nats::start(root, true)
    }

    fn start(root: &Path, sync_always: bool) -> Nats {
        let port = free_port();
        let dir = root.join("nats");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("nats.conf");
        let sync = if sync_always { "\n  sync_interval: always" } else { "" };
        let store = dir.display().to_string();
        std::fs::write(&config, format!("jetstream {{\n  store_dir: {store:?}{sync}\n}}\n")).unwrap();
        let args: Vec<String> =
            ["-c", &config.display().to_string(), "-js", "-a", "127.0.0.1", "-p", &port.to_string()]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
        let server = Daemon::start(&binary("nats-server"), &args, root.join("nats.log"), || listening(port));
        // A 100 ms duplicate window: every case runs beyond it.
        python_json("nats_jetstream.py", &["create", &port.to_string(), STREAM, SUBJECT]).unwrap();
        Nats { port, server, epoch: 0 }
    }

    /// The stream's messages after `after` in comparable form, checking ids and headers.
    fn messages(&self, after: u64) -> Result<History, String> {
        let port = self.port.to_string();
        let dump =
            match python_json("nats_jetstream.py", &["dump", &port, STREAM, SUBJECT, &after.to_string()]) {
                Err(e) if e.contains("stream not found") => return Ok(History::new()),
                other => other?,
            };
        let mut history = History::new();
        for m in dump["messages"].as_array().ok_or("dump: no messages")? {
            let headers = &m["headers"];
            let header = |name: &str| headers[name].as_str().map(str::to_owned);
            let offset: u64 = header("remix-offset")
                .and_then(|o| o.parse().ok())
                .ok_or_else(|| format!("no remix-offset: {m}"))?;
            let generation = header("remix-generation");
            let id = match &generation {
                Some(g) => format!("{TARGET}:{offset}:g{g}"),
                None => format!("{TARGET}:{offset}"),
            };
            if header("Nats-Msg-Id").as_deref() != Some(id.as_str())
                || header("remix-target").as_deref() != Some(TARGET)
            {
                return Err(format!("message ids or target wrong (expected Nats-Msg-Id {id}): {m}"));
            }
            let model = header("remix-model").ok_or_else(|| format!("no remix-model: {m}"))?;
            if m["subject"] != format!("remix.{model}").as_str() {
                return Err(format!("subject is not remix.{model}: {m}"));
            }
            let data = m["data"].as_str().unwrap_or_default();
            let value = if data.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(data).map_err(|e| format!("payload is not JSON ({e}): {m}"))?
            };
            let key = messages::parse_key(header("remix-key").as_deref())?;
            let op = header("remix-op").unwrap_or_default();
            history
                .entry(model)
                .or_default()
                .push(normalize(&json!({"offset": offset, "op": op, "key": key, "value": value})));
        }
        for model in self.models() {
            history.entry((*model).to_owned()).or_default();
        }
        Ok(history)
    }
}

impl Adapter for Nats {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn history(&self) -> Option<Rewound> {
        Some(Rewound::Redelivered)
    }

    fn target_yaml(&self, spec: &TargetSpec) -> String {
        format!(
            "{}    servers: [\"nats://127.0.0.1:{}\"]\n    subject: \"remix.{{model}}\"\n    value: envelope\n    in_flight_max: 256\n{}",
            spec.common_yaml("nats"),
            self.port,
            messages::models_yaml()
        )
    }

    fn expected_state(&self, state: &ModelState) -> State {
        messages::expected_state(state)
    }

    fn read_state(&self, _node: &Node) -> Result<State, String> {
        // The whole stream: a redelivery after a rewind folds to the same state.
        messages::fold(&self.messages(0)?, Mode::Envelope)
    }

    fn expected_history(&self, records: &[Value]) -> History {
        messages::expected(records, self.models(), Mode::Envelope)
    }

    fn read_history(&self, _node: &Node) -> Result<History, String> {
        let history = self.messages(self.epoch)?;
        messages::dedupe_exactly_once(&history)?;
        Ok(history)
    }

    fn new_epoch(&mut self) {
        let last = python_json("nats_jetstream.py", &["last", &self.port.to_string(), STREAM]).unwrap();
        self.epoch = last["last_seq"].as_u64().unwrap();
    }

    fn damage(&mut self, _node: &Node) -> String {
        python_json("nats_jetstream.py", &["damage", &self.port.to_string(), STREAM]).unwrap().to_string()
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
    cases::mixed_changes(Nats::new);
}

#[test]
fn kill9_during_delivery() {
    cases::kill9_during_delivery(Nats::new);
}

#[test]
fn rewind_to_start_repairs() {
    cases::rewind_to_start_repairs(Nats::new);
}

#[test]
fn rewind_to_middle() {
    cases::rewind_to_middle(Nats::new);
}

#[test]
fn per_key_order_under_collapse() {
    cases::per_key_order_under_collapse(Nats::new);
}

#[test]
fn permanent_error_pauses() {
    cases::permanent_error_pauses(Nats::new);
}

#[test]
fn permanent_error_dead_letters() {
    cases::permanent_error_dead_letters(Nats::new);
}

#[test]
fn server_down() {
    cases::server_down(Nats::syncing);
}

/// Remix killed while the server is slow to store (fsync per message): publishes of the killed
/// process are still being stored while the next one reads the stream's position. Once lost a few
/// changes in about one run in three (a last message paired with an older last sequence).
#[test]
fn kill9_during_delivery_against_a_syncing_server() {
    cases::kill9_during_delivery(Nats::syncing);
}

#[test]
fn truncate_applied() {
    cases::truncate_applied(Nats::new);
}

#[test]
fn truncate_ignored() {
    cases::truncate_ignored(Nats::new);
}
