//! `holders.v1.HolderService`: checks each request, reads one snapshot of the store, and
//! shapes the answer (checksummed addresses, human-unit balances, ranks, page tokens).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use alloy_primitives::U256;
use deadpool_postgres::Pool;
use futures::Stream;
use proto::pb::holder_service_server::HolderService;
use proto::pb::{
    GetHoldersRequest, GetTopHoldersRequest, Holder, HoldersResponse, ListTokensRequest,
    ListTokensResponse, ListTransfersRequest, ListTransfersResponse, StreamTransfersRequest, Token,
    TransferEvent,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::cache::{Answers, Key};
use crate::error::QueryError;
use crate::input::{self, At, Cursor, PageToken, TransferPage};
use crate::metrics::Metrics;
use crate::store::{self, HolderRow, Moment, TokenView, TransferFilter};
use crate::stream::{Feed, Start, transfer_message};

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

    /// The ranked answer for `key`'s state from the cache, or read by `read` and kept.
    async fn ranked_answer<F>(&self, key: Key, read: F) -> Result<HoldersResponse, QueryError>
    where
        F: Future<Output = Result<HoldersResponse, QueryError>>,
    {
        if let Some(hit) = self.answers.get(&key) {
            return Ok((*hit).clone());
        }
        let answer = read.await?;
        self.answers.put(key, Arc::new(answer.clone()));
        Ok(answer)
    }

    async fn stream(&self, req: StreamTransfersRequest) -> Result<TransferStream, Status> {
        let wanted = input::token(&req.token)?;
        let addresses = input::addresses(&req.addresses)?;
        let token = {
            let mut client = self.pool.get().await.map_err(QueryError::from)?;
            let tx = store::snapshot(&mut client).await?;
            let token = store::token(&tx, wanted).await?;
            tx.commit().await.map_err(QueryError::from)?;
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
                self.pool.clone(),
                token.address,
                start,
                addresses,
                req.finalized_only,
                self.shutdown.clone(),
            )
            .await?;
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn transfers(
        &self,
        req: ListTransfersRequest,
    ) -> Result<ListTransfersResponse, QueryError> {
        let limit = input::count("page_size", req.page_size, input::DEFAULT_TRANSFERS)?;
        let wanted = input::token(&req.token)?;
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
        let mut client = self.pool.get().await?;
        let tx = store::snapshot(&mut client).await?;
        let token = store::token(&tx, wanted).await?;
        let before = match req.page_token.as_str() {
            "" => (i64::MAX, 0),
            text => {
                let p = TransferPage::decode(text, token.address)?;
                (p.block, p.log_index)
            }
        };
        let filter = TransferFilter { address, from_block, to_block, before, limit };
        let rows = store::list_transfers(&tx, token.address, &filter).await?;
        tx.commit().await?;
        let next_page_token = match rows.last() {
            Some(last) if rows.len() as i64 == limit => TransferPage {
                token: token.address,
                block: last.block_number,
                log_index: last.log_index,
            }
            .encode(),
            _ => String::new(),
        };
        Ok(ListTransfersResponse {
            transfers: rows.iter().map(transfer_message).collect(),
            next_page_token,
        })
    }

    async fn top(&self, req: GetTopHoldersRequest) -> Result<HoldersResponse, QueryError> {
        let limit = input::count("limit", req.limit, input::DEFAULT_TOP)?;
        let wanted = input::token(&req.token)?;
        let at = input::at(req.finality, req.at_block, req.at_time.as_ref())?;
        let mut client = self.pool.get().await?;
        let tx = store::snapshot(&mut client).await?;
        let token = store::token(&tx, wanted).await?;
        let moment = moment(&tx, &token, at).await?;
        let key = key(&token, &moment, limit, "");
        let answer = self
            .ranked_answer(key, async {
                let rows = if moment.latest {
                    store::ranked(&tx, &token, None, limit).await?
                } else {
                    store::ranked_at(&tx, &token, &moment, None, limit).await?
                };
                Ok(response(&token, &moment, rows, Some(0), None))
            })
            .await?;
        tx.commit().await?;
        Ok(answer)
    }

    async fn page(&self, req: GetHoldersRequest) -> Result<HoldersResponse, QueryError> {
        let size = input::count("page_size", req.page_size, input::DEFAULT_PAGE)?;
        let wanted = input::token(&req.token)?;
        let addresses = input::addresses(&req.addresses)?;
        let at = input::at(req.finality, req.at_block, req.at_time.as_ref())?;
        if !addresses.is_empty() && !req.page_token.is_empty() {
            return Err(QueryError::invalid(
                "page_token",
                "pages are of the ranking; leave page_token empty when addresses are set",
            ));
        }
        let mut client = self.pool.get().await?;
        let tx = store::snapshot(&mut client).await?;
        let token = store::token(&tx, wanted).await?;
        let moment = moment(&tx, &token, at).await?;
        let answer = if !addresses.is_empty() {
            let rows = if moment.latest {
                store::lookup(&tx, &token, &addresses).await?
            } else {
                store::lookup_at(&tx, &token, &moment, &addresses).await?
            };
            response(&token, &moment, rows, None, None)
        } else {
            let after = match req.page_token.as_str() {
                "" => None,
                text => Some(PageToken::decode(text, token.address)?),
            };
            self.ranked_answer(key(&token, &moment, size, &req.page_token), async {
                let after_row = after.map(|p| (p.balance.to_string(), p.address));
                let rows = if moment.latest {
                    store::ranked(&tx, &token, after_row, size).await?
                } else {
                    store::ranked_at(&tx, &token, &moment, after_row, size).await?
                };
                let full = rows.len() as i64 == size;
                let first_rank = after.map_or(0, |p| p.rank);
                Ok(response(&token, &moment, rows, Some(first_rank), full.then_some(size)))
            })
            .await?
        };
        tx.commit().await?;
        Ok(answer)
    }

    async fn list(&self) -> Result<ListTokensResponse, QueryError> {
        let mut client = self.pool.get().await?;
        let tx = store::snapshot(&mut client).await?;
        let tokens = store::tokens(&tx).await?;
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

/// The moment `at` names, checked against what the store holds.
async fn moment(
    tx: &deadpool_postgres::Transaction<'_>,
    token: &TokenView,
    at: At,
) -> Result<Moment, QueryError> {
    let block = match at {
        At::Latest => return Ok(token.latest()),
        At::Safe | At::Finalized => {
            let (name, block) = match at {
                At::Safe => ("safe", token.safe_block),
                _ => ("finalized", token.finalized_block),
            };
            if block < 0 {
                return Err(QueryError::NotReady(format!(
                    "the ingestor has not recorded the chain's {name} block yet; ask for LATEST or retry shortly"
                )));
            }
            if block < token.start_block {
                return Err(QueryError::NotReady(format!(
                    "no indexed block is {name} yet: the chain's {name} block is {block}, the index starts at block {}",
                    token.start_block
                )));
            }
            block
        }
        At::Block(b) => {
            if b > token.indexed_block {
                return Err(QueryError::invalid(
                    "at_block",
                    format!(
                        "{b} is above the newest indexed block {}; ask for that one or an earlier one",
                        token.indexed_block
                    ),
                ));
            }
            if b < token.start_block {
                return Err(QueryError::invalid(
                    "at_block",
                    format!(
                        "{b} is before block {}, where this token's index starts",
                        token.start_block
                    ),
                ));
            }
            b
        }
        At::Time(t) => {
            if t > token.indexed_time {
                return Err(QueryError::invalid(
                    "at_time",
                    format!(
                        "{t} is after the newest indexed block's time {} (block {}): which block was last at that time is not known yet; ask for an earlier time, or leave at_time unset",
                        token.indexed_time, token.indexed_block
                    ),
                ));
            }
            store::block_at_time(tx, token.address, t).await?.ok_or_else(|| {
                QueryError::invalid(
                    "at_time",
                    format!("{t} is before the first indexed block's time"),
                )
            })?
        }
    };
    if block >= token.indexed_block {
        return Ok(token.latest());
    }
    store::moment_at(tx, token, block).await
}

/// Shapes rows into an answer. `first_rank` is the rank before the first row (None for a
/// lookup, which has no ranks); `page_size` is set when a further page may exist.
fn response(
    token: &TokenView,
    moment: &Moment,
    rows: Vec<HolderRow>,
    first_rank: Option<u64>,
    page_size: Option<i64>,
) -> HoldersResponse {
    let next_page_token = match (page_size, rows.last(), first_rank) {
        (Some(_), Some(last), Some(before)) => PageToken {
            token: token.address,
            rank: before + rows.len() as u64,
            // Rows in a ranked page have balance > 0, so they parse as U256.
            balance: last.balance.parse::<U256>().unwrap_or_default(),
            address: last.address,
        }
        .encode(),
        _ => String::new(),
    };
    let holders = rows
        .into_iter()
        .enumerate()
        .map(|(i, r)| Holder {
            address: r.address.to_checksum(None),
            balance_formatted: format_units(&r.balance, token.decimals),
            balance: r.balance,
            share_of_supply_percent: r.share_percent,
            balance_7d_ago: r.balance_7d_ago,
            weekly_change_percent: r.weekly_change_percent,
            last_transfer_block: r.last_transfer_block.max(0) as u64,
            rank: first_rank.map_or(0, |before| before + i as u64 + 1),
        })
        .collect();
    HoldersResponse {
        holders,
        as_of_block: moment.block.max(0) as u64,
        as_of_time: timestamp(moment.time),
        total_supply: moment.total_supply.clone(),
        token: token.address.to_checksum(None),
        next_page_token,
        decimals: u32::from(token.decimals),
        symbol: token.symbol.clone(),
        as_of_finalized_block: token.finalized_block.min(moment.block).max(0) as u64,
    }
}

fn timestamp(unix: i64) -> Option<prost_types::Timestamp> {
    (unix > 0).then_some(prost_types::Timestamp { seconds: unix, nanos: 0 })
}

/// Writes base units as whole tokens: `decimals` digits after the point, trailing zeros
/// and a bare point dropped ("1500000000000000000", 18 → "1.5").
pub fn format_units(raw: &str, decimals: u8) -> String {
    let (sign, digits) = match raw.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", raw),
    };
    let d = usize::from(decimals);
    if d == 0 {
        return raw.to_string();
    }
    let padded = if digits.len() <= d {
        format!("{}{digits}", "0".repeat(d + 1 - digits.len()))
    } else {
        digits.to_string()
    };
    let (whole, frac) = padded.split_at(padded.len() - d);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() { format!("{sign}{whole}") } else { format!("{sign}{whole}.{frac}") }
}

type TransferStream = Pin<Box<dyn Stream<Item = Result<TransferEvent, Status>> + Send + 'static>>;

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
        let stream = self.metrics.observe("StreamTransfers", self.stream(request.into_inner()));
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

/// The cache key of a ranked answer of `token` in its current state, as of `moment`.
fn key(token: &TokenView, moment: &Moment, limit: i64, after: &str) -> Key {
    Key {
        token: token.address,
        indexed_block: token.indexed_block,
        last_seq: token.last_seq,
        limit,
        after: format!("{after}@{}/{}", moment.block, token.finalized_block),
    }
}

#[cfg(test)]
mod tests {
    use super::format_units;

    #[test]
    fn formats_base_units() {
        assert_eq!(format_units("1500000000000000000", 18), "1.5");
        assert_eq!(format_units("1000000000000000000", 18), "1");
        assert_eq!(format_units("1", 18), "0.000000000000000001");
        assert_eq!(format_units("0", 18), "0");
        assert_eq!(format_units("123", 0), "123");
        assert_eq!(format_units("-2500", 3), "-2.5");
        let max = "115792089237316195423570985008687907853269984665640564039457584007913129639935";
        assert_eq!(
            format_units(max, 18),
            "115792089237316195423570985008687907853269984665640564039457.584007913129639935"
        );
    }
}
