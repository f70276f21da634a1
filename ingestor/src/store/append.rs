//! The fast commit of a batch that starts right after the checkpoint (every backfill and
//! head batch): nothing in it can be stored yet, so its transfers go straight into
//! `transfers` by binary COPY, with no staging table and no duplicate check. The ingestor
//! is the token's only writer, so it computes every balance itself from the balances the
//! batch touches (read once): each transfer arrives with both sides' balances after it,
//! each touched balance row is written once with its final value, and Postgres sorts and
//! sums nothing.

use std::collections::HashMap;

use alloy_primitives::aliases::I512;
use alloy_primitives::{Address, U256};
use futures::{StreamExt, pin_mut};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::commit::{Batch, CommitStats};
use super::error::{StoreError, StoreResult, What};
use super::notify;
use crate::decode::Transfer;

/// A balance as the store keeps it: NUMERIC, signed (the zero address holds minus the
/// supply; an index started after a token's creation can see others below zero), and up
/// to 2^256-1 either way, hence wider than I256.
type Balance = I512;

fn widen(v: U256) -> Balance {
    Balance::from_raw(alloy_primitives::Uint::from(v))
}

/// One touched address: whether it held anything before the batch, its balance now, and
/// the block of its newest transfer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Touched {
    /// It has a balance row (possibly zero).
    has_row: bool,
    held_before: bool,
    now: Balance,
    last_block: i64,
}

impl Touched {
    const NEW: Self =
        Self { has_row: false, held_before: false, now: Balance::ZERO, last_block: 0 };
}

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
    let mut touched = read_balances(tx, token, &transfers).await?;
    copy_transfers(tx, "transfers", token, &transfers, Some(&mut touched), last_seq + 1).await?;
    let (balance_rows, holders_delta) = write_balances(tx, token, &touched).await?;
    let rejected = record_blocks_and_rejected(tx, token, batch, &transfers).await?;
    let supply = touched.get(&Address::ZERO).map(|z| -z.now);
    let n = transfers.len() as i64;
    tx.execute(
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
            &supply,
            &n,
            &holders_delta,
            &rejected,
            &(batch.end.number as i64),
            &batch.end.hash,
            &(batch.end.timestamp as i64),
        ],
    )
    .await
    .what("moving the checkpoint")?;
    if n > 0 {
        notify(tx, token).await?;
    }
    Ok(CommitStats { inserted: n as u64, balances_touched: balance_rows })
}

/// The transfers in (block, log index) order: sequence numbers follow it. Chunks arrive
/// sorted, so this copies only if a caller did not sort.
fn sorted(transfers: &[Transfer]) -> std::borrow::Cow<'_, [Transfer]> {
    let key = |t: &Transfer| (t.block_number, t.log_index);
    if transfers.is_sorted_by_key(key) {
        std::borrow::Cow::Borrowed(transfers)
    } else {
        let mut v = transfers.to_vec();
        v.sort_by_key(key);
        std::borrow::Cow::Owned(v)
    }
}

/// The stored balances of every address the transfers touch (the zero address: minus the
/// supply), in one read.
async fn read_balances(
    tx: &tokio_postgres::Transaction<'_>,
    token: Address,
    transfers: &[Transfer],
) -> StoreResult<HashMap<Address, Touched>> {
    let mut touched: HashMap<Address, Touched> = HashMap::new();
    for t in transfers {
        for a in [t.from, t.to] {
            touched.entry(a).or_insert(Touched::NEW);
        }
    }
    let addresses: Vec<Address> = touched.keys().copied().filter(|a| *a != Address::ZERO).collect();
    // Streamed: a batch touches up to a few hundred thousand rows.
    let rows = tx
        .query_raw(
            "SELECT address, balance FROM balances WHERE token = $1 AND address = ANY($2::bytea[])",
            [&token as &(dyn ToSql + Sync), &addresses],
        )
        .await
        .what("reading the balances the batch touches")?;
    pin_mut!(rows);
    while let Some(r) = rows.next().await {
        let r = r.what("reading the balances the batch touches")?;
        let balance: Balance = r.get("balance");
        if let Some(t) = touched.get_mut(&r.get::<_, Address>("address")) {
            *t = Touched {
                has_row: true,
                held_before: balance > Balance::ZERO,
                now: balance,
                last_block: 0,
            };
        }
    }
    if let Some(zero) = touched.get_mut(&Address::ZERO) {
        let supply: Balance = tx
            .query_one("SELECT total_supply FROM tokens WHERE address = $1", &[&token])
            .await
            .what("reading the supply")?
            .get(0);
        zero.now = -supply;
    }
    Ok(touched)
}

