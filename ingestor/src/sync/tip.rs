//! Indexing above the finalized block: verified steps (each header checked against its
//! parent, each log against its block's hash), and when the stored chain was orphaned,
//! the search for the fork and the rollback to it. A node that is merely behind is waited
//! for, never rolled back to.

use std::time::Instant;

use anyhow::Context;
use tracing::{Instrument, debug, info, info_span, warn};

use super::Indexer;
use super::backfill::Unfinished;
use crate::fetch;
use crate::rpc::BlockRef;
use crate::store::{Balances, Batch, BatchWriter, Layout, StoreError};

/// At most this many blocks in one verified step (one batch of headers).
const MAX_STEP_BLOCKS: u64 = 256;

impl Indexer {
    /// Indexes blocks from `next` (at most [`MAX_STEP_BLOCKS`], not past `end`) with each
    /// header checked against its parent and each log against its block's hash, and keeps
    /// their hashes. Returns the block to index next: after the step; `next` again when the
    /// chain moved while it was read; or the block after the fork when the stored chain was
    /// orphaned, after rolling back to the fork.
    pub(super) async fn step(&self, next: u64, end: u64) -> anyhow::Result<u64> {
        let stop = end.min(next + MAX_STEP_BLOCKS - 1);
        let began = Instant::now();
        let numbers: Vec<u64> = (next..=stop).collect();
        let found = self.rpc.blocks_if_known(&numbers).await?;
        let Some(headers) = found.into_iter().collect::<Option<Vec<_>>>() else {
            return Ok(next);
        };
        if next > 0
            && let Some(stored) = self.store.block_hash(&self.set, next - 1).await?
            && headers[0].parent_hash != stored
        {
            return self.roll_back_from(next - 1).await;
        }
        if headers.windows(2).any(|w| w[1].parent_hash != w[0].hash) {
            return Ok(next);
        }
        let mut spans =
            fetch::prefetched(self.rpc.clone(), self.token_list(), next..=stop, self.spans());
        let on_branch = |block: u64, hash| headers[(block - next) as usize].hash == hash;
        // A step of several blocks (catching up) is written as its logs arrive, like a
        // backfill batch, and also held in memory: if streaming fails, the step is
        // committed from memory the careful way (a repeated commit is safe).
        let started = Instant::now();
        let mut streamed = if stop > next { self.open_step(next, stop).await } else { None };
        let (mut transfers, mut rejected) = (Vec::new(), Vec::new());
        let (mut requests, mut chunks) = (0u32, 0u32);
        while let Some(chunk) = spans.next().await {
            let chunk = chunk?;
            requests += chunk.requests;
            chunks += 1;
            if !chunk.transfers.iter().all(|t| on_branch(t.block_number, t.block_hash)) {
                // Logs of another branch than the headers: the chain moved between the
                // calls. A streamed step is rolled back as it is dropped.
                return Ok(next);
            }
            if let Some((batch, balances)) = streamed.as_mut()
                && let Err(e) = batch.push(&chunk.transfers, &chunk.rejected, balances).await
            {
                warn!(error = %bootstrap::ErrorChain(&e), "streaming a verified step failed; it is committed from memory");
                streamed = None;
            }
            transfers.extend(chunk.transfers);
            rejected.extend(chunk.rejected);
        }
        let written = started.elapsed();
        let end_block = *headers.last().expect("at least one header");
        let count = transfers.len();
        let batch =
            Batch { span: next..=stop, end: end_block, transfers, rejected, verified: headers };
        let span = info_span!("batch", from = next, to = stop);
        let stats = match streamed {
            Some((open, mut balances)) => {
                match open
                    .commit(&end_block, &batch.verified, &mut balances)
                    .instrument(span.clone())
                    .await
                {
                    Ok(stats) => {
                        self.count_commit(&stats, &end_block, started);
                        self.keep_balances(balances);
                        stats
                    }
                    Err(e) => {
                        // The COMMIT may have happened: the careful commit finds out.
                        warn!(error = %bootstrap::ErrorChain(&e), "committing a streamed step failed; it is committed from memory");
                        self.commit_batch(&batch).instrument(span).await?
                    }
                }
            }
            None => self.commit_batch(&batch).instrument(span).await?,
        };
        info!(
            from = next,
            to = stop,
            transfers = count,
            inserted = stats.inserted,
            requests,
            spans = chunks,
            headers_ms = (started - began).as_millis() as u64,
            written_ms = written.as_millis() as u64,
            ms = started.elapsed().as_millis() as u64,
            "committed"
        );
        Ok(stop + 1)
    }

