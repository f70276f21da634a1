//! `holders.v1.HolderService`: each method checks its request ([`crate::input`]), reads
//! one snapshot of the store, and shapes the answer. One file per family of methods:
//! [`holders`] (GetTopHolders, GetHolders), [`export`] (ExportHolders), [`tokens`]
//! (ListTokens), [`transfers`] (ListTransfers), [`stream`] (StreamTransfers); [`call`]
//! is what every method knows of its caller (name, deadline, trace).

mod call;
mod export;
mod holders;
mod stream;
mod tokens;
mod transfers;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use proto::pb::holder_service_server::HolderService;
use proto::pb::{
    ExportHoldersRequest, GetHoldersRequest, GetTopHoldersRequest, HoldersChunk, HoldersResponse,
    ListTokensRequest, ListTokensResponse, ListTransfersRequest, ListTransfersResponse,
    StreamTransfersRequest, TransferEvent,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

use crate::access::KeysFile;
use crate::cache::Answers;
use crate::error::QueryError;
use crate::feed::Feed;
use crate::input::Sealer;
use crate::lane::{Cost, Lanes, Lease};
use crate::metrics::Metrics;
use crate::warm::Warm;

pub use call::{Call, grpc_timeout};
pub use holders::format_units;

/// The service, over the database's lanes and the live transfer feed.
#[derive(Debug, Clone)]
pub struct Holders {
    lanes: Lanes,
    feed: Feed,
    answers: Arc<Answers>,
    warm: Arc<Warm>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    metrics: Metrics,
    statement_timeout: std::time::Duration,
    min_block_wait: std::time::Duration,
    sealer: Arc<Sealer>,
    /// The keys file, when calls need a key: a stream ends when its key is revoked.
    keys: Option<KeysFile>,
    /// Places for requests waiting for a `min_block`.
    waiters: Arc<tokio::sync::Semaphore>,
    waiters_max: usize,
    /// Streams held per caller.
    stream_slots: Arc<stream::StreamSlots>,
}

/// What the service is made of.
#[derive(Debug)]
pub struct Parts {
    /// The database's lanes (cheap, expensive, streams).
    pub lanes: Lanes,
    /// The live feed behind StreamTransfers.
    pub feed: Feed,
    /// Ranked answers kept per store state.
    pub answers: Arc<Answers>,
    /// Answers at the head kept warm.
    pub warm: Arc<Warm>,
    /// Open streams and exports end at this.
    pub shutdown: CancellationToken,
    /// Tasks a call leaves running (exports), so that shutdown waits for them.
    pub tasks: TaskTracker,
    /// Where calls are counted.
    pub metrics: Metrics,
    /// The statements' own timeout (a caller's nearer deadline shortens it).
    pub statement_timeout: std::time::Duration,
    /// How long a request's `min_block` is waited for.
    pub min_block_wait: std::time::Duration,
    /// Requests waiting for a `min_block` at once, at most.
    pub min_block_waiters: usize,
    /// Streams one caller may hold.
    pub max_streams_per_caller: usize,
    /// Signs page tokens and cursors.
    pub sealer: Arc<Sealer>,
    /// The keys file, when calls need a key.
    pub keys: Option<KeysFile>,
}

impl Holders {
    /// The service made of `parts`.
    pub fn new(parts: Parts) -> Self {
        Self {
            lanes: parts.lanes,
            feed: parts.feed,
            answers: parts.answers,
            warm: parts.warm,
            shutdown: parts.shutdown,
            tasks: parts.tasks,
            metrics: parts.metrics,
            statement_timeout: parts.statement_timeout,
            min_block_wait: parts.min_block_wait,
            sealer: parts.sealer,
            keys: parts.keys,
            waiters: Arc::new(tokio::sync::Semaphore::new(parts.min_block_waiters)),
            waiters_max: parts.min_block_waiters,
            stream_slots: Arc::new(stream::StreamSlots::new(parts.max_streams_per_caller)),
        }
    }

    /// Returns once the read side holds block `min` of `wanted` (at once without `min`),
    /// for up to `--min-block-wait`; then UNAVAILABLE naming the lag. A client that read
    /// `as_of_block` N from one replica passes N to another. Waiters share the feed's
    /// look at the store (it looks when the primary announces a commit, every 100 ms
    /// while a replica lags, every 2 s otherwise); only a token the feed cannot name
    /// costs a read of its own, each time the feed sees the store move. At most
    /// `--min-block-waiters` wait at once.
    async fn reach(
        &self,
        wanted: crate::store::tokens::Wanted,
        min: Option<u64>,
    ) -> Result<(), QueryError> {
        let Some(min) = min else { return Ok(()) };
        let min = i64::try_from(min).map_err(|_| {
            QueryError::invalid("min_block", format!("{min} is not a block number"))
        })?;
        let _waiting = self.waiters.clone().try_acquire_owned().map_err(|_| {
            QueryError::Busy(
                format!(
                    "{} requests are already waiting for a min_block; retry shortly",
                    self.waiters_max
                ),
                std::time::Duration::from_millis(250),
            )
        })?;
        let started = std::time::Instant::now();
        let mut held = self.feed.held();
        loop {
            let seen = {
                let map = held.borrow_and_update();
                // Where the fields name exactly one token the feed knows.
                let mut named = map.iter().filter(|((chain, address), _)| {
                    wanted.token.is_none_or(|t| t == *address)
                        && wanted.chain_id.is_none_or(|c| c == *chain)
                });
                match (named.next(), named.next()) {
                    (Some((_, held)), None) => Some(held.state.block),
                    _ => None,
                }
            };
            let now = match seen {
                Some(block) => block,
                // The feed does not know the token by these fields (not seen yet, or
                // named by chain alone): a look of our own, once now and once each time
                // the feed sees the store move (which also names a token that is not
                // there, or several when none is named).
                None => {
                    let mut lease = self.lease(Cost::Cheap).await?;
                    let tx = crate::store::snapshot(&mut lease.client, None).await?;
                    let token = crate::store::tokens::token(&tx, wanted).await?;
                    tx.commit().await?;
                    token.indexed_block
                }
            };
            if now >= min {
                return Ok(());
            }
            let left = self.min_block_wait.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(QueryError::Lagging(format!(
                    "this service's store holds block {now}, below min_block {min}, after waiting {} ms (its read side lags the feed by {} ms); retry, or ask another replica",
                    self.min_block_wait.as_millis(),
                    self.feed.lag().now().as_millis()
                )));
            }
            if let Ok(Err(_)) = tokio::time::timeout(left, held.changed()).await {
                // The feed is gone (shutting down): the timer alone.
                tokio::time::sleep(left).await;
            }
        }
    }

    /// A connection in the lane of `cost`, for `call`.
    async fn lease(&self, cost: Cost) -> Result<Lease, QueryError> {
        self.lanes.lease(cost).await
    }

    /// The call a request makes: who, and by when.
    fn call<T>(&self, request: &Request<T>) -> Call {
        Call::of(request, self.statement_timeout)
    }
}

