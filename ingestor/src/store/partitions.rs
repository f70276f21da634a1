//! The partitions of `transfers` (migrations V6, V12: each chain's own): made before a
//! batch needs them, and their sender and receiver indexes built once a backfill has
//! filled them. Both steps
//! are SQL functions of the schema, idempotent, each one transaction: a crash leaves a
//! partition made or not, indexed or not, never half.

use std::ops::RangeInclusive;

use super::Store;
use super::error::{StoreResult, What};

impl Store {
    /// Makes the partitions that `span` falls in, where missing; `with_indexes` (near the
    /// head) also builds their sender and receiver indexes at once. Remembers how far
    /// partitions are known to exist, so most batches ask nothing.
    pub(super) async fn ensure_partitions(
        &self,
        chain_id: i64,
        span: &RangeInclusive<u64>,
        with_indexes: bool,
    ) -> StoreResult<()> {
        let end = *span.end() as i64;
        if self.covers(chain_id, end as u64) {
            return Ok(());
        }
        let client = self.client().await?;
        let size: i64 = client
            .query_one(
                "SELECT ensure_transfer_partitions($1, $2, $3, $4), (SELECT blocks FROM transfer_partitioning)",
                &[&chain_id, &(*span.start() as i64), &end, &with_indexes],
            )
            .await
            .what("making transfer partitions")?
            .get(1);
        // A partition holds whole ranges of `size` blocks (the one that became of the
        // pre-partitioning table too): every block up to the end of `end`'s is covered.
        let covered = (end / size + 1) * size - 1;
        let mut known = self.partitions_to.lock().unwrap_or_else(|e| e.into_inner());
        let to = known.entry(chain_id).or_insert(-1);
        *to = (*to).max(covered);
        Ok(())
    }

    /// Makes the partition that `at` falls in as two, split at `at`, if it does not
    /// exist yet (migration V7): a backfill whose last final block is `at - 1` fills the
    /// first part, whose indexes are then built while the verified steps above it write
    /// into the second (indexed once they have caught up). Returns whether it split.
    pub async fn split_partition(&self, chain_id: i64, at: u64) -> StoreResult<bool> {
        let client = self.client().await?;
        Ok(client
            .query_one("SELECT split_transfer_partition($1, $2)", &[&chain_id, &(at as i64)])
            .await
            .what("splitting a transfer partition")?
            .get(0))
    }

    /// Builds the sender and receiver indexes of the partitions of blocks `0..=upto` that
    /// lack them: those that end at or before `upto`, and with `partial` the one `upto`
    /// falls in. The two sides are built at once, on two connections. Returns how many
    /// partitions it indexed. Sorted builds, one per partition: far cheaper than the
    /// random inserts a backfill would otherwise make.
    pub async fn index_partitions(
        &self,
        chain_id: i64,
        upto: u64,
        partial: bool,
    ) -> StoreResult<u32> {
        let (from, to) = tokio::try_join!(
            self.index_side(chain_id, upto, partial, "from"),
            self.index_side(chain_id, upto, partial, "to")
        )?;
        Ok(from.max(to))
    }

    /// [`Store::index_partitions`] for one side: `from` or `to`.
    async fn index_side(
        &self,
        chain_id: i64,
        upto: u64,
        partial: bool,
        side: &str,
    ) -> StoreResult<u32> {
        let client = self.client().await?;
        let built: i32 = client
            .query_one(
                "SELECT index_transfer_partitions($1, 0, $2, $3, $4)",
                &[&chain_id, &(upto as i64), &partial, &side],
            )
            .await
            .what("indexing transfer partitions")?
            .get(0);
        Ok(built as u32)
    }
}
