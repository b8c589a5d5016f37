//! The start-up checkpoint: the ingest indexes (idempotency keys, last positions, open dead letters)
//! and the sources' folds, as of a record of each log, so that a start reads only the records after
//! it instead of the whole log. Start-up time then no longer grows with the log's history.
//!
//! Format (state key `checkpoint indexes`, `<data_dir>/checkpoints/indexes`): the line
//! `remix-checkpoint indexes v1 crc32=<8 hex digits>`, then JSON (`Saved`); the CRC-32 covers the JSON.
//! The file is replaced atomically (temp file, fsync, rename).
//!
//! Why it is exact: the indexes change only in the durability hooks of appends, which run in the log's
//! order, and each hook marks its last record applied after its effects. So the indexes always hold a
//! fold of a prefix of each log, at least up to the mark; effects of later records that are in too
//! are recorded again, idempotently, when the start reads on from the mark.
//!
//! A checkpoint is used only when it checks out against the logs: each mark's record is still in its
//! log with the same time (a log that was replaced, repaired below the mark, or cut by recovery does
//! not match). Otherwise, or when it does not parse, the start reads the whole log (and says why).
//! Written after the start-up read when it read at least `CHECKPOINT_RECORDS_MIN` records, every
//! `CHECKPOINT_INTERVAL_SECONDS` while the log grew by as many, and at a clean shutdown.

use super::indexes::{Indexes, IndexesState, Mark};
use crate::connector::Observer;
use crate::runtime::engine::{EngineError, LogEngine};
use crate::runtime::state::{StateError, StateKey, StateStore};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A checkpoint is written when the log grew by at least this many records since the last one.
pub const CHECKPOINT_RECORDS_MIN: u64 = 100_000;
/// How often the node considers writing a checkpoint.
pub const CHECKPOINT_INTERVAL_SECONDS: u64 = 60;
/// The checkpoint's state key.
pub const KEY: StateKey = StateKey::Checkpoint("indexes");
const HEADER: &str = "remix-checkpoint indexes v1 crc32=";

/// What a checkpoint holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    indexes: IndexesState,
    /// Each folding source's saved state, by source name.
    folds: BTreeMap<String, serde_json::Value>,
}

/// Why a checkpoint was not used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Log(#[from] EngineError),
    #[error("the checkpoint is damaged: {0}")]
    Damaged(String),
    #[error("the checkpoint does not match the log: {0}")]
    Stale(String),
}

/// Indexes (and folds) as of the checkpoint, plus the records after it; or, without a usable
/// checkpoint, from the whole logs. Blocking except for the store's reads, which are awaited.
/// Returns the indexes and how many records were read.
pub async fn load(
    store: &dyn StateStore,
    main: &std::sync::Arc<dyn LogEngine>,
    dlq: &std::sync::Arc<dyn LogEngine>,
    observers: &[(String, Observer)],
) -> Result<(Indexes, u64), EngineError> {
    let restored = match restore(store, main.as_ref(), dlq.as_ref(), observers).await {
        Ok(Some(indexes)) => Some(indexes),
        Ok(None) => None,
        Err(e @ (CheckpointError::Damaged(_) | CheckpointError::Stale(_) | CheckpointError::State(_))) => {
            tracing::warn!("{e}; reading the whole log at start instead");
            None
        }
        Err(CheckpointError::Log(e)) => return Err(e),
    };
    let from_checkpoint = restored.is_some();
    let indexes = restored.unwrap_or_default();
    let (main, dlq) = (std::sync::Arc::clone(main), std::sync::Arc::clone(dlq));
    let observers: Vec<(String, Observer)> = observers.to_vec();
    let (indexes, read) = tokio::task::spawn_blocking(move || -> Result<(Indexes, u64), EngineError> {
        // A checkpoint without folds for a source folds from scratch: the whole log is read then.
        let state = indexes.state();
        let visited: Vec<String> = observers.iter().map(|(name, _)| name.clone()).collect();
        let mut visit = |change: &crate::record::Change| {
            for (name, observe) in &observers {
                if change.source == *name {
                    observe.observe(change);
                }
            }
        };
        let read_dlq = indexes.scan_dlq(dlq.as_ref(), state.applied_dlq.offset + 1)?;
        let read_main =
            indexes.scan_main(main.as_ref(), state.applied_main.offset + 1, &visited, &mut visit)?;
        Ok((indexes, read_dlq + read_main))
    })
    .await
    .map_err(|e| EngineError::Read(format!("the start-up read failed: {e}")))??;
    let how = if from_checkpoint { "after the checkpoint" } else { "(no checkpoint)" };
    tracing::info!("start: {read} log records read {how}");
    Ok((indexes, read))
}