    /// The first verified step above a deep range, written into the range's last batch
    /// (`open`, not committed yet) and committed with it, once and durably: the balances
    /// both change are written once, and no commit waits between the last final block
    /// and the first verified one. The step's headers and logs are all checked before
    /// any of its rows is written, so a chain that moved meanwhile costs the deep batch
    /// nothing: it commits alone, and the step is taken again the usual way. Returns the
    /// block to index next, as [`Indexer::step`] does; below the step if the batch
    /// failed and the range is read again from the checkpoint.
    pub(super) async fn step_onto(&self, open: Unfinished, end: u64) -> anyhow::Result<u64> {
        let next = open.last() + 1;
        let stop = end.min(next + MAX_STEP_BLOCKS - 1);
        if !self.store.covers(self.set.chain_id(), stop) {
            // Its blocks need a partition made outside any batch.
            let after = self.commit_alone(open).await?;
            return if after == next { self.step(next, end).await } else { Ok(after) };
        }
        let began = Instant::now();
        // The range's last block too: the step's first parent.
        let numbers: Vec<u64> = (next - 1..=stop).collect();
        let found = match self.rpc.blocks_if_known(&numbers).await {
            Ok(found) => found,
            Err(e) => {
                self.commit_alone(open).await?;
                return Err(e.into());
            }
        };
        let headers = match found.into_iter().collect::<Option<Vec<_>>>() {
            Some(h) if h.windows(2).all(|w| w[1].parent_hash == w[0].hash) => h,
            // A chain that got shorter or moved under the calls: the usual step sorts
            // it out, after the final blocks are committed.
            _ => return self.commit_alone(open).await,
        };
        let headers = &headers[1..];
        let on_branch = |block: u64, hash| headers[(block - next) as usize].hash == hash;
        let mut spans =
            fetch::prefetched(self.rpc.clone(), self.token_list(), next..=stop, self.spans());
        let mut chunks = Vec::new();
        while let Some(chunk) = spans.next().await {
            match chunk {
                Ok(c) if c.transfers.iter().all(|t| on_branch(t.block_number, t.block_hash)) => {
                    chunks.push(c)
                }
                Ok(_) => return self.commit_alone(open).await,
                Err(e) => {
                    self.commit_alone(open).await?;
                    return Err(e);
                }
            }
        }
        let fetched = began.elapsed();
        let Unfinished { streaming, mut balances } = open;
        let (first, deep) = (streaming.first(), streaming.transfers());
        let (requests, spans) =
            chunks.iter().fold(streaming.fetched(), |(r, s), c| (r + c.requests, s + 1));
        let end_block = *headers.last().expect("at least one header");
        let started = Instant::now();
        let span = info_span!("batch", from = first, to = stop, joined = true);
        let written = async {
            let mut batch = streaming.into_batch();
            for c in &chunks {
                batch.push(&c.transfers, &c.rejected, &mut balances).await?;
            }
            let written = started.elapsed();
            let stats = batch.commit(&end_block, headers, &mut balances).await?;
            Ok::<_, StoreError>((written, stats))
        }
        .instrument(span)
        .await;
        match written {
            Ok((written, stats)) => {
                self.count_commit(&stats, &end_block, started);
                self.keep_balances(balances);
                info!(
                    from = first,
                    to = stop,
                    transfers = stats.inserted,
                    final_transfers = deep,
                    balances = stats.balances_touched,
                    requests,
                    spans,
                    fetched_ms = fetched.as_millis() as u64,
                    written_ms = written.as_millis() as u64,
                    ms = started.elapsed().as_millis() as u64,
                    "committed the last final blocks with the first verified step"
                );
                Ok(stop + 1)
            }
            Err(e) => self.resume_after(e.into()).await,
        }
    }

    /// Commits a deep range's last batch on its own. Returns the block after it, or
    /// where the range resumes if the commit failed for a passing reason.
    pub(super) async fn commit_alone(&self, open: Unfinished) -> anyhow::Result<u64> {
        let Unfinished { streaming, mut balances } = open;
        match self.commit_streamed(streaming, &mut balances).await {
            Ok((last, _)) => {
                self.keep_balances(balances);
                Ok(last + 1)
            }
            Err(e) => self.resume_after(e).await,
        }
    }

    /// After a streamed batch failed: for a passing reason (the database went away),
    /// the block after the checkpoint, where the range is read again (the batch may even
    /// have committed: the checkpoint says); otherwise the error.
    async fn resume_after(&self, e: anyhow::Error) -> anyhow::Result<u64> {
        if !super::transient(&e) {
            return Err(e);
        }
        let policy = self.rpc.retry_policy();
        let delay = policy.backoff(1);
        warn!(error = %bootstrap::ErrorChain(e.as_ref() as &dyn std::error::Error), delay_ms = delay.as_millis() as u64, "a streamed batch failed; reading again from the checkpoint");
        tokio::time::sleep(delay).await;
        let indexed = crate::retry::retrying(&policy, "reading the checkpoint", || {
            self.store.lowest_checkpoint(&self.set)
        })
        .await?
        .context("a token row is gone")?;
        Ok((indexed + 1) as u64)
    }

