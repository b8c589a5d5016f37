//! The `stripe` target through the suite, against the imitation in `stripe_api.rs` behind a
//! [`Gate`]: a state target. `account` becomes customers found by `metadata[remix_id]` (searched,
//! then remembered in the target's journal), `item` becomes products whose Stripe id is the string key
//! (`key_field: id`); both renamed by the output mapping, values form-encoded as text, `null` unsetting
//! a field. `line` is not taken: a composite key cannot be one Stripe field.
//!
//! Checked: every customer and product equals the model object in Stripe's shape, and no two
//! customers carry one `remix_id` (a create sent twice would show so). Unreachable: the gate closed.
//! Permanent error: the imitation answers 400 to a customer with the poisoned name. Truncates: Stripe
//! has none, the target refuses them (case 7a expects the pause). Volume: one request per change (and
//! two journal fsyncs each): 20k changes take about 40 s here, so this target gets less than the
//! others unless `REMIX_CONFORMANCE_FULL=1`.

use super::cases;
use super::gate::Gate;
use super::model::{ModelState, ACCOUNT, ITEM};
use super::stripe_api::{FakeStripe, API_KEY};
use super::{Adapter, Rewound, State, TargetSpec, Volume, TARGET};
use crate::support::Node;
use serde_json::{Map, Value};
use std::path::Path;

/// Per model: Stripe object type, collection, key field, (form field, model field) pairs.
const ACCOUNT_FIELDS: [(&str, &str); 6] = [
    ("metadata[remix_id]", "id"),
    ("email", "email"),
    ("name", "name"),
    ("description", "notes"),
    ("metadata[tier]", "tier"),
    ("metadata[score]", "score"),
];
const ITEM_FIELDS: [(&str, &str); 3] =
    [("name", "title"), ("description", "description"), ("metadata[price]", "price")];

#[derive(Debug)]
pub struct Stripe {
    api: FakeStripe,
    gate: Gate,
}

impl Stripe {
    pub fn new(_root: &Path) -> Stripe {
        let api = FakeStripe::start();
        let gate = Gate::start(&api.addr);
        Stripe { api, gate }
    }
}

/// A form field name as the mapping writes it (`metadata[tier]` -> `metadata.tier`).
fn mapping_name(form: &str) -> String {
    form.replace('[', ".").replace(']', "")
}

/// A value as Stripe stores it: text; `None` when it unsets the field (null, empty).
fn as_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn object(fields: impl Iterator<Item = (String, String)>) -> Value {
    Value::Object(fields.map(|(k, v)| (k, Value::String(v))).collect::<Map<String, Value>>())
}

