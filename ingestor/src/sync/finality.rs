//! The chain's finality as the ingestor sees it: the node's `safe` and `finalized` tags,
//! or a fixed depth below the head where the node has none. What is recorded in the store
//! never goes back, and no reorg may change a block at or below the recorded finalized one.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tracing::info;

use super::Indexer;

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

/// What a run remembers of finality between heads.
#[derive(Debug, Default)]
pub(super) struct FinalityMemo {
    /// The safe and finalized blocks last recorded in the store (`None` before the first
    /// record of this run).
    recorded: Mutex<Option<(u64, u64)>>,
    /// Whether the fallback to the finality depth was reported already.
    depth_noted: AtomicBool,
    /// The head finality was last read at, and what it was.
    last: Mutex<Option<(u64, Finality)>>,
}

impl Indexer {
    /// Reads the chain's finality at `head` (the node's tags, or the configured depth) and
    /// records it in the store when it moved, so answers and streams "as of finalized"
    /// move with it. The recorded finalized block never goes back (a lagging node may
    /// say less).
    pub(super) async fn finality(&self, head: u64) -> anyhow::Result<Finality> {
        let memo = &self.finality_memo;
        // Finality moves only with new blocks: a poll that saw no new head asks nothing.
        if let Some((seen, finality)) = *memo.last.lock().expect("finality lock")
            && seen == head
        {
            return Ok(finality);
        }
        let policy = self.policy.finality;
        let tags = if policy.from_node {
            self.rpc.finality_tags().await.context("reading the finalized and safe blocks")?
        } else {
            None
        };
        let finality = match tags {
            Some((safe, finalized)) => Finality { safe, finalized },
            None => {
                if policy.from_node && !memo.depth_noted.swap(true, Ordering::Relaxed) {
                    info!(
                        depth = policy.depth,
                        "the node has no finalized/safe block tags: a block --finality-depth below the head counts as final"
                    );
                }
                Finality {
                    safe: head.saturating_sub(policy.depth.div_ceil(2)),
                    finalized: head.saturating_sub(policy.depth),
                }
            }
        };
        self.metrics.finality(finality.safe, finality.finalized);
        let recorded = *memo.recorded.lock().expect("finality lock");
        let (mut safe, mut finalized) = match recorded {
            Some((s, f)) => (finality.safe.max(s), finality.finalized.max(f)),
            None => (finality.safe, finality.finalized),
        };
        if recorded != Some((safe, finalized)) {
            (safe, finalized) =
                crate::retry::retrying(&self.rpc.retry_policy(), "recording finality", || {
                    self.store.record_finality(&self.set, safe, finalized)
                })
                .await?;
            *memo.recorded.lock().expect("finality lock") = Some((safe, finalized));
        }
        let finality = Finality { safe, finalized };
        *memo.last.lock().expect("finality lock") = Some((head, finality));
        Ok(finality)
    }

    /// The finalized block recorded in the store: no reorg may reach it.
    pub(super) fn finalized_floor(&self) -> u64 {
        self.finality_memo.recorded.lock().expect("finality lock").map_or(0, |(_, f)| f)
    }
}
