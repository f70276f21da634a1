//! The one batch writer. Every batch (a backfill's, streamed as its logs arrive; a
//! verified step's; one held in memory and committed again after a failure) is written
//! here, in one transaction that opens at its first chunk and commits its transfers,
//! balances, blocks, rankings and checkpoint at once, and announces it. A batch covers a
//! token set of one chain: every token of the set moves in the same transaction, and
//! each statement covers them all (one lock, one balance read and write, one COPY per
//! chunk, one checkpoint update), so a batch of a thousand tokens costs about what a
//! batch of one does.
//!
//! Each chunk: the balances it touches that the cache ([`Balances`]) lacks are read, each
//! transfer gets both sides' balances after it (the one place of the balance arithmetic,
//! in [`Balances::apply`]), rankings due are taken, and the chunk goes into `transfers`
//! by one binary COPY. No batch is ever held in memory here: memory is the balance cache,
//! whatever the batch's length.
//!
//! A batch may start at or below a token's checkpoint (a step committed again after its COMMIT
//! was not confirmed, a range read again): the blocks already stored are whole (a batch
//! covers whole blocks), so their transfers are skipped and only the rest move balances.
//! A batch that would leave a gap after a token's checkpoint is refused. A token whose
//! checkpoint is above the batch's start (it starts later, or was indexed further) has
//! its stored blocks skipped the same way: a set whose tokens stand at different blocks
//! is written as one.
//!
//! Nothing is repeated inside: a failure drops the transaction (the connection is closed,
//! not returned to the pool mid-statement) and the caller decides what to write again.

use std::collections::HashMap;

use alloy_primitives::Address;
use deadpool_postgres::Object;

use super::balances::{Balance, Balances};
use super::batch::{Batch, CommitStats};
use super::blocks::{Blocks, Moved, advance, keep_blocks, sorted};
use super::copy::TransferCopy;
use super::error::{StoreError, StoreResult, What};
use super::partitions::Layout;
use super::ranking::Rankings;
use super::{Store, TokenKey, TokenSet, lock_tokens, notify};
use crate::decode::Transfer;
use crate::rpc::BlockRef;

/// A batch being written: its transaction and what it has seen.
#[derive(Debug)]
pub struct BatchWriter {
    /// In the batch's transaction; closed, not pooled, unless the batch commits.
    client: Closing,
    set: TokenSet,
    /// Per token id, what the batch knows and did.
    members: HashMap<i32, Member>,
    transfers: i64,
    /// Rejected logs above their token's stored blocks: (token id, block, log index).
    rejected: Vec<(i32, u64, u64)>,
    /// Whether its commit waits for the disk (it was opened near the head).
    durable: bool,
    /// Time spent reading stored balances and in COPYs, for the debug log.
    spent: (std::time::Duration, std::time::Duration),
}

/// One token of a batch.
#[derive(Debug)]
struct Member {
    key: TokenKey,
    /// Blocks up to this one are stored whole: their transfers are skipped.
    stored_to: i64,
    next_seq: i64,
    transfers: i64,
    blocks: Blocks,
    rankings: Rankings,
}

impl Store {
    /// Whether the partitions of `transfers` are known to cover `block`: a streamed batch
    /// must end before a chunk that needs a new one (made outside any batch).
    pub fn covers(&self, chain_id: i64, block: u64) -> bool {
        let known = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        let block = block.min(i64::MAX as u64) as i64;
        known.covers(chain_id, block, block)
    }