async fn restore(
    store: &dyn StateStore,
    main: &dyn LogEngine,
    dlq: &dyn LogEngine,
    observers: &[(String, Observer)],
) -> Result<Option<Indexes>, CheckpointError> {
    let Some(bytes) = store.load(&KEY).await? else { return Ok(None) };
    let saved = decode(&bytes)?;
    check_mark(main, saved.indexes.applied_main, "main log")?;
    check_mark(dlq, saved.indexes.applied_dlq, "dead-letter log")?;
    for (name, fold) in observers {
        let Some(value) = saved.folds.get(name) else {
            return Err(CheckpointError::Stale(format!("it has no state of source {name}")));
        };
        fold.restore(value).map_err(|e| CheckpointError::Damaged(e.to_string()))?;
    }
    Ok(Some(Indexes::from_state(saved.indexes)))
}

/// The mark's record must be in the log, with the same time (0: nothing was applied yet).
fn check_mark(log: &dyn LogEngine, mark: Mark, which: &str) -> Result<(), CheckpointError> {
    if mark.offset == 0 {
        return Ok(());
    }
    let durable = log.durable_offset();
    if mark.offset > durable {
        return Err(CheckpointError::Stale(format!(
            "it covers the {which} up to offset {}, which ends at {durable}",
            mark.offset
        )));
    }
    if mark.offset < log.first_offset() {
        // Retention removed the mark's record: what follows it is still read from the log's start.
        return Ok(());
    }
    let mut found = None;
    log.scan_blocking(mark.offset, &mut |record| {
        found = Some(record.timestamp_ms);
        false
    })?;
    match found {
        Some(time_ms) if time_ms == mark.time_ms => Ok(()),
        other => Err(CheckpointError::Stale(format!(
            "offset {} of the {which} was written at {} ms, the checkpoint says {} ms",
            mark.offset,
            other.map_or("never".into(), |t| t.to_string()),
            mark.time_ms
        ))),
    }
}

/// Saves the indexes and folds now.
pub async fn save(
    store: &dyn StateStore,
    indexes: &Indexes,
    observers: &[(String, Observer)],
) -> Result<Mark, StateError> {
    // The marks are taken before the folds are saved: a fold then holds at least what the marks say.
    let state = indexes.state();
    let mark = state.applied_main;
    let folds = observers.iter().map(|(name, fold)| (name.clone(), fold.save())).collect();
    let bytes = encode(&Saved { indexes: state, folds });
    store.store(&KEY, bytes).await?;
    Ok(mark)
}

fn encode(saved: &Saved) -> Vec<u8> {
    let json = serde_json::to_vec(saved).expect("a checkpoint serializes");
    let mut bytes = format!("{HEADER}{:08x}\n", crc32fast::hash(&json)).into_bytes();
    bytes.extend_from_slice(&json);
    bytes
}

fn decode(bytes: &[u8]) -> Result<Saved, CheckpointError> {
    let damaged = |what: &str| CheckpointError::Damaged(what.to_owned());
    let newline = bytes.iter().position(|&b| b == b'\n').ok_or_else(|| damaged("no header line"))?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| damaged("the header is not text"))?;
    let crc = header.strip_prefix(HEADER).ok_or_else(|| damaged("unknown header (another version?)"))?;
    let lowercase_hex =
        crc.len() == 8 && crc.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !lowercase_hex {
        return Err(damaged("the header's CRC is not 8 lowercase hex digits"));
    }
    let crc = u32::from_str_radix(crc, 16).map_err(|_| damaged("the header's CRC is not hex"))?;
    let json = &bytes[newline + 1..];
    if crc32fast::hash(json) != crc {
        return Err(damaged("CRC mismatch"));
    }
    serde_json::from_slice(json).map_err(|e| CheckpointError::Damaged(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_decodes_and_any_flipped_bit_is_refused() {
        let saved = Saved { indexes: IndexesState::default(), folds: BTreeMap::new() };
        let bytes = encode(&saved);
        assert!(decode(&bytes).is_ok());
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[i] ^= 1 << bit;
                assert!(decode(&flipped).is_err(), "byte {i} bit {bit}");
            }
        }
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "cut at {len}");
        }
    }
}
