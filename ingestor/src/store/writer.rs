//! The one batch writer. Every batch (a backfill's, streamed as its logs arrive; a
//! verified step's; one held in memory and committed again after a failure) is written
//! here, in one transaction that opens at its first chunk and commits its transfers,
//! balances, blocks, rankings and checkpoint at once, and announces it.
//!
//! Each chunk: the balances it touches that the cache ([`Balances`]) lacks are read, each
//! transfer gets both sides' balances after it (the one place of the balance arithmetic,
//! in [`Balances::apply`]), rankings due are taken, and the chunk goes into `transfers`
//! by one binary COPY. No batch is ever held in memory here: memory is the balance cache,
//! whatever the batch's length.
//!
//! A batch may start at or below the checkpoint (a step committed again after its COMMIT
//! was not confirmed, a range read again): the blocks already stored are whole (a batch
//! covers whole blocks), so their transfers are skipped and only the rest move balances.
//! A batch that would leave a gap after the checkpoint is refused.
//!
//! Nothing is repeated inside: a failure drops the transaction (the connection is closed,
//! not returned to the pool mid-statement) and the caller decides what to write again.

use deadpool_postgres::Object;

use super::balances::{Balance, Balances};
use super::batch::{Batch, CommitStats};
use super::blocks::{Blocks, Moved, advance, sorted, stored_supply};
use super::copy::TransferCopy;
use super::error::{StoreError, StoreResult, What};
use super::ranking::Rankings;
use super::{Store, TokenKey, lock_token, newest_transfer, notify};
use crate::decode::Transfer;
use crate::rpc::BlockRef;

/// A batch being written: its transaction and what it has seen.
#[derive(Debug)]
pub struct BatchWriter {
    /// In the batch's transaction; closed, not pooled, unless the batch commits.
    client: Closing,
    token: TokenKey,
    /// Blocks up to this one are stored whole: their transfers are skipped.
    stored_to: i64,
    next_seq: i64,
    transfers: i64,
    blocks: Blocks,
    rankings: Rankings,
    rejected: Vec<(u64, u64)>,
    /// Whether its commit waits for the disk (it was opened near the head).
    durable: bool,
}

impl Store {
    /// Whether the partitions of `transfers` are known to cover `block`: a streamed batch
    /// must end before a chunk that needs a new one (made outside any batch).
    pub fn covers(&self, chain_id: i64, block: u64) -> bool {
        let known = self.partitions_to.lock().unwrap_or_else(|e| e.into_inner());
        known.get(&chain_id).is_some_and(|&to| block as i64 <= to)
    }

    /// Opens a batch starting at `first` (at most right after the checkpoint), whose
    /// first chunk ends at `reach`: of final blocks, or `near_head` (blocks whose headers
    /// the caller checks; their partitions get their indexes at once, and the commit
    /// waits for the disk).
    pub async fn open_batch(
        &self,
        token: TokenKey,
        first: u64,
        reach: u64,
        near_head: bool,
        balances: &mut Balances,
    ) -> StoreResult<BatchWriter> {
        // Before the transaction: making a partition locks the parent table, and that
        // must not last as long as a batch.
        self.ensure_partitions(token.chain_id, &(first..=reach), near_head).await?;
        let client = self.client().await?;
        // A batch of final blocks: if the server crashes before this commit reaches the
        // disk, the batch and its checkpoint are lost together and read again. Near the
        // head the hashes kept are what a later reorg is traced by: wait for the disk.
        let begun = client
            .batch_execute(if near_head {
                "BEGIN"
            } else {
                "BEGIN; SET LOCAL synchronous_commit = off"
            })
            .await
            .what("starting the batch transaction");
        // From here on, a failure must not hand the connection back mid-transaction.
        let client = Closing(Some(client));
        begun?;
        let (indexed, last_seq) = lock_token(client.get(), token).await?;
        if first as i64 > indexed + 1 {
            return Err(StoreError::Refused(format!(
                "a batch from block {first} would leave blocks {}..={} unindexed",
                indexed + 1,
                first - 1
            )));
        }
        let newest = newest_transfer(client.get(), token).await?;
        if !balances.knows_supply() {
            balances.set_supply(stored_supply(client.get(), token).await?);
        }
        let rankings = Rankings::start(client.get(), token, self.rankings).await?;
        Ok(BatchWriter {
            client,
            token,
            stored_to: indexed.max(newest),
            next_seq: last_seq + 1,
            transfers: 0,
            blocks: Blocks::default(),
            rankings,
            rejected: Vec::new(),
            durable: near_head,
        })
    }