/// Moves `touched` by one transfer; the (sender's, receiver's) balance right after it. A
/// transfer to oneself changes nothing.
fn apply(t: &Transfer, touched: &mut HashMap<Address, Touched>) -> (Balance, Balance) {
    let block = t.block_number as i64;
    if t.from != t.to {
        let value = widen(t.value);
        let from = touched.get_mut(&t.from).expect("touched");
        from.now -= value;
        from.last_block = block;
        let to = touched.get_mut(&t.to).expect("touched");
        to.now += value;
        to.last_block = block;
    } else {
        touched.get_mut(&t.from).expect("touched").last_block = block;
    }
    (touched[&t.from].now, touched[&t.to].now)
}

/// COPYs the transfers into `table` (`transfers`, or the reapply path's staging table
/// of the same columns), numbered from `first_seq`. With `touched`, moves it through them
/// to give each its balances after it; without, those are NULL (computed in SQL). U256,
/// I512, Address and B256 travel through alloy's ToSql (NUMERIC and BYTEA): the one
/// conversion of amounts to Postgres in the ingestor.
pub(super) async fn copy_transfers(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    token: Address,
    transfers: &[Transfer],
    mut touched: Option<&mut HashMap<Address, Touched>>,
    first_seq: i64,
) -> StoreResult<()> {
    let sink = tx
        .copy_in(&format!(
            "COPY {table} (token, block_number, log_index, block_hash, block_time, tx_hash,
                           from_address, to_address, value, seq, from_balance, to_balance)
             FROM STDIN BINARY"
        ))
        .await
        .what("starting COPY")?;
    let types = [
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
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    // Sequence numbers in (block, log index) order; in a reapplied batch a row that
    // turns out to be stored already leaves its number unused.
    for (t, seq) in transfers.iter().zip(first_seq..) {
        let (from_balance, to_balance) = match touched.as_deref_mut() {
            Some(touched) => {
                let (f, t) = apply(t, touched);
                (Some(f), Some(t))
            }
            None => (None, None),
        };
        let block_time = t.block_time.ok_or_else(|| {
            StoreError::Refused("a transfer without a block time reached the store".into())
        })? as i64;
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
        writer.as_mut().write(&row).await.what("writing a COPY row")?;
    }
    writer.finish().await.what("finishing COPY")?;
    Ok(())
}

/// Writes each touched balance row once, with its final value: an UPDATE of the rows
/// that exist and an INSERT of the new ones (no speculative insertion: the read told
/// which is which). Returns the rows written and how the holder count moves (addresses
/// above zero now, less before).
async fn write_balances(
    tx: &tokio_postgres::Transaction<'_>,
    token: Address,
    touched: &HashMap<Address, Touched>,
) -> StoreResult<(u64, i64)> {
    let mut holders_delta = 0i64;
    let (mut known, mut new) = (Columns::default(), Columns::default());
    for (a, t) in touched.iter().filter(|(a, _)| **a != Address::ZERO) {
        holders_delta += i64::from(t.now > Balance::ZERO) - i64::from(t.held_before);
        let side = if t.has_row { &mut known } else { &mut new };
        side.addresses.push(*a);
        side.balances.push(t.now);
        side.blocks.push(t.last_block);
    }
    let mut written = 0;
    if !known.addresses.is_empty() {
        written += tx
            .execute(
                "UPDATE balances b SET balance = u.b, last_transfer_block = u.l
                 FROM unnest($2::bytea[], $3::numeric[], $4::bigint[]) AS u(a, b, l)
                 WHERE b.token = $1 AND b.address = u.a",
                &[&token, &known.addresses, &known.balances, &known.blocks],
            )
            .await
            .what("updating balances")?;
    }
    if !new.addresses.is_empty() {
        written += tx
            .execute(
                "INSERT INTO balances (token, address, balance, last_transfer_block)
                 SELECT $1, a, b, l FROM unnest($2::bytea[], $3::numeric[], $4::bigint[]) AS u(a, b, l)",
                &[&token, &new.addresses, &new.balances, &new.blocks],
            )
            .await
            .what("inserting balances")?;
    }
    Ok((written, holders_delta))
}

