//! The `blackhole` target: every batch is `Ok` at once and nothing is kept. The worker still reads,
//! remixes (so mapping errors surface as they would for a real target) and advances the cursor, so
//! lag, throughput and the source's cost can be measured alone. Nothing is kept, so nothing can be
//! duplicated or lost at the target: the guarantee is vacuous, reported as offset-named.

use crate::runtime::delivery::{Batch, Capabilities, Guarantee, Target, TargetError};

/// The most records one batch takes: large, as applying costs nothing.
const BATCH_RECORDS_MAX: usize = 100_000;

/// Counts what it drops.
#[derive(Debug, Default)]
pub struct Blackhole {
    /// Records dropped since start (for tests and debugging).
    pub dropped: u64,
}

impl Target for Blackhole {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            collapse: false,
            guarantee: Guarantee::OffsetNamed,
            batch_records_max: BATCH_RECORDS_MAX,
            batch_records_default: BATCH_RECORDS_MAX,
        }
    }

    async fn open(&mut self, cursor: u64) -> Result<u64, TargetError> {
        Ok(cursor)
    }

    async fn apply(&mut self, batch: &Batch) -> Result<(), TargetError> {
        self.dropped += batch.items.len() as u64;
        Ok(())
    }

    async fn rewind(&mut self, offset: u64) -> Result<u64, TargetError> {
        Ok(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drops_everything_and_rewinds_anywhere() {
        let mut target = Blackhole::default();
        assert_eq!(target.open(7).await.unwrap(), 7);
        assert_eq!(target.rewind(3).await.unwrap(), 3);
        assert!(!target.capabilities().collapse);
    }
}