    /// Opens the streamed batch of a step `next..=stop`, or `None` where it cannot be
    /// streamed (a failure).
    async fn open_step(&self, next: u64, stop: u64) -> Option<(BatchWriter, Balances)> {
        let mut balances = self.take_balances();
        match self
            .store
            .open_batch(&self.set, (next, stop), true, Layout::default(), &mut balances)
            .await
        {
            Ok(open) => Some((open, balances)),
            Err(e) => {
                warn!(error = %bootstrap::ErrorChain(&e), "could not stream a verified step; it is committed from memory");
                None
            }
        }
    }

    /// Checks that the checkpoint block (`next - 1`) is still on the node's chain; if the
    /// chain got shorter or changed, rolls back to the fork. Returns the block to index
    /// next.
    pub(super) async fn check_tip(&self, next: u64, head: u64) -> anyhow::Result<u64> {
        let checkpoint = next - 1;
        let Some(stored) = self.store.block_hash(&self.set, checkpoint).await? else {
            return Ok(next);
        };
        // A node behind the checkpoint whose head is on the stored chain is lagging (a
        // backend behind a load balancer), not reorged: wait for it rather than roll back.
        if checkpoint > head
            && let Some(ours) = self.store.block_hash(&self.set, head).await?
            && self
                .rpc
                .blocks_if_known(&[head])
                .await?
                .pop()
                .flatten()
                .is_some_and(|b| b.hash == ours)
        {
            debug!(
                head,
                checkpoint, "the node is behind the checkpoint, on the same chain; waiting"
            );
            return Ok(next);
        }
        let on_node = if checkpoint <= head {
            self.rpc.blocks_if_known(&[checkpoint]).await?.pop().flatten()
        } else {
            None
        };
        match on_node {
            Some(b) if b.hash == stored => Ok(next),
            // A head past the checkpoint from a node that does not have the checkpoint's
            // block: answers from two backends, one lagging. Ask again later.
            None if checkpoint <= head => {
                debug!(head, checkpoint, "the node does not have a block below its head; waiting");
                Ok(next)
            }
            _ => self.roll_back_from(checkpoint).await,
        }
    }

    /// The stored chain is orphaned at `top`: finds the fork, rolls back to it and counts
    /// the reorg. Returns the block after the fork, where indexing goes on.
    async fn roll_back_from(&self, top: u64) -> anyhow::Result<u64> {
        let fork = self.find_fork(top).await?;
        self.drop_balances();
        let removed = self.store.roll_back(&self.set, &fork).await?;
        // Tokens indexed above the fork are fetched again from it.
        self.fetch_from(fork.number + 1);
        let depth = top - fork.number;
        self.metrics.reorgs.inc();
        self.metrics.reorg_depth.observe(depth as f64);
        self.metrics.checkpoint(fork.number, fork.timestamp);
        warn!(fork = fork.number, depth, removed, "reorg: rolled back to the fork");
        Ok(fork.number + 1)
    }

    /// The newest stored block that is still on the node's chain, searching down from
    /// `top`; an error if the fork would be at or below the finalized block.
    async fn find_fork(&self, top: u64) -> anyhow::Result<BlockRef> {
        let finalized = self.finalized_floor();
        let mut below = top;
        loop {
            let stored = self.store.recent_blocks(&self.set, below, 64).await?;
            let Some(&(oldest, _)) = stored.last() else {
                anyhow::bail!(
                    "reorg below the first indexed block: the store holds no block of the node's chain"
                );
            };
            let numbers: Vec<u64> = stored.iter().map(|b| b.0).collect();
            let node = self.rpc.blocks_if_known(&numbers).await?;
            let changed = |n: u64| {
                format!(
                    "reorg below the finalized block {finalized}: block {n} changed on the node; refusing to serve data that may be wrong (a misbehaving node, or a broken chain)"
                )
            };
            for ((number, hash), on_node) in stored.iter().zip(node) {
                if let Some(b) = on_node.filter(|b| b.hash == *hash) {
                    // Every block above the finalized one is stored, so a fork found below
                    // it means a block at or below it changed.
                    anyhow::ensure!(b.number >= finalized, "{}", changed(b.number + 1));
                    return Ok(b);
                }
                anyhow::ensure!(*number > finalized, "{}", changed(*number));
            }
            below = oldest.saturating_sub(1);
        }
    }
}
