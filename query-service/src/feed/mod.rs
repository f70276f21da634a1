//! Live transfers for StreamTransfers. One LISTEN connection per process hears each
//! commit the ingestor announces, reads the new events once, and hands them to every
//! subscriber through a bounded broadcast. A subscriber first replays the store from its
//! starting point, then follows the broadcast, skipping what it has already sent; if it
//! falls behind the broadcast's buffer it catches up from the store again. So no event is
//! missed or repeated at the seam, and a slow client costs a bounded amount of memory.
//!
//! The LISTEN connection may go to another server than the reads (`--feed-database-url`:
//! the primary, when reads go to a streaming replica; NOTIFY is not replicated). The
//! feed then hears of a commit before the replica has replayed it: it reads and
//! broadcasts only what the read side holds (a replica holds a prefix of the commit
//! order, so nothing is skipped), looks again every 100 ms until the read side has
//! caught up, and measures how long it has lacked a commit ([`ReplicaLag`]). While the
//! feed's server is unreachable, the lag is measured against the last commits it heard of.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::Address;
use deadpool_postgres::Pool;
use futures::StreamExt;
use proto::pb::{Transfer, TransferEvent};
use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Status;
use tracing::{debug, info, warn};

use crate::error::QueryError;
use crate::input::{Cursor, Seal, Sealer};
use crate::metrics::Metrics;
use crate::store::events::Position;
use crate::store::{self, EventRow, TransferRow};

mod lag;
mod subscriber;
pub use lag::ReplicaLag;
pub use subscriber::Revocation;
use subscriber::Subscriber;

/// Events read from the store per query.
pub(crate) const PAGE: i64 = 1000;

/// One event, ready to send, with what filters need; or a marker.
#[derive(Debug)]
pub struct Event {
    /// Token of the stream (its id in the store).
    pub token: i32,
    /// Sequence number.
    pub seq: i64,
    /// Sender, for address filters.
    pub from: Address,
    /// Receiver, for address filters.
    pub to: Address,
    /// The message; `None` for a marker: the feed moved to `seq` without sending the
    /// events before it (it had just started, or nobody listened), so a subscriber behind
    /// it reads them from the store.
    pub message: Option<TransferEvent>,
}

impl Event {
    fn new(of: Streamed, row: EventRow, seal: &Seal) -> Self {
        let (from, to) = (row.transfer.from, row.transfer.to);
        let message = TransferEvent {
            transfer: Some(transfer_message(&row.transfer, of.address, of.chain_id)),
            cursor: Cursor { chain_id: of.chain_id, token: of.address, seq: row.seq }.encode(seal),
            removed: row.removed,
        };
        Self { token: of.id, seq: row.seq, from, to, message: Some(message) }
    }

    fn marker(token: i32, seq: i64) -> Self {
        Self { token, seq, from: Address::ZERO, to: Address::ZERO, message: None }
    }

    fn touches(&self, addresses: &[Address]) -> bool {
        addresses.is_empty() || addresses.contains(&self.from) || addresses.contains(&self.to)
    }
}

/// A token's state on the read side: every commit and every rollback moves `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// Its newest indexed block.
    pub block: i64,
    /// Its newest sequence number.
    pub seq: i64,
    /// Its chain's finalized block as recorded (-1: unknown).
    pub finalized: i64,
}

/// Where a token stands, as the feed last read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Its id in the store.
    pub id: i32,
    /// Its state.
    pub state: State,
}

/// The token a stream is of: its id in the store, its address and chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streamed {
    /// `tokens.id`.
    pub id: i32,
    /// The contract.
    pub address: Address,
    /// Its chain.
    pub chain_id: i64,
}

/// A stored transfer of `token` on `chain_id` as the contract shows it.
pub fn transfer_message(t: &TransferRow, token: Address, chain_id: i64) -> Transfer {
    Transfer {
        token: token.to_checksum(None),
        chain_id: chain_id.max(0) as u64,
        block_number: t.block_number.max(0) as u64,
        block_hash: t.block_hash.to_string(),
        block_timestamp: Some(prost_types::Timestamp { seconds: t.block_time, nanos: 0 }),
        tx_hash: t.tx_hash.to_string(),
        log_index: t.log_index.max(0) as u32,
        from: t.from.to_checksum(None),
        to: t.to.to_checksum(None),
        value: t.value.clone(),
        finalized: t.finalized,
    }
}

