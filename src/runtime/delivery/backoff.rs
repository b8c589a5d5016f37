//! Backoff for transient errors: the cap doubles per attempt from `BACKOFF_BASE_MS` to
//! `BACKOFF_MAX_MS`, and each delay is drawn uniformly from `[cap/2, cap]` ("equal jitter": never
//! less than half the cap, so a failing target is not hammered, and spread so that many targets
//! failing together do not retry in step).

/// The first attempt's cap.
pub const BACKOFF_BASE_MS: u64 = 100;
/// The largest cap.
pub const BACKOFF_MAX_MS: u64 = 30_000;

/// Attempts so far of one operation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The next delay in milliseconds; counts the attempt.
    pub fn next_delay_ms(&mut self) -> u64 {
        let cap = BACKOFF_BASE_MS.saturating_mul(1 << self.attempt.min(16)).min(BACKOFF_MAX_MS);
        self.attempt += 1;
        equal_jitter(cap)
    }
}

/// A uniformly random delay in `[cap/2, cap]` milliseconds.
fn equal_jitter(cap_ms: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    let half = cap_ms / 2;
    half + hasher.finish() % (cap_ms - half + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_stay_within_half_of_it() {
        let mut backoff = Backoff::default();
        let mut caps = Vec::new();
        for _ in 0..12 {
            let cap = BACKOFF_BASE_MS.saturating_mul(1 << backoff.attempt().min(16)).min(BACKOFF_MAX_MS);
            let delay = backoff.next_delay_ms();
            assert!(delay >= cap / 2 && delay <= cap, "{delay} outside [{}, {cap}]", cap / 2);
            caps.push(cap);
        }
        assert_eq!(caps[0], BACKOFF_BASE_MS);
        assert_eq!(caps[11], BACKOFF_MAX_MS);
        assert!(caps.windows(2).all(|w| w[0] <= w[1]));
    }
}
