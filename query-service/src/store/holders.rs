//! Rankings and lookups at the checkpoint, with each holder's share of the supply and
//! 7-day change. The answer's columns are built once ([`holder_columns!`]); each moment
//! (the checkpoint here, a past block in [`super::history`]) gives only its own "balance
//! 7 days ago".

use alloy_primitives::Address;
use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use super::TokenView;
use crate::error::QueryError;

/// One holder's row of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct HolderRow {
    /// Address.
    pub address: Address,
    /// Balance, decimal.
    pub balance: String,
    /// Balance 7 days before the checkpoint, decimal.
    pub balance_7d_ago: String,
    /// balance / total supply * 100.
    pub share_percent: f64,
    /// (balance - ago) / ago * 100; None when ago is 0.
    pub weekly_change_percent: Option<f64>,
    /// Newest block with a transfer of this address; 0 if none.
    pub last_transfer_block: i64,
}

/// Wraps a query `$inner` that yields `address, balance, last_transfer_block` rows in
/// ranking order with the share of the supply ($3, decimal text) and the 7-day figures,
/// given `$ago`, the SQL of a row's balance at the week-ago block $2 (row `p`). CTEs in
/// `$before` come first (the page may use them), those in `$ctes` after the page.
macro_rules! holder_columns {
    ($inner:expr, $ago:literal) => {
        holder_columns!($inner, "", $ago)
    };
    ($inner:expr, $ctes:literal, $ago:literal) => {
        holder_columns!(before "", $inner, $ctes, $ago)
    };
    (before $before:literal, $inner:expr, $ctes:literal, $ago:literal) => {
        concat!(
            "WITH ",
            $before,
            " page AS (",
            $inner,
            ")",
            $ctes,
            "
            SELECT p.address, p.balance::text AS balance, w.ago::text AS balance_7d_ago,
                   coalesce((p.balance * 100 / nullif($3::text::numeric, 0))::float8, 0) AS share_percent,
                   CASE WHEN w.ago = 0 THEN NULL ELSE ((p.balance - w.ago) * 100 / w.ago)::float8 END
                       AS weekly_change_percent,
                   p.last_transfer_block
            FROM page p
            -- OFFSET 0 keeps this a subquery: inlined, its lookups would run once per use.
            CROSS JOIN LATERAL (SELECT ",
            $ago,
            " AS ago OFFSET 0) w
            ORDER BY -p.balance, p.address"
        )
    };
}

/// [`holder_columns!`] at the checkpoint: the week's moves of the page's holders that
/// moved at all are summed by one join per direction (`moved`, computed once): index-only
/// range scans of transfers_to and transfers_from per holder where those exist, one hash
/// join over the recent blocks where a backfill has not built them yet (a partition
/// being filled has none), so answers stay within the statement timeout meanwhile. A
/// week that reaches back before the token's first indexed block adds nothing up: every
/// balance then was 0 (the store's balances are sums from that block on), which is what
/// the sums would give, without reading a history that is all inside the week.
/// Parameters: $1 token, $2 week_ago_block, $3 total supply (decimal text), then the
/// inner query's own.
macro_rules! with_week {
    ($inner:literal) => {
        holder_columns!(
            $inner,
            ", inside AS (SELECT $2 >= start_block AS week FROM tokens WHERE id = $1),
            held AS (SELECT DISTINCT address FROM page
                     WHERE last_transfer_block > $2 AND (SELECT week FROM inside)),
            moved AS MATERIALIZED (
                SELECT m.a, sum(m.v) AS v FROM (
                    SELECT t.to_address AS a, t.value AS v
                    FROM held q
                    JOIN transfers t
                      ON t.token = $1 AND t.to_address = q.address AND t.block_number > $2
                    UNION ALL
                    SELECT t.from_address, -t.value
                    FROM held q
                    JOIN transfers t
                      ON t.token = $1 AND t.from_address = q.address AND t.block_number > $2
                ) m GROUP BY m.a)",
            "CASE
                -- No transfer after the week-ago block: nothing to add up (most holders).
                WHEN p.last_transfer_block <= $2 THEN p.balance
                WHEN NOT (SELECT week FROM inside) THEN 0
                ELSE p.balance - coalesce((SELECT m.v FROM moved m WHERE m.a = p.address), 0)
                END"
        )
    };
}

/// The first `limit` holders in ranking order. $4 limit.
const TOP: &str = with_week!(
    "SELECT address, balance, last_transfer_block FROM balances
     WHERE token = $1 AND balance > 0
     ORDER BY -balance, address LIMIT $4"
);

/// The `limit` holders ranked after (balance $5, address $6). $4 limit.
const AFTER: &str = with_week!(
    "SELECT address, balance, last_transfer_block FROM balances
     WHERE token = $1 AND balance > 0 AND (-balance, address) > (-($5::text::numeric), $6::bytea)
     ORDER BY -balance, address LIMIT $4"
);

/// The holders at addresses $4, known or not.
const LOOKUP: &str = with_week!(
    "SELECT q.address, coalesce(b.balance, 0) AS balance, coalesce(b.last_transfer_block, 0) AS last_transfer_block
     FROM unnest($4::bytea[]) AS q(address)
     LEFT JOIN balances b ON b.token = $1 AND b.address = q.address"
);

/// Holders with at least $2 (decimal text, above 0): one range of balances_rank.
const COUNT_FROM: &str = "SELECT count(*) FROM balances
     WHERE token = $1 AND balance > 0 AND -balance <= -($2::text::numeric)";

/// The first `limit` holders of `token`, or those after `after` (balance, address).
pub async fn ranked(
    tx: &Transaction<'_>,
    token: &TokenView,
    after: Option<(String, Address)>,
    limit: i64,
) -> Result<Vec<HolderRow>, QueryError> {
    let rows = match &after {
        None => {
            let stmt = tx.prepare_cached(TOP).await?;
            tx.query(&stmt, &[&token.id, &token.week_ago_block, &token.total_supply, &limit])
                .await?
        }
        Some((balance, address)) => {
            let stmt = tx.prepare_cached(AFTER).await?;
            tx.query(
                &stmt,
                &[&token.id, &token.week_ago_block, &token.total_supply, &limit, balance, address],
            )
            .await?
        }
    };
    Ok(rows.iter().map(holder_row).collect())
}

/// The holders at `addresses` (each once), zero balances included, in ranking order.
pub async fn lookup(
    tx: &Transaction<'_>,
    token: &TokenView,
    addresses: &[Address],
) -> Result<Vec<HolderRow>, QueryError> {
    let stmt = tx.prepare_cached(LOOKUP).await?;
    let rows = tx
        .query(&stmt, &[&token.id, &token.week_ago_block, &token.total_supply, &addresses])
        .await?;
    Ok(rows.iter().map(holder_row).collect())
}

/// Holders of `token` at the checkpoint holding at least `min` (decimal): one range of
/// balances_rank.
pub async fn holder_count(
    tx: &Transaction<'_>,
    token: &TokenView,
    min: &str,
) -> Result<i64, QueryError> {
    let stmt = tx.prepare_cached(COUNT_FROM).await?;
    Ok(tx.query_one(&stmt, &[&token.id, &min]).await?.get(0))
}

/// A row of [`holder_columns!`].
pub(crate) fn holder_row(r: &Row) -> HolderRow {
    HolderRow {
        address: r.get("address"),
        balance: r.get("balance"),
        balance_7d_ago: r.get("balance_7d_ago"),
        share_percent: r.get("share_percent"),
        weekly_change_percent: r.get("weekly_change_percent"),
        last_transfer_block: r.get("last_transfer_block"),
    }
}

/// The SQL of the ranking queries, for EXPLAIN in tests: (name, SQL, sample parameters
/// are the caller's).
pub const RANKING_QUERIES: [(&str, &str); 3] = [("top", TOP), ("after", AFTER), ("lookup", LOOKUP)];

pub(crate) use holder_columns;
