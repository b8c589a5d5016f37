//! The `rabbitmq` target through the suite, against the machine's broker (127.0.0.1:5672,
//! guest/guest) with a vhost of its own per test (`rabbitmqctl`), reached through a [`Gate`], read
//! back with pika from a durable queue bound to the exchange with `#`. A history target whose rewind
//! delivers again (under new message ids). At least once with a stable id: every message is
//! persistent, its `message_id` is `sink:<remix-offset>` (`:g<G>` after a rewind) and every copy of
//! an id is identical; deduplicated by id, each model's messages equal the log's changes in order
//! (`value: object`, tombstones, `item` renamed by an output mapping), and the state they fold to
//! equals the model state. Unreachable: the gate closed (connections cut). Not applicable: case 5
//! (see [`NO_PERMANENT_ERROR`]).

use super::cases;
use super::daemon::python_json;
use super::gate::Gate;
use super::messages::{self, Mode};
use super::model::{normalize, ModelState};
use super::{Adapter, History, Rewound, State, TargetSpec, TARGET};
use crate::support::Node;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

const NO_PERMANENT_ERROR: &str = "RabbitMQ refuses no single message by its content: an unroutable \
    message is refused by routing key, which is the model";
const EXCHANGE: &str = "remix";
const QUEUE: &str = "remix-test";

#[derive(Debug)]
pub struct Rabbitmq {
    vhost: String,
    gate: Gate,
    /// Every message consumed so far (the queue is drained at each read), and where the epoch began.
    consumed: Mutex<Vec<Value>>,
    epoch: usize,
}

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl").args(args).output().expect(
        "rabbitmqctl (the machine's RabbitMQ, see scripts/test-servers.sh and scripts/test-servers.md)",
    );
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Rabbitmq {
    pub fn new(root: &Path) -> Rabbitmq {
        assert!(
            std::net::TcpStream::connect("127.0.0.1:5672").is_ok(),
            "RabbitMQ does not answer on 127.0.0.1:5672: start it (rabbitmq-server -detached, see scripts/test-servers.md)"
        );
        let name = root.file_name().unwrap().to_string_lossy().replace('.', "");
        let vhost = format!("remix-test-{name}");
        rabbitmqctl(&["add_vhost", &vhost]);
        rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
        python_json("rabbitmq.py", &["setup", &vhost, EXCHANGE, QUEUE]).unwrap();
        Rabbitmq { vhost, gate: Gate::start("127.0.0.1:5672"), consumed: Mutex::default(), epoch: 0 }
    }

    /// Drains the queue into `consumed`, and returns the messages from `from` on in comparable form
    /// with their ids, checking ids, headers and persistence.
    fn messages(&self, from: usize) -> Result<Vec<(String, String, Value)>, String> {
        let drained = python_json("rabbitmq.py", &["drain", &self.vhost, QUEUE])?;
        let mut consumed = self.consumed.lock().unwrap();
        consumed.extend(drained.as_array().cloned().unwrap_or_default());
        let mut out = Vec::new();
        for m in &consumed[from.min(consumed.len())..] {
            let headers = &m["headers"];
            let header = |name: &str| headers[name].as_str().map(str::to_owned);
            let offset: u64 = header("remix-offset")
                .and_then(|o| o.parse().ok())
                .ok_or_else(|| format!("no remix-offset: {m}"))?;
            let id = match header("remix-generation") {
                Some(g) => format!("{TARGET}:{offset}:g{g}"),
                None => format!("{TARGET}:{offset}"),
            };
            if m["message_id"] != id.as_str()
                || header("remix-target").as_deref() != Some(TARGET)
                || m["delivery_mode"] != 2
            {
                return Err(format!("message id, target or persistence wrong (expected id {id}): {m}"));
            }
            let model = header("remix-model").ok_or_else(|| format!("no remix-model: {m}"))?;
            if m["routing_key"] != model.as_str() {
                return Err(format!("routing key is not {model}: {m}"));
            }
            let body = m["body"].as_str().unwrap_or_default();
            let value = if body.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(body).map_err(|e| format!("body is not JSON ({e}): {m}"))?
            };
            let key = messages::parse_key(header("remix-key").as_deref())?;
            let op = header("remix-op").unwrap_or_default();
            let message = normalize(&json!({"offset": offset, "op": op, "key": key, "value": value}));
            out.push((model, id, message));
        }
        Ok(out)
    }
}

