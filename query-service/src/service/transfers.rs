//! ListTransfers: stored transfers newest first, of all addresses or of one, in a block
//! range, page by page.

use proto::pb::{ListTransfersRequest, ListTransfersResponse};

use super::{Call, Holders};
use crate::error::QueryError;
use crate::feed::transfer_message;
use crate::input::{self, TransferPage};
use crate::lane::Cost;
use crate::store::{self, TransferFilter};

impl Holders {
    pub(super) async fn transfers(
        &self,
        call: &Call,
        req: ListTransfersRequest,
    ) -> Result<ListTransfersResponse, QueryError> {
        let limit = input::count("page_size", req.page_size, input::DEFAULT_TRANSFERS)?;
        let wanted = input::wanted(&req.token, req.chain_id)?;
        let address = match req.address.as_str() {
            "" => None,
            a => Some(input::address("address", a)?),
        };
        let block = |field: &str, v: Option<u64>, default: i64| match v {
            None => Ok(default),
            Some(b) => i64::try_from(b)
                .map_err(|_| QueryError::invalid(field, format!("{b} is not a block number"))),
        };
        let from_block = block("from_block", req.from_block, 0)?;
        let to_block = block("to_block", req.to_block, i64::MAX)?;
        if from_block > to_block {
            return Err(QueryError::invalid(
                "from_block",
                format!("{from_block} is after to_block {to_block}"),
            ));
        }
        self.reach(wanted, req.min_block).await?;
        let mut lease = self.lease(Cost::Cheap).await?;
        let tx = store::snapshot(&mut lease.client, call.budget).await?;
        let token = store::tokens::token(&tx, wanted).await?;
        let seal = self.sealer.get(&*tx).await?;
        let before = match req.page_token.as_str() {
            "" => (i64::MAX, 0),
            text => {
                let p = TransferPage::decode(text, token.address, seal)?;
                (p.block, p.log_index)
            }
        };
        let filter = TransferFilter { address, from_block, to_block, before, limit };
        let rows = store::transfers::list_transfers(&tx, token.id, &filter).await?;
        store::end_snapshot(tx);
        let next_page_token = match rows.last() {
            Some(last) if rows.len() as i64 == limit => TransferPage {
                token: token.address,
                block: last.block_number,
                log_index: last.log_index,
            }
            .encode(seal),
            _ => String::new(),
        };
        Ok(ListTransfersResponse {
            transfers: rows
                .iter()
                .map(|r| transfer_message(r, token.address, token.chain_id))
                .collect(),
            next_page_token,
        })
    }
}
