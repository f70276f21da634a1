//! Answers at a past block or time, read from transfers: each transfer carries both
//! sides' balances after it, so a lookup is one `balance_at()` per address, and a ranking
//! reads the smaller side of the block once. A first page may come from a ranking the
//! ingestor kept instead: [`super::rankings`] decides, and calls here otherwise (this
//! module does not call there).

use alloy_primitives::Address;
use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::holders::{HolderRow, holder_columns, holder_row};
use super::{TokenView, WEEK};
use crate::error::QueryError;

/// The block an answer is as of, with what it needs of that moment.
#[derive(Debug, Clone)]
pub struct Moment {
    /// The block.
    pub block: i64,
    /// Its time (of the newest stored block at or below it), Unix seconds.
    pub time: i64,
    /// The newest stored block at least 7 days older than `time`.
    pub week_ago_block: i64,
    /// Minted minus burned after `block`, decimal.
    pub total_supply: String,
    /// Holders after `block` (addresses holding more than zero).
    pub holders: i64,
    /// True when `block` is the newest indexed one (the balances table answers).
    pub latest: bool,
}

/// The moment of a past `block` of `token` (at or below its checkpoint): its time, the
/// block 7 days before it, the supply then (minus the zero address's balance) and the
/// holder count the ingestor kept with the newest stored block at or below it (V9).
pub async fn moment_at(
    tx: &Transaction<'_>,
    token: &TokenView,
    block: i64,
) -> Result<Moment, QueryError> {
    let stmt = tx
        .prepare_cached(
            "WITH m AS (SELECT coalesce(max(time), 0) AS time, coalesce(max(holders), 0) AS holders
                        FROM (SELECT time, holders FROM blocks WHERE token = $1 AND number <= $2
                              ORDER BY number DESC LIMIT 1) b)
             SELECT m.time, m.holders,
                    coalesce((SELECT b.number FROM blocks b WHERE b.token = $1 AND b.time <= m.time - $3
                              ORDER BY b.time DESC, b.number DESC LIMIT 1), $4::bigint - 1),
                    (-(balance_at($1, $5, $2)).balance)::text
             FROM m",
        )
        .await?;
    let row = tx
        .query_one(&stmt, &[&token.id, &block, &WEEK, &token.start_block, &Address::ZERO])
        .await?;
    Ok(Moment {
        block,
        time: row.get(0),
        holders: row.get(1),
        week_ago_block: row.get(2),
        total_supply: row.get(3),
        latest: false,
    })
}

/// The newest stored block of `token` whose time is at or before `time`: blocks without
/// transfers are not stored, and balances after them equal those after this one.
pub async fn block_at_time(
    tx: &Transaction<'_>,
    token: i32,
    time: i64,
) -> Result<Option<i64>, QueryError> {
    let stmt = tx
        .prepare_cached(
            "SELECT number FROM blocks WHERE token = $1 AND time <= $2
             ORDER BY time DESC, number DESC LIMIT 1",
        )
        .await?;
    Ok(tx.query_opt(&stmt, &[&token, &time]).await?.map(|r| r.get(0)))
}

/// [`holder_columns!`] for a past moment: the balance 7 days before is one
/// `balance_at()` lookup. Parameters: $1 token, $2 week_ago_block, $3 total supply then,
/// $4 limit or addresses, $5 the moment's block, $6 the zero address, then the inner
/// query's own.
macro_rules! with_week_at {
    ($inner:expr) => {
        holder_columns!(
            $inner,
            "CASE WHEN p.last_transfer_block <= $2 OR p.address = $6 THEN p.balance
                  ELSE (balance_at($1, p.address, $2)).balance END"
        )
    };
}

/// CTE `moved`: each address with a transfer of token `$tok` after block `$at`, with
/// its balance at `$at`: the balance before the first of them (the balance that transfer
/// left, less its effect; nothing for a transfer to oneself). Costs those transfers and
/// a sort.
macro_rules! moved_after {
    ($tok:literal, $at:literal) => {
        concat!(
            "legs AS (
                SELECT from_address AS address, block_number, log_index,
                       from_balance + CASE WHEN from_address = to_address THEN 0 ELSE value END AS before
                FROM transfers WHERE token = ", $tok, " AND block_number > ", $at, "
                UNION ALL
                SELECT to_address, block_number, log_index,
                       to_balance - CASE WHEN from_address = to_address THEN 0 ELSE value END
                FROM transfers WHERE token = ", $tok, " AND block_number > ", $at, "
             ), moved AS MATERIALIZED (
                SELECT DISTINCT ON (address) address, before AS balance
                FROM legs ORDER BY address, block_number, log_index
             )"
        )
    };
}

