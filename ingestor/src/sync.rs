//! Keeps the store in step with the chain: decides where indexing resumes, pushes block
//! ranges through fetch → decode → store in strict block order, and, without an end
//! block, keeps polling for new blocks. A batch commits when it holds enough transfers or
//! has waited long enough, so backfills write large batches and the head small ones.

use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use alloy_primitives::Address;
use anyhow::Context;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::fetch::{self, Chunk, SpanPolicy};
use crate::rpc::{BlockRef, Rpc};
use crate::store::{Batch, Store, TokenRow};

/// Where a run starts, given what the store holds and what was asked.
///
/// A token already in the store resumes after its checkpoint: a `--from` inside the
/// indexed span (or right after it) resumes too, so restarting with the same flags never
/// re-reads history. A `--from` that would leave a gap or reach before the indexed span
/// is refused, since balances are sums over an unbroken history.
pub fn start_block(
    existing: Option<&TokenRow>,
    from: Option<u64>,
    head: u64,
    chain_id: u64,
) -> anyhow::Result<u64> {
    let Some(row) = existing else {
        return Ok(from.unwrap_or(head));
    };
    anyhow::ensure!(
        row.chain_id == chain_id,
        "token {} was indexed from chain {} but the RPC node serves chain {chain_id}: use the right --rpc-url or another database",
        row.address,
        row.chain_id
    );
    let resume = (row.indexed_block + 1) as u64;
    match from {
        Some(f) if f < row.start_block => anyhow::bail!(
            "--from {f} is before block {}, where this token's index starts; to index earlier blocks, start over in an empty database",
            row.start_block
        ),
        Some(f) if f > resume => anyhow::bail!(
            "--from {f} would leave blocks {resume}..={} unindexed (the store holds {}..={}); use --from {resume} or less",
            f - 1,
            row.start_block,
            row.indexed_block
        ),
        _ => Ok(resume),
    }
}

/// How the pipeline batches and polls.
#[derive(Debug, Clone, Copy)]
pub struct SyncPolicy {
    /// Span sizing and concurrency of `eth_getLogs`.
    pub spans: SpanPolicy,
    /// Commit once a batch holds this many transfers.
    pub batch_transfers: usize,
    /// Commit a non-empty batch that has waited this long.
    pub batch_interval: Duration,
    /// How often to ask for the head when following.
    pub poll_interval: Duration,
    /// Where the finalized block comes from. Blocks above it are indexed in verified
    /// steps and their hashes kept; a reorg that would change it stops the ingestor.
    pub finality: FinalityPolicy,
    /// Index only blocks at least this many blocks below the head.
    pub confirmations: u64,
    /// Draw a progress line on the terminal during long ranges (batch lines go to debug).
    pub draw_progress: bool,
}

/// Where the finalized and safe blocks come from.
#[derive(Debug, Clone, Copy)]
pub struct FinalityPolicy {
    /// Read the node's `finalized` and `safe` tags (else always use `depth`).
    pub from_node: bool,
    /// Without tags: the finalized block is this far below the head, the safe one half as
    /// far.
    pub depth: u64,
}

/// The chain's finality as read at one head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finality {
    /// The newest block the chain calls safe (unlikely to reorg).
    pub safe: u64,
    /// The newest block the chain calls finalized (never reorgs).
    pub finalized: u64,
}

/// At most this many blocks in one verified step (one batch of headers).
const MAX_STEP_BLOCKS: u64 = 256;

/// Indexes one token into one store.
#[derive(Debug)]
pub struct Indexer {
    /// The node.
    pub rpc: Rpc,
    /// The database.
    pub store: Store,
    /// The token.
    pub token: Address,
    /// Batching and polling.
    pub policy: SyncPolicy,
    /// Stops the run between batches.
    pub shutdown: CancellationToken,
    /// Where progress, RPC calls, commits and reorgs are counted.
    pub metrics: crate::metrics::Metrics,
    /// Whether the supply mismatch was reported already (once per run is enough).
    pub supply_warned: std::sync::atomic::AtomicBool,
    /// The safe and finalized blocks last recorded in the store (`None` before the first
    /// record of this run); no reorg may change a block at or below that finalized one.
    pub recorded: std::sync::Mutex<Option<(u64, u64)>>,
    /// Whether the fallback to the finality depth was reported already.
    pub depth_noted: std::sync::atomic::AtomicBool,
    /// The head finality was last read at, and what it was.
    pub last_finality: std::sync::Mutex<Option<(u64, Finality)>>,
}