/// Keeps the first copy of each message id (a consumer's deduplication), checking that every copy
/// is identical; one list per model.
fn dedupe(messages: Vec<(String, String, Value)>, models: &[&str]) -> Result<History, String> {
    let mut seen: std::collections::HashMap<String, Value> = std::collections::HashMap::new();
    let mut history = History::new();
    for model in models {
        history.insert((*model).to_owned(), Vec::new());
    }
    for (model, id, message) in messages {
        match seen.get(&id) {
            Some(first) if *first != message => {
                return Err(format!("two different messages with id {id}: {first} and {message}"))
            }
            Some(_) => {}
            None => {
                seen.insert(id, message.clone());
                history.entry(model).or_default().push(message);
            }
        }
    }
    Ok(history)
}

impl Drop for Rabbitmq {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").args(["delete_vhost", &self.vhost]).output();
    }
}

impl Adapter for Rabbitmq {
    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    fn history(&self) -> Option<Rewound> {
        Some(Rewound::Redelivered)
    }

    fn target_yaml(&self, spec: &TargetSpec) -> String {
        let vhost = self.vhost.replace('/', "%2f");
        format!(
            "{}    url: \"amqp://guest:guest@{}/{vhost}\"\n    exchange: {EXCHANGE}\n    routing_key: \"{{model}}\"\n    in_flight_max: 256\n{}",
            spec.common_yaml("rabbitmq"),
            self.gate.addr,
            messages::models_yaml()
        )
    }

    fn expected_state(&self, state: &ModelState) -> State {
        messages::expected_state(state)
    }

    fn read_state(&self, _node: &Node) -> Result<State, String> {
        // Every message consumed: a redelivery after a rewind folds to the same state.
        let history = dedupe(self.messages(0)?, self.models())?;
        messages::fold(&history, Mode::Object)
    }

    fn expected_history(&self, records: &[Value]) -> History {
        messages::expected(records, self.models(), Mode::Object)
    }

    fn read_history(&self, _node: &Node) -> Result<History, String> {
        dedupe(self.messages(self.epoch)?, self.models())
    }

    fn new_epoch(&mut self) {
        self.messages(0).unwrap();
        self.epoch = self.consumed.lock().unwrap().len();
    }

    fn damage(&mut self, _node: &Node) -> String {
        // What a consumer holds is its own: drop some of what was consumed.
        let mut consumed = self.consumed.lock().unwrap();
        let n = consumed.len().min(25);
        consumed.drain(..n);
        format!("forgot the first {n} messages consumed")
    }

    fn set_reachable(&mut self, _node: &Node, reachable: bool) {
        if reachable {
            self.gate.open();
        } else {
            self.gate.close();
        }
    }

    fn poison(&mut self, _marker: Option<&str>) -> Result<(), &'static str> {
        Err(NO_PERMANENT_ERROR)
    }
}

#[test]
fn mixed_changes() {
    cases::mixed_changes(Rabbitmq::new);
}

#[test]
fn kill9_during_delivery() {
    cases::kill9_during_delivery(Rabbitmq::new);
}

#[test]
fn rewind_to_start_repairs() {
    cases::rewind_to_start_repairs(Rabbitmq::new);
}

#[test]
fn rewind_to_middle() {
    cases::rewind_to_middle(Rabbitmq::new);
}

#[test]
fn per_key_order_under_collapse() {
    cases::per_key_order_under_collapse(Rabbitmq::new);
}

#[test]
fn permanent_error_pauses() {
    cases::permanent_error_pauses(Rabbitmq::new);
}

#[test]
fn permanent_error_dead_letters() {
    cases::permanent_error_dead_letters(Rabbitmq::new);
}

#[test]
fn server_down() {
    cases::server_down(Rabbitmq::new);
}

#[test]
fn truncate_applied() {
    cases::truncate_applied(Rabbitmq::new);
}

#[test]
fn truncate_ignored() {
    cases::truncate_ignored(Rabbitmq::new);
}
