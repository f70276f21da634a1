//! The commit of one batch, in one transaction that also announces it. A batch that
//! starts right after the checkpoint (the normal case) is appended ([`super::append`]).
//! One that overlaps stored blocks (a re-read) is reapplied: its transfers are streamed
//! into a staging table by binary COPY, then one statement (`apply_batch.sql`) stores the
//! new ones with both sides' balances after them, moves balances by those only, keeps
//! block hashes and rejected logs, and advances the checkpoint.

use alloy_primitives::Address;

use super::batch::{Batch, CommitStats};
use super::error::{StoreError, StoreResult, What};
use super::{Store, lock_token, newest_transfer, notify};

const APPLY_BATCH: &str = include_str!("apply_batch.sql");

impl Store {
    /// Writes a batch in one transaction: its transfers (each at most once), the balance
    /// changes of the newly stored ones, its blocks and the checkpoint. Safe to repeat.
    /// Refuses a batch that would leave a gap after the checkpoint.
    pub async fn commit(&self, token: Address, batch: &Batch) -> StoreResult<CommitStats> {
        // Before the batch's transaction: making a partition locks the parent table, and
        // that must not last as long as a batch.
        self.ensure_partitions(&batch.span, !batch.verified.is_empty()).await?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.what("starting the batch transaction")?;

        let (indexed, last_seq) = lock_token(&*tx, token).await?;
        let (from, to) = (*batch.span.start() as i64, *batch.span.end() as i64);
        if from > indexed + 1 {
            return Err(StoreError::Refused(format!(
                "batch {from}..={to} would leave blocks {}..={} unindexed",
                indexed + 1,
                from - 1
            )));
        }

        let newest = newest_transfer(&*tx, token).await?;
        let stats = if from == indexed + 1 && newest < from {
            super::append::append(&tx, token, batch, last_seq, self.rankings).await?
        } else {
            reapply(&tx, token, batch, last_seq).await?
        };
        tx.commit().await.what("committing the batch")?;
        Ok(stats)
    }
}

/// Writes a batch that overlaps stored blocks: each transfer at most once, balances moved
/// by the newly stored ones only (see `apply_batch.sql`).
async fn reapply(
    tx: &deadpool_postgres::Transaction<'_>,
    token: Address,
    batch: &Batch,
    last_seq: i64,
) -> StoreResult<CommitStats> {
    let to = *batch.span.end() as i64;
    // A backfill batch aggregates tens of thousands of balance changes: let the
    // grouping stay in memory. The staging table exists from the connection's first
    // batch on; Postgres would say so in a NOTICE (logged) at every batch.
    tx.batch_execute(
        "SET LOCAL work_mem = '256MB';
         SET LOCAL client_min_messages = warning;
         CREATE TEMP TABLE IF NOT EXISTS staging_transfers (
            token bytea, block_number bigint, log_index integer, block_hash bytea,
            block_time bigint, tx_hash bytea, from_address bytea, to_address bytea,
            value numeric(78,0), seq bigint, from_balance numeric, to_balance numeric
         ) ON COMMIT DELETE ROWS",
    )
    .await
    .what("creating the staging table")?;
    let sorted = super::append::sorted(&batch.transfers);
    let mut copy = super::copy::TransferCopy::start(&**tx, "staging_transfers").await?;
    // In a reapplied batch a row that turns out to be stored already leaves its number
    // unused.
    for (t, seq) in sorted.iter().zip(last_seq + 1..) {
        copy.write(token, t, seq, None).await?;
    }
    copy.finish().await?;

    let mut blocks = batch.verified.clone();
    blocks.push(batch.end);
    let apply = tx.prepare_cached(APPLY_BATCH).await.what("preparing the batch")?;
    let row = tx
        .query_one(
            &apply,
            &[
                &token,
                &Address::ZERO,
                &to,
                &batch.end.hash,
                &(batch.end.timestamp as i64),
                &batch.rejected.iter().map(|r| r.0 as i64).collect::<Vec<_>>(),
                &batch.rejected.iter().map(|r| r.1 as i32).collect::<Vec<_>>(),
                &blocks.iter().map(|b| b.number as i64).collect::<Vec<_>>(),
                &blocks.iter().map(|b| b.hash).collect::<Vec<_>>(),
                &blocks.iter().map(|b| b.timestamp as i64).collect::<Vec<_>>(),
            ],
        )
        .await
        .what("applying the batch")?;
    let stats = CommitStats {
        inserted: row.get::<_, i64>("inserted") as u64,
        balances_touched: row.get::<_, i64>("balances_touched") as u64,
    };
    if stats.inserted > 0 {
        notify(&**tx, token).await?;
    }
    Ok(stats)
}
