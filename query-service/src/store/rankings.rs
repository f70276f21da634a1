//! The head of a past ranking from the rankings the ingestor keeps (migration V10): the
//! newest one at or below the moment, less the addresses that moved since, merged with
//! those addresses' balances then (their newest transfer at or below the moment). Costs
//! the transfers since that ranking and a page, not the history. A kept ranking that is
//! not complete is exact only above its last row: an answer that needs more comes from
//! the history instead ([`super::history::ranked_from_history`]).

use alloy_primitives::Address;
use deadpool_postgres::Transaction;

use super::TokenView;
use super::history::{Moment, ranked_from_history, rows_at, with_week_at};
use super::holders::{HolderRow, holder_columns};
use crate::error::QueryError;

/// The first $4 holders at block $5 from the ranking kept at block $7; only those at or
/// above its last row (balance $8, address $9) unless it is complete ($10).
pub const RANKED_FROM_KEPT: &str = with_week_at!(
    "WITH legs AS (
        SELECT from_address AS address, block_number, log_index, from_balance AS balance
        FROM transfers WHERE token = $1 AND block_number > $7 AND block_number <= $5
        UNION ALL
        SELECT to_address, block_number, log_index, to_balance
        FROM transfers WHERE token = $1 AND block_number > $7 AND block_number <= $5
     ), moved AS MATERIALIZED (
        SELECT DISTINCT ON (address) address, balance, block_number AS last_transfer_block
        FROM legs ORDER BY address, block_number DESC, log_index DESC
     ), kept AS (
        SELECT address, balance, last_transfer_block FROM ranking_rows
        WHERE token = $1 AND block = $7 AND address NOT IN (SELECT address FROM moved)
        UNION ALL
        SELECT address, balance, last_transfer_block FROM moved
        WHERE balance > 0 AND address <> $6
     )
     SELECT address, balance, last_transfer_block FROM kept
     WHERE $10 OR (-balance, address) <= (-($8::text::numeric), $9::bytea)
     ORDER BY -balance, address LIMIT $4"
);

/// The newest ranking kept at or below a block, with its last row.
#[derive(Debug)]
struct Kept {
    block: i64,
    complete: bool,
    last: Option<(String, Address)>,
}

/// The ranking of `token` at a past moment, from the start or after `after`: the head
/// of the nearest kept ranking and the transfers since where it can, else the history.
pub async fn ranked_at(
    tx: &Transaction<'_>,
    token: &TokenView,
    at: &Moment,
    after: Option<(String, Address)>,
    limit: i64,
) -> Result<Vec<HolderRow>, QueryError> {
    if after.is_none()
        && let Some(rows) = ranked_from_kept(tx, token, at, limit).await?
    {
        return Ok(rows);
    }
    ranked_from_history(tx, token, at, after, limit).await
}

/// The first `limit` holders of `token` at `at` from the nearest kept ranking, or None
/// when there is none, when the transfers since it are as many as half the history (the
/// history's own plans cost that much), or when it is too shallow for `limit`.
pub async fn ranked_from_kept(
    tx: &Transaction<'_>,
    token: &TokenView,
    at: &Moment,
    limit: i64,
) -> Result<Option<Vec<HolderRow>>, QueryError> {
    let stmt = tx
        .prepare_cached(
            "SELECT r.block, r.complete, l.balance::text, l.address,
                    (SELECT count(*) FROM (SELECT 1 FROM transfers t WHERE t.token = r.token
                         AND t.block_number > r.block AND t.block_number <= $2 LIMIT $3) s) AS since
             FROM (SELECT * FROM rankings WHERE token = $1 AND block <= $2
                   ORDER BY block DESC LIMIT 1) r
             LEFT JOIN ranking_rows l ON l.token = r.token AND l.block = r.block AND l.rank = r.depth",
        )
        .await?;
    let half = token.transfer_count / 2 + 1;
    let Some(row) = tx.query_opt(&stmt, &[&token.id, &at.block, &half]).await? else {
        return Ok(None);
    };
    let since: i64 = row.get("since");
    let kept = Kept {
        block: row.get("block"),
        complete: row.get("complete"),
        last: row.get::<_, Option<String>>("balance").zip(row.get::<_, Option<Address>>("address")),
    };
    if since >= half || (!kept.complete && kept.last.is_none()) {
        return Ok(None);
    }
    let (balance, address) = kept.last.unwrap_or_else(|| ("0".to_string(), Address::ZERO));
    let rows = rows_at(
        tx,
        RANKED_FROM_KEPT,
        token,
        at,
        &limit,
        &[&kept.block, &balance, &address, &kept.complete],
    )
    .await?;
    if (rows.len() as i64) < limit && !kept.complete {
        // Fewer above the kept ranking's last row than asked for: what ranks below it at
        // this moment is not known from it.
        return Ok(None);
    }
    Ok(Some(rows))
}
