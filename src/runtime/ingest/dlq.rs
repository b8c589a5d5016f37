//! The dead-letter queue's operations: list, show, retry (remix in and validation run again, e.g.
//! after a schema fix), drop. Dead letters live in the log (kind `KIND_DEAD_LETTER`); resolving one
//! appends a `KIND_DEAD_LETTER_RESOLVED` record, so the DLQ survives restarts like everything else.
//!
//! A retry never puts an older state after a newer one (per-key order): when the log holds a change
//! that supersedes the dead letter (`superseded.rs`), the retry answers `superseded` and logs
//! nothing. `retry --all` checks every entry in one scan of the log.

use super::context::{ChangeBatch, Ingest};
use super::indexes::{Claim, DlqEntry, IdempotencyKey};
use super::remix_in::{remix_in, Origin, RemixOutcome};
use super::superseded::{superseding, Pending, Since};
use crate::record::{self, Change, DeadLetterResolved, Decoded, FieldError, Op};
use crate::runtime::engine::EngineError;
use serde::Serialize;
use std::sync::Arc;

/// The outcome of a retry.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Retried {
    /// The object is valid now and was logged at `offset`.
    Logged { id: u64, offset: u64 },
    /// Still invalid: the entry stays in the DLQ.
    Invalid { id: u64, errors: Vec<FieldError> },
    /// A newer change of the same key (or a truncate of its model) is in the log, at `newer_offset`:
    /// logging the dead letter now would put the older state back. The entry stays in the DLQ (drop
    /// it, or rewind the targets that need it).
    Superseded { id: u64, newer_offset: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("no open dead letter with id {0}")]
    NotFound(u64),
    #[error("{0}")]
    Other(String),
}

/// The dead letter's JSON form for `remix dlq list --json`: `{id, time, source, position, model,
/// errors, input}`.
pub fn entry_json(entry: &DlqEntry) -> serde_json::Value {
    serde_json::json!({
        "id": entry.id, "time": crate::time::format_ms(entry.time_ms), "source": entry.letter.source,
        "position": entry.letter.position, "model": entry.letter.model, "route": entry.letter.route,
        "errors": entry.letter.errors, "input": entry.letter.input,
    })
}

pub async fn retry(ingest: &Ingest, id: u64) -> Result<Retried, DlqError> {
    retry_many(ingest, &[id]).await.pop().expect("one result per id")
}

/// Retries the dead letters `ids` (in that order; oldest first keeps per-key order), checking all of
/// them against the log in one scan. One result per id, in order.
pub async fn retry_many(ingest: &Ingest, ids: &[u64]) -> Vec<Result<Retried, DlqError>> {
    let mut results: Vec<Option<Result<Retried, DlqError>>> = Vec::with_capacity(ids.len());
    // (index in `results`, id, the change it would log, where superseding changes begin)
    let mut ready: Ready = Vec::new();
    for &id in ids {
        match prepare(ingest, id).await {
            Ok(Ok((change, since))) => {
                ready.push((results.len(), id, change, since));
                results.push(None);
            }
            Ok(Err(errors)) => results.push(Some(Ok(Retried::Invalid { id, errors }))),
            Err(e) => results.push(Some(Err(e))),
        }
    }
    let slots: Vec<usize> = ready.iter().map(|(slot, ..)| *slot).collect();
    let (ready, found) = check_superseded(ingest, ready).await;
    match found {
        Ok(found) => {
            for ((slot, id, change, _), newer) in ready.into_iter().zip(found) {
                results[slot] = Some(match newer {
                    Some(newer_offset) => Ok(Retried::Superseded { id, newer_offset }),
                    None => log_retried(ingest, id, change).await,
                });
            }
        }
        Err(e) => {
            for slot in slots {
                results[slot] = Some(Err(DlqError::Other(e.to_string())));
            }
        }
    }
    results.into_iter().map(|r| r.expect("every slot is filled")).collect()
}

/// The entry, the change it would log now (or why it is still invalid), and where changes that
/// supersede it begin.
async fn prepare(ingest: &Ingest, id: u64) -> Result<Result<(Change, Since), Vec<FieldError>>, DlqError> {
    let entry = ingest.indexes().dead_letter(id).ok_or(DlqError::NotFound(id))?;
    let change = match rebuild_change(ingest, &entry).await? {
        Ok(change) => change,
        Err(errors) => return Ok(Err(errors)),
    };
    let since = match entry.letter.route.starts_with("target:") {
        true => Since::Offset(letter_offset(&entry)?),
        false => Since::Time(entry.time_ms),
    };
    Ok(Ok((change, since)))
}