impl Indexer {
    /// Indexes from `start` to `to` (inclusive), waiting for the node to reach `to` if it
    /// has not; without `to`, follows the head until shut down. Blocks deeper than the
    /// reorg window go through wide ranges; the rest through verified steps.
    pub async fn run(&self, start: u64, to: Option<u64>) -> anyhow::Result<()> {
        let mut next = start;
        let mut caught_up_logged = false;
        let mut heads = Heads::default();
        loop {
            let head = self.rpc.head().await.context("reading the chain head")?;
            self.metrics.head(head);
            let finality = self.finality(head).await?;
            let tip = head.saturating_sub(self.policy.confirmations);
            let end = to.map_or(tip, |t| t.min(tip));
            if next > 0 {
                // The block we stopped at must still be the node's, also before a deep
                // range (after a restart far behind the head) that checks no parents.
                next = self.check_tip(next, head).await?;
            }
            if next <= end {
                // Final blocks cannot change: wide ranges, no parents checked.
                let deep_end = end.min(finality.finalized);
                if next <= deep_end {
                    self.index(next..=deep_end).await?;
                    next = deep_end + 1;
                }
                while next <= end && !self.shutdown.is_cancelled() {
                    let after = self.step(next, end).await?;
                    if after == next {
                        // The chain moved while we read it: look at the head again.
                        break;
                    }
                    next = after;
                }
                caught_up_logged = false;
                self.check_supply(next - 1).await;
            }
            if self.shutdown.is_cancelled() || to.is_some_and(|t| next > t) {
                return Ok(());
            }
            if !caught_up_logged {
                match to {
                    Some(t) => info!(
                        indexed = next - 1,
                        waiting_for = t,
                        "the node's head is behind --to; waiting"
                    ),
                    None => info!(indexed = next - 1, "caught up; following the head"),
                }
                caught_up_logged = true;
            }
            self.wait_for_head(&mut heads).await;
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
        }
    }

    /// Waits for the next block: a newHeads notification on a WebSocket node (polling ten
    /// times slower as a safety net), else the poll interval. A dropped subscription is
    /// reported, polling takes over, and it is renewed at most once a minute.
    async fn wait_for_head(&self, heads: &mut Heads) {
        if !heads.http
            && heads.watch.is_none()
            && heads.retry_at.is_none_or(|t| Instant::now() >= t)
        {
            match self.rpc.watch_heads().await {
                Ok(Some(rx)) => {
                    info!("subscribed to newHeads");
                    heads.watch = Some(rx);
                }
                // HTTP: polling only, nothing to retry.
                Ok(None) => heads.http = true,
                Err(e) => {
                    warn!(error = %e, "newHeads subscription failed; polling");
                    heads.retry_at = Some(Instant::now() + Duration::from_secs(60));
                }
            }
        }
        let poll = self.policy.poll_interval;
        match heads.watch.as_mut() {
            Some(rx) => tokio::select! {
                () = self.shutdown.cancelled() => {}
                () = tokio::time::sleep(poll * 10) => {}
                tick = rx.recv() => if tick.is_none() {
                    warn!("newHeads subscription dropped; polling every {poll:?}");
                    heads.watch = None;
                    heads.retry_at = Some(Instant::now() + Duration::from_secs(60));
                },
            },
            None => tokio::select! {
                () = self.shutdown.cancelled() => {}
                () = tokio::time::sleep(poll) => {}
            },
        }
    }

