//! StreamTransfers: where a stream starts (now, a block, or after a cursor), then the
//! live feed does the rest.

use proto::pb::StreamTransfersRequest;

use super::{Call, Holders, TransferStream};
use crate::error::QueryError;
use crate::feed::{Revocation, Start};
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
        if !req.cursor.is_empty() && req.from_block.is_some() {
            return Err(QueryError::invalid(
                "cursor",
                "set either cursor (to resume) or from_block (to start at a block), not both",
            ));
        }
        let (token, start) = {
            let mut lease = self.lease(Cost::Stream).await?;
            let tx = store::snapshot(&mut lease.client, call.budget).await?;
            let token = store::tokens::token(&tx, wanted).await?;
            let start = match (req.cursor.as_str(), req.from_block) {
                ("", None) => Start::Now,
                ("", Some(block)) => Start::Block(i64::try_from(block).map_err(|_| {
                    QueryError::invalid("from_block", format!("{block} is not a block number"))
                })?),
                (cursor, _) => {
                    let seal = self.sealer.get(&*tx).await?;
                    let seq = Cursor::decode(cursor, token.address, seal)?.seq;
                    // A cursor ahead of the store (another store's, or one rolled back by
                    // a restore) would silently skip everything up to it.
                    let newest = store::events::last_seq(&*tx, token.address).await?;
                    if seq > newest {
                        return Err(QueryError::invalid(
                            "cursor",
                            format!(
                                "it points after event {seq}, but the newest event of {} in this store is {newest}: it was issued by another store; resume with from_block instead",
                                token.address
                            ),
                        ));
                    }
                    Start::After(seq)
                }
            };
            tx.commit().await?;
            (token, start)
        };
        let revocation = match (&self.keys, call.caller.key()) {
            (Some(keys), Some(key)) => Some(Revocation { ring: keys.subscribe(), key }),
            _ => None,
        };
        let rx = self
            .feed
            .subscribe(
                self.lanes.stream_pool().clone(),
                token.address,
                start,
                addresses,
                req.finalized_only,
                revocation,
                self.shutdown.clone(),
            )
            .await?;
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}
