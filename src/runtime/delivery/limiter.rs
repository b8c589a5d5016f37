//! A target's rate limit: a token bucket of `burst` objects refilled at `records_per_second`.

use crate::config::RateLimit;
use governor::Quota;
use std::num::NonZeroU32;

#[derive(Debug)]
pub(super) struct Limiter {
    governor: governor::DefaultDirectRateLimiter,
    /// The bucket's size: one wait asks for at most this many tokens (governor refuses more).
    burst: NonZeroU32,
}

impl Limiter {
    pub(super) fn new(limit: RateLimit) -> Limiter {
        let per_second =
            NonZeroU32::new(limit.records_per_second.clamp(1, u32::MAX as u64) as u32).expect("clamped");
        let burst = NonZeroU32::new(limit.burst.clamp(1, u32::MAX as u64) as u32).expect("clamped");
        Limiter {
            governor: governor::RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
            burst,
        }
    }

    /// Returns when `objects` more objects may go to the target, waiting for at most the burst at
    /// a time.
    pub(super) async fn until_ready(&self, objects: usize) {
        let mut left = u32::try_from(objects).expect("a batch holds fewer than 2^32 objects");
        while left > 0 {
            let chunk = NonZeroU32::new(left.min(self.burst.get())).expect("non-zero");
            self.governor.until_n_ready(chunk).await.expect("a wait asks for at most the burst");
            left -= chunk.get();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn a_batch_larger_than_the_burst_waits_for_its_tokens() {
        // 1,000/s with a burst of 5: 5 objects go at once, the next 45 need at least 45 ms of refill.
        // (A wait for more than the burst used to fail at once and let the batch through.)
        let limiter = Limiter::new(RateLimit { records_per_second: 1000, burst: 5 });
        let started = Instant::now();
        limiter.until_ready(50).await;
        assert!(started.elapsed() >= Duration::from_millis(44), "took {:?}", started.elapsed());
        // The bucket is empty now: even one more object waits.
        assert!(limiter.governor.check().is_err());
    }
}
