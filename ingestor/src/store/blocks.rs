//! What a batch writes besides its transfers and balances: the blocks it keeps (hashes,
//! times, the holder count after each), its rejected logs, and the token row's counters
//! and checkpoint.

use alloy_primitives::B256;
use tokio_postgres::GenericClient;

use super::balances::{Balance, holders_moved};
use super::error::{StoreResult, What};
use crate::decode::Transfer;
use crate::rpc::BlockRef;

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
    token: super::TokenKey,
) -> StoreResult<Balance> {
    Ok(client
        .query_one("SELECT total_supply FROM tokens WHERE id = $1", &[&token.id])
        .await
        .what("reading the supply")?
        .get(0))
}

/// The blocks a batch must keep the hashes of (those with transfers, the verified ones
/// and the checkpoint), each with how far the batch has moved the holder count by its
/// end: stored as the count after the block (migration V9).
#[derive(Debug, Default)]
pub(super) struct Blocks {
    /// Blocks with transfers, in order: (number, hash, time, holders moved by its end).
    seen: Vec<(i64, B256, i64, i64)>,
    /// Headers without that information; a block may be in both.
    headers: Vec<(i64, B256, i64)>,
    /// Holders moved so far.
    moved: i64,
}

impl Blocks {
    /// Transfer `t` (transfers come in block order), which left its sender and receiver
    /// with `after`.
    pub(super) fn saw(&mut self, t: &Transfer, after: (Balance, Balance)) {
        let number = t.block_number as i64;
        self.moved += holders_moved(t, after);
        match self.seen.last_mut() {
            Some(last) if last.0 == number => last.3 = self.moved,
            _ => self.seen.push((
                number,
                t.block_hash,
                t.block_time.unwrap_or_default() as i64,
                self.moved,
            )),
        }
    }

    /// Headers checked near the head, and the checkpoint.
    pub(super) fn verified<'a>(&mut self, blocks: impl Iterator<Item = &'a BlockRef>) {
        self.headers.extend(blocks.map(|b| (b.number as i64, b.hash, b.timestamp as i64)));
    }

    /// The rows to keep: (numbers, hashes, times, holders moved by each block's end).
    fn rows(&self) -> (Vec<i64>, Vec<B256>, Vec<i64>, Vec<i64>) {
        let mut rows: Vec<(i64, B256, i64, i64)> = self.seen.clone();
        for &(number, hash, time) in &self.headers {
            // The newest block with transfers at or below it says how far the count moved.
            let below = self.seen.partition_point(|s| s.0 <= number);
            let moved = below.checked_sub(1).map_or(0, |i| self.seen[i].3);
            rows.push((number, hash, time, moved));
        }
        let mut out = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (n, h, t, m) in rows {
            out.0.push(n);
            out.1.push(h);
            out.2.push(t);
            out.3.push(m);
        }
        out
    }

    /// Keeps the block hashes with the holder count after each (the token row's count,
    /// not yet moved by this batch, plus what the batch moved by then) and the rejected
    /// logs (block, log index). Returns how many rejected logs are new.
    pub(super) async fn keep<C: GenericClient>(
        &self,
        client: &C,
        token: super::TokenKey,
        rejected: &[(u64, u64)],
    ) -> StoreResult<i64> {
        let (numbers, hashes, times, moved) = self.rows();
        client
            .execute(
                "INSERT INTO blocks (token, number, hash, time, holders)
                 SELECT $1, n, h, t, (SELECT holder_count FROM tokens WHERE id = $1) + m
                 FROM unnest($2::bigint[], $3::bytea[], $4::bigint[], $5::bigint[]) AS b(n, h, t, m)
                 ON CONFLICT DO NOTHING",
                &[&token.id, &numbers, &hashes, &times, &moved],
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
                &[&token.id, &rejected_blocks, &rejected_logs],
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

/// Moves the token row's counters, and the checkpoint to `end` unless it is past it (a
/// batch read again).
pub(super) async fn advance<C: GenericClient>(
    client: &C,
    token: super::TokenKey,
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
                indexed_hash = CASE WHEN $6 >= indexed_block THEN $7 ELSE indexed_hash END,
                indexed_time = CASE WHEN $6 >= indexed_block THEN $8 ELSE indexed_time END,
                indexed_block = greatest(indexed_block, $6),
                updated_at = now()
             WHERE id = $1",
            &[
                &token.id,
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
