//! ListTransfers pages: stored transfers newest first, of all addresses or of one, with
//! keyset pagination on (block, log index).

use alloy_primitives::Address;
use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use super::is_final;
use crate::error::QueryError;

/// A stored transfer.
#[derive(Debug, Clone)]
pub struct TransferRow {
    /// Block number.
    pub block_number: i64,
    /// Position in the block.
    pub log_index: i32,
    /// Block hash.
    pub block_hash: alloy_primitives::B256,
    /// Block time, Unix seconds.
    pub block_time: i64,
    /// Transaction hash.
    pub tx_hash: alloy_primitives::B256,
    /// Sender.
    pub from: Address,
    /// Receiver.
    pub to: Address,
    /// Amount, decimal.
    pub value: String,
    /// Whether its block is final (and it is still stored).
    pub finalized: bool,
}

/// A row with a stored transfer's columns: `block_number`, `log_index`, `block_hash`,
/// `block_time`, `tx_hash`, `from_address`, `to_address`, `value` (text), `finalized`.
pub(super) fn transfer_row(r: &Row) -> TransferRow {
    TransferRow {
        block_number: r.get("block_number"),
        log_index: r.get("log_index"),
        block_hash: r.get("block_hash"),
        block_time: r.get("block_time"),
        tx_hash: r.get("tx_hash"),
        from: r.get("from_address"),
        to: r.get("to_address"),
        value: r.get("value"),
        finalized: r.get("finalized"),
    }
}

/// Filters of a ListTransfers page.
#[derive(Debug, Clone, Copy)]
pub struct TransferFilter {
    /// Only transfers from or to this address.
    pub address: Option<Address>,
    /// Lowest block.
    pub from_block: i64,
    /// Highest block.
    pub to_block: i64,
    /// Strictly before this (block, log index).
    pub before: (i64, i32),
    /// Page size.
    pub limit: i64,
}

/// ListTransfers without an address: $1 token, $2..$3 blocks, before ($4, $5), $6 limit.
const LIST_ALL: &str = concat!(
    "
    SELECT block_number, log_index, block_hash, block_time, tx_hash, from_address, to_address, value::text AS value, ",
    is_final!(),
    " AS finalized
    FROM transfers
    WHERE token = $1 AND block_number BETWEEN $2 AND $3 AND (block_number, log_index) < ($4, $5)
    ORDER BY block_number DESC, log_index DESC LIMIT $6"
);
/// ListTransfers of one address ($7): as sender and as receiver, one page each, merged.
const LIST_ONE: &str = concat!(
    "
    SELECT block_number, log_index, block_hash, block_time, tx_hash, from_address, to_address, value::text AS value, ",
    is_final!(),
    " AS finalized
    FROM (
        (SELECT * FROM transfers
         WHERE token = $1 AND from_address = $7 AND block_number BETWEEN $2 AND $3
           AND (block_number, log_index) < ($4, $5)
         ORDER BY block_number DESC, log_index DESC LIMIT $6)
        UNION
        (SELECT * FROM transfers
         WHERE token = $1 AND to_address = $7 AND block_number BETWEEN $2 AND $3
           AND (block_number, log_index) < ($4, $5)
         ORDER BY block_number DESC, log_index DESC LIMIT $6)
    ) t
    ORDER BY block_number DESC, log_index DESC LIMIT $6"
);

/// The SQL of ListTransfers, for EXPLAIN in tests.
pub const TRANSFER_QUERIES: [(&str, &str); 2] = [("all", LIST_ALL), ("one", LIST_ONE)];

/// Stored transfers, newest first. With an address, two index range scans (as sender, as
/// receiver) each read at most one page.
pub async fn list_transfers(
    tx: &Transaction<'_>,
    token: i32,
    f: &TransferFilter,
) -> Result<Vec<TransferRow>, QueryError> {
    let rows = match f.address {
        None => {
            let stmt = tx.prepare_cached(LIST_ALL).await?;
            tx.query(
                &stmt,
                &[&token, &f.from_block, &f.to_block, &f.before.0, &f.before.1, &f.limit],
            )
            .await?
        }
        Some(a) => {
            let stmt = tx.prepare_cached(LIST_ONE).await?;
            tx.query(
                &stmt,
                &[&token, &f.from_block, &f.to_block, &f.before.0, &f.before.1, &f.limit, &a],
            )
            .await?
        }
    };
    Ok(rows.iter().map(transfer_row).collect())
}