    /// Indexes blocks from `next` (at most [`MAX_STEP_BLOCKS`], not past `end`) with each
    /// header checked against its parent and each log against its block's hash, and keeps
    /// their hashes. Returns the block to index next: after the step; `next` again when the
    /// chain moved while it was read; or the block after the fork when the stored chain was
    /// orphaned, after rolling back to the fork.
    async fn step(&self, next: u64, end: u64) -> anyhow::Result<u64> {
        let stop = end.min(next + MAX_STEP_BLOCKS - 1);
        let numbers: Vec<u64> = (next..=stop).collect();
        let found = self.rpc.blocks_if_known(&numbers).await?;
        let Some(headers) = found.into_iter().collect::<Option<Vec<_>>>() else {
            return Ok(next);
        };
        if next > 0
            && let Some(stored) = self.store.block_hash(self.token, next - 1).await?
            && headers[0].parent_hash != stored
        {
            let fork = self.find_fork(next - 1).await?;
            let removed = self.store.roll_back(self.token, &fork).await?;
            self.count_reorg(&fork, next - 1 - fork.number);
            warn!(
                fork = fork.number,
                depth = next - 1 - fork.number,
                removed,
                "reorg: rolled back to the fork"
            );
            return Ok(fork.number + 1);
        }
        if headers.windows(2).any(|w| w[1].parent_hash != w[0].hash) {
            return Ok(next);
        }
        let mut spans = std::pin::pin!(fetch::chunks(
            self.rpc.clone(),
            self.token,
            next..=stop,
            self.policy.spans
        ));
        let (mut transfers, mut rejected) = (Vec::new(), Vec::new());
        while let Some(chunk) = spans.next().await {
            let chunk = chunk?;
            transfers.extend(chunk.transfers);
            rejected.extend(chunk.rejected);
        }
        let on_branch = |block: u64, hash| headers[(block - next) as usize].hash == hash;
        if !transfers.iter().all(|t| on_branch(t.block_number, t.block_hash)) {
            // Logs of another branch than the headers: the chain moved between the calls.
            return Ok(next);
        }
        let end_block = *headers.last().expect("at least one header");
        let count = transfers.len();
        let batch =
            Batch { span: next..=stop, end: end_block, transfers, rejected, verified: headers };
        let started = Instant::now();
        let stats = self
            .commit_batch(&batch)
            .instrument(info_span!("batch", from = next, to = stop))
            .await?;
        info!(
            from = next,
            to = stop,
            transfers = count,
            inserted = stats.inserted,
            ms = started.elapsed().as_millis() as u64,
            "committed"
        );
        Ok(stop + 1)
    }

