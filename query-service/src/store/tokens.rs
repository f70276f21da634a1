//! The token rows: metadata, checkpoint, finality, and where "7 days ago" is.

use alloy_primitives::Address;
use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use super::{Moment, WEEK};
use crate::error::QueryError;

/// A token as the store knows it, with what a holders answer needs.
#[derive(Debug, Clone)]
pub struct TokenView {
    /// Its id in the store (`tokens.id`): what every other table names it by.
    pub id: i32,
    /// Token address.
    pub address: Address,
    /// The chain it lives on.
    pub chain_id: i64,
    /// name().
    pub name: String,
    /// symbol().
    pub symbol: String,
    /// decimals().
    pub decimals: u8,
    /// Minted minus burned, decimal.
    pub total_supply: String,
    /// First block indexed.
    pub start_block: i64,
    /// Last block indexed (start_block - 1 before the first batch).
    pub indexed_block: i64,
    /// Its timestamp.
    pub indexed_time: i64,
    /// Addresses with a balance above zero.
    pub holder_count: i64,
    /// Transfers stored.
    pub transfer_count: i64,
    /// Newest sequence number: moves with every commit and rollback.
    pub last_seq: i64,
    /// "7 days ago": the newest block with transfers whose time is at least 7 days before
    /// `indexed_time`; transfers after it are the week's changes.
    pub week_ago_block: i64,
    /// The chain's safe block as the ingestor last recorded it; -1 while unknown.
    pub safe_block: i64,
    /// Whether an ingestor's token set holds it.
    pub following: bool,
    /// The chain's finalized block as the ingestor last recorded it; -1 while unknown.
    pub finalized_block: i64,
}

impl TokenView {
    /// The answer as of the newest indexed block.
    pub fn latest(&self) -> Moment {
        Moment {
            block: self.indexed_block,
            time: self.indexed_time,
            week_ago_block: self.week_ago_block,
            total_supply: self.total_supply.clone(),
            holders: self.holder_count,
            latest: true,
        }
    }
}

/// The columns of a [`TokenView`]; $1 is [`WEEK`].
macro_rules! token_columns {
    () => {
        "SELECT t.id, t.address, t.chain_id, t.name, t.symbol, t.decimals, t.total_supply::text AS total_supply, t.start_block,
                t.indexed_block, t.indexed_time, t.holder_count, t.transfer_count, t.last_seq,
                coalesce((SELECT b.number FROM blocks b
                          WHERE b.token = t.id AND b.time <= t.indexed_time - $1
                          ORDER BY b.time DESC, b.number DESC LIMIT 1),
                         t.start_block - 1) AS week_ago_block,
                t.safe_block, t.finalized_block, t.following
         FROM tokens t "
    };
}

/// Every indexed token, by address.
pub async fn tokens(tx: &Transaction<'_>) -> Result<Vec<TokenView>, QueryError> {
    let stmt = tx.prepare_cached(concat!(token_columns!(), "ORDER BY t.address")).await?;
    let rows = tx.query(&stmt, &[&WEEK]).await?;
    Ok(rows.iter().map(token_view).collect())
}

/// A page of ListTokens: after `after` (chain id, address), of `chain_id` and with
/// `symbol` (case-insensitive) when given, ordered by chain id and address.
pub async fn tokens_page(
    tx: &Transaction<'_>,
    after: Option<(i64, Address)>,
    chain_id: Option<i64>,
    symbol: Option<&str>,
    limit: i64,
) -> Result<Vec<TokenView>, QueryError> {
    let stmt = tx
        .prepare_cached(concat!(
            token_columns!(),
            "WHERE ($2::bigint IS NULL OR (t.chain_id, t.address) > ($2, $3::bytea))
               AND ($4::bigint IS NULL OR t.chain_id = $4)
               AND ($5::text IS NULL OR lower(t.symbol) = lower($5))
             ORDER BY t.chain_id, t.address LIMIT $6"
        ))
        .await?;
    let (after_chain, after_address) = match after {
        Some((c, a)) => (Some(c), a.to_vec()),
        None => (None, Vec::new()),
    };
    let rows =
        tx.query(&stmt, &[&WEEK, &after_chain, &after_address, &chain_id, &symbol, &limit]).await?;
    Ok(rows.iter().map(token_view).collect())
}

