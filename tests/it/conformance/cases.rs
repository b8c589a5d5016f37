//! The cases every adapter runs. Each takes the adapter's constructor (called with the test's
//! directory) and fails with the seed to repeat it (`REMIX_TEST_SEED=<seed>`).

use super::model::{self, append, dump, fold, select, Workload, ACCOUNT, ITEM, LINE};
use super::{history_difference, state_difference, Adapter, Rewound, TargetSpec, POISON, TARGET};
use crate::support::{wait_for, Node, Rng};
use remix::record::Change;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// How often case 2 kills the node.
const KILLS: usize = 8;

/// One test: the adapter, the node, the workload. Fields drop in order: the node (killed) first.
pub struct Run<A: Adapter> {
    pub node: Node,
    pub adapter: A,
    pub rng: Rng,
    pub workload: Workload,
    test: String,
    seed: u64,
    dir: tempfile::TempDir,
}

/// What the target must hold: the log's records for it, with or without truncates, without
/// dead-lettered offsets; for a redelivering history target, its history since the last rewind point.
#[derive(Debug, Clone)]
pub struct Expect {
    pub truncate: bool,
    pub skip: Vec<u64>,
    pub history_after: u64,
}

impl Default for Expect {
    fn default() -> Expect {
        Expect { truncate: true, skip: Vec::new(), history_after: 0 }
    }
}

impl<A: Adapter> Run<A> {
    /// Sets up the adapter and the node (not started) with `spec`, and writes `changes` to the log.
    /// `keys`: distinct keys per model.
    pub fn new(case: &str, make: impl FnOnce(&Path) -> A, keys: u64, spec: &TargetSpec) -> Run<A> {
        let dir = tempfile::tempdir().unwrap();
        let adapter = make(dir.path());
        let test = format!("conformance::{}::{case}", adapter.kind());
        let seed = match std::env::var("REMIX_TEST_SEED") {
            Ok(seed) => seed.parse().expect("REMIX_TEST_SEED is a number"),
            Err(_) => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
                now.as_nanos() as u64
            }
        };
        eprintln!("{test}: REMIX_TEST_SEED={seed}");
        let mut rng = Rng::new(seed);
        let workload = Workload::new(rng.next(), keys);
        let node = new_node(dir.path(), &adapter, spec);
        Run { node, adapter, rng, workload, test, seed, dir }
    }

    /// Replaces the node's configuration (the node must be stopped): same directories, new `spec`.
    pub fn reconfigure(&mut self, spec: &TargetSpec) {
        self.node = new_node(self.dir.path(), &self.adapter, spec);
    }

    /// Appends changes to the log (no node may be running).
    pub fn append(&self, changes: &[Change]) {
        append(&self.node.data_dir, changes);
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "{}: {what}\n(repeat with REMIX_TEST_SEED={})\ntarget: {}",
            self.test,
            self.seed,
            self.target()
        )
    }

    pub fn target(&self) -> Value {
        self.node.target(TARGET)
    }

    /// Waits until the target has applied the whole log, then compares what it holds with what the
    /// log leads to (state, and history for history targets).
    pub fn check(&self, expect: &Expect) {
        self.node.wait_caught_up(TARGET);
        let records = dump(&self.node);
        let models = self.adapter.models();
        let received = select(&records, models, expect.truncate, &expect.skip, 0);
        let expected = self.adapter.expected_state(&fold(&received));
        let actual = self.adapter.read_state(&self.node).unwrap_or_else(|e| self.fail(&e));
        if let Some(difference) = state_difference(&expected, &actual) {
            self.fail(&format!("the target does not hold the state the log leads to: {difference}"));
        }
        if let Some(rewound) = self.adapter.history() {
            let after = if rewound == Rewound::Redelivered { expect.history_after } else { 0 };
            let received = select(&records, models, expect.truncate, &expect.skip, after);
            let expected = self.adapter.expected_history(&received);
            let actual = self.adapter.read_history(&self.node).unwrap_or_else(|e| self.fail(&e));
            if let Some(difference) = history_difference(&expected, &actual) {
                self.fail(&format!("the target's history is not the log's: {difference}"));
            }
        }
        eprintln!("{}: the target matches {}", self.test, model::census(&received));
    }

    /// Waits until the target is in `state`, and returns its entry of `remix target list`.
    pub fn wait_state(&self, state: &str) -> Value {
        wait_for(&format!("{}: target state {state}", self.test), || {
            let t = self.target();
            (t["state"] == state).then_some(t)
        })
    }

    fn rewind(&self, how: &[&str]) -> u64 {
        let mut args = vec!["target", "rewind", TARGET];
        args.extend_from_slice(how);
        let answer = self.node.cli_json(&args);
        answer["cursor"].as_u64().unwrap_or_else(|| self.fail(&format!("rewind answered {answer}")))
    }
}

