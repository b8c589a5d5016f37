//! The `rabbitmq` target: every change is a persistent message (`delivery_mode` 2) published to a
//! durable topic exchange (`exchange`, declared if missing) with the routing key from the template
//! (`{model}`), its value as the body (see [`crate::runtime::delivery::message`]; empty for a
//! tombstone), `message_id = <target>:<offset>` (`:g<G>` after the `G`-th rewind), `content_type:
//! application/json`, and headers `remix-op`, `remix-offset`, `remix-target`, `remix-model`,
//! `remix-key` (and `remix-generation` after a rewind). Publisher confirms: up to `in_flight_max`
//! publishes await their confirm at once; the cursor moves only once every message of the batch is
//! confirmed. Messages are `mandatory`: one that no queue takes comes back and pauses the target
//! (or goes to the DLQ), instead of being dropped by the broker.
//!
//! **At least once, with a stable id.** RabbitMQ cannot deduplicate classic or quorum queues, so a
//! batch sent again after a crash or a lost connection (some of its messages may have been confirmed
//! already) delivers those messages twice, identical, with the same `message_id`: consumers
//! deduplicate by it. Each key's messages are published in log order on one channel, so the first
//! copy of each message arrives in order.
//!
//! **Rewind** delivers again under new ids: each rewind starts a generation (kept in the state store,
//! the `rabbitmq` journal of the target), so a consumer that deduplicates does not drop the
//! re-delivered messages.

use super::config;
use crate::error_chain;
use crate::runtime::delivery::message::{
    self, message, message_id, op_name, MessageFormat, Template, HEADER_MODEL, HEADER_OFFSET, HEADER_OP,
    HEADER_TARGET,
};
use crate::runtime::delivery::{Batch, Capabilities, Guarantee, Target, TargetError};
use crate::runtime::state::{StateKey, StateStore};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use lapin::{Confirmation, PublisherConfirm};
use std::collections::VecDeque;
use std::sync::Arc;

/// The header holding the message key.
pub const HEADER_KEY: &str = "remix-key";
pub use crate::runtime::delivery::message::HEADER_GENERATION;
/// The most messages one apply takes.
pub const BATCH_RECORDS_MAX: usize = 10_000;

/// Publishes to RabbitMQ; see the module docs.
#[derive(Debug)]
pub struct RabbitmqTarget {
    name: String,
    url: String,
    exchange: String,
    routing_key: Template,
    format: MessageFormat,
    in_flight_max: usize,
    session: Option<(Connection, Channel)>,
    state: Arc<dyn StateStore>,
    journal: StateKey,
    generation: u64,
}

/// Declares the durable topic exchange (a no-op when it exists as such).
pub(super) async fn declare(channel: &Channel, exchange: &str) -> lapin::Result<()> {
    let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel.exchange_declare(exchange.into(), ExchangeKind::Topic, options, FieldTable::default()).await
}

impl RabbitmqTarget {
    pub fn new(config: &config::RabbitmqTarget, state: Arc<dyn StateStore>) -> RabbitmqTarget {
        let name = config.common.name.clone();
        RabbitmqTarget {
            journal: StateKey::TargetJournal { target: name.clone(), name: "rabbitmq" },
            name,
            url: config.url.clone(),
            exchange: config.exchange.clone(),
            routing_key: config.routing_key.clone(),
            format: config.format.clone(),
            in_flight_max: config.in_flight_max,
            session: None,
            state,
            generation: 0,
        }
    }