/// CTE `last`: each address's newest transfer of token `$tok` at or before block `$at`,
/// with the balance it left. Costs the transfers up to `$at` and a sort.
macro_rules! last_up_to {
    ($tok:literal, $at:literal) => {
        concat!(
            "legs AS (
                SELECT from_address AS address, block_number, log_index, from_balance AS balance
                FROM transfers WHERE token = ", $tok, " AND block_number <= ", $at, "
                UNION ALL
                SELECT to_address, block_number, log_index, to_balance
                FROM transfers WHERE token = ", $tok, " AND block_number <= ", $at, "
             ), last AS (
                SELECT DISTINCT ON (address) address, balance, block_number AS last_transfer_block
                FROM legs ORDER BY address, block_number DESC, log_index DESC
             )"
        )
    };
}

/// The ranking at block $5 for a recent block: addresses with no transfer after it hold
/// what they hold now (one walk of balances_rank, skipping the others), the others what
/// [`moved_after!`] says. Costs the transfers after $5 and a sort, plus a page. Ranked
/// after (balance $7, address $8).
const RANKED_AT_RECENT: &str = with_week_at!(concat!(
    "WITH ",
    moved_after!("$1", "$5"),
    ", ranked AS (
        SELECT * FROM (
            (SELECT address, balance, last_transfer_block FROM balances
             WHERE token = $1 AND balance > 0 AND address NOT IN (SELECT address FROM moved)
               AND (-balance, address) > (-($7::text::numeric), $8::bytea)
             ORDER BY -balance, address LIMIT $4)
            UNION ALL
            (SELECT address, balance, NULL::bigint FROM moved
             WHERE address <> $6 AND balance > 0
               AND (-balance, address) > (-($7::text::numeric), $8::bytea))
        ) u ORDER BY -balance, address LIMIT $4
     )
     -- The newest transfer at or before $5 of the page's moved addresses only.
     SELECT r.address, r.balance,
            coalesce(r.last_transfer_block, (balance_at($1, r.address, $5)).last_block) AS last_transfer_block
     FROM ranked r"
));

/// The ranking at block $5 for an old block: each address's newest transfer at or
/// before it carries its balance then ([`last_up_to!`]). Costs the transfers up to $5.
/// Ranked after (balance $7, address $8).
const RANKED_AT_OLD: &str = with_week_at!(concat!(
    "WITH ",
    last_up_to!("$1", "$5"),
    "
     SELECT address, balance, last_transfer_block FROM last
     WHERE balance > 0 AND address <> $6 AND (-balance, address) > (-($7::text::numeric), $8::bytea)
     ORDER BY -balance, address LIMIT $4"
));

/// Holders at block $2 holding at least $4 ("0": all), the recent way: those without a
/// transfer after $2 from balances_rank, the others from [`moved_after!`]. $3 the zero
/// address.
const COUNT_AT_RECENT: &str = concat!(
    "WITH ",
    moved_after!("$1", "$2"),
    "
     SELECT (SELECT count(*) FROM balances
             WHERE token = $1 AND balance > 0 AND -balance <= -($4::text::numeric)
               AND address NOT IN (SELECT address FROM moved))
          + (SELECT count(*) FROM moved
             WHERE address <> $3 AND balance > 0 AND balance >= $4::text::numeric)"
);

/// [`COUNT_AT_RECENT`] the old way, from [`last_up_to!`].
const COUNT_AT_OLD: &str = concat!(
    "WITH ",
    last_up_to!("$1", "$2"),
    "
     SELECT count(*) FROM last
     WHERE balance > 0 AND address <> $3 AND balance >= $4::text::numeric"
);