impl Adapter for Stripe {
    fn kind(&self) -> &'static str {
        "stripe"
    }

    fn models(&self) -> &'static [&'static str] {
        &[ACCOUNT, ITEM]
    }

    fn history(&self) -> Option<Rewound> {
        None
    }

    fn volume(&self) -> Volume {
        Volume { mixed: 6_000, small: 1_500, rate: 1_000 }
    }

    fn target_yaml(&self, spec: &TargetSpec) -> String {
        let fields = |pairs: &[(&str, &str)]| -> String {
            pairs.iter().map(|(f, m)| format!("{}: {m}", mapping_name(f))).collect::<Vec<_>>().join(", ")
        };
        format!(
            "{}    api_key: \"{API_KEY}\"\n    api_base: \"http://{}\"\n    models:\n      \
             account: {{ object: customer, key_field: metadata.remix_id, fields: {{ {} }} }}\n      \
             item: {{ object: product, key_field: id, fields: {{ id: sku, {} }} }}\n",
            spec.common_yaml("stripe"),
            self.gate.addr,
            fields(&ACCOUNT_FIELDS),
            fields(&ITEM_FIELDS)
        )
    }

    fn expected_state(&self, state: &ModelState) -> State {
        state
            .iter()
            .map(|((model, _), o)| {
                let (kind, key, pairs) = match model.as_str() {
                    ACCOUNT => ("customer", as_text(o.get("id")).unwrap(), &ACCOUNT_FIELDS[..]),
                    _ => ("product", as_text(o.get("sku")).unwrap(), &ITEM_FIELDS[..]),
                };
                let fields =
                    pairs.iter().filter_map(|(f, m)| as_text(o.get(*m)).map(|v| ((*f).to_owned(), v)));
                ((kind.to_owned(), key), object(fields))
            })
            .collect()
    }

    fn read_state(&self, _node: &Node) -> Result<State, String> {
        let account = self.api.account.lock().unwrap();
        let mut state = State::new();
        let objects = |collection: &str| account.objects.get(collection).cloned().unwrap_or_default();
        for (id, fields) in objects("customers") {
            let key = fields.get("metadata[remix_id]").ok_or(format!("customer {id} has no remix_id"))?;
            let entry = object(fields.clone().into_iter());
            if state.insert(("customer".into(), key.clone()), entry).is_some() {
                return Err(format!("two customers with remix_id {key} (one is {id})"));
            }
        }
        for (id, fields) in objects("products") {
            state.insert(("product".into(), id), object(fields.into_iter()));
        }
        for r in &account.requests {
            let keyed = r.key.as_deref().is_some_and(|k| k.starts_with(&format!("{TARGET}:")));
            if keyed != (r.method == "POST") {
                return Err(format!("{} {} with idempotency key {:?}", r.method, r.path, r.key));
            }
        }
        let replayed = account.requests.iter().filter(|r| r.replayed).count();
        let refused = account.requests.iter().filter(|r| r.status >= 300).count();
        eprintln!(
            "stripe: {} write requests, {replayed} answered from the cache, {refused} not 2xx",
            account.requests.len()
        );
        Ok(state)
    }

    fn damage(&mut self, _node: &Node) -> String {
        let mut account = self.api.account.lock().unwrap();
        let customers = account.objects.entry("customers".into()).or_default();
        let gone: Vec<String> = customers.keys().step_by(3).cloned().collect();
        for id in &gone {
            customers.remove(id);
        }
        let products = account.objects.entry("products".into()).or_default();
        for fields in products.values_mut() {
            fields.insert("name".into(), "damaged".into());
        }
        format!("deleted {} customers at Stripe, renamed every product", gone.len())
    }

    fn set_reachable(&mut self, _node: &Node, reachable: bool) {
        if reachable {
            self.gate.open();
        } else {
            self.gate.close();
        }
    }

    fn poison(&mut self, marker: Option<&str>) -> Result<(), &'static str> {
        self.api.account.lock().unwrap().poison = marker.map(str::to_owned);
        Ok(())
    }

    fn truncate_apply(&self) -> Result<(), &'static str> {
        Err("Stripe has no truncate; the stripe target documents `truncate: ignore`")
    }
}

#[test]
fn mixed_changes() {
    cases::mixed_changes(Stripe::new);
}

#[test]
fn kill9_during_delivery() {
    cases::kill9_during_delivery(Stripe::new);
}

#[test]
fn rewind_to_start_repairs() {
    cases::rewind_to_start_repairs(Stripe::new);
}

#[test]
fn rewind_to_middle() {
    cases::rewind_to_middle(Stripe::new);
}

#[test]
fn per_key_order_under_collapse() {
    cases::per_key_order_under_collapse(Stripe::new);
}

#[test]
fn permanent_error_pauses() {
    cases::permanent_error_pauses(Stripe::new);
}

#[test]
fn permanent_error_dead_letters() {
    cases::permanent_error_dead_letters(Stripe::new);
}

#[test]
fn server_down() {
    cases::server_down(Stripe::new);
}

#[test]
fn truncate_applied() {
    cases::truncate_applied(Stripe::new);
}

#[test]
fn truncate_ignored() {
    cases::truncate_ignored(Stripe::new);
}

/// Not a suite case: a transient failure of the Search API (503 here; a connection cut by case 6's
/// gate does the same at random) must be retried like any transient error, not pause the target or,
/// with `on_error: dead_letter`, send the record to the DLQ.
#[test]
fn a_failed_search_is_retried() {
    let mut run = cases::Run::new("a_failed_search_is_retried", Stripe::new, 20, &TargetSpec::default());
    let changes = run.workload.changes(300);
    run.append(&changes);
    run.adapter.api.account.lock().unwrap().fail_searches = 3;
    run.node.start();
    let last = run.node.log_stat()["last_offset"].as_u64().unwrap();
    let status = crate::support::wait_for("the target to catch up or pause", || {
        let t = run.target();
        let done = t["state"] == "running" && t["cursor"] == last;
        (done || t["state"] == "paused").then_some(t)
    });
    assert_ne!(status["state"], "paused", "a 503 of the Search API paused the target: {status}");
    run.check(&cases::Expect::default());
    run.node.stop();
}