/// The dead letters ready to be logged, checked against the log.
type Ready = Vec<(usize, u64, Change, Since)>;

/// [`superseding`] on a blocking thread; `ready` comes back with the answer.
async fn check_superseded(ingest: &Ingest, ready: Ready) -> (Ready, Result<Vec<Option<u64>>, EngineError>) {
    let engine = Arc::clone(ingest.engine());
    let scan = move || {
        let pending: Vec<Pending<'_>> =
            ready.iter().map(|(_, id, change, since)| Pending { id: *id, change, since: *since }).collect();
        let found = superseding(engine.as_ref(), &pending);
        (ready, found)
    };
    match tokio::task::spawn_blocking(scan).await {
        Ok(checked) => checked,
        // The scan panicked: nothing is logged, each entry reports it.
        Err(e) => (Vec::new(), Err(EngineError::Read(format!("the superseded scan failed: {e}")))),
    }
}

/// Logs a retried dead letter's change under the idempotency key `dlq:<id>` and resolves the entry.
async fn log_retried(ingest: &Ingest, id: u64, mut change: Change) -> Result<Retried, DlqError> {
    let key = format!("dlq:{id}");
    let scoped = IdempotencyKey::new(&change.source, &change.model, &key);
    let offset = match ingest.claim(&scoped).await {
        Claim::Done(landed) => landed.first_offset,
        Claim::Proceed(guard) => {
            change.idempotency_key = Some(key.clone());
            let mut batch = ChangeBatch::new();
            batch.push(&change);
            batch.hold(guard);
            let source = change.source.clone();
            let appended = ingest.append(&source, batch).await.map_err(|e| DlqError::Other(e.to_string()))?;
            appended.first_offset
        }
    };
    let resolved = DeadLetterResolved { id, how: "retried".into(), offset: Some(offset) };
    ingest.dead_letters().resolve(resolved).await.map_err(|e| DlqError::Other(e.to_string()))?;
    Ok(Retried::Logged { id, offset })
}

pub async fn drop_entry(ingest: &Ingest, id: u64) -> Result<(), DlqError> {
    ingest.indexes().dead_letter(id).ok_or(DlqError::NotFound(id))?;
    let resolved = DeadLetterResolved { id, how: "dropped".into(), offset: None };
    ingest.dead_letters().resolve(resolved).await.map_err(|e| DlqError::Other(e.to_string()))
}

/// The change a dead letter becomes now: a source's input is remixed and validated again with the
/// current configuration; a target's dead letter re-sends the original change (to every target).
async fn rebuild_change(
    ingest: &Ingest,
    entry: &DlqEntry,
) -> Result<Result<Change, Vec<FieldError>>, DlqError> {
    let config = &ingest.config;
    let letter = &entry.letter;
    if letter.route.starts_with("target:") {
        let offset = letter_offset(entry)?;
        let record = crate::runtime::engine::read_one(ingest.engine(), offset)
            .await
            .map_err(|e| DlqError::Other(e.to_string()))?;
        return match record.map(|r| record::decode(r.kind, &r.payload)) {
            Some(Decoded::Change(change)) => Ok(Ok(change)),
            _ => Err(DlqError::Other(format!("the change at offset {offset} is no longer in the log"))),
        };
    }
    let source = config
        .source(&letter.source)
        .ok_or_else(|| DlqError::Other(format!("source '{}' is no longer configured", letter.source)))?;
    // A dead letter's route is the name of the source input it came through.
    let inputs = source.spec.inputs();
    let binding = inputs
        .iter()
        .find(|input| input.name == letter.route)
        .map(|input| input.binding)
        .ok_or_else(|| {
            DlqError::Other(format!("source '{}' has no route '{}' any more", letter.source, letter.route))
        })?;
    let model = config
        .model(&binding.model)
        .ok_or_else(|| DlqError::Other(format!("model '{}' is gone", binding.model)))?;
    let origin = Origin { source: &letter.source, position: letter.position.clone(), idempotency_key: None };
    Ok(match remix_in(binding, model, &letter.input, letter.op.unwrap_or(Op::Upsert), origin) {
        RemixOutcome::Valid(change) => Ok(change),
        RemixOutcome::Invalid(errors) => Err(errors),
    })
}

/// The log offset of the change a target dead-lettered.
fn letter_offset(entry: &DlqEntry) -> Result<u64, DlqError> {
    entry.letter.input.get("offset").and_then(|o| o.as_u64()).ok_or_else(|| {
        DlqError::Other(format!("dead letter {} of {} has no offset", entry.id, entry.letter.route))
    })
}