/// The holders at addresses $4 at block $5: one `balance_at()` lookup each. Public for
/// EXPLAIN in tests. (A filter on the balance belongs to the caller: in this query it
/// turned the lookups into a scan, 14 ms → 4.2 s at 10M holders.)
pub const LOOKUP_AT: &str = with_week_at!(
    "SELECT q.address,
            CASE WHEN q.address = $6 THEN 0 ELSE b.balance END AS balance,
            CASE WHEN q.address = $6 THEN 0 ELSE b.last_block END AS last_transfer_block
     FROM unnest($4::bytea[]) AS q(address)
     CROSS JOIN LATERAL balance_at($1, q.address, $5) b"
);

/// Above any uint256: the cursor before the first holder.
const ABOVE_ALL: &str =
    "115792089237316195423570985008687907853269984665640564039457584007913129639936";

/// Whether the transfers after `at` are fewer than those up to it: either side costs a
/// scan of its transfers and a sort, so a past answer reads the smaller one.
pub(super) async fn recent_side(
    tx: &Transaction<'_>,
    token: &TokenView,
    at: &Moment,
) -> Result<bool, QueryError> {
    let half = token.transfer_count / 2 + 1;
    let stmt = tx
        .prepare_cached(
            "SELECT count(*) FROM (SELECT 1 FROM transfers WHERE token = $1 AND block_number > $2 LIMIT $3) t",
        )
        .await?;
    let newer: i64 = tx.query_one(&stmt, &[&token.id, &at.block, &half]).await?.get(0);
    // The sort of every address's first or last transfer: keep it in memory.
    tx.batch_execute("SET LOCAL work_mem = '64MB'").await?;
    Ok(newer < half)
}

/// A past ranking from the transfers alone, whatever rankings are kept: the smaller side
/// of the moment ([`super::rankings::ranked_at`] tries a kept ranking first). Public so
/// that tests compare both ways on the same moments.
pub async fn ranked_from_history(
    tx: &Transaction<'_>,
    token: &TokenView,
    at: &Moment,
    after: Option<(String, Address)>,
    limit: i64,
) -> Result<Vec<HolderRow>, QueryError> {
    let sql = if recent_side(tx, token, at).await? { RANKED_AT_RECENT } else { RANKED_AT_OLD };
    let (balance, address) = after.unwrap_or_else(|| (ABOVE_ALL.to_string(), Address::ZERO));
    // The empty bytea sorts before every address, so ABOVE_ALL with it admits all.
    let address: &[u8] = if balance == ABOVE_ALL { &[] } else { address.as_slice() };
    rows_at(tx, sql, token, at, &limit, &[&balance, &address]).await
}

/// Holders of `token` at a past moment holding at least `min` ("0": all).
pub async fn holder_count_at(
    tx: &Transaction<'_>,
    token: &TokenView,
    at: &Moment,
    min: &str,
) -> Result<i64, QueryError> {
    let sql = if recent_side(tx, token, at).await? { COUNT_AT_RECENT } else { COUNT_AT_OLD };
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.query_one(&stmt, &[&token.id, &at.block, &Address::ZERO, &min]).await?.get(0))
}

/// The holders at `addresses` at a past moment, zero balances included, ranking order.
pub async fn lookup_at(
    tx: &Transaction<'_>,
    token: &TokenView,
    at: &Moment,
    addresses: &[Address],
) -> Result<Vec<HolderRow>, QueryError> {
    rows_at(tx, LOOKUP_AT, token, at, &addresses, &[]).await
}

pub(crate) use {last_up_to, moved_after, with_week_at};

/// Runs a past-moment query: $1 token, $2 the week-ago block, $3 the supply then, $4
/// `what` (a limit, or addresses), $5 the moment's block, $6 the zero address, then `more`.
pub(super) async fn rows_at(
    tx: &Transaction<'_>,
    sql: &str,
    token: &TokenView,
    at: &Moment,
    what: &(dyn ToSql + Sync),
    more: &[&(dyn ToSql + Sync)],
) -> Result<Vec<HolderRow>, QueryError> {
    let stmt = tx.prepare_cached(sql).await?;
    let mut params: Vec<&(dyn ToSql + Sync)> =
        vec![&token.id, &at.week_ago_block, &at.total_supply, what, &at.block, &Address::ZERO];
    params.extend_from_slice(more);
    let rows = tx.query(&stmt, &params).await?;
    Ok(rows.iter().map(holder_row).collect())
}
