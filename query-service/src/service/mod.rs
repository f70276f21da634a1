//! `holders.v1.HolderService`: each method checks its request ([`crate::input`]), reads
//! one snapshot of the store, and shapes the answer. One file per family of methods:
//! [`holders`] (GetTopHolders, GetHolders), [`export`] (ExportHolders), [`tokens`]
//! (ListTokens), [`transfers`] (ListTransfers), [`stream`] (StreamTransfers).

mod export;
mod holders;
mod stream;
mod tokens;
mod transfers;

use std::pin::Pin;
use std::sync::Arc;

use deadpool_postgres::Pool;
use futures::Stream;
use proto::pb::holder_service_server::HolderService;
use proto::pb::{
    ExportHoldersRequest, GetHoldersRequest, GetTopHoldersRequest, HoldersChunk, HoldersResponse,
    ListTokensRequest, ListTokensResponse, ListTransfersRequest, ListTransfersResponse,
    StreamTransfersRequest, TransferEvent,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::cache::Answers;
use crate::feed::Feed;
use crate::metrics::Metrics;

pub use holders::format_units;

/// The service, over a pool of read connections and the live transfer feed.
#[derive(Debug, Clone)]
pub struct Holders {
    pool: Pool,
    feed: Feed,
    answers: Arc<Answers>,
    shutdown: CancellationToken,
    metrics: Metrics,
}

impl Holders {
    /// A service reading from `pool`, streaming from `feed`, keeping ranked answers in
    /// `answers`; open streams end at `shutdown`.
    pub fn new(
        pool: Pool,
        feed: Feed,
        answers: Arc<Answers>,
        shutdown: CancellationToken,
        metrics: Metrics,
    ) -> Self {
        Self { pool, feed, answers, shutdown, metrics }
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
        let answer = self
            .metrics
            .observe("GetTopHolders", async { Ok(self.top(request.into_inner()).await?) });
        Ok(Response::new(answer.await?))
    }

    async fn get_holders(
        &self,
        request: Request<GetHoldersRequest>,
    ) -> Result<Response<HoldersResponse>, Status> {
        let answer = self
            .metrics
            .observe("GetHolders", async { Ok(self.page(request.into_inner()).await?) });
        Ok(Response::new(answer.await?))
    }

    async fn list_tokens(
        &self,
        _request: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        let answer = self.metrics.observe("ListTokens", async { Ok(self.list().await?) });
        Ok(Response::new(answer.await?))
    }

    type StreamTransfersStream = TransferStream;

    async fn stream_transfers(
        &self,
        request: Request<StreamTransfersRequest>,
    ) -> Result<Response<Self::StreamTransfersStream>, Status> {
        let stream = self
            .metrics
            .observe("StreamTransfers", async { Ok(self.stream(request.into_inner()).await?) });
        Ok(Response::new(stream.await?))
    }

    type ExportHoldersStream = HoldersStream;

    async fn export_holders(
        &self,
        request: Request<ExportHoldersRequest>,
    ) -> Result<Response<Self::ExportHoldersStream>, Status> {
        let stream = self
            .metrics
            .observe("ExportHolders", async { Ok(self.export(request.into_inner()).await?) });
        Ok(Response::new(stream.await?))
    }

    async fn list_transfers(
        &self,
        request: Request<ListTransfersRequest>,
    ) -> Result<Response<ListTransfersResponse>, Status> {
        let answer = self
            .metrics
            .observe("ListTransfers", async { Ok(self.transfers(request.into_inner()).await?) });
        Ok(Response::new(answer.await?))
    }
}
