//! Keeps the store in step with the chain: decides where indexing resumes, pushes final
//! block ranges through fetch → decode → store in strict block order, indexes the blocks
//! above the finalized one in verified steps, and, without an end block, follows the head.
//!
//! - [`backfill`]: wide ranges of final blocks, batched commits;
//! - [`tip`]: verified steps, fork search and rollback near the head;
//! - [`finality`]: the `safe`/`finalized` blocks, from the node or a depth;
//! - [`heads`]: waiting for the next block (newHeads or polling);
//! - [`progress`]: the progress line of a long range.

pub mod backfill;
pub mod finality;
mod heads;
mod progress;
pub mod tip;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use finality::{Finality, FinalityPolicy};

use crate::fetch::{SpanPolicy, TokenList};
use crate::metrics::Metrics;
use crate::rpc::Rpc;
use crate::store::{Store, TokenRow, TokenSet};

/// Where a run starts, given what the store holds and what was asked.
///
/// A token already in the store resumes after its checkpoint: a `--from` inside the
/// indexed span (or right after it) resumes too, so restarting with the same flags never
/// re-reads history. A `--from` that would leave a gap or reach before the indexed span
/// is refused, since balances are sums over an unbroken history.
///
/// `from` is `--from` resolved (`head` is the head; unset, the token's creation block
/// when nothing is stored); `None` only for a token the store already holds.
pub fn start_block(existing: Option<&TokenRow>, from: Option<u64>) -> anyhow::Result<u64> {
    let Some(row) = existing else {
        return from.ok_or_else(|| anyhow::anyhow!("no start for a token the store lacks"));
    };
    // Nothing committed yet: the start is not fixed, a new --from moves it.
    if row.indexed_block < row.start_block as i64 {
        return Ok(from.unwrap_or(row.start_block));
    }
    let resume = (row.indexed_block + 1) as u64;
    match from {
        Some(f) if f < row.start_block => Err(crate::Misconfigured(format!(
            "--from {f} is before block {}, where this token's index starts; to index earlier blocks, start over in an empty database",
            row.start_block
        ))
        .into()),
        Some(f) if f > resume => Err(crate::Misconfigured(format!(
            "--from {f} would leave blocks {resume}..={} unindexed (the store holds {}..={}); use --from {resume} or less",
            f - 1,
            row.start_block,
            row.indexed_block
        ))
        .into()),
        _ => Ok(resume),
    }
}

/// Whether `e` is a store failure worth reading again from the checkpoint (the database
/// went away), as a failed streamed batch cannot be repeated from memory.
fn transient(e: &anyhow::Error) -> bool {
    use crate::retry::Transient;
    e.downcast_ref::<crate::store::StoreError>().is_some_and(|s| s.is_transient())
}

/// Sets of at most this many tokens have their totalSupply() read after every pass;
/// larger ones after ranges of final blocks only.
const SUPPLY_CHECKED_EVERY_PASS: usize = 16;

/// How the pipeline batches and polls.
#[derive(Debug, Clone, Copy)]
pub struct SyncPolicy {
    /// Span sizing and concurrency of `eth_getLogs`.
    pub spans: SpanPolicy,
    /// Commit once a batch holds this many transfers.
    pub batch_transfers: usize,
    /// Commit a non-empty batch that has been open this long.
    pub batch_interval: Duration,
    /// Memory for the balances a backfill keeps between batches; a batch whose changed
    /// balances fill it commits.
    pub balance_cache_bytes: usize,
    /// How often to ask for the head when following.
    pub poll_interval: Duration,
    /// Where the finalized block comes from. Blocks above it are indexed in verified
    /// steps and their hashes kept; a reorg that would change it stops the ingestor.
    pub finality: FinalityPolicy,
    /// Index only blocks at least this many blocks below the head.
    pub confirmations: u64,
    /// Draw a progress line on the terminal during long ranges (batch lines go to debug).
    pub draw_progress: bool,
    /// Other tokens follow the head beside this lane (it catches up added ones): its
    /// partition index builds take one core, not two, so that the head's commits and the
    /// questions asked of them keep the other.
    pub beside_head: bool,
}

/// Indexes a token set of one chain into one store: one request per span for the whole
/// set, one transaction per batch for every token in it.
#[derive(Debug)]
pub struct Indexer {
    rpc: Rpc,
    store: Store,
    /// The tokens, by address (for the node) and key (in the store).
    set: TokenSet,
    /// Each token's address with the first block its logs are fetched from: its resume
    /// point (blocks below it are stored), lowered by a rollback.
    list: std::sync::Mutex<TokenList>,
    policy: SyncPolicy,
    /// Stops the run between batches.
    shutdown: CancellationToken,
    /// Where progress, RPC calls, commits and reorgs are counted.
    metrics: Metrics,
    /// Whether the supply mismatch was reported already (once per run is enough).
    supply_warned: AtomicBool,
    finality_memo: finality::FinalityMemo,
    /// What the last streamed commit left: the balance cache (as the store holds it) and
    /// the span width the node's log density called for. The verified steps after a
    /// backfill start from them instead of from nothing. Any other write of balances (a
    /// careful commit, a rollback) empties the cache.
    carried: std::sync::Mutex<Carried>,
}

