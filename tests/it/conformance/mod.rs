//! The target conformance suite: one set of cases that every target runs through a small adapter,
//! against the real `remix` binary.
//!
//! The log is written directly (`model::Workload`: mixed full and partial upserts, deletes,
//! truncates over three models with an integer, a string and a composite key) before the node
//! starts, so the suite needs no source; a webhook source is configured too, for the case that needs
//! changes while the node runs. What a target must end with is computed once, here, from
//! `remix log dump --json` (`model::fold`); each adapter maps that model state to its own shape and
//! reads what its target holds in the same shape.
//!
//! Cases (`cases.rs`), each a function every adapter calls from its own `#[test]`s:
//! 1. `mixed_changes` — 20k mixed changes: the target equals the model state (history targets: every
//!    change once, in log order).
//! 2. `kill9_during_delivery` — kill -9 at random moments of delivery (seed printed), more changes
//!    appended between kills: the same, and no duplicate by the target's own definition.
//! 3. `rewind_to_start_repairs` and `rewind_to_middle` — a rewind to the start repairs a damaged
//!    target; to a middle offset (online, then recorded offline) it re-delivers the rest.
//! 4. `per_key_order_under_collapse` — many changes to few keys inside large batches.
//! 5. `permanent_error_pauses` and `permanent_error_dead_letters` — one record the target refuses.
//! 6. `server_down` — the target's server unreachable for a while: `retrying`, then nothing lost.
//! 7. `truncate_applied` and `truncate_ignored` — per the target's `truncate` policy.
//!
//! # Plugging in a new target
//!
//! 1. Add `tests/it/conformance/<kind>.rs` with a type implementing [`Adapter`]: `new(root)` starts
//!    (or points at) the target's server, `target_yaml` renders the target's section (start from
//!    [`TargetSpec::common_yaml`]), `expected_state`/`read_state` map the model state to the target's
//!    shape and read it back, `history` says whether it is a state target (`None`) or a history
//!    target and what a rewind does to its history, `damage` alters what it holds behind Remix's
//!    back, `set_reachable` stops the server or closes a [`gate::Gate`] in front of it, `poison`
//!    makes the server refuse the records whose account name is the marker (or returns the reason the
//!    target cannot refuse one), `truncate_apply` says whether the target can apply a truncate, and
//!    `volume` lowers the work for a target that is slow by nature.
//!
//!    A queue or stream target (kafka, nats, redis_streams, rabbitmq, sqs, kinesis) is a history
//!    target: `read_history` consumes its messages, applies its own duplicate rule (exactly once: no
//!    `remix-offset` twice; at least once with a stable id: every copy of an offset identical, then
//!    de-duplicated) and returns one stream per model or per partition key in arrival order;
//!    `read_state` folds that history. An object store is one too (objects named by offsets, like
//!    jsonl: `Rewound::Rewritten`); mysql is a state target like postgres.
//! 2. Add one `#[test]` per case calling `cases::<case>(<Adapter>::new)`, and the module here.
//! 3. Run `cargo test --release --test it conformance::<kind> -- --nocapture` (the output shows each
//!    seed; `REMIX_TEST_SEED=<seed>` repeats a run, `REMIX_CONFORMANCE_FULL=1` gives every target the
//!    full volume). A case the target fails because of a Remix bug gets `#[ignore = "bug: ..."]` with
//!    the evidence; a case that cannot apply says why from the adapter (printed, never silent).

mod azurite;
pub mod cases;
pub mod daemon;
pub mod gate;
pub mod messages;
pub mod model;

mod http;
mod jsonl;
mod mysql;
#[cfg(feature = "nats")]
mod nats;
pub mod object_store;
mod postgres;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;
#[cfg(feature = "redis")]
mod redis_streams;
mod stripe;
mod stripe_api;

use crate::support::Node;
use model::ModelState;
use serde_json::Value;
use std::collections::BTreeMap;

/// The name of the target under test in every configuration.
pub const TARGET: &str = "sink";
/// The account name that an armed adapter's server refuses (see [`Adapter::poison`]).
pub const POISON: &str = "POISON";

/// A target's contents in comparable form: (collection, canonical key text) -> object. The collection
/// is whatever the target groups objects by (a table, a Stripe object type, a model).
pub type State = BTreeMap<(String, String), Value>;

/// A history target's contents: stream (a model's files, an API's feed) -> entries in order.
pub type History = BTreeMap<String, Vec<Value>>;

/// What a rewind does to a history target's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewound {
    /// The target rewrites its history: it equals the whole log again (files named by offsets).
    Rewritten,
    /// The records after the rewind point are delivered again: [`Adapter::read_history`] shows the
    /// history since [`Adapter::new_epoch`], which must equal the log after the point.
    Redelivered,
}

/// How much work the cases give a target (a target that is slow by nature gets less).
#[derive(Debug, Clone, Copy)]
pub struct Volume {
    /// Changes of case 1.
    pub mixed: usize,
    /// Changes of the other cases.
    pub small: usize,
    /// The rate limit (records per second) while the node is killed or the server goes away, so
    /// that it happens in the middle of delivery.
    pub rate: u64,
}

impl Default for Volume {
    fn default() -> Volume {
        Volume { mixed: 20_000, small: 3_000, rate: 1_000 }
    }
}

/// The common keys of the target section the suite asks for.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    pub on_error: &'static str,
    pub truncate: &'static str,
    pub records_max: usize,
    pub linger_ms: u64,
    pub rate: Option<u64>,
}

impl Default for TargetSpec {
    fn default() -> TargetSpec {
        TargetSpec { on_error: "pause", truncate: "apply", records_max: 500, linger_ms: 20, rate: None }
    }
}

