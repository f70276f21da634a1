//! ListTokens: every indexed token with its metadata, checkpoint and finality.

use proto::pb::{ListTokensResponse, Token};

use super::{Call, Holders, timestamp};
use crate::error::QueryError;
use crate::lane::Cost;
use crate::store;

impl Holders {
    pub(super) async fn list(&self, call: &Call) -> Result<ListTokensResponse, QueryError> {
        let mut lease = self.lease(Cost::Cheap).await?;
        let tx = store::snapshot(&mut lease.client, call.budget).await?;
        let tokens = store::tokens::tokens(&tx).await?;
        tx.commit().await?;
        Ok(ListTokensResponse {
            tokens: tokens
                .into_iter()
                .map(|t| Token {
                    address: t.address.to_checksum(None),
                    name: t.name,
                    symbol: t.symbol,
                    decimals: u32::from(t.decimals),
                    total_supply: t.total_supply,
                    start_block: t.start_block.max(0) as u64,
                    indexed_block: t.indexed_block.max(0) as u64,
                    indexed_time: timestamp(t.indexed_time),
                    holder_count: t.holder_count.max(0) as u64,
                    transfer_count: t.transfer_count.max(0) as u64,
                    finalized_block: t.finalized_block.max(0) as u64,
                    safe_block: t.safe_block.max(0) as u64,
                })
                .collect(),
        })
    }
}