    /// Opens a batch of the token set `set` starting at `first` (at most right after
    /// each token's checkpoint), whose first chunk ends at `reach`: of final blocks, or
    /// `near_head` (blocks whose headers the caller checks; their partitions get their
    /// indexes at once, and the commit waits for the disk). Partitions it needs are made
    /// as `layout` says.
    pub async fn open_batch(
        &self,
        set: &TokenSet,
        (first, reach): (u64, u64),
        near_head: bool,
        layout: Layout,
        balances: &mut Balances,
    ) -> StoreResult<BatchWriter> {
        // Before the transaction: making a partition locks the parent table, and that
        // must not last as long as a batch.
        self.ensure_partitions(set.chain_id(), &(first..=reach), near_head, layout).await?;
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
        let locked = lock_tokens(client.get(), set).await?;
        let mut members = HashMap::with_capacity(locked.len());
        for t in locked {
            if first as i64 > t.indexed + 1 {
                return Err(StoreError::Refused(format!(
                    "a batch from block {first} would leave blocks {}..={} of token id {} unindexed",
                    t.indexed + 1,
                    first - 1,
                    t.key.id
                )));
            }
            if !balances.knows_supply(t.key.id) {
                balances.set_supply(t.key.id, t.supply);
            }
            members.insert(
                t.key.id,
                Member {
                    key: t.key,
                    stored_to: t.indexed.max(t.newest),
                    next_seq: t.last_seq + 1,
                    transfers: 0,
                    blocks: Blocks::default(),
                    rankings: Rankings::new(
                        self.rankings,
                        t.key.id,
                        t.transfer_count,
                        t.since_ranking,
                    ),
                },
            );
        }
        Ok(BatchWriter {
            client,
            set: set.clone(),
            members,
            transfers: 0,
            rejected: Vec::new(),
            durable: near_head,
            spent: Default::default(),
        })
    }

