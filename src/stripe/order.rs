//! The ordering rule: Stripe does not deliver events in order, and an older event must never
//! overwrite a newer state in the targets.
//!
//! Every event has an [`Order`]: its `created` time (Unix seconds), then the object's own `updated`
//! version field when the object has one. For each model key (`customer {"id": 7}`) the [`Gate`]
//! remembers the newest order logged. An event whose order is *lower* than that is stale: it is
//! acknowledged (so Stripe stops retrying), counted, and not logged, because logging it would make
//! every target apply the older state after the newer one. An event of *equal* order (two events in
//! the same second, and no version field to tell them apart) is logged, in arrival order. A delete is
//! an event like any other: an older update arriving after a delete is stale.
//!
//! Events of one key pass the gate one at a time (the second waits until the first is logged or has
//! failed), so the check and the append cannot interleave. The gate is rebuilt at start from the
//! positions of the change records in the log (`<event id>@<created>[.<updated>]`). It holds at most
//! [`ORDER_KEYS_MAX`] keys; beyond that the keys with the oldest events are forgotten, and an event of
//! a forgotten key is logged as new.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Keys the gate remembers at most.
pub const ORDER_KEYS_MAX: usize = 1_000_000;

/// How new an event's state is; compared by `created`, then `version` (absent is oldest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Order {
    pub created: i64,
    pub version: Option<i64>,
}

#[derive(Debug, Default)]
struct Slot {
    newest: Option<Order>,
    busy: Option<Arc<Notify>>,
}

/// Newest logged order per model key; see the module docs.
#[derive(Debug)]
pub struct Gate {
    slots: Mutex<HashMap<String, Slot>>,
    max: usize,
}

/// The outcome of [`Gate::enter`].
#[derive(Debug)]
pub enum Entered<'a> {
    /// Not older than what is logged: log it, then [`Pass::commit`] (or drop the pass if it failed).
    Newer(Pass<'a>),
    /// Older than the newest state logged for the key.
    Stale { newest: Order },
}

/// The right to log one event of a key; other events of the key wait until it is dropped.
#[derive(Debug)]
pub struct Pass<'a> {
    gate: &'a Gate,
    key: String,
    order: Order,
    committed: bool,
}

impl Pass<'_> {
    /// The event was logged: its order is now the key's newest.
    pub fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut slots = self.gate.lock();
        let slot = slots.entry(self.key.clone()).or_default();
        if let Some(notify) = slot.busy.take() {
            notify.notify_waiters();
        }
        if self.committed {
            slot.newest = slot.newest.max(Some(self.order));
        }
        let over = slots.len() > self.gate.max;
        let forget = slots.get(&self.key).is_some_and(|s| s.newest.is_none());
        if forget {
            slots.remove(&self.key);
        }
        if over {
            evict(&mut slots, self.gate.max);
        }
    }
}

impl Default for Gate {
    fn default() -> Gate {
        Gate::with_capacity(ORDER_KEYS_MAX)
    }
}

