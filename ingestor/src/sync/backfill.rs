//! Indexing final blocks: wide ranges fetched several spans at a time (in a task of their
//! own, so fetching goes on while a batch is written) and committed in strict block order,
//! a batch once it holds `--batch-transfers` transfers or has waited `--batch-interval`.

use std::ops::RangeInclusive;
use std::time::Instant;

use anyhow::Context;
use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::{Instrument, info, info_span};

use super::Indexer;
use super::progress::Progress;
use crate::fetch::{self, Chunk};
use crate::store::{Batch, CommitStats};

impl Indexer {
    /// Indexes `range` in strict block order, committing batches as they fill.
    pub async fn index(&self, range: RangeInclusive<u64>) -> anyhow::Result<()> {
        // Room for a quarter of a batch of chunks: the next batch is being fetched and
        // decoded while one is written (memory: a batch and a quarter, and the spans in
        // flight; the node serves logs faster than a batch is written).
        let ahead = self.policy.batch_transfers / self.policy.spans.target_logs.max(1) / 4 + 1;
        let (tx, mut rx) =
            mpsc::channel::<anyhow::Result<Chunk>>(ahead.max(self.policy.spans.concurrency).max(2));
        let stream = fetch::chunks(self.rpc.clone(), self.token, range.clone(), self.policy.spans);
        // The fetching task lives as long as this call: the set aborts it when dropped.
        let mut producer = tokio::task::JoinSet::new();
        producer.spawn(async move {
            futures::pin_mut!(stream);
            while let Some(chunk) = stream.next().await {
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    break;
                }
            }
        });

        // At most one partition index build at a time, on a connection of its own, while
        // the next batches are written; aborted with this call (a build is one
        // transaction: the next run builds it again).
        let mut builds = tokio::task::JoinSet::new();
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
                while let Some(done) = builds.try_join_next() {
                    log_build(done);
                }
                if builds.is_empty() {
                    let store = self.store.clone();
                    builds.spawn(async move { store.index_partitions(end, false).await });
                }
            }
            if last {
                while let Some(done) = builds.join_next().await {
                    log_build(done);
                }
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
            if !self.policy.draw_progress {
                info!(
                    transfers = batch.transfers.len(),
                    inserted = stats.inserted,
                    balances = stats.balances_touched,
                    rejected = batch.rejected.len(),
                    requests,
                    ms = started.elapsed().as_millis() as u64,
                    "committed"
                );
            }
            Ok((last, batch.transfers.len()))
        }
        .instrument(span)
        .await
    }

    /// Commits a batch, retrying while the database is unreachable (a repeated commit is
    /// safe), and moves the metrics.
    pub(super) async fn commit_batch(&self, batch: &Batch) -> anyhow::Result<CommitStats> {
        let started = Instant::now();
        let stats = crate::retry::retrying(&self.rpc.retry_policy(), "committing a batch", || {
            self.store.commit(self.token, batch)
        })
        .await?;
        self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.transfers.inc_by(stats.inserted);
        self.metrics.checkpoint(batch.end.number, batch.end.timestamp);
        Ok(stats)
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