    /// Checks that the checkpoint block (`next - 1`) is still on the node's chain; if the
    /// chain got shorter or changed, rolls back to the fork. Returns the block to index
    /// next.
    async fn check_tip(&self, next: u64, head: u64) -> anyhow::Result<u64> {
        let checkpoint = next - 1;
        let Some(stored) = self.store.block_hash(self.token, checkpoint).await? else {
            return Ok(next);
        };
        // A node behind the checkpoint whose head is on the stored chain is lagging (a
        // backend behind a load balancer), not reorged: wait for it rather than roll back.
        if checkpoint > head
            && let Some(ours) = self.store.block_hash(self.token, head).await?
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
            Some(b) if b.hash == stored => return Ok(next),
            // A head past the checkpoint from a node that does not have the checkpoint's
            // block: answers from two backends, one lagging. Ask again later.
            None if checkpoint <= head => {
                debug!(head, checkpoint, "the node does not have a block below its head; waiting");
                return Ok(next);
            }
            _ => {}
        }
        let fork = self.find_fork(checkpoint).await?;
        let removed = self.store.roll_back(self.token, &fork).await?;
        self.count_reorg(&fork, checkpoint - fork.number);
        warn!(
            fork = fork.number,
            depth = checkpoint - fork.number,
            removed,
            "reorg: rolled back to the fork"
        );
        Ok(fork.number + 1)
    }

    /// Reads the chain's finality at `head` (the node's tags, or the configured depth) and
    /// records it in the store when it moved, so answers and streams "as of finalized"
    /// move with it. The recorded finalized block never goes back (a lagging node may
    /// say less).
    async fn finality(&self, head: u64) -> anyhow::Result<Finality> {
        use std::sync::atomic::Ordering;
        // Finality moves only with new blocks: a poll that saw no new head asks nothing.
        if let Some((seen, finality)) = *self.last_finality.lock().expect("finality lock")
            && seen == head
        {
            return Ok(finality);
        }
        let tags = if self.policy.finality.from_node {
            self.rpc.finality_tags().await.context("reading the finalized and safe blocks")?
        } else {
            None
        };
        let depth = self.policy.finality.depth;
        let finality = match tags {
            Some((safe, finalized)) => Finality { safe, finalized },
            None => {
                if self.policy.finality.from_node && !self.depth_noted.swap(true, Ordering::Relaxed)
                {
                    info!(
                        depth,
                        "the node has no finalized/safe block tags: a block --finality-depth below the head counts as final"
                    );
                }
                Finality {
                    safe: head.saturating_sub(depth.div_ceil(2)),
                    finalized: head.saturating_sub(depth),
                }
            }
        };
        self.metrics.finality(finality.safe, finality.finalized);
        let recorded = *self.recorded.lock().expect("finality lock");
        let (mut safe, mut finalized) = match recorded {
            Some((s, f)) => (finality.safe.max(s), finality.finalized.max(f)),
            None => (finality.safe, finality.finalized),
        };
        if recorded != Some((safe, finalized)) {
            (safe, finalized) = crate::store::retrying(&self.rpc.retry_policy(), || {
                self.store.record_finality(self.token, safe, finalized)
            })
            .await?;
            *self.recorded.lock().expect("finality lock") = Some((safe, finalized));
        }
        let finality = Finality { safe, finalized };
        *self.last_finality.lock().expect("finality lock") = Some((head, finality));
        Ok(finality)
    }

    /// The finalized block recorded in the store.
    fn finalized_floor(&self) -> u64 {
        self.recorded.lock().expect("finality lock").map_or(0, |(_, f)| f)
    }

    /// The newest stored block that is still on the node's chain, searching down from
    /// `top`; an error if the fork would be at or below the finalized block.
    async fn find_fork(&self, top: u64) -> anyhow::Result<BlockRef> {
        let finalized = self.finalized_floor();
        let mut below = top;
        loop {
            let stored = self.store.recent_blocks(self.token, below, 64).await?;
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

    /// Indexes `range` in strict block order, committing batches as they fill.
    pub async fn index(&self, range: RangeInclusive<u64>) -> anyhow::Result<()> {
        let (tx, mut rx) =
            mpsc::channel::<anyhow::Result<Chunk>>(self.policy.spans.concurrency.max(2));
        let stream = fetch::chunks(self.rpc.clone(), self.token, range.clone(), self.policy.spans);
        let producer = tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(chunk) = stream.next().await {
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    break;
                }
            }
        });
        let _abort_producer = AbortOnDrop(producer);

        let mut progress = Progress::new(range.clone(), self.policy.draw_progress);
        let mut pending: Vec<Chunk> = Vec::new();
        let mut pending_transfers = 0usize;
        let mut pending_since = Instant::now();
        loop {
            let received = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => None,
                chunk = rx.recv() => chunk,
            };
            let last = match received {
                Some(Ok(chunk)) => {
                    let last = *chunk.span.end() == *range.end();
                    if pending.is_empty() {
                        pending_since = Instant::now();
                    }
                    pending_transfers += chunk.transfers.len();
                    pending.push(chunk);
                    last
                }
                Some(Err(e)) => return Err(e),
                // Shut down, or the stream ended: write what is complete.
                None => true,
            };
            let due = pending_transfers >= self.policy.batch_transfers
                || pending_since.elapsed() >= self.policy.batch_interval;
            if !pending.is_empty() && (last || due) {
                let chunks = std::mem::take(&mut pending);
                pending_transfers = 0;
                let (end, transfers) = self.commit(chunks).await?;
                progress.advance(end, transfers);
            }
            if last {
                progress.finish();
                return Ok(());
            }
        }
    }

    /// Commits contiguous chunks as one batch, retrying while the database is unreachable.
    /// Returns the batch's last block and its transfer count.
    async fn commit(&self, chunks: Vec<Chunk>) -> anyhow::Result<(u64, usize)> {
        let first = *chunks[0].span.start();
        let last = *chunks[chunks.len() - 1].span.end();
        let span = info_span!("batch", from = first, to = last);
        async {
            let started = Instant::now();
            let end =
                self.rpc.block(last).await.with_context(|| format!("reading block {last}"))?;
            let mut transfers = Vec::with_capacity(chunks.iter().map(|c| c.transfers.len()).sum());
            let (mut rejected, mut requests) = (Vec::new(), 0);
            for c in chunks {
                rejected.extend(c.rejected);
                requests += c.requests;
                transfers.extend(c.transfers);
            }
            let batch =
                Batch { span: first..=last, end, transfers, rejected, verified: Vec::new() };
            let stats = self.commit_batch(&batch).await?;
            // On a terminal the progress line says it; a line per batch would tear it.
            if self.policy.draw_progress {
                return Ok((last, batch.transfers.len()));
            }
            info!(
                transfers = batch.transfers.len(),
                inserted = stats.inserted,
                balances = stats.balances_touched,
                rejected = batch.rejected.len(),
                requests,
                ms = started.elapsed().as_millis() as u64,
                "committed"
            );
            Ok((last, batch.transfers.len()))
        }
        .instrument(span)
        .await
    }

    /// Commits a batch, retrying while the database is unreachable (a repeated commit is
    /// safe).
    async fn commit_batch(&self, batch: &Batch) -> anyhow::Result<crate::store::CommitStats> {
        let started = Instant::now();
        let stats = crate::store::retrying(&self.rpc.retry_policy(), || {
            self.store.commit(self.token, batch)
        })
        .await?;
        self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.transfers.inc_by(stats.inserted);
        self.metrics.checkpoint(batch.end.number, batch.end.timestamp);
        Ok(stats)
    }

    fn count_reorg(&self, fork: &BlockRef, depth: u64) {
        self.metrics.reorgs.inc();
        self.metrics.reorg_depth.observe(depth as f64);
        self.metrics.checkpoint(fork.number, fork.timestamp);
    }

    /// Reads totalSupply() at `block` and compares it with the supply derived from
    /// transfers. A difference is a warning, not an error: rebasing or fee-on-transfer
    /// tokens, or an index that started after the token's creation, differ by design.
    async fn check_supply(&self, block: u64) {
        let chain = match self.rpc.total_supply(self.token, block).await {
            Ok(Some(v)) => v,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "could not read totalSupply()");
                return;
            }
        };
        if let Err(e) = self.store.record_chain_supply(self.token, block, chain).await {
            warn!(error = format!("{e:#}"), "could not record totalSupply()");
            return;
        }
        match self.store.supplies(self.token).await {
            Ok((derived, Some(on_chain)))
                if derived != on_chain
                    && !self.supply_warned.swap(true, std::sync::atomic::Ordering::Relaxed) =>
            {
                warn!(
                    block,
                    %derived,
                    %on_chain,
                    "minted minus burned differs from totalSupply(): the token rebases or charges fees, or indexing started after its creation"
                )
            }
            Ok(_) => {}
            Err(e) => warn!(error = format!("{e:#}"), "could not compare supplies"),
        }
    }
}

