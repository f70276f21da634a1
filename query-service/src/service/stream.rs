//! StreamTransfers: where a stream starts (now, a block, or after a cursor), then the
//! live feed does the rest.

use proto::pb::StreamTransfersRequest;

use super::{Call, Holders, TransferStream};
use crate::error::QueryError;
use crate::feed::Start;
use crate::input::{self, Cursor};
use crate::lane::Cost;
use crate::store;

impl Holders {
    pub(super) async fn stream(
        &self,
        call: &Call,
        req: StreamTransfersRequest,
    ) -> Result<TransferStream, QueryError> {
        let wanted = input::token(&req.token)?;
        let addresses = input::addresses(&req.addresses)?;
        let token = {
            let mut lease = self.lease(Cost::Stream).await?;
            let tx = store::snapshot(&mut lease.client, call.budget).await?;
            let token = store::tokens::token(&tx, wanted).await?;
            tx.commit().await?;
            token
        };
        let start = match (req.cursor.as_str(), req.from_block) {
            ("", None) => Start::Now,
            ("", Some(block)) => Start::Block(
                i64::try_from(block).map_err(|_| QueryError::invalid("from_block", "too large"))?,
            ),
            (cursor, _) => Start::After(Cursor::decode(cursor, token.address)?.seq),
        };
        let rx = self
            .feed
            .subscribe(
                self.lanes.stream_pool().clone(),
                token.address,
                start,
                addresses,
                req.finalized_only,
                self.shutdown.clone(),
            )
            .await?;
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}