/// The shared live feed of one query-service process.
#[derive(Debug, Clone)]
pub struct Feed {
    events: broadcast::Sender<Arc<Event>>,
    lag: ReplicaLag,
    /// Where each token stands on the read side, as the feed last read it (empty before
    /// its first look and while its LISTEN connection is away): requests waiting for a
    /// `min_block` all watch this one look instead of asking the store each, and the
    /// answers kept warm at the head ([`crate::warm`]) are checked against it.
    held: Arc<watch::Sender<HashMap<(i64, Address), Held>>>,
    /// Whether the LISTEN connection is up (`held` then moves with each commit).
    listening: Arc<std::sync::atomic::AtomicBool>,
    streams: Arc<Semaphore>,
    max_streams: usize,
    metrics: Metrics,
    /// Every stream's task, so that shutdown waits for them.
    tasks: TaskTracker,
    /// Signs each event's cursor.
    sealer: Arc<Sealer>,
}

impl Feed {
    /// A feed buffering `buffer` events for slow subscribers, serving at most
    /// `max_streams` streams at once, each a task on `tasks`, each event's cursor signed
    /// by `sealer`.
    pub fn new(
        buffer: usize,
        max_streams: usize,
        metrics: Metrics,
        tasks: TaskTracker,
        sealer: Arc<Sealer>,
    ) -> Self {
        let (events, _) = broadcast::channel(buffer.max(16));
        let streams = Arc::new(Semaphore::new(max_streams));
        let held = Arc::new(watch::Sender::new(HashMap::new()));
        let lag = ReplicaLag::default();
        let listening = Arc::default();
        Self { events, lag, held, listening, streams, max_streams, metrics, tasks, sealer }
    }

    /// Where each token stands on the read side, by (chain, address); changes each time
    /// the feed sees one move.
    pub fn held(&self) -> watch::Receiver<HashMap<(i64, Address), Held>> {
        self.held.subscribe()
    }

