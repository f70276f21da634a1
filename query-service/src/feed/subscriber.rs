//! One subscriber's stream: replays the store from its starting point, then follows the
//! feed's broadcast, reading the store again wherever the broadcast leaves a hole (a
//! marker, a gap, a lagged receiver), so that no event is missed or repeated at the seam.

use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Address;
use deadpool_postgres::Pool;
use proto::pb::TransferEvent;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::debug;

use super::{Event, PAGE};
use crate::access::KeyRing;
use crate::error::QueryError;
use crate::input::Sealer;
use crate::metrics::Metrics;
use crate::store;

/// What ends a stream when its caller's API key leaves the keys file: the ring as it
/// changes, and the SHA-256 of the key the stream was opened with.
#[derive(Debug)]
pub struct Revocation {
    /// The keys file's ring.
    pub ring: tokio::sync::watch::Receiver<Arc<KeyRing>>,
    /// The caller's key.
    pub key: [u8; 32],
}

impl Revocation {
    fn is_revoked(&self) -> bool {
        self.ring.borrow().name_by_digest(&self.key).is_none()
    }

    /// Returns once the key is revoked; never without keys.
    async fn revoked(this: &mut Option<Self>) {
        let Some(me) = this else { return std::future::pending().await };
        loop {
            if me.ring.borrow_and_update().name_by_digest(&me.key).is_none() {
                return;
            }
            if me.ring.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

/// What a stream of a list of tokens stamps on each event: a cursor of every token's
/// position, sealed.
pub(super) struct SetStamp {
    pub(super) chain_id: i64,
    pub(super) digest: [u8; 8],
    pub(super) seal: crate::input::Seal,
}

/// One stream's state.
pub(super) struct Subscriber {
    pub(super) pool: Pool,
    /// Its tokens, and where each is in that list by id.
    pub(super) tokens: Vec<super::Streamed>,
    pub(super) index: std::collections::HashMap<i32, usize>,
    pub(super) addresses: Vec<Address>,
    /// Per token, the newest sequence number handled (sent, or filtered out).
    pub(super) seen: Vec<i64>,
    pub(super) out: mpsc::Sender<Result<TransferEvent, Status>>,
    pub(super) live: broadcast::Receiver<Arc<Event>>,
    pub(super) metrics: Metrics,
    pub(super) sealer: Arc<Sealer>,
    pub(super) revocation: Option<Revocation>,
    pub(super) set: Option<SetStamp>,
}

impl Subscriber {
    /// Replays, then follows; returns when the client leaves (Ok) or with the error to
    /// end the stream with.
    pub(super) async fn follow(&mut self, shutdown: &CancellationToken) -> Result<(), QueryError> {
        if !self.replay().await? {
            return Ok(());
        }
        loop {
            let event = tokio::select! {
                () = self.out.closed() => return Ok(()),
                () = shutdown.cancelled() => return Err(QueryError::ShuttingDown),
                () = Revocation::revoked(&mut self.revocation) => return Err(QueryError::Revoked),
                event = self.live.recv() => event,
            };
            match event {
                Ok(event) => {
                    let Some(&i) = self.index.get(&event.token) else { continue };
                    if event.seq <= self.seen[i] {
                        continue;
                    }
                    let Some(message) = &event.message else {
                        // A marker ahead of us: what lies between comes from the store.
                        debug!(
                            marker = event.seq,
                            seen = self.seen[i],
                            "catching up to a feed marker from the store"
                        );
                        if !self.catch_up(i).await? {
                            return Ok(());
                        }
                        continue;
                    };
                    if event.seq > self.seen[i] + 1 {
                        debug!(
                            event = event.seq,
                            seen = self.seen[i],
                            "a gap before a live event; reading the store"
                        );
                        // The broadcast skipped something this subscriber must see (it
                        // started after the feed read those events): read the store.
                        if !self.catch_up(i).await? {
                            return Ok(());
                        }
                        if event.seq <= self.seen[i] {
                            continue;
                        }
                    }
                    self.seen[i] = event.seq;
                    if event.touches(&self.addresses) {
                        let message = self.stamped(message.clone());
                        if self.out.send(Ok(message)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    debug!(
                        missed,
                        "subscriber fell behind the live buffer; catching up from the store"
                    );
                    self.metrics.stream_catchups.inc();
                    if !self.replay().await? {
                        return Ok(());
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return Err(QueryError::FeedStopped),
            }
        }
    }

    /// Reads the store again for token `i` after the live feed left a hole; counted as a
    /// catch-up.
    async fn catch_up(&mut self, i: usize) -> Result<bool, QueryError> {
        self.metrics.stream_catchups.inc();
        self.replay_token(i).await
    }

    /// Sends every stored event of every token after what was seen of it. False when
    /// the client has left.
    async fn replay(&mut self) -> Result<bool, QueryError> {
        for i in 0..self.tokens.len() {
            if !self.replay_token(i).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Sends every stored event of token `i` after `seen[i]`. False when the client has
    /// left.
    async fn replay_token(&mut self, i: usize) -> Result<bool, QueryError> {
        // Everything up to `newest` is visible to the reads below; events the address
        // filter leaves out are handled too, so `seen` can move past them.
        let newest = {
            let db = self.pool.get().await?;
            store::events::last_seq(&**db, self.tokens[i].id).await?
        };
        if !self.send_stored(i, false).await? {
            return Ok(false);
        }
        self.seen[i] = self.seen[i].max(newest);
        Ok(true)
    }

    /// The message as this stream sends it: with the position of every token as its
    /// cursor when the stream is of a list of tokens.
    fn stamped(&self, mut message: TransferEvent) -> TransferEvent {
        if let Some(set) = &self.set {
            message.cursor = crate::input::SetCursor {
                chain_id: set.chain_id,
                digest: set.digest,
                seqs: self.seen.clone(),
            }
            .encode(&set.seal);
        }
        message
    }

    /// Sends every stored event of token `i` after `seen[i]` (final transfers only with
    /// `finalized_only`), page by page, moving `seen[i]` to each. False when the client
    /// has left.
    async fn send_stored(&mut self, i: usize, finalized_only: bool) -> Result<bool, QueryError> {
        loop {
            if self.revocation.as_ref().is_some_and(Revocation::is_revoked) {
                return Err(QueryError::Revoked);
            }
            let db = self.pool.get().await?;
            let seal = self.sealer.get(&**db).await?.clone();
            let rows = store::events::events_after(
                &db,
                self.tokens[i].id,
                self.seen[i],
                PAGE,
                &self.addresses,
                finalized_only,
            )
            .await?;
            drop(db);
            let full = rows.len() as i64 == PAGE;
            for row in rows {
                self.seen[i] = row.seq;
                let message = Event::new(self.tokens[i], row, &seal).message.expect("an event");
                let message = self.stamped(message);
                if self.out.send(Ok(message)).await.is_err() {
                    return Ok(false);
                }
            }
            if !full {
                return Ok(true);
            }
        }
    }
}

impl Subscriber {
    /// A stream of final transfers: sends what became final since the last look, then
    /// waits for the next commit or finality change (or a second, whichever comes first).
    pub(super) async fn follow_final(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<(), QueryError> {
        loop {
            for i in 0..self.tokens.len() {
                if !self.send_stored(i, true).await? {
                    return Ok(());
                }
            }
            // Any commit of any token, a lag, or a second: look again. The ingestor
            // records finality without new events, so the second bounds the delay.
            tokio::select! {
                () = self.out.closed() => return Ok(()),
                () = shutdown.cancelled() => return Err(QueryError::ShuttingDown),
                () = Revocation::revoked(&mut self.revocation) => return Err(QueryError::Revoked),
                r = self.live.recv() => if matches!(r, Err(broadcast::error::RecvError::Closed)) {
                    return Err(QueryError::FeedStopped);
                },
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}
