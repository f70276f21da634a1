//! The stream's events: transfers added and taken back, by sequence number, and the
//! numbers a stream starts after.

use alloy_primitives::Address;
use tokio_postgres::Row;

use super::is_final;
use super::transfers::{TransferRow, transfer_row};
use crate::error::QueryError;

/// One event of a token's stream: a transfer added, or taken back by a reorg.
#[derive(Debug, Clone)]
pub struct EventRow {
    /// Sequence number: the event's place in the stream.
    pub seq: i64,
    /// True for a removal.
    pub removed: bool,
    /// The transfer.
    pub transfer: TransferRow,
}

/// An event row: `seq`, `removed`, then a [`TransferRow`]'s columns.
fn event_row(r: &Row) -> EventRow {
    EventRow { seq: r.get("seq"), removed: r.get("removed"), transfer: transfer_row(r) }
}

/// Every event: additions and removals.
const ALL_EVENTS: &str = concat!(
    "SELECT seq, removed, block_number, log_index, block_hash, block_time, tx_hash, from_address, to_address,
            value::text AS value, kept AND ",
    is_final!(),
    " AS finalized
    FROM (
        SELECT seq, false AS removed, true AS kept, block_number, log_index, block_hash, block_time, tx_hash,
               from_address, to_address, value
        FROM transfers WHERE token = $1 AND seq > $2
        UNION ALL
        SELECT seq, false, false, block_number, log_index, block_hash, block_time, tx_hash, from_address, to_address, value
        FROM removed_transfers WHERE token = $1 AND seq > $2
        UNION ALL
        SELECT removed_seq, true, false, block_number, log_index, block_hash, block_time, tx_hash,
               from_address, to_address, value
        FROM removed_transfers WHERE token = $1 AND removed_seq > $2
    ) e
    WHERE cardinality($4::bytea[]) = 0 OR from_address = ANY($4) OR to_address = ANY($4)
    ORDER BY seq
    LIMIT $3"
);

/// Final transfers only.
const FINAL_EVENTS: &str = concat!(
    "SELECT seq, false AS removed, block_number, log_index, block_hash, block_time, tx_hash, from_address,
            to_address, value::text AS value, true AS finalized
     FROM transfers
     WHERE token = $1 AND seq > $2 AND ",
    is_final!(),
    "
       AND (cardinality($4::bytea[]) = 0 OR from_address = ANY($4) OR to_address = ANY($4))
     ORDER BY seq LIMIT $3"
);

/// Events of `token` after sequence number `after`, in order, at most `limit`; only those
/// touching `addresses` when it is not empty. A transfer later taken back appears twice:
/// its addition (its original number) and its removal (a later one). With
/// `finalized_only`, final transfers only: stored transfers' numbers grow with the chain
/// and a final one is never removed, so a stream of these never goes back.
pub async fn events_after(
    client: &deadpool_postgres::Object,
    token: i32,
    after: i64,
    limit: i64,
    addresses: &[Address],
    finalized_only: bool,
) -> Result<Vec<EventRow>, QueryError> {
    let sql = if finalized_only { FINAL_EVENTS } else { ALL_EVENTS };
    let stmt = client.prepare_cached(sql).await?;
    let rows = client.query(&stmt, &[&token, &after, &limit, &addresses]).await?;
    Ok(rows.iter().map(event_row).collect())
}

/// The sequence number of `token`'s newest final transfer (0 when none): where a stream
/// of final transfers "from now" starts.
pub async fn last_final_seq(
    client: &deadpool_postgres::Object,
    token: i32,
) -> Result<i64, QueryError> {
    const SQL: &str = concat!(
        "SELECT coalesce((SELECT seq FROM transfers WHERE token = $1 AND ",
        is_final!(),
        " ORDER BY block_number DESC, log_index DESC LIMIT 1), 0)"
    );
    Ok(client.query_one(SQL, &[&token]).await?.get(0))
}

/// The token's newest sequence number.
pub async fn last_seq<C: tokio_postgres::GenericClient + Sync>(
    client: &C,
    token: i32,
) -> Result<i64, QueryError> {
    let row = client.query_opt("SELECT last_seq FROM tokens WHERE id = $1", &[&token]).await?;
    row.map(|r| r.get(0))
        .ok_or_else(|| QueryError::NotFound(format!("token id {token} is not indexed")))
}

/// Where one token's stream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The token's id in the store.
    pub id: i32,
    /// The token.
    pub token: Address,
    /// Its chain.
    pub chain_id: i64,
    /// Its newest sequence number.
    pub last_seq: i64,
    /// Its newest indexed block.
    pub indexed_block: i64,
    /// The chain's finalized block as its ingestor last recorded it (-1: unknown).
    pub finalized_block: i64,
}

/// Every token's position.
pub async fn positions(client: &tokio_postgres::Client) -> Result<Vec<Position>, QueryError> {
    let rows = client
        .query(
            "SELECT address, chain_id, last_seq, indexed_block, id, finalized_block FROM tokens",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Position {
            token: r.get(0),
            chain_id: r.get(1),
            last_seq: r.get(2),
            indexed_block: r.get(3),
            id: r.get(4),
            finalized_block: r.get(5),
        })
        .collect())
}

/// The sequence number to resume after so that a stream starts with the transfers of
/// `block`: just before the first stored transfer at or after it (or the newest number,
/// when there is none yet).
pub async fn seq_before_block(
    client: &deadpool_postgres::Object,
    token: i32,
    block: i64,
) -> Result<i64, QueryError> {
    let row = client
        .query_one(
            "SELECT coalesce(
                 (SELECT seq - 1 FROM transfers WHERE token = $1 AND block_number >= $2
                  ORDER BY block_number, log_index LIMIT 1),
                 (SELECT last_seq FROM tokens WHERE id = $1))",
            &[&token, &block],
        )
        .await?;
    Ok(row.get::<_, Option<i64>>(0).unwrap_or(0))
}