impl Gate {
    pub fn with_capacity(max: usize) -> Gate {
        Gate { slots: Mutex::default(), max: max.max(1) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A change read from the log at start: `key` was logged at `order`.
    pub fn observe(&self, key: String, order: Order) {
        let mut slots = self.lock();
        let slot = slots.entry(key).or_default();
        slot.newest = slot.newest.max(Some(order));
        if slots.len() > self.max {
            evict(&mut slots, self.max);
        }
    }

    /// Every key remembered with its newest order (for the start-up checkpoint).
    pub fn entries(&self) -> Vec<(String, Order)> {
        self.lock().iter().filter_map(|(key, slot)| Some((key.clone(), slot.newest?))).collect()
    }

    /// The newest order logged for `key`, if remembered.
    pub fn newest(&self, key: &str) -> Option<Order> {
        self.lock().get(key).and_then(|s| s.newest)
    }

    /// Waits until no other event of `key` is being logged, then compares.
    pub async fn enter(&self, key: &str, order: Order) -> Entered<'_> {
        loop {
            let notify = {
                let mut slots = self.lock();
                let slot = slots.entry(key.to_owned()).or_default();
                match (&slot.busy, slot.newest) {
                    (Some(notify), _) => Arc::clone(notify),
                    (None, Some(newest)) if order < newest => return Entered::Stale { newest },
                    (None, _) => {
                        slot.busy = Some(Arc::new(Notify::new()));
                        let pass = Pass { gate: self, key: key.to_owned(), order, committed: false };
                        return Entered::Newer(pass);
                    }
                }
            };
            let notified = notify.notified();
            // The holder may have finished between the lookup and here.
            let still =
                matches!(self.lock().get(key), Some(Slot { busy: Some(n), .. }) if Arc::ptr_eq(n, &notify));
            if still {
                notified.await;
            }
        }
    }
}

/// Forgets the tenth of the keys with the oldest newest events (never one being logged).
fn evict(slots: &mut HashMap<String, Slot>, max: usize) {
    let mut orders: Vec<Order> =
        slots.values().filter(|s| s.busy.is_none()).filter_map(|s| s.newest).collect();
    if orders.is_empty() {
        return;
    }
    let cut = (max / 10).max(1).min(orders.len() - 1);
    let (_, threshold, _) = orders.select_nth_unstable(cut);
    let threshold = *threshold;
    slots.retain(|_, s| s.busy.is_some() || s.newest.is_none_or(|n| n > threshold));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(created: i64) -> Order {
        Order { created, version: None }
    }

    #[tokio::test]
    async fn an_older_event_is_stale_and_an_equal_or_newer_one_passes() {
        let gate = Gate::default();
        let Entered::Newer(pass) = gate.enter("customer {\"id\":1}", at(100)).await else { panic!() };
        pass.commit();
        assert!(
            matches!(gate.enter("customer {\"id\":1}", at(99)).await, Entered::Stale { newest } if newest == at(100))
        );
        assert!(
            matches!(gate.enter("customer {\"id\":2}", at(1)).await, Entered::Newer(_)),
            "other keys are free"
        );
        let Entered::Newer(pass) = gate.enter("customer {\"id\":1}", at(100)).await else {
            panic!("equal passes")
        };
        drop(pass);
        let versioned = Order { created: 100, version: Some(5) };
        let Entered::Newer(pass) = gate.enter("customer {\"id\":1}", versioned).await else { panic!() };
        pass.commit();
        let older_version = Order { created: 100, version: Some(4) };
        assert!(matches!(gate.enter("customer {\"id\":1}", older_version).await, Entered::Stale { .. }));
        assert!(matches!(gate.enter("customer {\"id\":1}", at(100)).await, Entered::Stale { .. }));
        assert_eq!(gate.newest("customer {\"id\":1}"), Some(versioned));
    }

    #[tokio::test]
    async fn a_failed_append_does_not_count() {
        let gate = Gate::default();
        let Entered::Newer(pass) = gate.enter("k", at(100)).await else { panic!() };
        drop(pass);
        assert_eq!(gate.newest("k"), None);
        assert!(matches!(gate.enter("k", at(50)).await, Entered::Newer(_)));
    }

    #[tokio::test]
    async fn events_of_one_key_pass_one_at_a_time() {
        let gate = Arc::new(Gate::default());
        let Entered::Newer(pass) = gate.enter("k", at(100)).await else { panic!() };
        let waiter = {
            let gate = Arc::clone(&gate);
            tokio::spawn(async move { matches!(gate.enter("k", at(90)).await, Entered::Stale { .. }) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the older event waits for the one being logged");
        pass.commit();
        assert!(waiter.await.unwrap(), "and is stale once the newer one is logged");
    }

    #[test]
    fn observe_and_evict() {
        let gate = Gate::with_capacity(20);
        for i in 0..25 {
            gate.observe(format!("k{i}"), at(i));
        }
        assert!(gate.lock().len() <= 20);
        assert_eq!(gate.newest("k24"), Some(at(24)), "the newest keys stay");
        assert_eq!(gate.newest("k0"), None, "the oldest are forgotten");
        gate.observe("k24".into(), at(3));
        assert_eq!(gate.newest("k24"), Some(at(24)), "the newest order wins");
    }
}
