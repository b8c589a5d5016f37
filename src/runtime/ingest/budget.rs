//! The ingest memory budget (`ingest.memory_bytes_max`): what requests in flight may hold at once,
//! across every source that receives requests. A request reserves the bytes of its body plus an
//! estimate of what its records expand to before it reads the body, grows the reservation when its
//! encoded records need more, and gives it back when it is answered. A request that finds no room
//! within `ingest.wait_ms` is refused (`503` with `Retry-After`) before anything of it is logged, so a
//! burst of large requests slows down or is turned away instead of growing memory.
//!
//! One reservation never holds more than the whole budget: a request larger than the budget waits
//! until it has the budget to itself, then runs alone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The default `ingest.memory_bytes_max`.
pub const DEFAULT_MEMORY_BYTES_MAX: u64 = 64 << 20;
/// The default `ingest.wait_ms`: how long a request may wait for room.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);
/// Seconds a `503` for lack of memory asks the sender to wait (room frees as requests finish).
pub const RETRY_AFTER_SECONDS: u64 = 1;
/// What one encoded record costs beyond its payload: the `Vec` and the allocator's header.
pub const RECORD_OVERHEAD_BYTES: u64 = 48;
/// What a request reserves before it reads its body, per byte of body: the body itself and the
/// encoded records it becomes (a record's frame is about twice to three times its input object).
pub const BODY_EXPANSION: u64 = 4;
const UNIT_BYTES: u64 = 1024;

/// No room in the budget within the wait (HTTP 503).
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the ingest memory budget ({bytes_max} bytes) has no room for this request ({wanted} bytes) right now"
)]
pub struct NoRoom {
    pub wanted: u64,
    pub bytes_max: u64,
}

#[derive(Debug)]
struct Inner {
    semaphore: Semaphore,
    units_max: u32,
    wait: Duration,
    reserved: AtomicU64,
}

/// The budget, shared by every request of the node.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

impl MemoryBudget {
    pub fn new(bytes_max: u64, wait: Duration) -> MemoryBudget {
        let units_max = u32::try_from(bytes_max.div_ceil(UNIT_BYTES).max(1)).unwrap_or(u32::MAX >> 3);
        metrics::gauge!("remix_ingest_memory_bytes_max").set((u64::from(units_max) * UNIT_BYTES) as f64);
        MemoryBudget {
            inner: Arc::new(Inner {
                semaphore: Semaphore::new(units_max as usize),
                units_max,
                wait,
                reserved: AtomicU64::new(0),
            }),
        }
    }

    pub fn bytes_max(&self) -> u64 {
        u64::from(self.inner.units_max) * UNIT_BYTES
    }

    /// Bytes reserved by requests in flight.
    pub fn reserved(&self) -> u64 {
        self.inner.reserved.load(Ordering::Relaxed)
    }

    /// Reserves `bytes` (at most the whole budget), waiting up to the configured wait for room.
    pub async fn reserve(&self, bytes: u64) -> Result<Reservation, NoRoom> {
        let mut reservation =
            Reservation { budget: self.clone(), units: 0, deadline: Instant::now() + self.inner.wait };
        reservation.grow_to(bytes).await?;
        Ok(reservation)
    }

    /// A reservation of nothing (to grow).
    pub fn empty(&self) -> Reservation {
        Reservation { budget: self.clone(), units: 0, deadline: Instant::now() + self.inner.wait }
    }

    fn units(&self, bytes: u64) -> u32 {
        u32::try_from(bytes.div_ceil(UNIT_BYTES)).unwrap_or(u32::MAX).min(self.inner.units_max)
    }

    fn account(&self, units: u32, add: bool) {
        let bytes = u64::from(units) * UNIT_BYTES;
        let now = if add {
            self.inner.reserved.fetch_add(bytes, Ordering::Relaxed) + bytes
        } else {
            self.inner.reserved.fetch_sub(bytes, Ordering::Relaxed) - bytes
        };
        metrics::gauge!("remix_ingest_memory_bytes").set(now as f64);
    }
}

/// Bytes of the budget held by one request; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: MemoryBudget,
    units: u32,
    /// The reservation waits for room until then, however often it grows.
    deadline: Instant,
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        u64::from(self.units) * UNIT_BYTES
    }

    /// Holds at least `bytes` (at most the whole budget), waiting for room until the deadline.
    pub async fn grow_to(&mut self, bytes: u64) -> Result<(), NoRoom> {
        let wanted = self.budget.units(bytes);
        if wanted <= self.units {
            return Ok(());
        }
        let more = wanted - self.units;
        let inner = &self.budget.inner;
        let acquired = match inner.semaphore.try_acquire_many(more) {
            Ok(permit) => Some(permit),
            Err(_) => tokio::time::timeout_at(self.deadline.into(), inner.semaphore.acquire_many(more))
                .await
                .ok()
                .and_then(Result::ok),
        };
        let Some(permit) = acquired else {
            metrics::counter!("remix_ingest_memory_refused_total").increment(1);
            return Err(NoRoom { wanted: bytes, bytes_max: self.budget.bytes_max() });
        };
        permit.forget();
        self.units = wanted;
        self.budget.account(more, true);
        Ok(())
    }

    /// [`Reservation::grow_to`] from blocking code (a `spawn_blocking` task).
    pub fn grow_to_blocking(&mut self, bytes: u64, runtime: &tokio::runtime::Handle) -> Result<(), NoRoom> {
        if self.budget.units(bytes) <= self.units {
            return Ok(());
        }
        runtime.block_on(self.grow_to(bytes))
    }

    /// Gives back what is held beyond `bytes`.
    pub fn shrink_to(&mut self, bytes: u64) {
        let keep = self.budget.units(bytes);
        if keep < self.units {
            let back = self.units - keep;
            self.units = keep;
            self.budget.inner.semaphore.add_permits(back as usize);
            self.budget.account(back, false);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_wait_for_room_then_give_up() {
        let budget = MemoryBudget::new(10 * UNIT_BYTES, Duration::from_millis(50));
        let mut first = budget.reserve(6 * UNIT_BYTES).await.unwrap();
        assert_eq!(budget.reserved(), 6 * UNIT_BYTES);
        let refused = budget.reserve(5 * UNIT_BYTES).await.unwrap_err();
        assert_eq!(refused.wanted, 5 * UNIT_BYTES);
        // Room made while a request waits lets it in.
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(5 * UNIT_BYTES).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        first.shrink_to(2 * UNIT_BYTES);
        let second = waiting.await.unwrap().unwrap();
        assert_eq!((first.bytes(), second.bytes()), (2 * UNIT_BYTES, 5 * UNIT_BYTES));
        assert_eq!(budget.reserved(), 7 * UNIT_BYTES);
        // Growing waits within the same deadline as the first reservation, which has passed.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(first.grow_to(6 * UNIT_BYTES).await.is_err());
        assert!(first.grow_to(5 * UNIT_BYTES).await.is_ok(), "there is room for it");
        drop((first, second));
        assert_eq!(budget.reserved(), 0);
    }

    #[tokio::test]
    async fn a_request_larger_than_the_budget_runs_alone() {
        let budget = MemoryBudget::new(4 * UNIT_BYTES, Duration::from_millis(50));
        let whole = budget.reserve(100 * UNIT_BYTES).await.unwrap();
        assert_eq!(whole.bytes(), 4 * UNIT_BYTES);
        assert!(budget.reserve(1).await.is_err());
        drop(whole);
        assert!(budget.reserve(1).await.is_ok());
    }
}
