//! The COPY of transfers into `transfers`: the one place the ingestor turns a transfer's
//! amounts into Postgres values (alloy's ToSql: NUMERIC and BYTEA).

use std::pin::Pin;

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::balances::Balance;
use super::error::{StoreError, StoreResult, What};
use crate::decode::Transfer;

/// A binary COPY of transfers into `transfers`. U256, I512, Address and B256 travel
/// through alloy's ToSql (NUMERIC and BYTEA): the one conversion of amounts to Postgres
/// in the ingestor.
pub(super) struct TransferCopy {
    writer: Pin<Box<BinaryCopyInWriter>>,
}

impl std::fmt::Debug for TransferCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransferCopy")
    }
}

impl TransferCopy {
    const TYPES: [Type; 13] = [
        Type::INT8,
        Type::INT4,
        Type::INT8,
        Type::INT4,
        Type::BYTEA,
        Type::INT8,
        Type::BYTEA,
        Type::BYTEA,
        Type::BYTEA,
        Type::NUMERIC,
        Type::INT8,
        Type::NUMERIC,
        Type::NUMERIC,
    ];

    /// Starts the COPY on `client`, in the batch's transaction.
    pub(super) async fn start(client: &tokio_postgres::Client) -> StoreResult<Self> {
        let sink = client
            .copy_in(
                "COPY transfers (chain_id, token, block_number, log_index, block_hash, block_time, tx_hash,
                               from_address, to_address, value, seq, from_balance, to_balance)
                 FROM STDIN BINARY",
            )
            .await
            .what("starting COPY")?;
        Ok(Self { writer: Box::pin(BinaryCopyInWriter::new(sink, &Self::TYPES)) })
    }

    /// One row: transfer `t` numbered `seq`, with both sides' balances after it.
    pub(super) async fn write(
        &mut self,
        token: super::TokenKey,
        t: &Transfer,
        seq: i64,
        (from_balance, to_balance): (Balance, Balance),
    ) -> StoreResult<()> {
        let block_time = t.block_time.ok_or_else(|| {
            StoreError::Refused("a transfer without a block time reached the store".into())
        })? as i64;
        let row: [&(dyn ToSql + Sync); 13] = [
            &token.chain_id,
            &token.id,
            &(t.block_number as i64),
            &(t.log_index as i32),
            &t.block_hash,
            &block_time,
            &t.tx_hash,
            &t.from,
            &t.to,
            &t.value,
            &seq,
            &from_balance,
            &to_balance,
        ];
        self.writer.as_mut().write(&row).await.what("writing a COPY row")
    }

    /// Ends the COPY; the rows are in the table (within the transaction).
    pub(super) async fn finish(mut self) -> StoreResult<()> {
        self.writer.as_mut().finish().await.what("finishing COPY")?;
        Ok(())
    }
}
