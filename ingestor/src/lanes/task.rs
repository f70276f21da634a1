//! A lane in a task of its own: an [`Indexer`] over a token set, from the lowest of its
//! checkpoints, stopped between batches when asked.

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::fetch::TokenList;
use crate::metrics::Metrics;
use crate::retry::retrying;
use crate::rpc::Rpc;
use crate::store::{Store, TokenSet};
use crate::sync::{Indexer, SyncPolicy};

/// A lane running in a task of its own.
pub(super) struct Running {
    pub(super) set: TokenSet,
    pub(super) stop: CancellationToken,
    pub(super) handle: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops the lane between batches and waits for it.
    pub(super) async fn halt(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.handle.await.context("a lane ended abnormally")?
    }
}

/// What a lane's task owns.
pub(super) struct LaneTask {
    pub(super) rpc: Rpc,
    pub(super) store: Store,
    pub(super) policy: SyncPolicy,
    pub(super) metrics: Metrics,
}

impl LaneTask {
    pub(super) async fn run(
        self,
        set: TokenSet,
        to: Option<u64>,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let retry = self.rpc.retry_policy();
        let rows =
            retrying(&retry, "reading the checkpoints", || self.store.token_rows(&set)).await?;
        let list = TokenList::new(rows.iter().map(|r| ((r.indexed_block + 1) as u64, r.address)));
        let start = rows.iter().map(|r| (r.indexed_block + 1) as u64).min().unwrap_or(0);
        if start > 0
            && let Ok(checkpoint) = self.rpc.block(start - 1).await
        {
            self.metrics.checkpoint(checkpoint.number, checkpoint.timestamp);
        }
        Indexer::new(set, list, self.rpc, self.store, self.policy, self.metrics, stop)
            .run(start, to)
            .await
    }
}

/// Waits for a lane to end (forever if there is none); leaves the slot for the caller.
pub(super) async fn lane_end(slot: &mut Option<Running>) -> anyhow::Result<()> {
    match slot.as_mut() {
        Some(lane) => match (&mut lane.handle).await {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("a lane ended abnormally: {e}")),
        },
        None => std::future::pending().await,
    }
}
