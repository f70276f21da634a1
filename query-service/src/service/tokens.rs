//! ListTokens: the indexed tokens with their metadata, checkpoint and finality, a page at
//! a time in (chain id, address) order, of one chain or one symbol when asked.

use proto::pb::{ListTokensRequest, ListTokensResponse, Token};

use super::{Call, Holders, timestamp};
use crate::error::QueryError;
use crate::input::{self, TokensPage};
use crate::lane::Cost;
use crate::store;

impl Holders {
    pub(super) async fn list(
        &self,
        call: &Call,
        req: ListTokensRequest,
    ) -> Result<ListTokensResponse, QueryError> {
        let size = match req.page_size {
            0 => i64::from(input::DEFAULT_TOKENS),
            n if n > input::MAX_TOKENS => {
                return Err(QueryError::invalid(
                    "page_size",
                    format!("{n} is above the maximum of {}", input::MAX_TOKENS),
                ));
            }
            n => i64::from(n),
        };
        let chain_id =
            match req.chain_id {
                0 => None,
                c => Some(i64::try_from(c).map_err(|_| {
                    QueryError::invalid("chain_id", format!("{c} is not a chain id"))
                })?),
            };
        let symbol = match req.symbol.as_str() {
            "" => None,
            s if s.chars().count() > 100 || s.chars().any(char::is_control) => {
                return Err(QueryError::invalid(
                    "symbol",
                    format!("'{}' is not a token symbol", input::shorten(s)),
                ));
            }
            s => Some(s),
        };
        let mut lease = self.lease(Cost::Cheap).await?;
        let tx = store::snapshot(&mut lease.client, call.budget).await?;
        let seal = self.sealer.get(&*tx).await?;
        let after = match req.page_token.as_str() {
            "" => None,
            text => {
                let p = TokensPage::decode(text, seal)?;
                Some((p.chain_id, p.address))
            }
        };
        let tokens = store::tokens::tokens_page(&tx, after, chain_id, symbol, size).await?;
        store::end_snapshot(tx);
        let next_page_token = match tokens.last() {
            Some(last) if tokens.len() as i64 == size => {
                TokensPage { chain_id: last.chain_id, address: last.address }.encode(seal)
            }
            _ => String::new(),
        };
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
                    chain_id: t.chain_id.max(0) as u64,
                    following: t.following,
                })
                .collect(),
            next_page_token,
        })
    }
}
