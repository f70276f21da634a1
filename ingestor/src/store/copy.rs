//! The COPY of transfers into `transfers` (or a staging table of the same columns), on a
//! connection or a transaction: the one place the ingestor turns amounts into Postgres
//! values (alloy's ToSql: NUMERIC and BYTEA).

use std::pin::Pin;

use alloy_primitives::Address;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::balances::Balance;
use super::error::{StoreError, StoreResult, What};
use crate::decode::Transfer;

/// A binary COPY of transfers into `transfers` (or the reapply path's staging table of
/// the same columns). U256, I512, Address and B256 travel through alloy's ToSql (NUMERIC
/// and BYTEA): the one conversion of amounts to Postgres in the ingestor.
pub(super) struct TransferCopy {
    writer: Pin<Box<BinaryCopyInWriter>>,
}

impl std::fmt::Debug for TransferCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransferCopy")
    }
}

impl TransferCopy {
    const TYPES: [Type; 12] = [
        Type::BYTEA,
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

    /// Starts the COPY on `client` (a connection or a transaction of it).
    pub(super) async fn start<C: GenericClientCopy>(client: &C, table: &str) -> StoreResult<Self> {
        let sink = client
            .copy_in_sink(&format!(
                "COPY {table} (token, block_number, log_index, block_hash, block_time, tx_hash,
                               from_address, to_address, value, seq, from_balance, to_balance)
                 FROM STDIN BINARY"
            ))
            .await
            .what("starting COPY")?;
        Ok(Self { writer: Box::pin(BinaryCopyInWriter::new(sink, &Self::TYPES)) })
    }

    /// One row: transfer `t` numbered `seq`, with both sides' balances after it (or NULL:
    /// computed in SQL by the reapply path).
    pub(super) async fn write(
        &mut self,
        token: Address,
        t: &Transfer,
        seq: i64,
        balances: Option<(Balance, Balance)>,
    ) -> StoreResult<()> {
        let block_time = t.block_time.ok_or_else(|| {
            StoreError::Refused("a transfer without a block time reached the store".into())
        })? as i64;
        let (from_balance, to_balance) = (balances.map(|b| b.0), balances.map(|b| b.1));
        let row: [&(dyn ToSql + Sync); 12] = [
            &token,
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

/// `copy_in` for both a connection and a transaction (tokio-postgres' `GenericClient`
/// lacks it).
pub(super) trait GenericClientCopy {
    /// Starts `COPY ... FROM STDIN`.
    fn copy_in_sink(
        &self,
        statement: &str,
    ) -> impl Future<Output = Result<tokio_postgres::CopyInSink<bytes::Bytes>, tokio_postgres::Error>>;
}

impl GenericClientCopy for tokio_postgres::Client {
    async fn copy_in_sink(
        &self,
        statement: &str,
    ) -> Result<tokio_postgres::CopyInSink<bytes::Bytes>, tokio_postgres::Error> {
        self.copy_in(statement).await
    }
}

impl GenericClientCopy for tokio_postgres::Transaction<'_> {
    async fn copy_in_sink(
        &self,
        statement: &str,
    ) -> Result<tokio_postgres::CopyInSink<bytes::Bytes>, tokio_postgres::Error> {
        self.copy_in(statement).await
    }
}
