//! The `nats` target: every change is a JetStream message on the `subject` template's subject
//! (`remix.{model}`), its value in the payload (see [`crate::runtime::delivery::message`]; empty for
//! a tombstone), and headers `remix-op`, `remix-offset`, `remix-target`, `remix-model`, `remix-key`
//! (the key; NATS messages have no key of their own), `Nats-Msg-Id: <target>:<offset>` (with `:g<G>`
//! after the `G`-th rewind, and `remix-generation: G`). The stream (`stream`) is created if missing,
//! with the subject's wildcard (`remix.*`). Publishes are pipelined: up to `in_flight_max` await
//! their acks at once.
//!
//! **Exactly once, beyond the duplicate window.** `Nats-Msg-Id` lets JetStream drop a re-send inside
//! its duplicate window (2 minutes by default); the target does not rely on it. Before it publishes
//! (at start and after any error) it reads the last message of its subjects and resumes after that
//! message's `remix-offset` (the stream's last sequence read before and after that message must agree,
//! so publishes still landing from a killed process cannot pair one with an older other); and every publish carries `Nats-Expected-Last-Sequence` (the previous
//! one's), so the stream takes the target's messages only as an unbroken sequence: when one fails,
//! every later one in flight is refused too ("wrong last sequence"), and the batch is sent again
//! from the message after the last the stream holds. So the stream holds each change once, in log
//! order, after any crash or outage of any length. This needs the stream to be the target's own:
//! another publisher on it makes the sequence check fail (the target retries, showing the error);
//! a last message of another target is refused (a permanent error).
//!
//! **Rewind** delivers again: each rewind starts a new generation (kept in the state store, the
//! `nats` journal of the target), whose messages are published anew after what the stream holds.
//! The last message of an older generation does not count as delivered.

use super::config;
use crate::error_chain;
use crate::runtime::delivery::message::{
    self, message, message_id, op_name, MessageFormat, Template, HEADER_MODEL, HEADER_OFFSET, HEADER_OP,
    HEADER_TARGET,
};
use crate::runtime::delivery::{Batch, Capabilities, Guarantee, Target, TargetError};
use crate::runtime::state::{StateKey, StateStore};
use async_nats::jetstream::message::{PublishMessage, StreamMessage};
use async_nats::jetstream::{self, context::PublishErrorKind};
use async_nats::HeaderMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// The header holding the message key.
pub const HEADER_KEY: &str = "remix-key";
pub use crate::runtime::delivery::message::HEADER_GENERATION;
/// The most messages one apply takes.
pub const BATCH_RECORDS_MAX: usize = 10_000;
/// How long connecting may take.
const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How long a JetStream request or a publish's ack may take.
const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// How many times the position is read before a stream that keeps changing is an error.
const POSITION_READS_MAX: usize = 100;
/// The pause between two reads of a changing position.
const POSITION_SETTLE_MS: u64 = 50;

/// Publishes to JetStream; see the module docs.
#[derive(Debug)]
pub struct NatsTarget {
    name: String,
    servers: Vec<String>,
    subject: Template,
    stream: String,
    stream_subject: String,
    format: MessageFormat,
    in_flight_max: usize,
    context: Option<jetstream::Context>,
    state: Arc<dyn StateStore>,
    journal: StateKey,
    generation: u64,
    /// What the stream holds, read at start and after an error.
    position: Option<Position>,
}

/// The stream's last sequence, and the last offset of the current generation it holds (0: none).
#[derive(Debug, Clone, Copy)]
struct Position {
    last_sequence: u64,
    offset: u64,
}

impl NatsTarget {
    pub fn new(config: &config::NatsTarget, state: Arc<dyn StateStore>) -> NatsTarget {
        let name = config.common.name.clone();
        NatsTarget {
            journal: StateKey::TargetJournal { target: name.clone(), name: "nats" },
            name,
            servers: config.servers.clone(),
            subject: config.subject.clone(),
            stream: config.stream.clone(),
            stream_subject: config.stream_subject(),
            format: config.format.clone(),
            in_flight_max: config.in_flight_max,
            context: None,
            state,
            generation: 0,
            position: None,
        }
    }

