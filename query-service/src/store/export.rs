//! The whole ranking of one moment, for ExportHolders: one statement bound as a portal
//! the caller fetches from in chunks, one pass over what it needs and one sort, whatever
//! the holder count. The 7-day figures are set-based (the week's transfers read once for
//! everybody), not one lookup per holder as a page's are.
//!
//! At the checkpoint: the balances, and the week's moves summed by address. At a past
//! block B: the balances at B (the transfers after B undone, or those up to B replayed,
//! whichever side is smaller), and the balance 7 days before B of each address that
//! moved in that week: the balance its first transfer after the week-ago block started
//! from. The block of an address's newest transfer at or below B comes with it, except
//! for an address that moved after B but not in that week: one `balance_at()` each.

use alloy_primitives::Address;
use deadpool_postgres::Transaction;
use tokio_postgres::Portal;
use tokio_postgres::types::ToSql;

use super::TokenView;
use super::history::{Moment, last_up_to, moved_after, recent_side};
use crate::error::QueryError;

/// The answer's columns over `$inner` rows (address, balance, ago, last_transfer_block),
/// ranked; the same expressions as a page's ([`super::holders`]). $3 the supply then.
macro_rules! export_columns {
    ($ctes:expr, $inner:expr) => {
        concat!(
            "WITH inside AS (SELECT $2 >= start_block AS week FROM tokens WHERE id = $1), ",
            $ctes,
            "
            SELECT x.address, x.balance::text AS balance, x.ago::text AS balance_7d_ago,
                   coalesce((x.balance * 100 / nullif($3::text::numeric, 0))::float8, 0) AS share_percent,
                   CASE WHEN x.ago = 0 THEN NULL ELSE ((x.balance - x.ago) * 100 / x.ago)::float8 END
                       AS weekly_change_percent,
                   x.last_transfer_block
            FROM (",
            $inner,
            ") x ORDER BY -x.balance, x.address"
        )
    };
}

/// Every holder at the checkpoint. $1 token, $2 the week-ago block, $3 the supply.
const AT_CHECKPOINT: &str = export_columns!(
    "moved AS MATERIALIZED (
        SELECT m.a, sum(m.v) AS v FROM (
            SELECT to_address AS a, value AS v FROM transfers
            WHERE token = $1 AND block_number > $2 AND (SELECT week FROM inside)
            UNION ALL
            SELECT from_address, -value FROM transfers
            WHERE token = $1 AND block_number > $2 AND (SELECT week FROM inside)
        ) m GROUP BY m.a)",
    "SELECT b.address, b.balance, b.last_transfer_block,
            CASE WHEN b.last_transfer_block <= $2 THEN b.balance
                 WHEN NOT (SELECT week FROM inside) THEN 0
                 ELSE b.balance - coalesce(m.v, 0) END AS ago
     FROM balances b LEFT JOIN moved m ON m.a = b.address
     WHERE b.token = $1 AND b.balance > 0"
);

/// CTE `week`: each address that moved after the week-ago block $2 and at or below $4,
/// with its balance at $2 (`ago`: the balance its first such transfer started from) and
/// the block of its newest such transfer.
macro_rules! week {
    () => {
        "week_legs AS (
            SELECT from_address AS address, block_number, log_index,
                   from_balance + CASE WHEN from_address = to_address THEN 0 ELSE value END AS before
            FROM transfers WHERE token = $1 AND block_number > $2 AND block_number <= $4
            UNION ALL
            SELECT to_address, block_number, log_index,
                   to_balance - CASE WHEN from_address = to_address THEN 0 ELSE value END
            FROM transfers WHERE token = $1 AND block_number > $2 AND block_number <= $4
         ), week AS MATERIALIZED (
            SELECT DISTINCT ON (address) address, before AS ago,
                   max(block_number) OVER (PARTITION BY address) AS last
            FROM week_legs ORDER BY address, block_number, log_index
         )"
    };
}

/// Rows `at_b` (address, balance, last_transfer_block or NULL) with their week.
macro_rules! with_week {
    () => {
        "SELECT a.address, a.balance,
                coalesce(a.last_transfer_block, w.last, (balance_at($1, a.address, $4)).last_block)
                    AS last_transfer_block,
                CASE WHEN NOT (SELECT week FROM inside) THEN 0 ELSE coalesce(w.ago, a.balance) END AS ago
         FROM at_b a LEFT JOIN week w ON w.address = a.address"
    };
}

/// Every holder at block $4, from the transfers after it ([`moved_after!`]): those that
/// did not move since hold what they hold now. $5 the zero address.
const AT_RECENT: &str = export_columns!(
    concat!(
        moved_after!("$1", "$4"),
        ", ",
        week!(),
        ", at_b AS (
            SELECT address, balance, last_transfer_block FROM balances
            WHERE token = $1 AND balance > 0 AND address NOT IN (SELECT address FROM moved)
            UNION ALL
            SELECT address, balance, NULL::bigint FROM moved WHERE balance > 0 AND address <> $5
         )"
    ),
    with_week!()
);

/// Every holder at block $4, from the transfers up to it ([`last_up_to!`]).
const AT_OLD: &str = export_columns!(
    concat!(
        last_up_to!("$1", "$4"),
        ", ",
        week!(),
        ", at_b AS (
            SELECT address, balance, last_transfer_block FROM last
            WHERE balance > 0 AND address <> $5
         )"
    ),
    with_week!()
);

/// Every holder of `token` at `at`, ranked, bound as a portal: fetch it in chunks.
pub async fn portal(
    tx: &Transaction<'_>,
    token: &TokenView,
    at: &Moment,
) -> Result<Portal, QueryError> {
    // One sort of every holder: in memory where it fits.
    tx.batch_execute("SET LOCAL work_mem = '256MB'").await?;
    if at.latest {
        let stmt = tx.prepare_cached(AT_CHECKPOINT).await?;
        let params: [&(dyn ToSql + Sync); 3] = [&token.id, &at.week_ago_block, &at.total_supply];
        return Ok(tx.bind(&stmt, &params).await?);
    }
    let sql = if recent_side(tx, token, at).await? { AT_RECENT } else { AT_OLD };
    let stmt = tx.prepare_cached(sql).await?;
    let params: [&(dyn ToSql + Sync); 5] =
        [&token.id, &at.week_ago_block, &at.total_supply, &at.block, &Address::ZERO];
    Ok(tx.bind(&stmt, &params).await?)
}