/// See [`Indexer::carried`].
#[derive(Debug, Default)]
struct Carried {
    balances: Option<crate::store::Balances>,
    span: Option<u64>,
}

impl Indexer {
    /// An indexer of the tokens `set`, each resuming at the block `resumes` gives it,
    /// from `rpc` into `store`, batching and polling by `policy`, counting into `metrics`,
    /// stopping between batches at `shutdown`.
    #[allow(clippy::too_many_arguments, reason = "the parts of one indexer, each owned")]
    pub fn new(
        set: TokenSet,
        resumes: TokenList,
        rpc: Rpc,
        store: Store,
        policy: SyncPolicy,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            rpc,
            store,
            set,
            list: std::sync::Mutex::new(resumes),
            policy,
            shutdown,
            metrics,
            supply_warned: AtomicBool::new(false),
            finality_memo: Default::default(),
            carried: Default::default(),
        }
    }

    /// Indexes from `start` to `to` (inclusive), waiting for the node to reach `to` if it
    /// has not; without `to`, follows the head until shut down. Final blocks go through
    /// wide ranges ([`backfill`]); the rest through verified steps ([`tip`]).
    pub async fn run(&self, start: u64, to: Option<u64>) -> anyhow::Result<()> {
        let mut next = start;
        self.check_tips_ahead(start).await?;
        let mut caught_up_logged = false;
        let mut heads = heads::Heads::default();
        let mut partitions_indexed = false;
        // Whether a deep range's last batch is left open for the first verified step to
        // join; not again after such a batch failed.
        let mut join = true;
        'passes: loop {
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
                let mut builds = None;
                let mut open = None;
                if next <= deep_end {
                    let (b, o) = self.index(next..=deep_end, join && end > deep_end).await?;
                    (builds, open) = (Some(b), o);
                    next = deep_end + 1;
                    partitions_indexed = false;
                }
                while next <= end && !self.shutdown.is_cancelled() {
                    let after = match open.take() {
                        Some(o) => self.step_onto(o, end).await?,
                        None => self.step(next, end).await?,
                    };
                    if after < next {
                        // The joint batch failed: read the range again, then commit
                        // its batches alone.
                        join = false;
                        next = after;
                        continue 'passes;
                    }
                    if after == next {
                        // The chain moved while we read it: look at the head again.
                        break;
                    }
                    next = after;
                }
                if let Some(o) = open {
                    // Shut down before the step: the final blocks are complete.
                    let after = self.commit_alone(o).await?;
                    if after < next {
                        join = false;
                        next = after;
                        continue 'passes;
                    }
                }
                let deep = builds.is_some();
                if let Some(builds) = builds {
                    builds.finish().await;
                }
                caught_up_logged = false;
                // A call per token: after each pass for a small set, after ranges of
                // final blocks for a large one (not a thousand calls every block).
                if deep || self.set.len() <= SUPPLY_CHECKED_EVERY_PASS {
                    self.check_supplies(next - 1).await;
                }
            }
            if !partitions_indexed && !self.shutdown.is_cancelled() {
                // The backfill has reached the finalized block: from here on, the
                // partition it was filling takes inserts one by one, and its
                // queries want its indexes.
                let built = crate::retry::retrying(
                    &self.rpc.retry_policy(),
                    "indexing transfer partitions",
                    || {
                        self.store.index_partitions(
                            self.set.chain_id(),
                            next.saturating_sub(1),
                            true,
                            self.policy.beside_head,
                        )
                    },
                )
                .await?;
                if built > 0 {
                    info!(partitions = built, "indexed transfer partitions");
                }
                partitions_indexed = true;
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
            heads.wait(&self.rpc, self.policy.poll_interval, &self.shutdown).await;
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
        }
    }

    /// Tokens of the set indexed past `start` (ahead of the others, e.g. at the head
    /// when the rest are catching up) are skipped until the range reaches them: their
    /// checkpoints are checked against the node first, and rolled back where the chain
    /// changed under them while nobody looked.
    async fn check_tips_ahead(&self, start: u64) -> anyhow::Result<()> {
        let rows =
            crate::retry::retrying(&self.rpc.retry_policy(), "reading the checkpoints", || {
                self.store.token_rows(&self.set)
            })
            .await?;
        let mut ahead: Vec<i64> =
            rows.iter().map(|r| r.indexed_block).filter(|&b| b >= start as i64).collect();
        ahead.sort_unstable_by(|a, b| b.cmp(a));
        ahead.dedup();
        if ahead.is_empty() {
            return Ok(());
        }
        let head = self.rpc.head().await.context("reading the chain head")?;
        for checkpoint in ahead {
            self.check_tip(checkpoint as u64 + 1, head).await?;
        }
        Ok(())
    }

    /// Takes the carried balance cache, or a new one.
    fn take_balances(&self) -> crate::store::Balances {
        self.carried
            .lock()
            .expect("carried lock")
            .balances
            .take()
            .unwrap_or_else(|| crate::store::Balances::new(self.policy.balance_cache_bytes))
    }

    /// Keeps a cache that holds what the store holds (right after a streamed commit).
    fn keep_balances(&self, balances: crate::store::Balances) {
        self.carried.lock().expect("carried lock").balances = Some(balances);
    }

    /// Drops the carried cache: balances were written another way.
    fn drop_balances(&self) {
        self.carried.lock().expect("carried lock").balances = None;
    }

    /// The span policy with the width last learned, if any.
    fn spans(&self) -> crate::fetch::SpanPolicy {
        let mut spans = self.policy.spans;
        if let Some(w) = self.carried.lock().expect("carried lock").span {
            spans.initial = w.clamp(1, spans.max.max(1));
        }
        spans
    }

    /// Remembers the width of a chunk that was not cut short by the range's end.
    fn learn_span(&self, blocks: u64) {
        self.carried.lock().expect("carried lock").span = Some(blocks);
    }

    /// The fetch list as it stands.
    fn token_list(&self) -> TokenList {
        self.list.lock().expect("list lock").clone()
    }

    /// Every token fetched from `block` on at the latest (after a rollback to the block
    /// below it).
    fn fetch_from(&self, block: u64) {
        let mut list = self.list.lock().expect("list lock");
        *list = list.lowered_to(block);
    }

    /// Reads totalSupply() at `block` of every token of the set (a few calls at once)
    /// and compares each with the supply derived from transfers, all in one statement. A
    /// difference is a warning, not an error: rebasing or fee-on-transfer tokens, or an
    /// index that started after the token's creation, differ by design.
    async fn check_supplies(&self, block: u64) {
        use futures::StreamExt;
        let read: Vec<(crate::store::TokenKey, alloy_primitives::U256)> =
            futures::stream::iter(self.set.iter())
                .map(|(token, key)| async move {
                    match self.rpc.total_supply(token, block).await {
                        Ok(supply) => supply.map(|s| (key, s)),
                        Err(e) => {
                            warn!(%token, error = %bootstrap::ErrorChain(&e), "could not read totalSupply()");
                            None
                        }
                    }
                })
                .buffer_unordered(SUPPLY_CALLS_AT_ONCE)
                .filter_map(|r| async move { r })
                .collect()
                .await;
        if read.is_empty() {
            return;
        }
        match self.store.record_chain_supplies(block, &read).await {
            Ok(differing) => {
                for (id, derived, on_chain) in differing {
                    if self.supply_warned.swap(true, Ordering::Relaxed) {
                        break;
                    }
                    let token = self.set.iter().find(|(_, k)| k.id == id).map(|(a, _)| a);
                    warn!(
                        token = ?token,
                        block,
                        %derived,
                        %on_chain,
                        "minted minus burned differs from totalSupply(): the token rebases or charges fees, or indexing started after its creation"
                    );
                }
            }
            Err(e) => warn!(error = %bootstrap::ErrorChain(&e), "could not record totalSupply()"),
        }
    }
}