/// A Unix time as the contract shows it; none for 0 (unknown).
fn timestamp(unix: i64) -> Option<prost_types::Timestamp> {
    (unix > 0).then_some(prost_types::Timestamp { seconds: unix, nanos: 0 })
}

type TransferStream = Pin<Box<dyn Stream<Item = Result<TransferEvent, Status>> + Send + 'static>>;
type HoldersStream = Pin<Box<dyn Stream<Item = Result<HoldersChunk, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl HolderService for Holders {
    async fn get_top_holders(
        &self,
        request: Request<GetTopHoldersRequest>,
    ) -> Result<Response<HoldersResponse>, Status> {
        let call = self.call(&request);
        let answer = call.observe(&self.metrics, "GetTopHolders", async {
            Ok(self.top(&call, request.into_inner()).await?)
        });
        Ok(Response::new(answer.await?))
    }

    async fn get_holders(
        &self,
        request: Request<GetHoldersRequest>,
    ) -> Result<Response<HoldersResponse>, Status> {
        let call = self.call(&request);
        let answer = call.observe(&self.metrics, "GetHolders", async {
            Ok(self.page(&call, request.into_inner()).await?)
        });
        Ok(Response::new(answer.await?))
    }

    async fn list_tokens(
        &self,
        request: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        let call = self.call(&request);
        let answer = call.observe(&self.metrics, "ListTokens", async {
            Ok(self.list(&call, request.into_inner()).await?)
        });
        Ok(Response::new(answer.await?))
    }

    type StreamTransfersStream = TransferStream;

    async fn stream_transfers(
        &self,
        request: Request<StreamTransfersRequest>,
    ) -> Result<Response<Self::StreamTransfersStream>, Status> {
        let call = self.call(&request);
        let stream = call.observe(&self.metrics, "StreamTransfers", async {
            Ok(self.stream(&call, request.into_inner()).await?)
        });
        Ok(Response::new(stream.await?))
    }

    type ExportHoldersStream = HoldersStream;

    async fn export_holders(
        &self,
        request: Request<ExportHoldersRequest>,
    ) -> Result<Response<Self::ExportHoldersStream>, Status> {
        let call = self.call(&request);
        let stream = call.observe(&self.metrics, "ExportHolders", async {
            Ok(self.export(&call, request.into_inner()).await?)
        });
        Ok(Response::new(stream.await?))
    }

    async fn list_transfers(
        &self,
        request: Request<ListTransfersRequest>,
    ) -> Result<Response<ListTransfersResponse>, Status> {
        let call = self.call(&request);
        let answer = call.observe(&self.metrics, "ListTransfers", async {
            Ok(self.transfers(&call, request.into_inner()).await?)
        });
        Ok(Response::new(answer.await?))
    }
}
