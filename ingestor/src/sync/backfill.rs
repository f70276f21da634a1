//! Indexing final blocks: wide ranges fetched several spans at a time (in a task of their
//! own) and committed in strict block order. A batch is streamed: its transaction opens at
//! its first chunk and each chunk is written as it arrives ([`crate::store::BatchWriter`]),
//! so fetching, decoding, the balance arithmetic and Postgres' writes overlap, and memory
//! holds the balance cache, not the batch. It commits once it holds `--batch-transfers`
//! transfers, has been open `--batch-interval` (and four times as long as the previous
//! commit took; never when the range's rest is nearer than that), its changed balances
//! fill the cache, or the next chunk needs a new partition. A failed streamed batch
//! cannot be repeated (its logs are gone): the range starts again from the checkpoint.

use std::ops::RangeInclusive;
use std::time::Instant;

use anyhow::Context;
use tracing::{Instrument, debug, info, info_span, warn};

use super::Indexer;
use super::progress::Progress;
use crate::fetch;
use crate::rpc::BlockRef;
use crate::store::{Balances, Batch, BatchWriter, CommitStats, Layout};

/// A batch stays open at least this many times as long as the previous commit took.
const PACE: u32 = 4;

/// A streamed batch and what the log line of its commit says.
#[derive(Debug)]
pub(super) struct Streaming {
    batch: BatchWriter,
    first: u64,
    last: u64,
    /// `eth_getLogs` requests and spans (chunks) fetched for it: requests per span do not
    /// grow with the token set.
    requests: u32,
    chunks: u32,
    rejected: usize,
    opened: Instant,
}

/// The last batch of a deep range, written and not committed, and the balance cache as
/// it stands inside it: the first verified step above the range joins it
/// ([`Indexer::step_onto`]).
#[derive(Debug)]
pub(super) struct Unfinished {
    pub(super) streaming: Streaming,
    pub(super) balances: Balances,
}

impl Unfinished {
    /// The last block written.
    pub(super) fn last(&self) -> u64 {
        self.streaming.last
    }
}

impl Streaming {
    /// The batch's first block.
    pub(super) fn first(&self) -> u64 {
        self.first
    }

    /// Transfers written so far.
    pub(super) fn transfers(&self) -> usize {
        self.batch.transfers()
    }

    /// `eth_getLogs` requests and spans fetched for it so far.
    pub(super) fn fetched(&self) -> (u32, u32) {
        (self.requests, self.chunks)
    }

    /// The batch, to write more into.
    pub(super) fn into_batch(self) -> BatchWriter {
        self.batch
    }
}

impl Indexer {
    /// Indexes `range` in strict block order, committing batches as they fill. A streamed
    /// batch that fails for a passing reason (the database went away) is dropped whole,
    /// and the range resumes after the checkpoint, within the retry policy's attempts.
    /// Returns the partition index builds still running (of partitions filled before the
    /// range's end); the partition it ends in is left to the caller, to build once the
    /// blocks above it are indexed. With `leave_open`, the range's last streamed batch is
    /// returned uncommitted, for the verified step above it to join.
    pub(super) async fn index(
        &self,
        range: RangeInclusive<u64>,
        leave_open: bool,
    ) -> anyhow::Result<(Builds, Option<Unfinished>)> {
        let policy = self.rpc.retry_policy();
        // The blocks above the range get a partition of their own first (the verified
        // step that joins the range's last batch writes there, and a batch makes no
        // partition); the range's own partitions then end below it.
        let after = *range.end() + 1;
        crate::retry::retrying(&policy, "making a transfer partition", || {
            self.store.make_partition_at(self.set.chain_id(), after)
        })
        .await?;
        let mut builds = Builds::default();
        let mut start = *range.start();
        let mut attempt = 1;
        loop {
            let e = match self.index_from(start..=*range.end(), &mut builds, leave_open).await {
                Ok(open) => return Ok((builds, open)),
                Err(e) => e,
            };
            let transient = super::transient(&e);
            if !transient || attempt >= policy.max_attempts || self.shutdown.is_cancelled() {
                return Err(e);
            }
            let delay = policy.backoff(attempt);
            warn!(call = "streaming a batch", attempt, error = %bootstrap::ErrorChain(e.as_ref() as &dyn std::error::Error), delay_ms = delay.as_millis() as u64, "retrying from the checkpoint");
            tokio::time::sleep(delay).await;
            let resume = match self.store.lowest_checkpoint(&self.set).await {
                Ok(Some(indexed)) => (indexed + 1) as u64,
                // Still unreachable: the next attempt finds out again.
                _ => start,
            };
            // Progress since the last failure earns a fresh set of attempts.
            attempt = if resume > start { 1 } else { attempt + 1 };
            start = resume;
            if start > *range.end() {
                return Ok((builds, None));
            }
        }
    }