    async fn channel(&mut self) -> Result<Channel, TargetError> {
        if let Some((connection, channel)) = &self.session {
            if connection.status().connected() && channel.status().connected() {
                return Ok(channel.clone());
            }
        }
        self.session = None;
        let transient = |what: &str, e: lapin::Error| {
            TargetError::transient(format!("rabbitmq: {what}: {}", error_chain(&e))).caused_by(e)
        };
        let connection = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .map_err(|e| transient("cannot connect", e))?;
        let channel = connection.create_channel().await.map_err(|e| transient("channel", e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| transient("confirm.select", e))?;
        declare(&channel, &self.exchange).await.map_err(|e| {
            TargetError::permanent(
                None,
                format!(
                    "rabbitmq: cannot declare the exchange {} (durable, topic): {}",
                    self.exchange,
                    error_chain(&e)
                ),
            )
            .caused_by(e)
        })?;
        self.session = Some((connection, channel.clone()));
        Ok(channel)
    }

    async fn store_generation(&self) -> Result<(), TargetError> {
        message::store_generation(&*self.state, &self.journal, "rabbitmq", self.generation).await
    }

    fn properties(
        &self,
        item_offset: u64,
        model: &str,
        op: &'static str,
        key: Option<&str>,
    ) -> BasicProperties {
        let mut headers = FieldTable::default();
        let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()));
        headers.insert(ShortString::from(HEADER_OP), text(op));
        headers.insert(ShortString::from(HEADER_OFFSET), text(&item_offset.to_string()));
        headers.insert(ShortString::from(HEADER_TARGET), text(&self.name));
        headers.insert(ShortString::from(HEADER_MODEL), text(model));
        if let Some(key) = key {
            headers.insert(ShortString::from(HEADER_KEY), text(key));
        }
        if self.generation > 0 {
            headers.insert(ShortString::from(HEADER_GENERATION), text(&self.generation.to_string()));
        }
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("application/json"))
            .with_message_id(ShortString::from(message_id(&self.name, item_offset, self.generation)))
            .with_headers(headers)
    }

    async fn send(&mut self, batch: &Batch) -> Result<(), TargetError> {
        let channel = self.channel().await?;
        let mut in_flight: VecDeque<(usize, PublisherConfirm)> = VecDeque::new();
        for (index, item) in batch.items.iter().enumerate() {
            if in_flight.len() >= self.in_flight_max {
                let (index, confirm) = in_flight.pop_front().expect("not empty");
                confirmed(index, confirm).await?;
            }
            let message = message(&self.format, item);
            let properties =
                self.properties(item.offset, &item.model, op_name(item.op), message.key.as_deref());
            let routing_key = self.routing_key.render(&item.model, &item.source);
            let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
            let body = message.value.unwrap_or_default();
            let confirm = channel
                .basic_publish(self.exchange.as_str().into(), routing_key.into(), options, &body, properties)
                .await
                .map_err(|e| {
                    TargetError::transient(format!("rabbitmq: publish: {}", error_chain(&e))).caused_by(e)
                })?;
            in_flight.push_back((index, confirm));
        }
        while let Some((index, confirm)) = in_flight.pop_front() {
            confirmed(index, confirm).await?;
        }
        Ok(())
    }
}

/// Waits for a publish's confirm: a nack is transient (the broker could not store it), a message
/// returned unroutable is permanent (no queue is bound for its routing key).
async fn confirmed(index: usize, confirm: PublisherConfirm) -> Result<(), TargetError> {
    match confirm.await {
        Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => Ok(()),
        Ok(Confirmation::Ack(Some(returned))) | Ok(Confirmation::Nack(Some(returned))) => {
            Err(TargetError::permanent(
                Some(index),
                format!(
                    "rabbitmq: no queue takes routing key '{}' on exchange '{}' ({} {}): bind a queue, or leave the model out",
                    returned.delivery.routing_key, returned.delivery.exchange, returned.reply_code, returned.reply_text
                ),
            ))
        }
        Ok(Confirmation::Nack(None)) => Err(TargetError::transient("rabbitmq: the broker refused (nack) a message")),
        Err(e) => Err(TargetError::transient(format!("rabbitmq: confirm: {}", error_chain(&e))).caused_by(e)),
    }
}

impl Target for RabbitmqTarget {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            collapse: false,
            guarantee: Guarantee::AtLeastOnceStableId,
            batch_records_max: BATCH_RECORDS_MAX,
            batch_records_default: BATCH_RECORDS_MAX,
        }
    }

    async fn open(&mut self, cursor: u64) -> Result<u64, TargetError> {
        self.generation = message::load_generation(&*self.state, &self.journal, "rabbitmq").await?;
        Ok(cursor)
    }

    async fn apply(&mut self, batch: &Batch) -> Result<(), TargetError> {
        let result = self.send(batch).await;
        if result.as_ref().is_err_and(TargetError::is_transient) {
            self.session = None;
        }
        result
    }

    async fn rewind(&mut self, offset: u64) -> Result<u64, TargetError> {
        self.generation += 1;
        self.store_generation().await?;
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