impl TargetSpec {
    /// The first lines of the target's list item (`- name: ..., kind: ...` and the common keys),
    /// indented for `targets:`; the adapter appends its own keys (4 spaces of indentation).
    pub fn common_yaml(&self, kind: &str) -> String {
        let mut yaml = format!(
            "  - name: {TARGET}\n    kind: {kind}\n    on_error: {}\n    truncate: {}\n    batch: {{ records_max: {}, linger_ms: {} }}\n",
            self.on_error, self.truncate, self.records_max, self.linger_ms
        );
        // A case's rate limit paces delivery from the first batch on (a burst of one batch); other
        // cases get a high one (targets may have a low default: stripe 25/s).
        let (rate, burst) = match self.rate {
            Some(rate) => (rate, self.records_max as u64),
            None => (100_000, 100_000),
        };
        yaml.push_str(&format!("    rate_limit: {{ records_per_second: {rate}, burst: {burst} }}\n"));
        yaml
    }
}

/// What the suite needs from a target kind. One adapter value per test; it owns the target's server.
pub trait Adapter {
    /// The `kind` of the target section.
    fn kind(&self) -> &'static str;

    /// The suite's models this target takes (records of the others are not for it).
    fn models(&self) -> &'static [&'static str] {
        &model::MODELS
    }

    /// `None` for a state target (a table, API objects: compared by final state, may collapse), or
    /// what a rewind does to a history target (files, a feed: every change once, in log order).
    fn history(&self) -> Option<Rewound>;

    /// The work the cases give this target (`REMIX_CONFORMANCE_FULL=1` gives every target the
    /// default, see [`volume`]).
    fn volume(&self) -> Volume {
        Volume::default()
    }

    /// The target's section for `targets:`.
    fn target_yaml(&self, spec: &TargetSpec) -> String;

    /// Environment variables the node needs (DSNs, keys).
    fn env(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// The model state in the target's shape (its names, types and encodings).
    fn expected_state(&self, state: &ModelState) -> State;

    /// What the target holds; `Err` when it cannot be read (server down).
    fn read_state(&self, node: &Node) -> Result<State, String>;

    /// History targets: what the target should hold for `records` (the records it receives).
    fn expected_history(&self, _records: &[Value]) -> History {
        History::new()
    }

    /// History targets: what it holds, after checking the target's own duplicate rules.
    fn read_history(&self, _node: &Node) -> Result<History, String> {
        Ok(History::new())
    }

    /// A rewind is about to be requested (see [`Rewound::Redelivered`]).
    fn new_epoch(&mut self) {}

    /// Damages what the target holds (deletes and alters objects behind Remix's back), so that a
    /// rewind to the start has something to repair. Returns what was done.
    fn damage(&mut self, node: &Node) -> String;

    /// Makes the target's server unreachable (`false`) or reachable again (`true`).
    fn set_reachable(&mut self, node: &Node, reachable: bool);

    /// `Some(marker)`: from now on the target's server permanently refuses every account whose name
    /// is `marker`; `None`: accepts it again (the fix). `Err(reason)`: this target has no permanent
    /// error a test can provoke.
    fn poison(&mut self, marker: Option<&str>) -> Result<(), &'static str>;

    /// `Err(reason)` when the target refuses truncates (a permanent error with `truncate: apply`).
    fn truncate_apply(&self) -> Result<(), &'static str> {
        Ok(())
    }
}

/// The volume for `adapter`: its own, or the default with `REMIX_CONFORMANCE_FULL=1`.
pub fn volume(adapter: &dyn Adapter) -> Volume {
    match std::env::var("REMIX_CONFORMANCE_FULL") {
        Ok(v) if v == "1" => Volume::default(),
        _ => adapter.volume(),
    }
}

/// The first differences between two states, `None` when they are equal.
pub fn state_difference(expected: &State, actual: &State) -> Option<String> {
    if expected == actual {
        return None;
    }
    let mut out = format!("expected {} objects, the target holds {}", expected.len(), actual.len());
    let missing: Vec<_> = expected.keys().filter(|k| !actual.contains_key(*k)).take(3).collect();
    let extra: Vec<_> = actual.keys().filter(|k| !expected.contains_key(*k)).take(3).collect();
    let differing: Vec<_> =
        expected.iter().filter(|(k, v)| actual.get(*k).is_some_and(|a| a != *v)).take(3).collect();
    for key in missing {
        out.push_str(&format!("\n  missing {key:?}: {}", expected[key]));
    }
    for key in extra {
        out.push_str(&format!("\n  unexpected {key:?}: {}", actual[key]));
    }
    for (key, value) in differing {
        out.push_str(&format!("\n  differs {key:?}:\n    expected {value}\n    actual   {}", actual[key]));
    }
    Some(out)
}

/// The first difference between two histories, `None` when they are equal.
pub fn history_difference(expected: &History, actual: &History) -> Option<String> {
    if expected == actual {
        return None;
    }
    let streams: std::collections::BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
    let mut out = String::new();
    for stream in streams {
        let (e, a) = (expected.get(stream), actual.get(stream));
        let (e, a) = (e.map_or(&[][..], Vec::as_slice), a.map_or(&[][..], Vec::as_slice));
        if e == a {
            continue;
        }
        let at = e.iter().zip(a).position(|(x, y)| x != y).unwrap_or(e.len().min(a.len()));
        out.push_str(&format!(
            "\n  {stream}: expected {} entries, holds {}; first difference at {at}:\n    expected {}\n    actual   {}",
            e.len(),
            a.len(),
            e.get(at).map_or("(end)".into(), Value::to_string),
            a.get(at).map_or("(end)".into(), Value::to_string)
        ));
    }
    Some(out)
}
