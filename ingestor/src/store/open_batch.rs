//! A backfill batch streamed into the store as its logs arrive. The transaction opens at
//! the batch's first chunk and COPYs each chunk's transfers into `transfers` at once, so
//! Postgres writes while the node serves the next logs, and no batch is ever held in
//! memory: memory is the balance cache ([`Balances`]), whatever the batch's length. The
//! balances a chunk touches that the cache lacks are read on a second connection (the
//! first is in the middle of its COPY); they are the checkpoint's, since this ingestor is
//! the token's only writer and its own batch is not committed. The commit writes the
//! changed balances, the blocks and the checkpoint, as [`super::append`] does.
//!
//! Nothing is repeated inside: a failure drops the transaction (the connection is closed,
//! not returned to the pool mid-COPY) and the caller starts again from the checkpoint.

use alloy_primitives::Address;
use deadpool_postgres::Object;

use super::append::{Blocks, Moved, advance, stored_supply};
use super::balances::Balances;
use super::batch::CommitStats;
use super::copy::TransferCopy;
use super::error::{StoreResult, What};
use super::ranking::Rankings;
use super::{Store, lock_token, newest_transfer, notify};
use crate::decode::Transfer;
use crate::rpc::BlockRef;

/// A batch being written: its transaction, its COPY and what it has seen.
#[derive(Debug)]
pub struct OpenBatch {
    /// In the batch's transaction and its COPY; `None` once committed.
    writer: Option<Object>,
    /// Reads the balances the cache lacks.
    reader: Object,
    copy: Option<TransferCopy>,
    token: Address,
    next_seq: i64,
    transfers: i64,
    blocks: Blocks,
    rankings: Option<Rankings>,
    rejected: Vec<(u64, u64)>,
    /// Whether its commit waits for the disk (it was opened near the head).
    durable: bool,
}

impl Store {
    /// Whether a batch can be streamed here: it needs two connections of the pool.
    pub fn can_stream(&self) -> bool {
        self.pool.status().max_size >= 2
    }

    /// Whether the partitions of `transfers` are known to cover `block`: a streamed batch
    /// must end before a chunk that needs a new one (made outside any batch).
    pub fn covers(&self, block: u64) -> bool {
        block as i64 <= self.partitions_to.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Opens a batch starting at `first` (right after the checkpoint), whose first chunk
    /// ends at `reach`: of final blocks, or `near_head` (blocks whose headers the caller
    /// checks; their partitions get their indexes at once, and the commit waits for the
    /// disk). `None` if it cannot be appended (the store holds transfers at or above
    /// `first`, or the checkpoint is elsewhere): the caller commits it the careful way
    /// ([`Store::commit`]).
    pub async fn open_batch(
        &self,
        token: Address,
        first: u64,
        reach: u64,
        near_head: bool,
        balances: &mut Balances,
    ) -> StoreResult<Option<OpenBatch>> {
        // Before the transaction: making a partition locks the parent table.
        self.ensure_partitions(&(first..=reach), near_head).await?;
        let writer = self.client().await?;
        let reader = self.client().await?;
        // From here on, a failure must not hand the connection back mid-transaction.
        let mut batch = OpenBatch {
            writer: Some(writer),
            reader,
            copy: None,
            token,
            next_seq: 0,
            transfers: 0,
            blocks: Blocks::default(),
            rankings: None,
            rejected: Vec::new(),
            durable: near_head,
        };
        let client = batch.client();
        // A batch of final blocks: if the server crashes before this commit reaches the
        // disk, the batch and its checkpoint are lost together and read again. Near the
        // head the hashes kept are what a later reorg is traced by: wait for the disk.
        client
            .batch_execute(if near_head {
                "BEGIN"
            } else {
                "BEGIN; SET LOCAL synchronous_commit = off"
            })
            .await
            .what("starting the batch transaction")?;
        let (indexed, last_seq) = lock_token(client, token).await?;
        let newest = newest_transfer(client, token).await?;
        if indexed + 1 != first as i64 || newest >= first as i64 {
            batch.abandon().await;
            return Ok(None);
        }
        if !balances.knows_supply() {
            balances.set_supply(stored_supply(client, token).await?);
        }
        let rankings = Rankings::start(client, token, self.rankings).await?;
        let copy = TransferCopy::start(client, "transfers").await?;
        batch.rankings = Some(rankings);
        batch.next_seq = last_seq + 1;
        batch.copy = Some(copy);
        Ok(Some(batch))
    }
}

impl OpenBatch {
    /// The connection in the batch's transaction.
    fn client(&self) -> &tokio_postgres::Client {
        self.writer.as_deref().expect("open until committed")
    }

    /// Writes one chunk's transfers (in block and log order, following the previous
    /// chunk's) and remembers its rejected logs.
    pub async fn push(
        &mut self,
        transfers: &[Transfer],
        rejected: &[(u64, u64)],
        balances: &mut Balances,
    ) -> StoreResult<()> {
        let missing = balances.missing(transfers);
        balances.load(&**self.reader, self.token, missing).await?;
        let copy = self.copy.as_mut().expect("a batch is pushed to before it commits");
        let rankings = self.rankings.as_mut().expect("opened with the batch");
        for t in transfers {
            // The stored ranking a ranking needs is read on the reader (the writer is
            // in its COPY).
            rankings.before(t.block_number, balances, &**self.reader, self.token).await?;
            let after = balances.apply(t);
            copy.write(self.token, t, self.next_seq, Some(after)).await?;
            self.blocks.saw(t, after);
            rankings.moved(t, after, balances);
            self.next_seq += 1;
        }
        self.transfers += transfers.len() as i64;
        self.rejected.extend_from_slice(rejected);
        Ok(())
    }

    /// Transfers written so far.
    pub fn transfers(&self) -> usize {
        self.transfers as usize
    }

    /// Ends the COPY, writes the changed balances, the blocks (the `verified` headers'
    /// too) and the checkpoint `end`, and commits: durably if there are `verified`
    /// headers (a batch of final blocks that verified blocks joined). On success the
    /// cache holds what the store holds.
    pub async fn commit(
        mut self,
        end: &BlockRef,
        verified: &[BlockRef],
        balances: &mut Balances,
    ) -> StoreResult<CommitStats> {
        let mut rankings = self.rankings.take().expect("committed once");
        rankings.end_of_block(balances, &**self.reader, self.token).await?;
        self.copy.take().expect("committed once").finish().await?;
        self.blocks.verified(verified.iter().chain(std::iter::once(end)));
        let client = self.client();
        rankings.keep(client, self.token).await?;
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
        drop(self.writer.take());
        balances.settle();
        Ok(CommitStats { inserted: self.transfers as u64, balances_touched: balance_rows })
    }

    /// Rolls the transaction back (nothing was written yet) and hands the connection back.
    async fn abandon(&mut self) {
        if let Some(client) = self.writer.as_deref()
            && client.batch_execute("ROLLBACK").await.is_ok()
        {
            drop(self.writer.take());
        }
    }
}

impl Drop for OpenBatch {
    /// Uncommitted: the connection may be in the middle of a COPY or a failed
    /// transaction. It is closed, not pooled; Postgres rolls the transaction back.
    fn drop(&mut self) {
        if let Some(client) = self.writer.take() {
            drop(Object::take(client));
        }
    }
}
