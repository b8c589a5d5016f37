//! The `stripe` target: creates, updates and deletes Stripe objects through the API, one request per
//! change, in log order.
//!
//! **Which object.** Each model names a Stripe object type (`object: customer`, sent to
//! `/v1/customers`; `checkout.session` to `/v1/checkout/sessions`) and the Stripe-side field that
//! holds the model key (`key_field`, default `id`). The key value is the item's key field of that name
//! (map it, e.g. `fields: { metadata.remix_id: id, email: email }`), or, with `fields` left out (the
//! model object as is), the model's only key field.
//! - `key_field: id`: the key is the Stripe id. Upsert = `POST /v1/<objects>/<id>`, and when Stripe
//!   answers 404, `POST /v1/<objects>` with `id=<key>` (for the objects that take a custom id);
//!   delete = `DELETE /v1/<objects>/<id>`.
//! - any other field (`metadata.remix_id`, `email`): the Stripe id is looked up in the target's own
//!   journal (below), else with the Search API (`GET /v1/<objects>/search?query=metadata['remix_id']:'7'`);
//!   found: update it; not found: create it (the key field is always sent, so the object can be found
//!   again). Stripe's search is eventually consistent (about a minute), which is why the ids of the
//!   objects this target created are kept in the journal and never looked up by search: only objects
//!   made elsewhere are. A delete of a key that is nowhere is done (nothing to delete); a 404 to a
//!   delete is done too.
//!
//! **Bodies.** Form-encoded ([`crate::stripe::api::form_encode`]: `metadata[key]=value`,
//! `items[0][price]=...`, a mapped field named `metadata.remix_id` as `metadata[remix_id]`, `null` as
//! an empty value, which unsets). `id` is never sent in a body except to create with `key_field: id`.
//! A truncate cannot be applied to Stripe: it is a permanent error (use `truncate: ignore`).
//!
//! **Exactly once.** Every `POST` carries `Idempotency-Key: <target>:<offset>` (`:g<N>` appended after
//! the N-th rewind, so a deliberate re-delivery is applied again instead of being answered from
//! Stripe's 24-hour idempotency cache; `:create` appended to the create that follows a 404). Which
//! request an item becomes depends on what the lookup found, so each request is recorded durably
//! before it is sent, in the journal `<data_dir>/targets/<name>.stripe` (one JSON line each, fsynced),
//! and its outcome after (with the object's id). After a crash the request left without an outcome is
//! sent again byte for byte under the same key (Stripe answers it from its cache if it had applied
//! it), and the items before it in the batch, already confirmed, are not sent again. The journal is
//! compacted when the target opens.
//!
//! **Rate.** Stripe's test mode allows 25 requests per second and live mode 100; the target's
//! `rate_limit` defaults to 25 records per second. A 429 is waited out as `Retry-After` says; 409, 5xx
//! and lost connections are transient (the worker retries with backoff); other 4xx are permanent and
//! handled by `on_error`. Search API lookups are classified the same way as writes: a search that
//! fails with a 503 or a lost connection is retried, it does not pause the target.

