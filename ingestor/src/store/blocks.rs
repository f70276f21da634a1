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
}

/// Keeps the block hashes of every token of a batch (`blocks`: token id and its blocks)
/// with the holder count after each (the token row's count, not yet moved by this batch,
/// plus what the batch moved by then), and the rejected logs (token id, block, log index),
/// each in one statement. Returns how many rejected logs are new, per token.
pub(super) async fn keep_blocks<'a, C: GenericClient>(
    client: &C,
    blocks: impl Iterator<Item = (i32, &'a Blocks)>,
    rejected: &[(i32, u64, u64)],
) -> StoreResult<std::collections::HashMap<i32, i64>> {
    let (mut tokens, mut numbers, mut hashes, mut times, mut moved) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (token, b) in blocks {
        let (n, h, t, m) = b.rows();
        tokens.extend(std::iter::repeat_n(token, n.len()));
        numbers.extend(n);
        hashes.extend(h);
        times.extend(t);
        moved.extend(m);
    }
    client
        .execute(
            "INSERT INTO blocks (token, number, hash, time, holders)
             SELECT b.k, b.n, b.h, b.t, t.holder_count + b.m
             FROM unnest($1::integer[], $2::bigint[], $3::bytea[], $4::bigint[], $5::bigint[])
                  AS b(k, n, h, t, m)
             JOIN tokens t ON t.id = b.k
             ON CONFLICT DO NOTHING",
            &[&tokens, &numbers, &hashes, &times, &moved],
        )
        .await
        .what("keeping block hashes")?;
    let mut new = std::collections::HashMap::new();
    if rejected.is_empty() {
        return Ok(new);
    }
    let rejected_tokens: Vec<i32> = rejected.iter().map(|r| r.0).collect();
    let rejected_blocks: Vec<i64> = rejected.iter().map(|r| r.1 as i64).collect();
    let rejected_logs: Vec<i32> = rejected.iter().map(|r| r.2 as i32).collect();
    let rows = client
        .query(
            "WITH kept AS (
                 INSERT INTO rejected_logs (token, block_number, log_index)
                 SELECT k, b, i FROM unnest($1::integer[], $2::bigint[], $3::integer[]) AS r(k, b, i)
                 ON CONFLICT DO NOTHING RETURNING token)
             SELECT token, count(*) FROM kept GROUP BY token",
            &[&rejected_tokens, &rejected_blocks, &rejected_logs],
        )
        .await
        .what("keeping rejected logs")?;
    for r in rows {
        new.insert(r.get::<_, i32>(0), r.get::<_, i64>(1));
    }
    Ok(new)
}

/// How a commit moves one token row's counters.
#[derive(Debug)]
pub(super) struct Moved {
    pub token: i32,
    pub transfers: i64,
    pub holders: i64,
    pub rejected: i64,
    /// The new supply, if mints or burns changed it.
    pub supply: Option<Balance>,
}

/// Moves the token rows' counters, and each checkpoint to `end` unless it is past it (a
/// token indexed further, or a batch read again), in one statement.
pub(super) async fn advance<C: GenericClient>(
    client: &C,
    moved: &[Moved],
    end: &BlockRef,
) -> StoreResult<()> {
    let tokens: Vec<i32> = moved.iter().map(|m| m.token).collect();
    let supplies: Vec<Option<Balance>> = moved.iter().map(|m| m.supply).collect();
    let transfers: Vec<i64> = moved.iter().map(|m| m.transfers).collect();
    let holders: Vec<i64> = moved.iter().map(|m| m.holders).collect();
    let rejected: Vec<i64> = moved.iter().map(|m| m.rejected).collect();
    client
        .execute(
            "UPDATE tokens SET
                total_supply = coalesce(m.s, total_supply),
                transfer_count = transfer_count + m.n,
                holder_count = holder_count + m.h,
                rejected_logs = rejected_logs + m.r,
                last_seq = last_seq + m.n,
                indexed_hash = CASE WHEN $6 >= indexed_block THEN $7 ELSE indexed_hash END,
                indexed_time = CASE WHEN $6 >= indexed_block THEN $8 ELSE indexed_time END,
                indexed_block = greatest(indexed_block, $6),
                updated_at = now()
             FROM unnest($1::integer[], $2::numeric[], $3::bigint[], $4::bigint[], $5::bigint[])
                  AS m(k, s, n, h, r)
             WHERE id = m.k",
            &[
                &tokens,
                &supplies,
                &transfers,
                &holders,
                &rejected,
                &(end.number as i64),
                &end.hash,
                &(end.timestamp as i64),
            ],
        )
        .await
        .what("moving the checkpoints")?;
    Ok(())
}