fn new_node<A: Adapter>(root: &Path, adapter: &A, spec: &TargetSpec) -> Node {
    let config = format!(
        r#"data_dir: "${{REMIX_DATA_DIR}}"
admin: {{ listen: "${{REMIX_ADMIN_ADDR}}" }}
log: {{ segment_bytes: 256KiB }}
{models}sources:
  - name: hooks
    kind: webhook
    listen: "${{REMIX_WEBHOOK_ADDR}}"
    routes:
      /account: {{ model: account }}
      /item: {{ model: item }}
      /line: {{ model: line }}
targets:
{target}"#,
        models = model::write_schemas(root),
        target = adapter.target_yaml(spec)
    );
    let env = adapter.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Node::new(root, &config, &env)
}

/// Keys per model for `changes` changes: about four changes per key.
fn keys_for(changes: usize) -> u64 {
    (changes as u64 / 12).max(20)
}

/// (1) Mixed full and partial upserts and deletes over three models: the model state.
pub fn mixed_changes<A: Adapter>(make: impl FnOnce(&Path) -> A) {
    let spec = TargetSpec::default();
    let mut run = Run::new("mixed_changes", make, 1, &spec);
    let n = super::volume(&run.adapter).mixed;
    run.workload = Workload::new(run.rng.next(), keys_for(n));
    let changes = run.workload.changes(n);
    run.append(&changes);
    run.node.start();
    run.check(&Expect::default());
    run.node.stop();
}

/// (2) kill -9 of the node at random moments of delivery, changes appended between kills.
pub fn kill9_during_delivery<A: Adapter>(make: impl FnOnce(&Path) -> A) {
    let mut run = Run::new("kill9_during_delivery", make, 1, &TargetSpec::default());
    let volume = super::volume(&run.adapter);
    let total = volume.small * 2;
    run.workload = Workload::new(run.rng.next(), keys_for(total));
    let spec = TargetSpec { records_max: 200, rate: Some(volume.rate), ..TargetSpec::default() };
    run.reconfigure(&spec);
    let first = run.workload.changes(total / 2);
    run.append(&first);
    run.node.start();
    let mut during = 0;
    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(run.rng.range(0..=600)));
        during += usize::from(run.target()["lag_records"].as_u64().unwrap_or(0) > 0);
        run.node.kill9();
        let more = run.workload.changes(total / 2 / KILLS);
        run.append(&more);
        run.node.start();
    }
    eprintln!("{}: {KILLS} kills, {during} of them with records left to deliver", run.test);
    run.check(&Expect::default());
    run.node.stop();
    run.node.verify_log();
}

/// (3a) A rewind to the start re-applies the whole log: it repairs a damaged target.
pub fn rewind_to_start_repairs<A: Adapter>(make: impl FnOnce(&Path) -> A) {
    let mut run = Run::new("rewind_to_start_repairs", make, 1, &TargetSpec::default());
    let n = super::volume(&run.adapter).small;
    run.workload = Workload::new(run.rng.next(), keys_for(n));
    let changes = run.workload.changes(n);
    run.append(&changes);
    run.node.start();
    run.check(&Expect::default());
    let last = run.node.log_stat()["last_offset"].as_u64().unwrap();
    let damage = run.adapter.damage(&run.node);
    eprintln!("{}: damaged the target: {damage}", run.test);
    run.adapter.new_epoch();
    assert_eq!(run.rewind(&["--to-start"]), 0, "a rewind to the start puts the cursor at 0");
    run.check(&Expect::default());
    assert_eq!(run.node.log_stat()["last_offset"].as_u64().unwrap(), last, "the rewind appended nothing");
    run.node.stop();
}

