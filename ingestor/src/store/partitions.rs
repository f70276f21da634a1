//! The partitions of `transfers` (migrations V6, V12, V13, V14: each chain's own, sized
//! by density): made before a batch needs them, and their indexes (key, sequence, sender,
//! receiver) built once a backfill has filled them. Both steps are SQL functions of the
//! schema, idempotent, each one transaction: a crash leaves a partition made or not,
//! indexed or not, never half.

use std::collections::HashMap;
use std::ops::RangeInclusive;

use super::Store;
use super::error::{StoreResult, What};

/// Transfers a partition is sized to hold at the density a batch sees: small enough that
/// its one sorted index build is a few seconds, and that every partition of a long
/// backfill but the last is built while the backfill goes on; large enough that a
/// lookup's one probe per partition stays few (a chain of a billion transfers: 250).
pub const PARTITION_TRANSFERS: u64 = 4_000_000;

/// The fewest blocks a partition sized by density spans: a burst of transfers in a few
/// blocks does not make a partition of a few blocks.
const MIN_PARTITION_BLOCKS: u64 = 1_000;

/// How the partitions a batch needs are made.
#[derive(Debug, Clone, Copy, Default)]
pub struct Layout {
    /// Transfers seen over a number of blocks (the chunk that opens the batch): the
    /// partition is sized to hold about [`PARTITION_TRANSFERS`] at that density (at most
    /// the schema's `transfer_partitioning.blocks`). `None`: that maximum.
    pub density: Option<(u64, u64)>,
}

impl Layout {
    /// The partition size in blocks this layout asks for.
    pub fn blocks(&self) -> Option<u64> {
        let (transfers, blocks) = self.density?;
        if transfers == 0 || blocks == 0 {
            return None;
        }
        let want = PARTITION_TRANSFERS as u128 * blocks as u128 / transfers as u128;
        Some((want.min(u64::MAX as u128) as u64).max(MIN_PARTITION_BLOCKS))
    }
}

/// Per chain, the block ranges (inclusive, merged) its partitions are known to cover.
#[derive(Debug, Default)]
pub(super) struct Covered(HashMap<i64, Vec<(i64, i64)>>);

impl Covered {
    /// Whether every block of `lo..=hi` of `chain` is known to be covered (ranges are
    /// merged, so that is one of them).
    pub(super) fn covers(&self, chain: i64, lo: i64, hi: i64) -> bool {
        self.0.get(&chain).is_some_and(|r| r.iter().any(|&(a, b)| a <= lo && hi <= b))
    }

    /// Remembers that `lo..=hi` of `chain` is covered.
    pub(super) fn add(&mut self, chain: i64, lo: i64, hi: i64) {
        let ranges = self.0.entry(chain).or_default();
        ranges.push((lo, hi));
        ranges.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
        for &(a, b) in ranges.iter() {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        *ranges = merged;
    }
}

impl Store {
    /// Makes the partitions that `span` falls in, where missing, as `layout` says;
    /// `with_indexes` (near the head) also builds their four indexes (key, sequence,
    /// sender, receiver) at once. Remembers what partitions are known to cover, so most
    /// batches ask nothing.
    pub(super) async fn ensure_partitions(
        &self,
        chain_id: i64,
        span: &RangeInclusive<u64>,
        with_indexes: bool,
        layout: Layout,
    ) -> StoreResult<()> {
        let (lo, hi) = (*span.start() as i64, *span.end() as i64);
        if self.partitions.lock().unwrap_or_else(|e| e.into_inner()).covers(chain_id, lo, hi) {
            return Ok(());
        }
        let client = self.client().await?;
        let covered: i64 = client
            .query_one(
                "SELECT ensure_transfer_partitions($1, $2, $3, $4, $5)",
                &[
                    &chain_id,
                    &lo,
                    &hi,
                    &with_indexes,
                    &layout.blocks().map(|b| b.min(i64::MAX as u64) as i64),
                ],
            )
            .await
            .what("making transfer partitions")?
            .get(0);
        self.partitions.lock().unwrap_or_else(|e| e.into_inner()).add(chain_id, lo, covered);
        Ok(())
    }