/// The token a request is about: the one named (on the chain named, or the only chain
/// that holds it), or the only one indexed (on the chain named).
pub async fn token(tx: &Transaction<'_>, wanted: Wanted) -> Result<TokenView, QueryError> {
    let chains =
        |ts: &[TokenView]| ts.iter().map(|t| t.chain_id.to_string()).collect::<Vec<_>>().join(", ");
    if let Some(address) = wanted.token {
        let stmt = tx
            .prepare_cached(concat!(token_columns!(), "WHERE t.address = $2 ORDER BY t.chain_id"))
            .await?;
        let held: Vec<TokenView> =
            tx.query(&stmt, &[&WEEK, &address]).await?.iter().map(token_view).collect();
        match (wanted.chain_id, held.len()) {
            (_, 0) => {}
            (Some(chain), _) => {
                let on = chains(&held);
                return held.into_iter().find(|t| t.chain_id == chain).ok_or_else(|| {
                    QueryError::NotFound(format!(
                        "token {address} is not indexed on chain {chain}; it is on chain {on}"
                    ))
                });
            }
            (None, 1) => return Ok(held.into_iter().next().expect("one token")),
            (None, _) => {
                return Err(QueryError::invalid(
                    "chain_id",
                    format!("token {address} is indexed on chains {}; set one", chains(&held)),
                ));
            }
        }
    }
    let all: Vec<TokenView> = tokens(tx)
        .await?
        .into_iter()
        .filter(|t| wanted.chain_id.is_none_or(|c| t.chain_id == c))
        .collect();
    let names = || all.iter().map(|t| t.address.to_string()).collect::<Vec<_>>().join(", ");
    let on = wanted.chain_id.map_or(String::new(), |c| format!(" on chain {c}"));
    match (wanted.token, all.len()) {
        (Some(a), 0) => Err(QueryError::NotFound(format!(
            "token {a} is not indexed{on}; no token is indexed{on} yet"
        ))),
        (Some(a), _) => Err(QueryError::NotFound(format!(
            "token {a} is not indexed{on}; indexed tokens{on}: {}",
            names()
        ))),
        (None, 0) => {
            Err(QueryError::NotReady(format!("no token is indexed{on} yet: run the ingestor")))
        }
        (None, 1) => Ok(all.into_iter().next().expect("one token")),
        (None, _) => Err(QueryError::invalid(
            "token",
            format!("several tokens are indexed{on}; name one of: {}", names()),
        )),
    }
}

/// Which token a request names: an address, a chain, both, or neither.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Wanted {
    /// The `token` field; `None` when empty.
    pub token: Option<Address>,
    /// The `chain_id` field; `None` when 0.
    pub chain_id: Option<i64>,
}

fn token_view(r: &Row) -> TokenView {
    TokenView {
        id: r.get("id"),
        address: r.get("address"),
        chain_id: r.get("chain_id"),
        name: r.get("name"),
        symbol: r.get("symbol"),
        decimals: r.get::<_, i16>("decimals").clamp(0, 255) as u8,
        total_supply: r.get("total_supply"),
        start_block: r.get("start_block"),
        indexed_block: r.get("indexed_block"),
        indexed_time: r.get("indexed_time"),
        holder_count: r.get("holder_count"),
        transfer_count: r.get("transfer_count"),
        last_seq: r.get("last_seq"),
        week_ago_block: r.get("week_ago_block"),
        safe_block: r.get("safe_block"),
        following: r.get("following"),
        finalized_block: r.get("finalized_block"),
    }
}
