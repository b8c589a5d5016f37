//! Stripe events: what Remix reads of them, and how an event's identity and age are written into the
//! change records it becomes (the record's `position`), so both survive restarts in the log itself.

use super::order::Order;
use crate::record::Op;
use serde_json::Value;

/// The parts of a Stripe event (`{"id", "object": "event", "type", "created", "data": {"object"}}`)
/// that Remix uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `evt_...`.
    pub id: String,
    /// The event type, e.g. `customer.updated`.
    pub kind: String,
    /// Unix seconds.
    pub created: i64,
    /// `data.object`: the object as of the event.
    pub object: Value,
    /// `data.object.object`, e.g. `customer`, `checkout.session`: what the event is routed by.
    pub object_type: String,
}

/// Why a body is not a Stripe event Remix can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the event is not a JSON object")]
    NotObject,
    #[error("the event has no '{0}' string")]
    MissingText(&'static str),
    #[error("the event has no integer 'created'")]
    MissingCreated,
    #[error("the event has no 'data.object' object")]
    MissingObject,
    #[error("the event's data.object has no 'object' type")]
    MissingObjectType,
}

impl Event {
    pub fn parse(value: &Value) -> Result<Event, EventError> {
        let Value::Object(event) = value else { return Err(EventError::NotObject) };
        let text = |name: &'static str| match event.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(EventError::MissingText(name)),
        };
        let id = text("id")?;
        let kind = text("type")?;
        let created = event.get("created").and_then(Value::as_i64).ok_or(EventError::MissingCreated)?;
        let object = match event.get("data").and_then(|d| d.get("object")) {
            Some(object @ Value::Object(_)) => object.clone(),
            _ => return Err(EventError::MissingObject),
        };
        let object_type = match object.get("object") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(EventError::MissingObjectType),
        };
        Ok(Event { id, kind, created, object, object_type })
    }

    /// `*.deleted` events delete the object; every other event upserts it.
    pub fn op(&self) -> Op {
        if self.kind.ends_with(".deleted") {
            Op::Delete
        } else {
            Op::Upsert
        }
    }

    /// How new the state this event carries is: its `created` time, then the object's own
    /// `updated` version field when it has one (events of one second are otherwise equal).
    pub fn order(&self) -> Order {
        Order { created: self.created, version: self.object.get("updated").and_then(Value::as_i64) }
    }

    /// The change record's position: `<event id>@<created>`, or `<event id>@<created>.<updated>`.
    pub fn position(&self) -> String {
        position(&self.id, self.order())
    }

    /// The idempotency key its change records carry: `stripe:<event id>`.
    pub fn idempotency_key(&self) -> String {
        format!("stripe:{}", self.id)
    }
}

pub fn position(id: &str, order: Order) -> String {
    match order.version {
        Some(version) => format!("{id}@{}.{version}", order.created),
        None => format!("{id}@{}", order.created),
    }
}

/// The event id and order of a position written by [`Event::position`].
pub fn parse_position(position: &str) -> Option<(&str, Order)> {
    let (id, rest) = position.rsplit_once('@')?;
    let (created, version) = match rest.split_once('.') {
        Some((created, version)) => (created, Some(version.parse().ok()?)),
        None => (rest, None),
    };
    Some((id, Order { created: created.parse().ok()?, version }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, object: Value) -> Value {
        json!({"id": "evt_1", "object": "event", "type": kind, "created": 1_700_000_000,
            "data": {"object": object}, "livemode": false})
    }

    #[test]
    fn parses_routes_and_positions() {
        let e =
            Event::parse(&event("customer.updated", json!({"id": "cus_1", "object": "customer"}))).unwrap();
        assert_eq!((e.id.as_str(), e.object_type.as_str(), e.op()), ("evt_1", "customer", Op::Upsert));
        assert_eq!(e.position(), "evt_1@1700000000");
        assert_eq!(parse_position(&e.position()), Some(("evt_1", e.order())));
        let d =
            Event::parse(&event("customer.deleted", json!({"id": "cus_1", "object": "customer"}))).unwrap();
        assert_eq!(d.op(), Op::Delete);
        let s = json!({"id": "cs_1", "object": "checkout.session", "updated": 1_700_000_005});
        let s = Event::parse(&event("checkout.session.completed", s)).unwrap();
        assert_eq!(s.object_type, "checkout.session");
        assert_eq!(s.position(), "evt_1@1700000000.1700000005");
        assert_eq!(parse_position(&s.position()), Some(("evt_1", s.order())));
        assert_eq!(e.idempotency_key(), "stripe:evt_1");
    }

    #[test]
    fn malformed_events_are_refused() {
        assert!(Event::parse(&json!([1])).is_err());
        assert!(Event::parse(&json!({"id": "evt_1", "type": "x", "created": 1})).is_err());
        let no_type = event("customer.updated", json!({"id": "cus_1"}));
        assert!(Event::parse(&no_type).unwrap_err().to_string().contains("'object' type"));
        let mut bad = event("customer.updated", json!({"object": "customer"}));
        bad["created"] = json!("yesterday");
        assert!(Event::parse(&bad).is_err());
        assert_eq!(parse_position("req-1:0"), None);
        assert_eq!(parse_position("evt_1@x"), None);
    }
}