    /// Writes a batch held in memory in one transaction: its transfers (those of blocks
    /// not stored yet), the balance changes of those, its blocks and the checkpoint. Safe
    /// to repeat. Refuses a batch that would leave a gap after the checkpoint.
    pub async fn commit(&self, token: TokenKey, batch: &Batch) -> StoreResult<CommitStats> {
        let (first, last) = (*batch.span.start(), *batch.span.end());
        let near_head = !batch.verified.is_empty();
        let mut balances = Balances::unbounded();
        let mut writer = self.open_batch(token, first, last, near_head, &mut balances).await?;
        writer.push(&sorted(&batch.transfers), &batch.rejected, &mut balances).await?;
        writer.commit(&batch.end, &batch.verified, &mut balances).await
    }
}

impl BatchWriter {
    /// Writes one chunk's transfers (in block and log order, following the previous
    /// chunk's) and remembers its rejected logs.
    pub async fn push(
        &mut self,
        transfers: &[Transfer],
        rejected: &[(u64, u64)],
        balances: &mut Balances,
    ) -> StoreResult<()> {
        let stored_to = self.stored_to;
        let fresh = transfers.partition_point(|t| t.block_number as i64 <= stored_to);
        let transfers = &transfers[fresh..];
        self.rejected.extend(rejected.iter().filter(|r| r.0 as i64 > stored_to));
        if transfers.is_empty() {
            return Ok(());
        }
        let client = self.client.get();
        balances.load(client, self.token, balances.missing(transfers)).await?;
        // The arithmetic first, while the connection may still read what a ranking
        // needs; then the chunk's one COPY.
        let mut after: Vec<(Balance, Balance)> = Vec::with_capacity(transfers.len());
        for t in transfers {
            self.rankings.before(t.block_number, balances, client, self.token).await?;
            let a = balances.apply(t);
            self.blocks.saw(t, a);
            self.rankings.moved(t, a, balances);
            after.push(a);
        }
        let mut copy = TransferCopy::start(client).await?;
        for (t, a) in transfers.iter().zip(after) {
            copy.write(self.token, t, self.next_seq, a).await?;
            self.next_seq += 1;
        }
        copy.finish().await?;
        self.transfers += transfers.len() as i64;
        Ok(())
    }

    /// Transfers written so far.
    pub fn transfers(&self) -> usize {
        self.transfers as usize
    }

    /// Writes the changed balances, the blocks (the `verified` headers' too) and the
    /// checkpoint `end`, and commits: durably if there are `verified` headers. On success
    /// the cache holds what the store holds.
    pub async fn commit(
        mut self,
        end: &BlockRef,
        verified: &[BlockRef],
        balances: &mut Balances,
    ) -> StoreResult<CommitStats> {
        let client = self.client.get();
        self.rankings.end_of_block(balances, client, self.token).await?;
        self.rankings.keep(client, self.token).await?;
        // Headers of blocks stored before keep the rows they have.
        let stored_to = self.stored_to;
        self.blocks.verified(
            verified.iter().chain(std::iter::once(end)).filter(|b| b.number as i64 > stored_to),
        );
        if !self.durable && !verified.is_empty() {
            // The hashes kept are what a later reorg is traced by.
            client
                .batch_execute("SET LOCAL synchronous_commit = on")
                .await
                .what("making the commit durable")?;
        }
        let (balance_rows, holders) = balances.write(client, self.token).await?;
        let rejected = self.blocks.keep(client, self.token, &self.rejected).await?;
        let moved = Moved {
            transfers: self.transfers,
            holders,
            rejected,
            supply: balances.changed_supply(),
        };
        advance(client, self.token, &moved, end).await?;
        if self.transfers > 0 {
            notify(client, self.token).await?;
        }
        client.batch_execute("COMMIT").await.what("committing the batch")?;
        // Committed: the connection is clean again and goes back to the pool.
        drop(self.client.0.take());
        balances.settle();
        Ok(CommitStats { inserted: self.transfers as u64, balances_touched: balance_rows })
    }
}

/// A connection in a batch's transaction: closed when dropped, not handed back to the
/// pool (it may be mid-statement or in a failed transaction; Postgres rolls it back),
/// unless the batch committed and took it out.
#[derive(Debug)]
struct Closing(Option<Object>);

impl Closing {
    fn get(&self) -> &tokio_postgres::Client {
        self.0.as_deref().expect("held until the commit")
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(Object::take(client));
        }
    }
}