    /// Writes a batch held in memory in one transaction: its transfers (those of blocks
    /// not stored yet), the balance changes of those, its blocks and the checkpoint. Safe
    /// to repeat. Refuses a batch that would leave a gap after a checkpoint.
    pub async fn commit(&self, set: &TokenSet, batch: &Batch) -> StoreResult<CommitStats> {
        let (first, last) = (*batch.span.start(), *batch.span.end());
        let near_head = !batch.verified.is_empty();
        let mut balances = Balances::unbounded();
        let layout = Layout {
            density: Some((batch.transfers.len() as u64, last.saturating_sub(first) + 1)),
        };
        let mut writer =
            self.open_batch(set, (first, last), near_head, layout, &mut balances).await?;
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
        rejected: &[(Address, u64, u64)],
        balances: &mut Balances,
    ) -> StoreResult<()> {
        let mut ids = Vec::with_capacity(transfers.len());
        let mut fresh = Vec::with_capacity(transfers.len());
        for t in transfers {
            let m = self.member(&t.token)?;
            if t.block_number as i64 > m.stored_to {
                ids.push(m.key.id);
                fresh.push(t);
            }
        }
        for &(token, block, log_index) in rejected {
            let m = self.member(&token)?;
            if block as i64 > m.stored_to {
                self.rejected.push((m.key.id, block, log_index));
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }
        let client = self.client.get();
        let loading = std::time::Instant::now();
        let missing = balances.missing(&ids, fresh.iter().copied());
        balances.load(client, missing).await?;
        self.spent.0 += loading.elapsed();
        // The arithmetic first, while the connection may still read what a ranking
        // needs; then the chunk's one COPY.
        let mut after: Vec<(Balance, Balance)> = Vec::with_capacity(fresh.len());
        for (id, t) in ids.iter().zip(&fresh) {
            let m = self.members.get_mut(id).expect("a member");
            let rankings = &mut m.rankings;
            rankings.before(t.block_number, balances, client, m.key).await?;
            let a = balances.apply(*id, t);
            m.blocks.saw(t, a);
            rankings.moved(t, a, balances);
            after.push(a);
        }
        // Rows go in token by token (each token's in block order, so its sequence
        // numbers follow the chain): the key and sequence indexes lead with the token,
        // and a chunk of many tokens then fills each token's place in them in one run
        // instead of hopping between a thousand places row by row.
        let mut order: Vec<usize> = (0..fresh.len()).collect();
        order.sort_by_key(|&i| ids[i]);
        let copying = std::time::Instant::now();
        let mut copy = TransferCopy::start(client).await?;
        for i in order {
            let m = self.members.get_mut(&ids[i]).expect("a member");
            copy.write(m.key, fresh[i], m.next_seq, after[i]).await?;
            m.next_seq += 1;
            m.transfers += 1;
        }
        copy.finish().await?;
        self.spent.1 += copying.elapsed();
        self.transfers += fresh.len() as i64;
        Ok(())
    }

    /// The member that `token` is; a log of another address is refused (the node did
    /// not keep to the filter).
    fn member(&self, token: &Address) -> StoreResult<&Member> {
        self.set.get(token).and_then(|k| self.members.get(&k.id)).ok_or_else(|| {
            StoreError::Refused(format!(
                "the node returned a log of {token}, which is not in the batch's token set"
            ))
        })
    }

    /// Transfers written so far.
    pub fn transfers(&self) -> usize {
        self.transfers as usize
    }

    /// Writes the changed balances, the blocks (the `verified` headers' too) and the
    /// checkpoint `end` of every token, and commits: durably if there are `verified`
    /// headers. On success the cache holds what the store holds.
    pub async fn commit(
        mut self,
        end: &BlockRef,
        verified: &[BlockRef],
        balances: &mut Balances,
    ) -> StoreResult<CommitStats> {
        let client = self.client.get();
        // The headers (checked ones and the checkpoint) are kept once per batch, by the
        // token the batch takes furthest (all of the batch's blocks are new to it; the
        // lowest id among equals): a fork is traced through every token of the chain, a
        // token's own rows are the blocks of its transfers (its holder counts), and its
        // checkpoint's hash is on its row. A set of a thousand tokens does not write a
        // thousand rows a block.
        let lead = self.members.values().map(|m| (m.stored_to, m.key.id)).min().map(|l| l.1);
        for m in self.members.values_mut() {
            m.rankings.end_of_block(balances, client, m.key).await?;
            m.rankings.keep(client, m.key).await?;
            if Some(m.key.id) == lead {
                // Headers of blocks stored before keep the rows they have.
                let stored_to = m.stored_to;
                m.blocks.verified(
                    verified
                        .iter()
                        .chain(std::iter::once(end))
                        .filter(|b| b.number as i64 > stored_to),
                );
            }
        }
        if !self.durable && !verified.is_empty() {
            // The hashes kept are what a later reorg is traced by.
            client
                .batch_execute("SET LOCAL synchronous_commit = on")
                .await
                .what("making the commit durable")?;
        }
        let written = balances.write(client).await?;
        let rejected = keep_blocks(
            client,
            self.members.values().map(|m| (m.key.id, &m.blocks)),
            &self.rejected,
        )
        .await?;
        let moved: Vec<Moved> = self
            .members
            .values()
            .map(|m| Moved {
                token: m.key.id,
                transfers: m.transfers,
                holders: written.holders.get(&m.key.id).copied().unwrap_or(0),
                rejected: rejected.get(&m.key.id).copied().unwrap_or(0),
                supply: written.supplies.get(&m.key.id).copied(),
            })
            .collect();
        advance(client, &moved, end).await?;
        let announced: Vec<i32> =
            self.members.values().filter(|m| m.transfers > 0).map(|m| m.key.id).collect();
        notify(client, &announced).await?;
        client.batch_execute("COMMIT").await.what("committing the batch")?;
        tracing::debug!(
            loading_ms = self.spent.0.as_millis() as u64,
            copying_ms = self.spent.1.as_millis() as u64,
            "the batch's reads of stored balances and its COPYs"
        );
        // Committed: the connection is clean again and goes back to the pool.
        drop(self.client.0.take());
        balances.settle();
        Ok(CommitStats { inserted: self.transfers as u64, balances_touched: written.rows })
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