/// (3b) A rewind to a middle offset, with the node running and then recorded while it is stopped.
pub fn rewind_to_middle<A: Adapter>(make: impl FnOnce(&Path) -> A) {
    let mut run = Run::new("rewind_to_middle", make, 1, &TargetSpec::default());
    let n = super::volume(&run.adapter).small;
    run.workload = Workload::new(run.rng.next(), keys_for(n));
    let changes = run.workload.changes(n);
    run.append(&changes);
    run.node.start();
    run.check(&Expect::default());
    let last = run.node.log_stat()["last_offset"].as_u64().unwrap();

    run.adapter.new_epoch();
    let to = last / 2 + run.rng.range(0..=50);
    let cursor = run.rewind(&["--to-offset", &to.to_string()]);
    assert!(cursor <= to, "a rewind to {to} put the cursor at {cursor}");
    eprintln!("{}: rewound to {to}, the target to {cursor}", run.test);
    run.check(&Expect { history_after: cursor, ..Expect::default() });

    run.node.stop();
    run.adapter.new_epoch();
    let to = last / 3 + run.rng.range(0..=50);
    let recorded = run.rewind(&["--to-offset", &to.to_string()]);
    assert_eq!(recorded, to, "an offline rewind records the offset asked for");
    run.node.start();
    run.check(&Expect { history_after: to, ..Expect::default() });
    run.node.stop();
}

/// (4) Many changes to few keys, in large batches (state targets collapse them per key): the last
/// change of each key wins; a history target gets each key's changes in log order (its whole history
/// must equal the log's sequence, which implies the order per key).
pub fn per_key_order_under_collapse<A: Adapter>(make: impl FnOnce(&Path) -> A) {
    let spec = TargetSpec { records_max: 1000, linger_ms: 200, ..TargetSpec::default() };
    let mut run = Run::new("per_key_order_under_collapse", make, 4, &spec);
    let n = super::volume(&run.adapter).small;
    let changes = run.workload.changes(n);
    run.append(&changes);
    run.node.start();
    run.check(&Expect::default());
    run.node.stop();
}

/// The log of case 5: changes, one account the armed target refuses, more changes. Returns its
/// offset.
fn poisoned_log<A: Adapter>(run: &mut Run<A>) -> u64 {
    let n = super::volume(&run.adapter).small;
    run.workload = Workload::new(run.rng.next(), keys_for(n));
    // Anywhere in a batch, not only first.
    let before = n / 2 + run.rng.range(1..=97) as usize;
    let mut changes = run.workload.changes(before);
    changes.push(run.workload.lone_account(POISON));
    let poison = changes.len() as u64;
    changes.extend(run.workload.changes(n / 2));
    run.append(&changes);
    poison
}

/// (5a) A permanent error with `on_error: pause`: the target stops on the record, naming it, and
/// goes on from it once the cause is fixed and it is resumed.
pub fn permanent_error_pauses<A: Adapter>(make: impl FnOnce(&Path) -> A) {
    let mut run = Run::new("permanent_error_pauses", make, 1, &TargetSpec::default());
    if let Err(reason) = run.adapter.poison(Some(POISON)) {
        eprintln!("SKIPPED {}: case 5 does not apply to this target: {reason}", run.test);
        return;
    }
    let poison = poisoned_log(&mut run);
    run.node.start();
    let status = run.wait_state("paused");
    let error = status["last_error"].as_str().unwrap_or_else(|| run.fail("paused without last_error"));
    // Named, and not another record blamed (the worker's own prefix is `offset N (model key): `).
    let blamed: Option<u64> = error.strip_prefix("offset ").and_then(|r| r.split(' ').next()?.parse().ok());
    if !error.contains(&format!("offset {poison} ")) || blamed.is_some_and(|b| b != poison) {
        run.fail(&format!("the error does not name the refused record at offset {poison}: {error}"));
    }
    assert!(status["cursor"].as_u64().unwrap() < poison, "paused before the record: {status}");
    eprintln!("{}: paused: {error}", run.test);
    // Paused means paused: a moment later it has not moved past the record.
    std::thread::sleep(Duration::from_millis(500));
    let later = run.target();
    assert!(later["state"] == "paused" && later["cursor"].as_u64().unwrap() < poison, "{later}");
    run.adapter.poison(None).unwrap();
    let out = run.node.cli(&["target", "resume", TARGET]);
    assert!(out.status.success(), "remix target resume: {out:?}");
    run.check(&Expect::default());
    run.node.stop();
}