/// The newHeads subscription of a following run, if any.
#[derive(Debug, Default)]
struct Heads {
    watch: Option<tokio::sync::mpsc::Receiver<()>>,
    /// When to try subscribing (again).
    retry_at: Option<Instant>,
    /// The node speaks HTTP: polling only.
    http: bool,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Logs how far a long range has come: blocks, rate, transfers and an ETA.
struct Progress {
    range: RangeInclusive<u64>,
    started: Instant,
    last_log: Instant,
    done_to: u64,
    transfers: usize,
    /// Redraw a status line on the terminal (stderr is one, logs are text).
    draw: bool,
    last_draw: Option<Instant>,
}

impl Progress {
    fn new(range: RangeInclusive<u64>, draw: bool) -> Self {
        let now = Instant::now();
        Self {
            done_to: range.start().saturating_sub(1),
            range,
            started: now,
            last_log: now,
            transfers: 0,
            draw,
            last_draw: None,
        }
    }

    fn advance(&mut self, to: u64, transfers: usize) {
        self.done_to = to;
        self.transfers += transfers;
        if self.draw {
            if self.last_draw.is_none_or(|t| t.elapsed() >= Duration::from_millis(200)) {
                self.last_draw = Some(Instant::now());
                self.redraw(false);
            }
        } else if self.last_log.elapsed() >= Duration::from_secs(5) {
            self.last_log = Instant::now();
            self.log("progress");
        }
    }