    async fn context(&mut self) -> Result<jetstream::Context, TargetError> {
        if let Some(context) = &self.context {
            return Ok(context.clone());
        }
        let addresses: Vec<async_nats::ServerAddr> =
            self.servers.iter().filter_map(|s| s.parse().ok()).collect();
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .request_timeout(Some(Duration::from_millis(REQUEST_TIMEOUT_MS)))
            .connect(addresses)
            .await
            .map_err(|e| {
                TargetError::transient(format!("nats: cannot connect: {}", error_chain(&e))).caused_by(e)
            })?;
        let context = jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
            .max_ack_inflight(self.in_flight_max)
            .backpressure_on_inflight(true)
            .build(client);
        let config = jetstream::stream::Config {
            name: self.stream.clone(),
            subjects: vec![self.stream_subject.clone()],
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        context.get_or_create_stream(config).await.map_err(|e| {
            TargetError::transient(format!("nats: stream {}: {}", self.stream, error_chain(&e))).caused_by(e)
        })?;
        self.context = Some(context.clone());
        Ok(context)
    }

    /// Reads what the stream holds of this target (its last message).
    async fn position(&mut self, context: &jetstream::Context) -> Result<Position, TargetError> {
        if let Some(position) = self.position {
            return Ok(position);
        }
        let (last_sequence, last) = self.read_last(context).await?;
        let mut position = Position { last_sequence, offset: 0 };
        if let Some(last) = last {
            let header = |name: &str| last.headers.get(name).map(|v| v.as_str().to_owned());
            let owner = header(HEADER_TARGET).unwrap_or_default();
            if owner != self.name {
                return Err(TargetError::permanent(
                    None,
                    format!(
                        "nats: the stream {}'s last message (sequence {}) was not published by this target \
                         ({HEADER_TARGET}: '{owner}'): give each target a stream of its own",
                        self.stream, last.sequence
                    ),
                ));
            }
            let generation = header(HEADER_GENERATION).and_then(|g| g.parse().ok()).unwrap_or(0u64);
            let offset = header(HEADER_OFFSET).and_then(|o| o.parse().ok()).unwrap_or(0u64);
            if generation > self.generation {
                // The state store lost the generation (a new data directory): the stream knows it.
                self.generation = generation;
                self.store_generation().await?;
            }
            if generation == self.generation {
                position.offset = offset;
            }
        }
        self.position = Some(position);
        Ok(position)
    }

    /// The stream's last sequence and its last message (none when empty), read as one state: the
    /// sequence before and after reading the message must agree. Publishes of a killed process (or
    /// this one's, in flight when a publish failed) can still be stored while the position is read;
    /// a last message newer than the last sequence paired with it would shift every expected
    /// sequence, and a later publish in flight could then be taken out of place, past a gap.
    async fn read_last(
        &self,
        context: &jetstream::Context,
    ) -> Result<(u64, Option<StreamMessage>), TargetError> {
        let stream_error = |what: &str, e: &dyn std::error::Error| {
            TargetError::transient(format!("nats: stream {}: {what}: {}", self.stream, error_chain(e)))
        };
        let mut stream = context.get_stream(&self.stream).await.map_err(|e| stream_error("info", &e))?;
        let (mut last_sequence, mut messages) =
            stream_state(&mut stream).await.map_err(|e| stream_error("info", &e))?;
        for _ in 0..POSITION_READS_MAX {
            let last = if messages == 0 {
                None
            } else {
                let last = stream
                    .get_last_raw_message_by_subject(&self.stream_subject)
                    .await
                    .map_err(|e| stream_error("its last message", &e))?;
                Some(last)
            };
            let after = stream_state(&mut stream).await.map_err(|e| stream_error("info", &e))?;
            if after == (last_sequence, messages) {
                assert!(last.as_ref().is_none_or(|m| m.sequence <= last_sequence));
                return Ok((last_sequence, last));
            }
            (last_sequence, messages) = after;
            tokio::time::sleep(Duration::from_millis(POSITION_SETTLE_MS)).await;
        }
        Err(TargetError::transient(format!(
            "nats: stream {}: its last sequence kept moving while the target read it ({} reads, now {}): \
             is another publisher writing to it?",
            self.stream, POSITION_READS_MAX, last_sequence
        )))
    }

    async fn store_generation(&self) -> Result<(), TargetError> {
        message::store_generation(&*self.state, &self.journal, "nats", self.generation).await
    }

    async fn send(&mut self, batch: &Batch) -> Result<(), TargetError> {
        let context = self.context().await?;
        let position = self.position(&context).await?;
        let mut expected = position.last_sequence;
        let mut in_flight = VecDeque::with_capacity(self.in_flight_max.min(batch.items.len()));
        let mut last_offset = position.offset;
        for (index, item) in batch.items.iter().enumerate() {
            if item.offset <= position.offset {
                continue;
            }
            if in_flight.len() >= self.in_flight_max {
                let (index, ack) = in_flight.pop_front().expect("not empty");
                confirm(index, ack).await?;
            }
            let message = message(&self.format, item);
            let mut headers = HeaderMap::new();
            headers.insert(HEADER_OP, op_name(item.op));
            headers.insert(HEADER_OFFSET, item.offset.to_string().as_str());
            headers.insert(HEADER_TARGET, self.name.as_str());
            headers.insert(HEADER_MODEL, item.model.as_str());
            if let Some(key) = &message.key {
                headers.insert(HEADER_KEY, key.as_str());
            }
            if self.generation > 0 {
                headers.insert(HEADER_GENERATION, self.generation.to_string().as_str());
            }
            let publish = PublishMessage::build()
                .payload(message.value.unwrap_or_default().into())
                .headers(headers)
                .message_id(message_id(&self.name, item.offset, self.generation))
                .expected_last_sequence(expected);
            let subject = self.subject.render(&item.model, &item.source);
            let ack = context.send_publish(subject, publish).await.map_err(|e| publish_error(index, e))?;
            in_flight.push_back((index, ack));
            expected += 1;
            last_offset = item.offset;
        }
        while let Some((index, ack)) = in_flight.pop_front() {
            confirm(index, ack).await?;
        }
        self.position = Some(Position { last_sequence: expected, offset: last_offset });
        Ok(())
    }
}

/// The stream's last sequence and message count, read afresh.
async fn stream_state(
    stream: &mut jetstream::stream::Stream,
) -> Result<(u64, u64), jetstream::stream::InfoError> {
    let state = &stream.info().await?.state;
    Ok((state.last_sequence, state.messages))
}

async fn confirm(index: usize, ack: jetstream::context::PublishAckFuture) -> Result<(), TargetError> {
    ack.await.map(|_| ()).map_err(|e| publish_error(index, e))
}

/// A message too large for the server is permanent (that item); anything else is transient.
fn publish_error(index: usize, e: jetstream::context::PublishError) -> TargetError {
    let message = format!("nats: publish: {}", error_chain(&e));
    match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => TargetError::permanent(Some(index), message).caused_by(e),
        _ => TargetError::transient(message).caused_by(e),
    }
}

impl Target for NatsTarget {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            collapse: false,
            guarantee: Guarantee::OffsetNamed,
            batch_records_max: BATCH_RECORDS_MAX,
            batch_records_default: BATCH_RECORDS_MAX,
        }
    }

    async fn open(&mut self, cursor: u64) -> Result<u64, TargetError> {
        self.generation = message::load_generation(&*self.state, &self.journal, "nats").await?;
        self.position = None;
        let context = self.context().await?;
        let position = self.position(&context).await?;
        Ok(cursor.max(position.offset))
    }

    async fn apply(&mut self, batch: &Batch) -> Result<(), TargetError> {
        let result = self.send(batch).await;
        if result.is_err() {
            // Read the stream again before the next publish; a lost connection reconnects itself.
            self.position = None;
        }
        result
    }

    async fn rewind(&mut self, offset: u64) -> Result<u64, TargetError> {
        self.generation += 1;
        self.store_generation().await?;
        self.position = None;
        Ok(offset)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn message_ids_carry_the_generation() {
        assert_eq!(super::message_id("sink", 7, 0), "sink:7");
        assert_eq!(super::message_id("sink", 7, 2), "sink:7:g2");
    }
}