/// totalSupply() calls in flight at once when a set's supplies are checked.
const SUPPLY_CALLS_AT_ONCE: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn row(start: u64, indexed: i64) -> TokenRow {
        TokenRow {
            key: crate::store::TokenKey { id: 1, chain_id: 1 },
            address: alloy_primitives::Address::ZERO,
            start_block: start,
            indexed_block: indexed,
        }
    }

    #[test]
    fn a_new_token_starts_where_it_was_told() {
        assert_eq!(start_block(None, Some(5)).unwrap(), 5);
        assert!(start_block(None, None).is_err(), "a new token needs its start resolved");
    }

    #[test]
    fn a_known_token_resumes_after_its_checkpoint() {
        let r = row(10, 50);
        assert_eq!(start_block(Some(&r), None).unwrap(), 51);
        assert_eq!(start_block(Some(&r), Some(10)).unwrap(), 51);
        assert_eq!(start_block(Some(&r), Some(51)).unwrap(), 51);
    }

    #[test]
    fn gaps_and_earlier_starts_are_refused() {
        let r = row(10, 50);
        let gap = start_block(Some(&r), Some(52)).unwrap_err().to_string();
        assert!(gap.contains("51..=51"), "{gap}");
        assert!(
            start_block(Some(&r), Some(9)).unwrap_err().to_string().contains("before block 10")
        );
    }
}