use crate::config::RateLimit;
use crate::connector::StartError;
use crate::record::Op;
use crate::runtime::delivery::{Batch, Capabilities, Guarantee, Item, Target, TargetError};
use crate::runtime::state::{StateError, StateKey, StateStore};
use crate::stripe::api::{form_encode, percent_encode, Api, ApiError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Why an item's key cannot name a Stripe object (a permanent error of that item).
#[derive(Debug, thiserror::Error)]
enum KeyError {
    #[error("the item has no key")]
    NoKey,
    #[error("the key {key} has no field '{field}'")]
    NoField { key: String, field: String },
    #[error("the key field '{field}' is null")]
    Null { field: String },
}
use std::time::Duration;

/// The rate limit when none is configured: Stripe's test-mode limit.
pub const DEFAULT_RATE_LIMIT: RateLimit = RateLimit { records_per_second: 25, burst: 25 };
const TIMEOUT: Duration = Duration::from_secs(30);
/// The journal is rewritten at open when it has this many more lines than live ids.
const COMPACT_SLACK_LINES: usize = 1024;

#[derive(Debug, Clone)]
struct ModelOut {
    /// `customer`, `checkout.session`.
    object: String,
    /// `/v1/customers`.
    collection: String,
    key_field: String,
}

/// A request as recorded before it is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Request {
    offset: u64,
    /// `POST` or `DELETE`.
    method: String,
    path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    form: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<String>,
    /// The ids map's key: `<model> <key value>`.
    key: String,
    /// An update that may meet a 404 (the object was deleted at Stripe): then it is created.
    #[serde(default)]
    update: bool,
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Entry {
    /// About to be sent.
    Send(Request),
    /// The request at `offset` was confirmed; the key's object is now `id` (`None`: none).
    Done { offset: u64, key: String, id: Option<String> },
    /// Found by search (or kept by compaction).
    Id { key: String, id: String },
    /// The operator rewound the target: idempotency keys of the next generation.
    Rewind { generation: u64 },
}

/// Writes to Stripe; see the module docs.
#[derive(Debug)]
pub struct StripeTarget {
    name: String,
    api: Api,
    models: BTreeMap<String, ModelOut>,
    /// The journal (`<data_dir>/targets/<name>.stripe` in the file state store).
    journal: StateKey,
    state: Arc<dyn StateStore>,
    /// `<model> <key value>` -> Stripe id.
    ids: HashMap<String, String>,
    generation: u64,
    /// A request recorded but without an outcome: sent again, as is, before anything else.
    pending: Option<Request>,
    /// Items at or before this offset were confirmed since `open` (within a batch being retried).
    sent_through: u64,
}

impl StripeTarget {
    pub fn new(
        config: &crate::stripe::config::StripeTarget,
        state: Arc<dyn StateStore>,
    ) -> Result<StripeTarget, StartError> {
        let name = &config.common.name;
        let refuse = |message: String| StartError { kind: "stripe target", name: name.clone(), message };
        let api = Api::new(&config.api_base, &config.api_key, TIMEOUT).map_err(|e| refuse(e.to_string()))?;
        let mut models = BTreeMap::new();
        for (model, output) in &config.models {
            if !output.mapping.is_identity() && !output.mapping.output_fields().any(|f| f == output.key_field)
            {
                let field = &output.key_field;
                return Err(refuse(format!(
                    "models.{model}.fields must map the model key to key_field '{field}' (e.g. `{field}: id`), \
                     or be left out"
                )));
            }
            let collection = format!("/v1/{}s", output.object.replace('.', "/"));
            models.insert(
                model.clone(),
                ModelOut { object: output.object.clone(), collection, key_field: output.key_field.clone() },
            );
        }
        Ok(StripeTarget {
            name: name.clone(),
            api,
            models,
            journal: StateKey::TargetJournal { target: name.clone(), name: "stripe" },
            state,
            ids: HashMap::new(),
            generation: 0,
            pending: None,
            sent_through: 0,
        })
    }

    fn idempotency_key(&self, offset: u64) -> String {
        match self.generation {
            0 => format!("{}:{offset}", self.name),
            g => format!("{}:{offset}:g{g}", self.name),
        }
    }

    async fn record(&self, entry: &Entry) -> Result<(), TargetError> {
        let mut line = serde_json::to_vec(entry).expect("serializable");
        line.push(b'\n');
        self.state.append(&self.journal, line).await.map_err(journal_error)
    }

    /// The key value of `item` for `model`, as text, and as the JSON value to send.
    fn key_of(&self, item: &Item, model: &ModelOut) -> Result<(String, Value), KeyError> {
        let key = item.key.as_object().ok_or(KeyError::NoKey)?;
        let value = match key.get(&model.key_field) {
            Some(value) => value,
            None if key.len() == 1 => key.values().next().expect("one"),
            None => {
                return Err(KeyError::NoField { key: item.key.to_string(), field: model.key_field.clone() })
            }
        };
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Null => return Err(KeyError::Null { field: model.key_field.clone() }),
            other => other.to_string(),
        };
        Ok((text, value.clone()))
    }

    /// Looks the key's object up with the Search API.
    async fn search(
        &mut self,
        model: &ModelOut,
        value: &str,
        key: &str,
    ) -> Result<Option<String>, TargetError> {
        let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
        let query = match model.key_field.strip_prefix("metadata.") {
            Some(field) => format!("metadata['{field}']:'{quoted}'"),
            None => format!("{}:'{quoted}'", model.key_field),
        };
        let path = format!("{}/search?query={}", model.collection, percent_encode(&query));
        let found = match self.api.get(&path).await {
            Ok(body) => body
                .get("data")
                .and_then(|d| d.get(0))
                .and_then(|o| o.get("id"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            Err(ApiError::Status { status: 404, message, .. }) => {
                return Err(TargetError::permanent(
                    None,
                    format!("Stripe cannot search {} objects ({message}): use key_field: id", model.object),
                ))
            }
            Err(e) => return Err(api_error(e, None)),
        };
        if let Some(id) = &found {
            self.record(&Entry::Id { key: key.to_owned(), id: id.clone() }).await?;
            self.ids.insert(key.to_owned(), id.clone());
        }
        Ok(found)
    }

    /// The request `item` (at `index` in the batch) becomes; `None` when there is nothing to do.
    /// `recreate`: the object the journal named is gone at Stripe, create it. A failed lookup is
    /// classified like a failed write: transient (no answer, 409, 429, 5xx) or permanent (other 4xx).
    async fn plan(
        &mut self,
        index: usize,
        item: &Item,
        recreate: bool,
    ) -> Result<Option<Request>, TargetError> {
        let permanent = |message: String| TargetError::Permanent { item: Some(index), message, source: None };
        if item.op == Op::Truncate {
            // Before the key: a truncate has none.
            return Err(permanent(
                "a truncate cannot be applied to Stripe (set `truncate: ignore` on this target)".into(),
            ));
        }
        let model = self
            .models
            .get(&item.model)
            .cloned()
            .ok_or_else(|| permanent(format!("no output for model '{}'", item.model)))?;
        let (value, json) = self.key_of(item, &model).map_err(|e| permanent(e.to_string()))?;
        let key = format!("{} {value}", item.model);
        let by_id = model.key_field == "id";
        let known = if recreate {
            None
        } else if by_id {
            Some(value.clone())
        } else if let Some(id) = self.ids.get(&key) {
            Some(id.clone())
        } else {
            self.search(&model, &value, &key).await.map_err(|error| match error {
                TargetError::Permanent { message, .. } => permanent(message),
                transient => transient,
            })?
        };
        let mut idempotency_key = self.idempotency_key(item.offset);
        if recreate {
            idempotency_key.push_str(":create");
        }
        let request = |method: &str, path: String, form: Option<String>, update: bool| Request {
            offset: item.offset,
            method: method.into(),
            path,
            form,
            idempotency_key: (method == "POST").then(|| idempotency_key.clone()),
            key: key.clone(),
            update,
        };
        match item.op {
            Op::Upsert => {
                let mut object: Map<String, Value> =
                    item.data.as_ref().map(|d| d.to_map().into_owned()).unwrap_or_default();
                object.remove("id");
                match known {
                    Some(id) => {
                        if !by_id {
                            object.insert(model.key_field.clone(), json);
                        }
                        let path = format!("{}/{}", model.collection, percent_encode(&id));
                        Ok(Some(request("POST", path, Some(form_encode(&object)), true)))
                    }
                    None => {
                        object.insert(model.key_field.clone(), json);
                        Ok(Some(request("POST", model.collection.clone(), Some(form_encode(&object)), false)))
                    }
                }
            }
            Op::Delete => Ok(known.map(|id| {
                request("DELETE", format!("{}/{}", model.collection, percent_encode(&id)), None, false)
            })),
            Op::Truncate => unreachable!("refused above"),
        }
    }

    /// Sends `request` and records its outcome. `Ok(false)`: an update met a 404 (the object is gone
    /// at Stripe): nothing is recorded then, since the item is not done until the object is created
    /// again; a crash before that leaves the update as the request without an outcome, resent at the
    /// next start (404 again, then the create).
    async fn execute(&mut self, request: &Request) -> Result<bool, ApiError> {
        let result = match request.method.as_str() {
            "DELETE" => match self.api.delete(&request.path).await {
                Err(ApiError::Status { status: 404, .. }) => Ok(Value::Null),
                other => other,
            },
            _ => {
                let form = request.form.as_deref().unwrap_or("");
                self.api.post(&request.path, form, request.idempotency_key.as_deref().unwrap_or("")).await
            }
        };
        let id = match result {
            Ok(_) if request.method == "DELETE" => None,
            Ok(body) => body.get("id").and_then(Value::as_str).map(str::to_owned),
            Err(ApiError::Status { status: 404, .. }) if request.update => {
                self.ids.remove(&request.key);
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let done = Entry::Done { offset: request.offset, key: request.key.clone(), id: id.clone() };
        if let Err(e) = self.record(&done).await {
            return Err(ApiError::Transport(format!("cannot record the outcome: {e}")));
        }
        match id {
            Some(id) => self.ids.insert(request.key.clone(), id),
            None => self.ids.remove(&request.key),
        };
        self.pending = None;
        Ok(true)
    }

    /// Records and sends the request of `item` (at `index` in the batch).
    async fn deliver(&mut self, index: usize, item: &Item) -> Result<(), TargetError> {
        let mut recreate = false;
        loop {
            let request = match self.pending.take() {
                Some(pending) if pending.offset == item.offset => pending,
                other => {
                    self.pending = other;
                    match self.plan(index, item, recreate).await? {
                        Some(request) => {
                            self.record(&Entry::Send(request.clone())).await?;
                            request
                        }
                        None => return Ok(()),
                    }
                }
            };
            self.pending = Some(request.clone());
            match self.execute(&request).await {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    // The create replaces the update as the request in flight.
                    self.pending = None;
                    recreate = true;
                }
                Err(e) if e.is_transient() => return Err(api_error(e, Some(index))),
                Err(e) => {
                    self.pending = None;
                    return Err(api_error(e, Some(index)));
                }
            }
        }
    }

    /// The request left without an outcome, when it is not for an item of this batch: sent again to
    /// settle it (a permanent refusal means Stripe did not apply it).
    async fn settle_pending(&mut self, batch: &Batch) -> Result<(), TargetError> {
        let Some(pending) = self.pending.clone() else { return Ok(()) };
        // Its item is in this batch, or may be in a later one: delivered (and settled) with it, where
        // an update that meets a 404 can create the object again.
        if pending.offset > batch.last_offset
            || batch.items.iter().any(|i| i.offset == pending.offset && i.offset > self.sent_through)
        {
            return Ok(());
        }
        match self.execute(&pending).await {
            Ok(true) => self.sent_through = self.sent_through.max(pending.offset),
            Ok(false) => {
                // The item is no longer delivered to this target (configuration changed): the object
                // is gone at Stripe, and stays so.
                let done = Entry::Done { offset: pending.offset, key: pending.key.clone(), id: None };
                self.record(&done).await?;
                self.pending = None;
                self.sent_through = self.sent_through.max(pending.offset);
            }
            Err(e) if e.is_transient() => return Err(api_error(e, None)),
            Err(e) => {
                tracing::warn!(target = %self.name, "Stripe refused the request left in flight: {e}");
                self.pending = None;
            }
        }
        Ok(())
    }

    /// Reads the journal: ids, generation, the request without an outcome (if after `cursor`), and
    /// the offset through which items were confirmed. Returns the number of lines.
    async fn load(&mut self, cursor: u64) -> Result<usize, TargetError> {
        let bytes = self.state.load(&self.journal).await.map_err(journal_error)?.unwrap_or_default();
        // Only the last line can be torn (every line is synced before the next is written).
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut lines = 0;
        let mut pending: Option<Request> = None;
        let mut confirmed = 0;
        for line in bytes[..complete].split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            lines += 1;
            let entry: Entry = serde_json::from_slice(line)
                .map_err(|e| TargetError::transient(format!("stripe: {}: {e}", self.journal)))?;
            match entry {
                Entry::Send(request) => pending = Some(request),
                Entry::Done { offset, key, id } => {
                    if pending.as_ref().is_some_and(|p| p.offset == offset) {
                        pending = None;
                    }
                    confirmed = confirmed.max(offset);
                    match id {
                        Some(id) => self.ids.insert(key, id),
                        None => self.ids.remove(&key),
                    };
                }
                Entry::Id { key, id } => {
                    self.ids.insert(key, id);
                }
                Entry::Rewind { generation } => {
                    self.generation = generation;
                    pending = None;
                    confirmed = 0;
                }
            }
        }
        self.pending = pending.filter(|p| p.offset > cursor);
        // Items are sent one at a time in log order: everything before the last confirmed request, or
        // before the one left without an outcome, was confirmed (and must not become a new request
        // under the same idempotency key).
        let before_pending = self.pending.as_ref().map_or(0, |p| p.offset - 1);
        self.sent_through = confirmed.max(before_pending);
        if complete < bytes.len() {
            // The torn line is dropped before anything is appended after it.
            self.state.store(&self.journal, bytes[..complete].to_vec()).await.map_err(journal_error)?;
        }
        Ok(lines)
    }

    async fn compact(&self) -> Result<(), TargetError> {
        let mut entries = Vec::new();
        if self.generation > 0 {
            entries.push(Entry::Rewind { generation: self.generation });
        }
        let mut ids: Vec<_> = self.ids.iter().collect();
        ids.sort();
        entries.extend(ids.into_iter().map(|(key, id)| Entry::Id { key: key.clone(), id: id.clone() }));
        entries.extend(self.pending.clone().map(Entry::Send));
        let mut bytes = Vec::new();
        for entry in entries {
            serde_json::to_writer(&mut bytes, &entry).expect("a journal entry serializes");
            bytes.push(b'\n');
        }
        self.state.store(&self.journal, bytes).await.map_err(journal_error)
    }
}

impl Target for StripeTarget {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            collapse: false,
            guarantee: Guarantee::IdempotencyKeys,
            batch_records_max: 1_000,
            batch_records_default: 500,
        }
    }

    async fn open(&mut self, cursor: u64) -> Result<u64, TargetError> {
        self.ids.clear();
        self.generation = 0;
        self.sent_through = 0;
        let lines = self.load(cursor).await?;
        // Compaction drops the outcomes, so not while they are still needed past the cursor.
        let compact = lines > 2 * self.ids.len() + COMPACT_SLACK_LINES && self.sent_through <= cursor;
        if compact {
            self.compact().await?;
        }
        Ok(cursor)
    }

    async fn apply(&mut self, batch: &Batch) -> Result<(), TargetError> {
        self.settle_pending(batch).await?;
        for (index, item) in batch.items.iter().enumerate() {
            if item.offset <= self.sent_through {
                continue;
            }
            self.deliver(index, item).await?;
            self.sent_through = item.offset;
        }
        Ok(())
    }

    async fn rewind(&mut self, offset: u64) -> Result<u64, TargetError> {
        let generation = self.generation + 1;
        self.record(&Entry::Rewind { generation }).await?;
        self.generation = generation;
        self.pending = None;
        self.sent_through = 0;
        Ok(offset)
    }
}