/// Balance rows to write, column by column.
#[derive(Debug, Default)]
struct Columns {
    addresses: Vec<Address>,
    balances: Vec<Balance>,
    blocks: Vec<i64>,
}

/// Keeps the hashes of the blocks with transfers, the verified ones and the checkpoint,
/// and the rejected logs. Returns how many rejected logs are new.
async fn record_blocks_and_rejected(
    tx: &tokio_postgres::Transaction<'_>,
    token: Address,
    batch: &Batch,
    transfers: &[Transfer],
) -> StoreResult<i64> {
    let mut blocks: Vec<(i64, alloy_primitives::B256, i64)> = Vec::new();
    for t in transfers {
        let b = (t.block_number as i64, t.block_hash, t.block_time.unwrap_or_default() as i64);
        if blocks.last().is_none_or(|last| last.0 != b.0) {
            blocks.push(b);
        }
    }
    for b in batch.verified.iter().chain(std::iter::once(&batch.end)) {
        blocks.push((b.number as i64, b.hash, b.timestamp as i64));
    }
    let numbers: Vec<i64> = blocks.iter().map(|b| b.0).collect();
    let hashes: Vec<alloy_primitives::B256> = blocks.iter().map(|b| b.1).collect();
    let times: Vec<i64> = blocks.iter().map(|b| b.2).collect();
    tx.execute(
        "INSERT INTO blocks (token, number, hash, time)
         SELECT $1, n, h, t FROM unnest($2::bigint[], $3::bytea[], $4::bigint[]) AS b(n, h, t)
         ON CONFLICT DO NOTHING",
        &[&token, &numbers, &hashes, &times],
    )
    .await
    .what("keeping block hashes")?;
    if batch.rejected.is_empty() {
        return Ok(0);
    }
    let rejected_blocks: Vec<i64> = batch.rejected.iter().map(|r| r.0 as i64).collect();
    let rejected_logs: Vec<i32> = batch.rejected.iter().map(|r| r.1 as i32).collect();
    let n = tx
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

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{B256, address};

    fn transfer(block: u64, log: u64, from: Address, to: Address, value: u64) -> Transfer {
        Transfer {
            block_number: block,
            block_hash: B256::ZERO,
            block_time: Some(1),
            tx_hash: B256::ZERO,
            log_index: log,
            from,
            to,
            value: U256::from(value),
        }
    }

    #[test]
    fn balances_after_each_transfer_follow_the_order() {
        let (a, b) = (
            address!("0x00000000000000000000000000000000000000aa"),
            address!("0x00000000000000000000000000000000000000bb"),
        );
        let z = Address::ZERO;
        let ts = [
            transfer(1, 0, z, a, 100),
            transfer(1, 1, a, b, 30),
            transfer(2, 0, b, b, 5),
            transfer(3, 0, b, z, 10),
        ];
        let mut touched = HashMap::new();
        for t in &ts {
            for x in [t.from, t.to] {
                touched.insert(x, Touched::NEW);
            }
        }
        let n = |v: i64| Balance::try_from(v).unwrap();
        let rows: Vec<_> = ts.iter().map(|t| apply(t, &mut touched)).collect();
        assert_eq!(rows, vec![(n(-100), n(100)), (n(70), n(30)), (n(30), n(30)), (n(20), n(-90))]);
        assert_eq!(touched[&a].now, n(70));
        assert_eq!(touched[&b].now, n(20));
        assert_eq!(touched[&b].last_block, 3);
        assert_eq!(touched[&z].now, n(-90), "the zero address holds minus the supply");
    }

    #[test]
    fn balances_reach_past_i256() {
        let max = widen(U256::MAX);
        assert_eq!(-(-max), max);
        assert!(max + max > max, "no overflow at twice 2^256-1");
    }
}
