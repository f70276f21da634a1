//! The fast commit of a batch that starts right after the checkpoint (every head batch,
//! and a backfill batch held in memory): nothing in it can be stored yet, so its transfers
//! go straight into `transfers` by binary COPY, with no staging table and no duplicate
//! check, each with both sides' balances after it ([`super::balances`]). The pieces here
//! (the COPY of transfers, the blocks and rejected logs, the checkpoint) are shared with
//! the streamed backfill batch ([`super::open_batch`]) and the reapply path.

use std::pin::Pin;

use alloy_primitives::{Address, B256};
use tokio_postgres::GenericClient;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::balances::{Balance, Balances};
use super::commit::{Batch, CommitStats};
use super::error::{StoreError, StoreResult, What};
use super::notify;
use crate::decode::Transfer;
use crate::rpc::BlockRef;

/// Writes `batch` (which starts right after the checkpoint) inside `tx`, numbering its
/// transfers after `last_seq`.
pub(super) async fn append(
    tx: &tokio_postgres::Transaction<'_>,
    token: Address,
    batch: &Batch,
    last_seq: i64,
) -> StoreResult<CommitStats> {
    if batch.verified.is_empty() {
        // A backfill batch is final: if the server crashes before this commit reaches
        // the disk, the batch and its checkpoint are lost together and read again.
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .await
            .what("setting up the batch")?;
    }
    let transfers = sorted(&batch.transfers);
    let mut balances = Balances::unbounded();
    let missing = balances.missing(&transfers);
    balances.load(tx, token, missing).await?;
    // The zero address's balance is minus the supply: read only for mints and burns.
    if transfers.iter().any(|t| t.from.is_zero() || t.to.is_zero()) {
        balances.set_supply(stored_supply(tx, token).await?);
    }
    let mut copy = TransferCopy::start(tx, "transfers").await?;
    let mut blocks = Blocks::default();
    for (t, seq) in transfers.iter().zip(last_seq + 1..) {
        let (from_balance, to_balance) = balances.apply(t);
        copy.write(token, t, seq, Some((from_balance, to_balance))).await?;
        blocks.saw(t);
    }
    copy.finish().await?;
    let (balance_rows, holders_delta) = balances.write(tx, token).await?;
    blocks.verified(batch.verified.iter().chain(std::iter::once(&batch.end)));
    let rejected = blocks.keep(tx, token, &batch.rejected).await?;
    let n = transfers.len() as i64;
    let moved =
        Moved { transfers: n, holders: holders_delta, rejected, supply: balances.changed_supply() };
    advance(tx, token, &moved, &batch.end).await?;
    if n > 0 {
        notify(tx, token).await?;
    }
    Ok(CommitStats { inserted: n as u64, balances_touched: balance_rows })
}

/// The transfers in (block, log index) order: sequence numbers follow it. Chunks arrive
/// sorted, so this copies only if a caller did not sort.
pub(super) fn sorted(transfers: &[Transfer]) -> std::borrow::Cow<'_, [Transfer]> {
    let key = |t: &Transfer| (t.block_number, t.log_index);
    if transfers.is_sorted_by_key(key) {
        std::borrow::Cow::Borrowed(transfers)
    } else {
        let mut v = transfers.to_vec();
        v.sort_by_key(key);
        std::borrow::Cow::Owned(v)
    }
}

/// The supply the token row holds (the zero address's balance is minus it).
pub(super) async fn stored_supply<C: GenericClient>(
    client: &C,
    token: Address,
) -> StoreResult<Balance> {
    Ok(client
        .query_one("SELECT total_supply FROM tokens WHERE address = $1", &[&token])
        .await
        .what("reading the supply")?
        .get(0))
}

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

/// The blocks a batch must keep the hashes of: those with transfers, the verified ones
/// and the checkpoint.
#[derive(Debug, Default)]
pub(super) struct Blocks {
    numbers: Vec<i64>,
    hashes: Vec<B256>,
    times: Vec<i64>,
}

impl Blocks {
    /// The block of transfer `t` (transfers come in block order).
    pub(super) fn saw(&mut self, t: &Transfer) {
        let number = t.block_number as i64;
        if self.numbers.last() != Some(&number) {
            self.numbers.push(number);
            self.hashes.push(t.block_hash);
            self.times.push(t.block_time.unwrap_or_default() as i64);
        }
    }

    /// Headers checked near the head, and the checkpoint.
    pub(super) fn verified<'a>(&mut self, blocks: impl Iterator<Item = &'a BlockRef>) {
        for b in blocks {
            self.numbers.push(b.number as i64);
            self.hashes.push(b.hash);
            self.times.push(b.timestamp as i64);
        }
    }

    /// Keeps the block hashes and the rejected logs (block, log index). Returns how
    /// many rejected logs are new.
    pub(super) async fn keep<C: GenericClient>(
        &self,
        client: &C,
        token: Address,
        rejected: &[(u64, u64)],
    ) -> StoreResult<i64> {
        client
            .execute(
                "INSERT INTO blocks (token, number, hash, time)
                 SELECT $1, n, h, t FROM unnest($2::bigint[], $3::bytea[], $4::bigint[]) AS b(n, h, t)
                 ON CONFLICT DO NOTHING",
                &[&token, &self.numbers, &self.hashes, &self.times],
            )
            .await
            .what("keeping block hashes")?;
        if rejected.is_empty() {
            return Ok(0);
        }
        let rejected_blocks: Vec<i64> = rejected.iter().map(|r| r.0 as i64).collect();
        let rejected_logs: Vec<i32> = rejected.iter().map(|r| r.1 as i32).collect();
        let n = client
            .execute(
                "INSERT INTO rejected_logs (token, block_number, log_index)
                 SELECT $1, b, i FROM unnest($2::bigint[], $3::integer[]) AS r(b, i)
                 ON CONFLICT DO NOTHING",
                &[&token, &rejected_blocks, &rejected_logs],
            )
            .await
            .what("keeping rejected logs")?;
        Ok(n as i64)
    }
}

/// How a commit moves the token row's counters.
#[derive(Debug)]
pub(super) struct Moved {
    pub transfers: i64,
    pub holders: i64,
    pub rejected: i64,
    /// The new supply, if mints or burns changed it.
    pub supply: Option<Balance>,
}

/// Moves the token row's counters and the checkpoint to `end`.
pub(super) async fn advance<C: GenericClient>(
    client: &C,
    token: Address,
    moved: &Moved,
    end: &BlockRef,
) -> StoreResult<()> {
    client
        .execute(
            "UPDATE tokens SET
                total_supply = coalesce($2::numeric, total_supply),
                transfer_count = transfer_count + $3,
                holder_count = holder_count + $4,
                rejected_logs = rejected_logs + $5,
                last_seq = last_seq + $3,
                indexed_block = $6, indexed_hash = $7, indexed_time = $8,
                updated_at = now()
             WHERE address = $1",
            &[
                &token,
                &moved.supply,
                &moved.transfers,
                &moved.holders,
                &moved.rejected,
                &(end.number as i64),
                &end.hash,
                &(end.timestamp as i64),
            ],
        )
        .await
        .what("moving the checkpoint")?;
    Ok(())
}