/// The journal could not be read or written: retried (the target waits until it can record).
fn journal_error(error: StateError) -> TargetError {
    TargetError::transient(format!("stripe journal: {error}")).caused_by(error)
}

fn api_error(error: ApiError, item: Option<usize>) -> TargetError {
    let message = format!("stripe: {error}");
    if error.is_transient() {
        TargetError::transient(message).caused_by(error)
    } else {
        TargetError::permanent(item, message).caused_by(error)
    }
}

/// `common` with [`DEFAULT_RATE_LIMIT`] when it configures no rate limit.
pub fn with_default_rate_limit(mut common: crate::config::TargetCommon) -> crate::config::TargetCommon {
    common.rate_limit = common.rate_limit.or(Some(DEFAULT_RATE_LIMIT));
    common
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file state store of a data directory, without a log (no cursors needed here).
    fn state_store(dir: &std::path::Path) -> Arc<dyn StateStore> {
        Arc::new(crate::runtime::state::FileStateStore::offline(dir))
    }
    use crate::config::{BatchConfig, OnError, TargetCommon, TruncatePolicy};
    use crate::mapping::Mapping;
    use serde_json::json;
    use std::sync::{Arc, Mutex};

    /// A request the imitation of Stripe received: method, path, form, idempotency key, status.
    type Seen = (String, String, String, String, u16);

    /// Customers by id, Stripe's idempotency replay, and scripted failures.
    #[derive(Default)]
    struct Fake {
        customers: BTreeMap<String, String>,
        created: u64,
        seen: Vec<Seen>,
        replies: HashMap<String, (String, u16, String)>,
        /// Apply the next write, then answer 500 anyway (the answer is lost).
        lose_next_answer: bool,
        /// Statuses the next searches answer instead of their result.
        failed_searches: Vec<u16>,
    }

    fn handle(
        fake: &mut Fake,
        method: &str,
        path: &str,
        query: &str,
        form: String,
        key: String,
    ) -> (u16, String) {
        if method == "GET" && !fake.failed_searches.is_empty() {
            let status = fake.failed_searches.remove(0);
            fake.seen.push((method.into(), path.into(), form, key, status));
            return (status, json!({"error": {"type": "api_error", "message": "search failed"}}).to_string());
        }
        if method == "GET" {
            let wanted = query.split("%27").nth(3).unwrap_or_default().to_owned();
            let data: Vec<Value> = fake
                .customers
                .iter()
                .filter(|(_, f)| {
                    f.contains(&format!("metadata[remix_id]={wanted}&"))
                        || f.ends_with(&format!("metadata[remix_id]={wanted}"))
                })
                .map(|(id, _)| json!({"id": id}))
                .collect();
            fake.seen.push((method.into(), path.into(), form, key, 200));
            return (200, json!({"data": data}).to_string());
        }
        let fingerprint = format!("{method} {path} {form}");
        if let Some((first, status, body)) = fake.replies.get(&key) {
            let answer = if *first == fingerprint {
                (*status, body.clone())
            } else {
                (
                    400,
                    json!({"error": {"type": "idempotency_error", "message": "different parameters"}})
                        .to_string(),
                )
            };
            fake.seen.push((method.into(), path.into(), form, key, answer.0));
            return answer;
        }
        let id = path.strip_prefix("/v1/customers").unwrap_or_default().trim_start_matches('/').to_owned();
        let (status, body) = match (method, id.is_empty()) {
            ("POST", true) => {
                fake.created += 1;
                let id = format!("cus_{}", fake.created);
                fake.customers.insert(id.clone(), form.clone());
                (200, json!({"id": id}).to_string())
            }
            ("POST", false) if fake.customers.contains_key(&id) => {
                fake.customers.insert(id.clone(), form.clone());
                (200, json!({"id": id}).to_string())
            }
            ("DELETE", false) if fake.customers.remove(&id).is_some() => {
                (200, json!({"id": id, "deleted": true}).to_string())
            }
            _ => (
                404,
                json!({"error": {"type": "invalid_request_error", "message": "No such customer"}})
                    .to_string(),
            ),
        };
        if method == "POST" {
            fake.replies.insert(key.clone(), (fingerprint, status, body.clone()));
        }
        let (status, body) =
            if std::mem::take(&mut fake.lose_next_answer) { (500, "lost".into()) } else { (status, body) };
        fake.seen.push((method.into(), path.into(), form, key, status));
        (status, body)
    }

    async fn start() -> (Arc<Mutex<Fake>>, String) {
        let fake: Arc<Mutex<Fake>> = Arc::default();
        let shared = Arc::clone(&fake);
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: axum::http::HeaderMap,
                  body: String| {
                let fake = Arc::clone(&shared);
                async move {
                    let key =
                        headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    let mut fake = fake.lock().unwrap();
                    let (status, body) =
                        handle(&mut fake, method.as_str(), uri.path(), uri.query().unwrap_or(""), body, key);
                    (axum::http::StatusCode::from_u16(status).unwrap(), body)
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (fake, base)
    }

    fn config(base: &str, fields: Value) -> crate::stripe::config::StripeTarget {
        let output = crate::stripe::config::StripeOutput {
            object: "customer".into(),
            key_field: "metadata.remix_id".into(),
            mapping: Mapping::compile(&fields).unwrap(),
        };
        crate::stripe::config::StripeTarget {
            common: TargetCommon {
                name: "crm".into(),
                rate_limit: None,
                batch: BatchConfig { records_max: Some(100), linger: Duration::ZERO },
                on_error: OnError::Pause,
                truncate: TruncatePolicy::Apply,
            },
            api_key: "sk_test".into(),
            api_base: base.into(),
            models: BTreeMap::from([("customer".to_owned(), output)]),
        }
    }

    fn item(offset: u64, op: Op, id: u64, name: &str) -> Item {
        Item {
            offset,
            timestamp_ms: 0,
            model: "customer".into(),
            source: "s".into(),
            op,
            key: json!({"metadata.remix_id": id}),
            data: (op == Op::Upsert).then(|| {
                json!({"metadata.remix_id": id, "email": format!("{id}@x.io"), "name": name})
                    .as_object()
                    .cloned()
                    .unwrap()
                    .into()
            }),
            unchanged: Vec::new(),
        }
    }

    fn batch(items: Vec<Item>) -> Batch {
        Batch { first_offset: items[0].offset, last_offset: items.last().unwrap().offset, items }
    }

    async fn opened(base: &str, dir: &std::path::Path, cursor: u64) -> StripeTarget {
        let fields = json!({"metadata.remix_id": "id", "email": "email", "name": "name"});
        let mut target = StripeTarget::new(&config(base, fields), state_store(dir)).unwrap();
        assert_eq!(target.open(cursor).await.unwrap(), cursor);
        target
    }

    fn writes(fake: &Mutex<Fake>) -> Vec<(String, String, String, u16)> {
        fake.lock()
            .unwrap()
            .seen
            .iter()
            .filter(|s| s.0 != "GET")
            .map(|s| (s.0.clone(), s.1.clone(), s.3.clone(), s.4))
            .collect()
    }

    fn w(method: &str, path: &str, key: &str, status: u16) -> (String, String, String, u16) {
        (method.into(), path.into(), key.into(), status)
    }

    #[tokio::test]
    async fn creates_updates_and_deletes_with_offset_keys() {
        let (fake, base) = start().await;
        let tmp = tempfile::tempdir().unwrap();
        let mut target = opened(&base, tmp.path(), 0).await;
        let items = vec![
            item(1, Op::Upsert, 7, "Ada"),
            item(2, Op::Upsert, 7, "Ada L"),
            item(4, Op::Delete, 7, ""),
            item(5, Op::Delete, 8, ""),
        ];
        target.apply(&batch(items)).await.unwrap();
        assert_eq!(
            writes(&fake),
            [
                w("POST", "/v1/customers", "crm:1", 200),
                w("POST", "/v1/customers/cus_1", "crm:2", 200),
                w("DELETE", "/v1/customers/cus_1", "", 200)
            ]
        );
        let seen = fake.lock().unwrap().seen.clone();
        assert_eq!(seen[0].0, "GET", "a key not in the journal is searched first");
        assert_eq!(seen[1].2, "email=7%40x.io&metadata[remix_id]=7&name=Ada");
        assert_eq!(seen.last().unwrap().0, "GET", "a delete of a key that is nowhere only searches");
        let truncate =
            Item { op: Op::Truncate, key: Value::Null, data: None, ..item(6, Op::Truncate, 0, "") };
        match target.apply(&batch(vec![truncate])).await {
            Err(TargetError::Permanent { item: Some(0), message, source: None }) => assert!(
                message.contains("a truncate cannot be applied to Stripe (set `truncate: ignore`"),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_failed_search_is_transient_unless_refused() {
        let (fake, base) = start().await;
        let tmp = tempfile::tempdir().unwrap();
        let mut target = opened(&base, tmp.path(), 0).await;
        let first = || batch(vec![item(1, Op::Upsert, 1, "A"), item(2, Op::Upsert, 2, "B")]);
        target.apply(&first()).await.unwrap();
        let next = || batch(vec![item(3, Op::Upsert, 3, "C"), item(4, Op::Upsert, 4, "D")]);
        fake.lock().unwrap().failed_searches = vec![503, 500];
        for _ in 0..2 {
            match target.apply(&next()).await {
                Err(TargetError::Transient { message, .. }) => {
                    assert!(message.contains("search"), "{message}")
                }
                other => panic!("a failed search must be retried: {other:?}"),
            }
        }
        // The connection lost during a search (nothing listens any more).
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let mut unreachable = opened(&format!("http://{closed}"), tmp.path(), 2).await;
        assert!(matches!(unreachable.apply(&next()).await, Err(TargetError::Transient { .. })));
        drop(unreachable);
        // A refused search is permanent, and blames the item whose key was looked up.
        fake.lock().unwrap().failed_searches = vec![400];
        let error = target.apply(&batch(vec![item(4, Op::Upsert, 4, "D")])).await.unwrap_err();
        assert!(matches!(error, TargetError::Permanent { item: Some(0), .. }), "{error:?}");
        target.apply(&next()).await.unwrap();
        let keys: Vec<String> = writes(&fake).into_iter().map(|w| w.2).collect();
        assert_eq!(keys, ["crm:1", "crm:2", "crm:3", "crm:4"]);
    }

    #[tokio::test]
    async fn a_crash_resends_the_request_without_an_outcome_and_skips_the_confirmed_ones() {
        let (fake, base) = start().await;
        let tmp = tempfile::tempdir().unwrap();
        let mut target = opened(&base, tmp.path(), 0).await;
        target.apply(&batch(vec![item(1, Op::Upsert, 1, "A")])).await.unwrap();
        let next = || {
            batch(vec![item(2, Op::Upsert, 1, "B"), item(3, Op::Upsert, 2, "C"), item(4, Op::Upsert, 3, "D")])
        };
        // Offset 2 is confirmed; offset 3 reaches Stripe but its answer is lost, and the node dies
        // before the cursor moves past 1.
        target.apply(&batch(vec![item(2, Op::Upsert, 1, "B")])).await.unwrap();
        fake.lock().unwrap().lose_next_answer = true;
        assert!(matches!(target.apply(&next()).await, Err(TargetError::Transient { .. })));
        drop(target);
        let mut target = opened(&base, tmp.path(), 1).await;
        target.apply(&next()).await.unwrap();
        assert_eq!(
            writes(&fake),
            [
                w("POST", "/v1/customers", "crm:1", 200),
                w("POST", "/v1/customers/cus_1", "crm:2", 200),
                w("POST", "/v1/customers", "crm:3", 500),
                w("POST", "/v1/customers", "crm:3", 200),
                w("POST", "/v1/customers", "crm:4", 200),
            ],
            "offset 2 was confirmed and is not sent again; offset 3 is resent as it was"
        );
        assert_eq!(fake.lock().unwrap().created, 3, "customer 2 was created once");
        // Stripe answered the resend from its idempotency cache, with the same customer.
        assert_eq!(target.ids.get("customer 2").map(String::as_str), Some("cus_2"));
    }

    #[tokio::test]
    async fn a_rewind_applies_again_under_new_keys() {
        let (fake, base) = start().await;
        let tmp = tempfile::tempdir().unwrap();
        let mut target = opened(&base, tmp.path(), 0).await;
        target.apply(&batch(vec![item(1, Op::Upsert, 1, "A"), item(2, Op::Upsert, 1, "B")])).await.unwrap();
        assert_eq!(target.rewind(0).await.unwrap(), 0);
        let mut target = opened(&base, tmp.path(), 0).await;
        target.apply(&batch(vec![item(1, Op::Upsert, 1, "A"), item(2, Op::Upsert, 1, "B")])).await.unwrap();
        let keys: Vec<(String, u16)> = writes(&fake).into_iter().map(|w| (w.2, w.3)).collect();
        let expected = [("crm:1", 200), ("crm:2", 200), ("crm:1:g1", 200), ("crm:2:g1", 200)];
        assert_eq!(keys, expected.map(|(k, s)| (k.to_owned(), s)));
    }

    #[tokio::test]
    async fn an_object_deleted_at_stripe_is_created_again() {
        let (fake, base) = start().await;
        let tmp = tempfile::tempdir().unwrap();
        let mut target = opened(&base, tmp.path(), 0).await;
        target.apply(&batch(vec![item(1, Op::Upsert, 1, "A")])).await.unwrap();
        fake.lock().unwrap().customers.clear();
        target.apply(&batch(vec![item(2, Op::Upsert, 1, "B")])).await.unwrap();
        assert_eq!(
            writes(&fake),
            [
                w("POST", "/v1/customers", "crm:1", 200),
                w("POST", "/v1/customers/cus_1", "crm:2", 404),
                w("POST", "/v1/customers", "crm:2:create", 200)
            ]
        );
        assert_eq!(target.ids.get("customer 1").map(String::as_str), Some("cus_2"));
    }

    #[tokio::test]
    async fn a_crash_between_the_404_and_the_create_creates_the_object_at_the_next_start() {
        let (fake, base) = start().await;
        let tmp = tempfile::tempdir().unwrap();
        let mut target = opened(&base, tmp.path(), 0).await;
        target.apply(&batch(vec![item(1, Op::Upsert, 1, "A")])).await.unwrap();
        fake.lock().unwrap().customers.clear();
        target.apply(&batch(vec![item(2, Op::Upsert, 1, "B")])).await.unwrap();
        drop(target);
        // The node died after the 404 to the update, before it recorded the create: the journal as
        // it was then (nothing may say offset 2 is done).
        let journal = tmp.path().join("targets/crm.stripe");
        let text = std::fs::read_to_string(&journal).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let create = lines.iter().position(|l| l.contains("crm:2:create")).expect("the create is journaled");
        std::fs::write(&journal, lines[..create].iter().map(|l| format!("{l}\n")).collect::<String>())
            .unwrap();
        let mut target = opened(&base, tmp.path(), 1).await;
        target.apply(&batch(vec![item(2, Op::Upsert, 1, "B"), item(3, Op::Upsert, 2, "C")])).await.unwrap();
        assert_eq!(
            writes(&fake),
            [
                w("POST", "/v1/customers", "crm:1", 200),
                w("POST", "/v1/customers/cus_1", "crm:2", 404),
                w("POST", "/v1/customers", "crm:2:create", 200),
                w("POST", "/v1/customers/cus_1", "crm:2", 404),
                w("POST", "/v1/customers", "crm:2:create", 200),
                w("POST", "/v1/customers", "crm:3", 200),
            ],
            "the update is resent, meets the 404 again, and the create follows (answered from the cache)"
        );
        assert_eq!(target.ids.get("customer 1").map(String::as_str), Some("cus_2"));
        assert_eq!(fake.lock().unwrap().created, 3, "customer 1 was created again once, customer 2 once");
    }

    #[test]
    fn the_key_must_map_to_key_field() {
        let tmp = tempfile::tempdir().unwrap();
        let error = StripeTarget::new(
            &config("http://127.0.0.1:1", json!({"email": "email"})),
            state_store(tmp.path()),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("must map the model key to key_field 'metadata.remix_id'"),
            "{error}"
        );
        StripeTarget::new(&config("http://127.0.0.1:1", Value::Null), state_store(tmp.path()))
            .expect("identity is fine");
        let target =
            StripeTarget::new(&config("http://127.0.0.1:1", Value::Null), state_store(tmp.path())).unwrap();
        assert!(!format!("{target:?}").contains("sk_test"), "the key stays out of Debug");
    }
}