/// (5b) A permanent error with `on_error: dead_letter`: only that record goes to the DLQ.
pub fn permanent_error_dead_letters<A: Adapter>(make: impl FnOnce(&Path) -> A) {
    let spec = TargetSpec { on_error: "dead_letter", ..TargetSpec::default() };
    let mut run = Run::new("permanent_error_dead_letters", make, 1, &spec);
    if let Err(reason) = run.adapter.poison(Some(POISON)) {
        eprintln!("SKIPPED {}: case 5 does not apply to this target: {reason}", run.test);
        return;
    }
    let poison = poisoned_log(&mut run);
    run.node.start();
    run.check(&Expect { skip: vec![poison], ..Expect::default() });
    let dlq = run.node.cli_json(&["dlq", "list"]);
    let letters = dlq.as_array().expect("dlq list is an array");
    let position = poison.to_string();
    if letters.len() != 1 || letters[0]["position"] != position.as_str() || letters[0]["model"] != ACCOUNT {
        run.fail(&format!("the DLQ should hold exactly the record at offset {poison}: {dlq:#}"));
    }
    eprintln!("{}: dead letter {}", run.test, letters[0]);
    run.node.stop();
}

/// (6) The target's server goes away during delivery and comes back: `retrying` meanwhile, the
/// source still acknowledged, nothing lost or doubled.
pub fn server_down<A: Adapter>(make: impl FnOnce(&Path) -> A) {
    let mut run = Run::new("server_down", make, 1, &TargetSpec::default());
    let volume = super::volume(&run.adapter);
    run.workload = Workload::new(run.rng.next(), keys_for(volume.small));
    run.reconfigure(&TargetSpec { records_max: 200, rate: Some(volume.rate), ..TargetSpec::default() });
    let changes = run.workload.changes(volume.small);
    run.append(&changes);
    run.node.start();
    wait_for("the first delivery", || (run.target()["cursor"].as_u64().unwrap() > 0).then_some(()));
    run.adapter.set_reachable(&run.node, false);
    let accounts = run.workload.new_accounts(40);
    let response = run.node.post("/account", &[], &Value::Array(accounts.clone())).unwrap();
    assert_eq!(
        response.status,
        200,
        "the source is acknowledged while the target is down: {}",
        response.text()
    );
    let deletes: Vec<Value> = accounts.iter().step_by(4).map(|a| json!({"id": a["id"]})).collect();
    let response = run.node.post("/account", &[("X-Remix-Op", "delete")], &Value::Array(deletes)).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let status = wait_for("the target to retry", || {
        let t = run.target();
        (t["state"] == "retrying" && t["last_error"].is_string()).then_some(t)
    });
    eprintln!("{}: while down: {status}", run.test);
    std::thread::sleep(Duration::from_millis(1500));
    run.adapter.set_reachable(&run.node, true);
    run.check(&Expect::default());
    run.node.stop();
}

/// The log of case 7: changes with a truncate of each model in between. Returns the first
/// truncate's offset.
fn truncated_log<A: Adapter>(run: &mut Run<A>) -> u64 {
    let n = super::volume(&run.adapter).small;
    run.workload = Workload::new(run.rng.next(), keys_for(n));
    let mut changes = run.workload.changes(n / 3);
    changes.push(run.workload.truncate(ACCOUNT));
    let first = changes.len() as u64;
    changes.extend(run.workload.changes(n / 3));
    changes.push(run.workload.truncate(LINE));
    changes.push(run.workload.truncate(ITEM));
    changes.extend(run.workload.changes(n / 3));
    run.append(&changes);
    first
}

/// (7a) `truncate: apply`: a truncate empties the model at the target (or, for a target that
/// cannot, is a permanent error that pauses it, naming the truncate).
pub fn truncate_applied<A: Adapter>(make: impl FnOnce(&Path) -> A) {
    let mut run = Run::new("truncate_applied", make, 1, &TargetSpec::default());
    let first = truncated_log(&mut run);
    run.node.start();
    match run.adapter.truncate_apply() {
        Ok(()) => run.check(&Expect::default()),
        Err(reason) => {
            eprintln!("{}: this target refuses truncates ({reason}): it must pause on the first", run.test);
            let status = run.wait_state("paused");
            let error = status["last_error"].as_str().unwrap_or_default();
            if !error.contains(&format!("offset {first} ")) || !error.contains("truncate") {
                run.fail(&format!("the error does not name the truncate at offset {first}: {error}"));
            }
        }
    }
    run.node.stop();
}

/// (7b) `truncate: ignore`: truncates never reach the target.
pub fn truncate_ignored<A: Adapter>(make: impl FnOnce(&Path) -> A) {
    let spec = TargetSpec { truncate: "ignore", ..TargetSpec::default() };
    let mut run = Run::new("truncate_ignored", make, 1, &spec);
    truncated_log(&mut run);
    run.node.start();
    run.check(&Expect { truncate: false, ..Expect::default() });
    run.node.stop();
}