    /// One pass of [`Indexer::index`] from `range`'s start, which follows the checkpoint.
    async fn index_from(
        &self,
        range: RangeInclusive<u64>,
        builds: &mut Builds,
        leave_open: bool,
    ) -> anyhow::Result<Option<Unfinished>> {
        // Fetched and decoded a few chunks ahead while one is written; the fetching
        // lives as long as this call.
        let mut rx =
            fetch::prefetched(self.rpc.clone(), self.token_list(), range.clone(), self.spans());

        let mut progress = Progress::new(range.clone(), self.policy.draw_progress);
        let mut balances = self.take_balances();
        let mut streaming: Option<Streaming> = None;
        // How long the last commit took: a batch stays open PACE times as long, so that
        // commits (each rewrites the balances its batch changed) take a bounded share.
        let mut last_commit = std::time::Duration::ZERO;
        // Where the range's time goes: waiting for fetched chunks, writing them, commits.
        let mut spent = Spent::default();
        loop {
            let asked = Instant::now();
            let received = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => None,
                chunk = rx.next() => chunk,
            };
            spent.waiting += asked.elapsed();
            let ended = received.is_some();
            let last = match received {
                Some(Ok(chunk)) => {
                    let last = *chunk.span.end() == *range.end();
                    let (from, to) = (*chunk.span.start(), *chunk.span.end());
                    if !last {
                        self.learn_span(to - from + 1);
                    }
                    if streaming.is_some() && !self.store.covers(self.set.chain_id(), to) {
                        // The next partition is made outside any batch.
                        let started = Instant::now();
                        let (end, n) = self
                            .commit_streamed(streaming.take().expect("open"), &mut balances)
                            .await?;
                        spent.committing += started.elapsed();
                        progress.advance(end, n);
                    }
                    let s = match streaming.as_mut() {
                        Some(s) => s,
                        None => {
                            // Partitions sized by the chunk's density.
                            let layout = Layout {
                                density: Some((chunk.transfers.len() as u64, to - from + 1)),
                            };
                            let batch = self
                                .store
                                .open_batch(&self.set, (from, to), false, layout, &mut balances)
                                .await
                                .inspect_err(|_| balances.forget())?;
                            streaming.insert(Streaming {
                                batch,
                                first: from,
                                last: from,
                                requests: 0,
                                chunks: 0,
                                rejected: 0,
                                opened: Instant::now(),
                            })
                        }
                    };
                    let pushing = Instant::now();
                    s.batch
                        .push(&chunk.transfers, &chunk.rejected, &mut balances)
                        .await
                        .inspect_err(|_| balances.forget())?;
                    spent.writing += pushing.elapsed();
                    s.last = to;
                    s.requests += chunk.requests;
                    s.chunks += 1;
                    s.rejected += chunk.rejected.len();
                    last
                }
                Some(Err(e)) => return Err(e),
                // Shut down, or the stream ended: write what is complete.
                None => true,
            };
            let committed = if let Some(s) = streaming.as_ref() {
                // A range whose rest this batch reaches sooner than the interval is
                // written as one batch: a commit just before the end would rewrite the
                // same balances twice.
                let blocks = (s.last - s.first + 1) as f64;
                let rest =
                    (*range.end() - s.last) as f64 * s.opened.elapsed().as_secs_f64() / blocks;
                let near_end = rest < self.policy.batch_interval.as_secs_f64();
                let due = s.batch.transfers() >= self.policy.batch_transfers
                    || (s.opened.elapsed() >= self.policy.batch_interval.max(last_commit * PACE)
                        && !near_end)
                    || balances.full();
                if last && ended && leave_open && !balances.full() {
                    // The verified step above commits it, with its own rows.
                    let s = streaming.take().expect("open");
                    progress.advance(s.last, s.batch.transfers());
                    builds.reap();
                    progress.finish();
                    spent.log();
                    return Ok(Some(Unfinished { streaming: s, balances }));
                }
                if last || due {
                    let started = Instant::now();
                    let done = self
                        .commit_streamed(streaming.take().expect("open"), &mut balances)
                        .await?;
                    last_commit = started.elapsed();
                    spent.committing += last_commit;
                    Some(done)
                } else {
                    None
                }
            } else {
                None
            };
            if let Some((end, transfers)) = committed {
                progress.advance(end, transfers);
                builds.reap();
                // Partitions filled before the range's end are built while it goes on.
                // The one it ends in waits for the verified steps above it: they keep
                // every core busy, and a build beside them only slows them down.
                if builds.0.is_empty() && !last {
                    builds.start(&self.store, self.set.chain_id(), end, self.policy.beside_head);
                }
            }
            if last {
                builds.reap();
                progress.finish();
                spent.log();
                // Committed: the cache holds what the store holds.
                self.keep_balances(balances);
                return Ok(None);
            }
        }
    }

    /// Commits a streamed batch at its last chunk's block. Returns that block and the
    /// batch's transfer count. Not repeated: see [`Indexer::index`].
    pub(super) async fn commit_streamed(
        &self,
        s: Streaming,
        balances: &mut Balances,
    ) -> anyhow::Result<(u64, usize)> {
        let span = info_span!("batch", from = s.first, to = s.last, streamed = true);
        async {
            let started = Instant::now();
            let end = self
                .rpc
                .block(s.last)
                .await
                .with_context(|| format!("reading block {}", s.last))?;
            let n = s.batch.transfers();
            let stats =
                s.batch.commit(&end, &[], balances).await.inspect_err(|_| balances.forget())?;
            self.count_commit(&stats, &end, started);
            // On a terminal the progress line says it; a line per batch would tear it.
            if !self.policy.draw_progress {
                info!(
                    transfers = n,
                    inserted = stats.inserted,
                    balances = stats.balances_touched,
                    rejected = s.rejected,
                    requests = s.requests,
                    spans = s.chunks,
                    open_ms = s.opened.elapsed().as_millis() as u64,
                    ms = started.elapsed().as_millis() as u64,
                    "committed"
                );
            }
            Ok((s.last, n))
        }
        .instrument(span)
        .await
    }

    /// Commits a batch, retrying while the database is unreachable (a repeated commit is
    /// safe), and moves the metrics.
    pub(super) async fn commit_batch(&self, batch: &Batch) -> anyhow::Result<CommitStats> {
        // It writes balances behind the cache's back.
        self.drop_balances();
        let started = Instant::now();
        let stats = crate::retry::retrying(&self.rpc.retry_policy(), "committing a batch", || {
            self.store.commit(&self.set, batch)
        })
        .await?;
        self.count_commit(&stats, &batch.end, started);
        Ok(stats)
    }

    /// Moves the metrics by a commit that began at `started` and checkpointed `end`.
    pub(super) fn count_commit(&self, stats: &CommitStats, end: &BlockRef, started: Instant) {
        self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.transfers.inc_by(stats.inserted);
        self.metrics.checkpoint(end.number, end.timestamp);
    }
}

