//! Waiting for the next block while following: a newHeads subscription on a WebSocket
//! node (with slow polling as a safety net), else polling at `--poll-interval`.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::rpc::Rpc;

/// The newHeads subscription of a following run, if any.
#[derive(Debug, Default)]
pub(super) struct Heads {
    watch: Option<tokio::sync::mpsc::Receiver<()>>,
    /// When to try subscribing (again).
    retry_at: Option<Instant>,
    /// The node speaks HTTP: polling only.
    http: bool,
}

impl Heads {
    /// Waits for the next block: a newHeads notification on a WebSocket node (polling ten
    /// times slower as a safety net), else `poll`. A dropped subscription is reported,
    /// polling takes over, and it is renewed at most once a minute. Returns early at
    /// `shutdown`.
    pub(super) async fn wait(&mut self, rpc: &Rpc, poll: Duration, shutdown: &CancellationToken) {
        if !self.http && self.watch.is_none() && self.retry_at.is_none_or(|t| Instant::now() >= t) {
            match rpc.watch_heads().await {
                Ok(Some(rx)) => {
                    info!("subscribed to newHeads");
                    self.watch = Some(rx);
                }
                // HTTP: polling only, nothing to retry.
                Ok(None) => self.http = true,
                Err(e) => {
                    warn!(error = %bootstrap::ErrorChain(&e), "newHeads subscription failed; polling");
                    self.retry_at = Some(Instant::now() + Duration::from_secs(60));
                }
            }
        }
        match self.watch.as_mut() {
            Some(rx) => tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(poll * 10) => {}
                tick = rx.recv() => if tick.is_none() {
                    warn!("newHeads subscription dropped; polling every {poll:?}");
                    self.watch = None;
                    self.retry_at = Some(Instant::now() + Duration::from_secs(60));
                },
            },
            None => tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(poll) => {}
            },
        }
    }
}
