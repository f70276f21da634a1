//! What `ingestor verify` reads of the store: one consistent snapshot of the checkpoint,
//! the supply and the balances, and stored log counts per block range. Reads only.

use std::ops::RangeInclusive;

use alloy_primitives::Address;

use super::Store;
use super::error::{StoreResult, What};

/// What the store says, in one snapshot, for `verify` to compare with the chain.
#[derive(Debug, Clone)]
pub struct VerifySnapshot {
    /// The checkpoint; `start_block - 1` before the first commit.
    pub indexed_block: i64,
    /// First block indexed.
    pub start_block: u64,
    /// Minted minus burned, as indexed (decimal).
    pub total_supply: String,
    /// Σ of the stored balances (decimal).
    pub sum: String,
    /// Balance rows of the token.
    pub rows: u64,
    /// The rows to check: address and stored balance (decimal).
    pub balances: Vec<(Address, String)>,
}

impl Store {
    /// One consistent view of what `verify` compares with the chain: the checkpoint, the
    /// indexed supply, Σ balances, and every balance row (or a random `sample` of them),
    /// with balances as decimal text so that even a corrupted (negative) one is shown as
    /// it is. `None` when the token is not in the store.
    pub async fn verify_snapshot(
        &self,
        token: super::TokenKey,
        sample: Option<u64>,
    ) -> StoreResult<Option<VerifySnapshot>> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .what("starting a snapshot")?;
        let Some(row) = tx
            .query_opt(
                "SELECT indexed_block, start_block, total_supply::text AS total_supply,
                        (SELECT coalesce(sum(balance), 0)::text FROM balances WHERE token = $1) AS sum,
                        (SELECT count(*) FROM balances WHERE token = $1) AS rows
                 FROM tokens WHERE id = $1",
                &[&token.id],
            )
            .await
            .what("reading the token")?
        else {
            return Ok(None);
        };
        let rows = match sample {
            Some(n) => {
                tx.query(
                    "SELECT address, balance::text FROM balances WHERE token = $1 ORDER BY random() LIMIT $2",
                    &[&token.id, &(n as i64)],
                )
                .await
            }
            None => {
                tx.query(
                    "SELECT address, balance::text FROM balances WHERE token = $1 ORDER BY address",
                    &[&token.id],
                )
                .await
            }
        }
        .what("reading balances")?;
        Ok(Some(VerifySnapshot {
            indexed_block: row.get("indexed_block"),
            start_block: row.get::<_, i64>("start_block") as u64,
            total_supply: row.get("total_supply"),
            sum: row.get("sum"),
            rows: row.get::<_, i64>("rows") as u64,
            balances: rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        }))
    }

    /// Logs the store holds for `token` in `span`: transfers and rejected logs (what a
    /// node's `eth_getLogs` for the Transfer topic returns there).
    pub async fn logs_in(
        &self,
        token: super::TokenKey,
        span: RangeInclusive<u64>,
    ) -> StoreResult<u64> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM transfers WHERE token = $1 AND block_number BETWEEN $2 AND $3)
                      + (SELECT count(*) FROM rejected_logs WHERE token = $1 AND block_number BETWEEN $2 AND $3)",
                &[&token.id, &(*span.start() as i64), &(*span.end() as i64)],
            )
            .await
            .what("counting stored logs")?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}