    fn finish(&self) {
        if self.range.end() > self.range.start() {
            if self.draw {
                self.redraw(true);
            }
            self.log("range indexed");
        }
    }

    /// Redraws the status line in place: bar, percent, blocks, rate, transfers, ETA.
    #[allow(clippy::print_stderr, reason = "a terminal status line, not a log record")]
    fn redraw(&self, last: bool) {
        let total = self.range.end() - self.range.start() + 1;
        let done = self.done_to + 1 - self.range.start();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let eta = if rate > 0.0 { ((total - done) as f64 / rate) as u64 } else { 0 };
        let filled = (done * 30 / total.max(1)) as usize;
        let bar = format!("{}{}", "#".repeat(filled), ".".repeat(30 - filled));
        eprint!(
            "\r\x1b[2K[{bar}] {:5.1}%  block {}/{}  {rate:.0} blocks/s  {} transfers ({:.0}/s)  ETA {}m{:02}s{}",
            done as f64 * 100.0 / total as f64,
            self.done_to,
            self.range.end(),
            self.transfers,
            self.transfers as f64 / secs,
            eta / 60,
            eta % 60,
            if last { "\n" } else { "" }
        );
    }

    fn log(&self, what: &str) {
        let total = self.range.end() - self.range.start() + 1;
        let done = self.done_to + 1 - self.range.start();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let eta = if rate > 0.0 { (total - done) as f64 / rate } else { f64::INFINITY };
        info!(
            block = self.done_to,
            to = *self.range.end(),
            percent = format!("{:.1}", done as f64 * 100.0 / total as f64),
            blocks_per_s = format!("{rate:.0}"),
            transfers = self.transfers,
            transfers_per_s = format!("{:.0}", self.transfers as f64 / secs),
            eta_s = format!("{eta:.0}"),
            "{what}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(start: u64, indexed: i64) -> TokenRow {
        TokenRow { address: Address::ZERO, chain_id: 1, start_block: start, indexed_block: indexed }
    }

    #[test]
    fn a_new_token_starts_at_from_or_the_head() {
        assert_eq!(start_block(None, Some(5), 100, 1).unwrap(), 5);
        assert_eq!(start_block(None, None, 100, 1).unwrap(), 100);
    }

    #[test]
    fn a_known_token_resumes_after_its_checkpoint() {
        let r = row(10, 50);
        assert_eq!(start_block(Some(&r), None, 100, 1).unwrap(), 51);
        assert_eq!(start_block(Some(&r), Some(10), 100, 1).unwrap(), 51);
        assert_eq!(start_block(Some(&r), Some(51), 100, 1).unwrap(), 51);
    }

    #[test]
    fn gaps_earlier_starts_and_other_chains_are_refused() {
        let r = row(10, 50);
        let gap = start_block(Some(&r), Some(52), 100, 1).unwrap_err().to_string();
        assert!(gap.contains("51..=51"), "{gap}");
        assert!(
            start_block(Some(&r), Some(9), 100, 1)
                .unwrap_err()
                .to_string()
                .contains("before block 10")
        );
        assert!(start_block(Some(&r), None, 100, 5).unwrap_err().to_string().contains("chain 1"));
    }
}