    /// Whether the feed hears each commit now: `held` is then at most one look behind.
    pub fn listening(&self) -> bool {
        self.listening.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The read side's lag behind this feed.
    pub fn lag(&self) -> ReplicaLag {
        self.lag.clone()
    }

    /// Listens for the ingestor's announcements on its own connection to `database_url`
    /// (the primary) and broadcasts new events read through `pool` (the read side), until
    /// `shutdown`. Reconnects when the connection drops, and also looks every few
    /// seconds, so a lost notification only delays events.
    pub async fn listen(self, database_url: String, pool: Pool, shutdown: CancellationToken) {
        let mut seen = Seen::default();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let ended = self.listen_once(&database_url, &pool, &mut seen, &shutdown).await;
            self.metrics.feed_connected.set(0);
            self.listening.store(false, std::sync::atomic::Ordering::Release);
            // Unheard commits would leave it stale: nothing is known until the next look.
            self.held.send_if_modified(|s| {
                let had = !s.is_empty();
                s.clear();
                had
            });
            match ended {
                Ok(()) => return,
                Err(e) => {
                    warn!(error = %e, "transfer feed: connection lost; reconnecting");
                    // Without the feed's server the lag is measured against the last
                    // commits it heard of: a replica that reaches them is not lagging.
                    if let Err(e) = self.recheck_lag(&pool, &seen).await {
                        debug!(error = %e, "transfer feed: the read side did not answer either");
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    /// Records where the read side stands: any commit it replayed since the last look,
    /// with events or without, wakes the `min_block` waiters and the warm answers.
    fn note_held(&self, positions: &[Position]) {
        let stands: HashMap<(i64, Address), Held> = positions
            .iter()
            .map(|p| {
                let state =
                    State { block: p.indexed_block, seq: p.last_seq, finalized: p.finalized_block };
                ((p.chain_id, p.token), Held { id: p.id, state })
            })
            .collect();
        if self.held.send_if_modified(|s| std::mem::replace(s, stands.clone()) != stands) {
            debug!("the read side moved");
        }
    }

    /// Whether the read side still lacks commits the feed last heard of; sets the lag.
    async fn recheck_lag(&self, pool: &Pool, seen: &Seen) -> anyhow::Result<()> {
        let db = pool.get().await?;
        let positions = store::events::positions(&db).await?;
        self.note_held(&positions);
        let readable = newest_seqs(&positions);
        let behind = seen
            .committed
            .iter()
            .any(|(token, newest)| readable.get(token).is_none_or(|held| held < newest));
        self.lag.set(behind);
        self.metrics.replica_lag_seconds.set(self.lag.now().as_secs_f64());
        Ok(())
    }

    async fn listen_once(
        &self,
        database_url: &str,
        pool: &Pool,
        seen: &mut Seen,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let (client, mut connection) = tokio_postgres::connect(database_url, NoTls).await?;
        let (wake, mut woken) = mpsc::channel::<()>(1);
        // Drives the LISTEN connection; ends with it (this function owns the client).
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => {
                        let _ = wake.try_send(());
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        client.batch_execute(&format!("LISTEN {}", bootstrap::NOTIFY_CHANNEL)).await?;
        info!("transfer feed: listening");
        self.metrics.feed_connected.set(1);
        self.listening.store(true, std::sync::atomic::Ordering::Release);
        loop {
            let behind = self.publish_new(&client, pool, seen).await?;
            // While the read side lacks commits, look again soon: streams wait on it.
            let next = if behind { Duration::from_millis(100) } else { Duration::from_secs(2) };
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(next) => {}
                w = woken.recv() => if w.is_none() {
                    let reason = driver.await.map_err(anyhow::Error::from)?.err();
                    anyhow::bail!("the LISTEN connection ended: {reason:?}");
                },
            }
        }
    }

    /// Broadcasts every event committed since the last call that the read side holds.
    /// Returns whether the read side lacks some (a replica behind the primary).
    async fn publish_new(
        &self,
        client: &tokio_postgres::Client,
        pool: &Pool,
        seen: &mut Seen,
    ) -> anyhow::Result<bool> {
        // What the feed's server has committed, then what the read side holds (read
        // after: on one server it holds at least as much).
        let committed = store::events::positions(client).await?;
        seen.committed = newest_seqs(&committed);
        let sent = &mut seen.sent;
        let db = pool.get().await?;
        let positions = store::events::positions(&db).await?;
        self.note_held(&positions);
        let readable = newest_seqs(&positions);
        let (mut behind, mut unread) = (false, 0);
        for Position { id: token, token: address, chain_id, last_seq: newest, .. } in committed {
            let of = Streamed { id: token, address, chain_id };
            // A token the replica has not replayed yet is not there to read.
            let Some(&held) = readable.get(&token) else {
                behind = true;
                continue;
            };
            behind |= held < newest;
            let upto = held.min(newest);
            let from = sent.get(&token).copied();
            unread += newest - from.unwrap_or(upto).min(newest);
            // Nobody listens, or first sight of the token: nothing to send, only remember
            // where the stream is. Subscribers replay from the store themselves.
            if from.is_none() || self.events.receiver_count() == 0 {
                if from.is_none_or(|f| f < upto) {
                    let _ = self.events.send(Arc::new(Event::marker(token, upto)));
                    sent.insert(token, upto);
                }
                continue;
            }
            let mut after = from.unwrap_or(upto);
            let seal = self.sealer.get(&**db).await?;
            while after < upto {
                let rows = store::events::events_after(&db, token, after, PAGE, &[], false).await?;
                let Some(last) = rows.last() else { break };
                after = last.seq;
                for row in rows {
                    // An error only means no subscriber right now.
                    let _ = self.events.send(Arc::new(Event::new(of, row, seal)));
                }
            }
            sent.insert(token, after);
        }
        self.lag.set(behind);
        self.metrics.feed_lag_events.set(unread);
        self.metrics.replica_lag_seconds.set(self.lag.now().as_secs_f64());
        Ok(behind)
    }

    /// Starts one subscriber's stream as `subscription` says. The stream's task is tracked
    /// by `tasks` and ends at `shutdown`, or UNAUTHENTICATED at its revocation.
    /// RESOURCE_EXHAUSTED past the stream limit (a stream of many tokens is one stream).
    pub async fn subscribe(
        &self,
        pool: Pool,
        subscription: Subscription,
        shutdown: CancellationToken,
    ) -> Result<mpsc::Receiver<Result<TransferEvent, Status>>, QueryError> {
        let Subscription { tokens, start, addresses, finalized_only, revocation, set } =
            subscription;
        let permit = self
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| QueryError::TooManyStreams(self.max_streams))?;
        // Subscribe before reading the store, so nothing committed from now on is missed.
        let live = self.events.subscribe();
        let db = pool.get().await?;
        let mut seen = Vec::with_capacity(tokens.len());
        for (i, of) in tokens.iter().enumerate() {
            let token = of.id;
            seen.push(match &start {
                Start::After(seqs) => seqs[i],
                Start::Block(block) => store::events::seq_before_block(&db, token, *block).await?,
                Start::Now if finalized_only => store::events::last_final_seq(&db, token).await?,
                Start::Now => store::events::last_seq(&**db, token).await?,
            });
        }
        let set = match set {
            Some(digest) => Some(subscriber::SetStamp {
                chain_id: tokens.first().map_or(0, |t| t.chain_id),
                digest,
                seal: self.sealer.get(&**db).await?.clone(),
            }),
            None => None,
        };
        drop(db);
        let (out, rx) = mpsc::channel(64);
        let metrics = self.metrics.clone();
        let sealer = self.sealer.clone();
        let index = tokens.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
        let mut sub = Subscriber {
            pool,
            tokens,
            index,
            addresses,
            seen,
            out,
            live,
            metrics,
            sealer,
            revocation,
            set,
        };
        self.tasks.spawn(async move {
            let _permit = permit;
            sub.metrics.active_streams.inc();
            let ended = if finalized_only {
                sub.follow_final(&shutdown).await
            } else {
                sub.follow(&shutdown).await
            };
            if let Err(e) = ended {
                // A client that reads nothing must not hold the shutdown up.
                let last = sub.out.send(Err(Status::from(e)));
                let _ = tokio::time::timeout(Duration::from_secs(1), last).await;
            }
            sub.metrics.active_streams.dec();
            debug!(tokens = sub.tokens.len(), "stream closed");
        });
        Ok(rx)
    }
}

/// Each token's newest sequence number, from its positions.
fn newest_seqs(positions: &[Position]) -> HashMap<i32, i64> {
    positions.iter().map(|p| (p.id, p.last_seq)).collect()
}

/// What the feed has seen: the newest sequence number it has handed to subscribers, and
/// the newest its server had committed, per token. Kept across reconnects.
#[derive(Debug, Default)]
struct Seen {
    sent: HashMap<i32, i64>,
    committed: HashMap<i32, i64>,
}

/// What one stream follows.
#[derive(Debug)]
pub struct Subscription {
    /// The tokens of the stream, of one chain (for a `set`, in ascending address order).
    pub tokens: Vec<Streamed>,
    /// Where it starts.
    pub start: Start,
    /// Only transfers touching these (every transfer when empty).
    pub addresses: Vec<Address>,
    /// Final transfers only, each once its block is final.
    pub finalized_only: bool,
    /// Ends the stream when the caller's key is revoked.
    pub revocation: Option<Revocation>,
    /// A stream asked for by a list of tokens: each event's cursor is the position of
    /// every token ([`crate::input::SetCursor`]), bound to the list by this digest.
    /// `None`: one token, its own cursors.
    pub set: Option<[u8; 8]>,
}

/// Where a stream starts.
#[derive(Debug, Clone)]
pub enum Start {
    /// After these sequence numbers, one per token of the stream (a cursor).
    After(Vec<i64>),
    /// With the transfers of this block.
    Block(i64),
    /// With the next commit.
    Now,
}