    /// Makes the partition that `block` falls in, where missing, of the schema's size
    /// and without indexes yet: the one above a backfill's final blocks, made before
    /// theirs so that theirs end below it.
    pub async fn make_partition_at(&self, chain_id: i64, block: u64) -> StoreResult<()> {
        self.ensure_partitions(chain_id, &(block..=block), false, Layout::default()).await
    }

    /// Builds the indexes of the partitions of blocks `0..=upto` that lack them: those
    /// that end at or before `upto`, and with `partial` the one `upto` falls in. Each
    /// partition gets four (its key, its sequence index, its sender and its receiver
    /// index), built on two connections, two each. Returns how many partitions it indexed.
    /// Sorted builds, one per partition and index: far cheaper than the inserts a backfill
    /// would otherwise make into them, at a thousand places at once for a set of tokens.
    /// With `one_core` the four builds go one after the other on one connection (a lane
    /// beside the head leaves the other core to it).
    pub async fn index_partitions(
        &self,
        chain_id: i64,
        upto: u64,
        partial: bool,
        one_core: bool,
    ) -> StoreResult<u32> {
        if one_core {
            return self.index_sides(chain_id, upto, partial, &["key", "from", "seq", "to"]).await;
        }
        let (a, b) = tokio::try_join!(
            self.index_sides(chain_id, upto, partial, &["key", "from"]),
            self.index_sides(chain_id, upto, partial, &["seq", "to"])
        )?;
        Ok(a.max(b))
    }

    /// [`Store::index_partitions`] for some of the indexes (`key`, `seq`, `from` or `to`),
    /// one after the other on one connection. Returns how many partitions lacked any.
    async fn index_sides(
        &self,
        chain_id: i64,
        upto: u64,
        partial: bool,
        sides: &[&str],
    ) -> StoreResult<u32> {
        let client = self.client().await?;
        let mut most = 0;
        for side in sides {
            let built: i32 = client
                .query_one(
                    "SELECT index_transfer_partitions($1, 0, $2, $3, $4)",
                    &[&chain_id, &(upto as i64), &partial, &side],
                )
                .await
                .what("indexing transfer partitions")?
                .get(0);
            most = most.max(built as u32);
        }
        Ok(most)
    }
}

#[cfg(test)]
mod tests {
    use super::{Covered, Layout, PARTITION_TRANSFERS};

    fn blocks(transfers: u64, over: u64) -> Option<u64> {
        Layout { density: Some((transfers, over)) }.blocks()
    }

    #[test]
    fn a_partition_holds_a_few_million_transfers_at_the_density_seen() {
        // A thousand transfers a block.
        assert_eq!(blocks(5_000, 5), Some(PARTITION_TRANSFERS / 1_000));
        // Sparse: as large as the schema allows (the SQL caps it).
        assert_eq!(blocks(3, 1_000), Some(PARTITION_TRANSFERS * 1_000 / 3));
        // A burst in a few blocks still spans the floor.
        assert_eq!(blocks(1_000_000, 1), Some(1_000));
        // Nothing seen: the schema's size.
        assert_eq!(blocks(0, 10), None);
        assert_eq!(Layout::default().blocks(), None);
        // Extremes do not overflow.
        assert_eq!(blocks(1, u64::MAX), Some(u64::MAX));
        assert_eq!(blocks(u64::MAX, 1), Some(1_000));
    }

    #[test]
    fn covered_ranges_merge_and_leave_gaps_open() {
        let mut c = Covered::default();
        c.add(1, 100, 199);
        c.add(1, 300, 399);
        assert!(c.covers(1, 150, 150) && c.covers(1, 300, 399));
        assert!(!c.covers(1, 250, 250), "a gap between known ranges is not covered");
        assert!(!c.covers(1, 150, 350), "nor a span over it, though both ends are");
        assert!(!c.covers(8453, 150, 150), "another chain's ranges are its own");
        c.add(1, 200, 299);
        assert!(c.covers(1, 250, 250) && c.covers(1, 150, 350));
        assert_eq!(c.0[&1], vec![(100, 399)], "adjacent ranges merge");
    }
}