/// Where a range's time went, for the debug log: a writer that mostly waits is held
/// back by the node, one that mostly writes by the database.
#[derive(Debug, Default)]
struct Spent {
    waiting: std::time::Duration,
    writing: std::time::Duration,
    committing: std::time::Duration,
}

impl Spent {
    fn log(&self) {
        debug!(
            waiting_ms = self.waiting.as_millis() as u64,
            writing_ms = self.writing.as_millis() as u64,
            committing_ms = self.committing.as_millis() as u64,
            "where the range's time went"
        );
    }
}

/// Background builds of filled partitions' indexes, at most one at a time, on
/// connections of their own, while batches are written. Aborted when dropped (a build is
/// one transaction: a later call builds it again).
#[derive(Debug, Default)]
pub struct Builds(tokio::task::JoinSet<Result<u32, crate::store::StoreError>>);

impl Builds {
    /// Starts building the indexes of the partitions filled up to block `upto` (on one
    /// core when `one_core`).
    fn start(&mut self, store: &crate::store::Store, chain_id: i64, upto: u64, one_core: bool) {
        let store = store.clone();
        self.0.spawn(async move { store.index_partitions(chain_id, upto, false, one_core).await });
    }

    /// Logs the builds that have ended.
    fn reap(&mut self) {
        while let Some(done) = self.0.try_join_next() {
            log_build(done);
        }
    }

    /// Waits for every build and logs it.
    pub async fn finish(mut self) {
        while let Some(done) = self.0.join_next().await {
            log_build(done);
        }
    }
}

/// Logs what a background partition index build did; a failed one is built again later.
fn log_build(done: Result<Result<u32, crate::store::StoreError>, tokio::task::JoinError>) {
    match done {
        Ok(Ok(0)) => {}
        Ok(Ok(built)) => info!(partitions = built, "indexed filled transfer partitions"),
        Ok(Err(e)) => {
            tracing::warn!(error = %bootstrap::ErrorChain(&e), "indexing a transfer partition failed; it is tried again")
        }
        Err(e) => tracing::warn!(error = %e, "a partition index build ended"),
    }
}
