//! Rankings kept while a batch is written (migration V10): every `every` transfers, at
//! the end of a block, the richest `depth` holders after that block, so that the
//! query-service ranks any past block from the nearest ranking below it plus the
//! transfers since, not from the whole history.
//!
//! A ranking is taken from memory, mid-batch, without reading the batch's own rows: the
//! stored ranking as the batch found it (its head, read once; this ingestor is the only
//! writer, so it is the checkpoint's), less the addresses the batch has changed, merged
//! with those addresses' balances now. Changed addresses are tracked only at or above a
//! floor, so taking one costs a sort of a few thousand entries whatever the batch's size;
//! what ranks below the floor or below the stored head's last row is not known, and the
//! ranking keeps only the rows above both (its `depth` may then be short; a reader falls
//! back to the history when it needs more).

use std::collections::HashSet;

use alloy_primitives::Address;
use tokio_postgres::GenericClient;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::balances::{Balance, Balances};
use super::error::{StoreResult, What};
use crate::decode::Transfer;

/// How often rankings are kept and how deep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankingPolicy {
    /// Transfers between two rankings; 0 keeps none.
    pub every: i64,
    /// Holders per ranking.
    pub depth: usize,
}

impl Default for RankingPolicy {
    fn default() -> Self {
        Self { every: 10_000, depth: 1_000 }
    }
}

/// One holder of a ranking: balance, address, block of its newest transfer.
type Entry = (Balance, Address, i64);

/// A ranking taken, to be written at the commit.
#[derive(Debug)]
struct Taken {
    block: i64,
    complete: bool,
    transfer_count: i64,
    rows: Vec<Entry>,
}

/// The rankings of one batch.
#[derive(Debug)]
pub(super) struct Rankings {
    policy: RankingPolicy,
    /// The token's id: which balances of the map are its.
    token: i32,
    /// Transfers stored when the batch began, and since the last ranking.
    stored_transfers: i64,
    since: i64,
    seen: i64,
    /// Block of the last transfer seen.
    block: Option<i64>,
    /// The stored ranking's head as the batch found it, read at the first ranking;
    /// whether it is every stored holder.
    stored: Option<(Vec<Entry>, bool)>,
    /// Addresses the batch changed whose balance is at or above `floor`.
    high: HashSet<Address>,
    floor: Balance,
    taken: Vec<Taken>,
}

impl Rankings {
    /// No ranking taken yet: `stored_transfers` stored when the batch began, `since` of
    /// them after the last ranking (read with the token's row, [`super::lock_tokens`]).
    pub(super) fn new(
        policy: RankingPolicy,
        token: i32,
        stored_transfers: i64,
        since: i64,
    ) -> Self {
        Self {
            policy,
            token,
            stored_transfers,
            since,
            seen: 0,
            block: None,
            stored: None,
            high: HashSet::new(),
            floor: Balance::ZERO,
            taken: Vec::new(),
        }
    }

    /// Called before transfer `t`'s block `block` is applied: takes a ranking of the
    /// state after the previous block when one is due. `client` reads the stored head
    /// (the batch's connection, between its COPYs).
    pub(super) async fn before<C: GenericClient>(
        &mut self,
        block: u64,
        balances: &Balances,
        client: &C,
        token: super::TokenKey,
    ) -> StoreResult<()> {
        let block = block as i64;
        if self.block.is_some_and(|b| b != block) {
            self.end_of_block(balances, client, token).await?;
        }
        self.block = Some(block);
        Ok(())
    }

    /// After transfer `t` left its sides with `after` (`balances` applied it).
    pub(super) fn moved(&mut self, t: &Transfer, after: (Balance, Balance), balances: &Balances) {
        self.seen += 1;
        self.since += 1;
        if self.policy.every <= 0 {
            return;
        }
        for (address, balance) in [(t.from, after.0), (t.to, after.1)] {
            if address.is_zero() {
                continue;
            }
            if balance > Balance::ZERO && balance >= self.floor {
                self.high.insert(address);
            } else {
                self.high.remove(&address);
            }
        }
        if self.high.len() > 8 * self.policy.depth {
            self.prune(balances);
        }
    }

    /// The batch's last block is complete: takes a ranking if one is due.
    pub(super) async fn end_of_block<C: GenericClient>(
        &mut self,
        balances: &Balances,
        client: &C,
        token: super::TokenKey,
    ) -> StoreResult<()> {
        let Some(block) = self.block else { return Ok(()) };
        if self.policy.every <= 0 || self.since < self.policy.every {
            return Ok(());
        }
        if self.taken.last().is_some_and(|t| t.block == block) {
            return Ok(());
        }
        if self.stored.is_none() {
            self.read_stored(client, token).await?;
        }
        self.take(block, balances);
        Ok(())
    }

    /// Takes the ranking after `block` from the stored head and the tracked changes.
    fn take(&mut self, block: i64, balances: &Balances) {
        self.prune(balances);
        let (stored, stored_all) = self.stored.as_ref().expect("read above");
        let mut candidates: Vec<Entry> =
            stored.iter().filter(|e| !balances.is_dirty(self.token, &e.1)).copied().collect();
        candidates.extend(self.high.iter().filter_map(|a| {
            let (now, last) = balances.now(self.token, a)?;
            (now > Balance::ZERO && now >= self.floor).then_some((now, *a, last))
        }));
        candidates.sort_unstable_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
        // Exact only above the stored head's last row (stored holders below it are not
        // here) and at or above the floor (changed ones below it are not tracked).
        let bound = if *stored_all { None } else { stored.last().map(|e| (e.0, e.1)) };
        let exact = candidates
            .iter()
            .take_while(|e| {
                e.0 >= self.floor && bound.is_none_or(|(b, a)| e.0 > b || (e.0 == b && e.1 <= a))
            })
            .count();
        let complete = *stored_all && self.floor == Balance::ZERO && exact <= self.policy.depth;
        candidates.truncate(exact.min(self.policy.depth));
        self.taken.push(Taken {
            block,
            complete,
            transfer_count: self.stored_transfers + self.seen,
            rows: candidates,
        });
        self.since = 0;
    }

    /// Reads the stored ranking's head: twice the depth, so that the batch may change
    /// many of its holders and still leave a full ranking above its last row.
    async fn read_stored<C: GenericClient>(
        &mut self,
        client: &C,
        token: super::TokenKey,
    ) -> StoreResult<()> {
        let want = 2 * self.policy.depth as i64;
        let rows = client
            .query(
                "SELECT balance, address, last_transfer_block FROM balances
                 WHERE token = $1 AND balance > 0 ORDER BY -balance, address LIMIT $2",
                &[&token.id, &want],
            )
            .await
            .what("reading the stored ranking's head")?;
        let stored: Vec<Entry> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        let all = (stored.len() as i64) < want;
        self.found(stored, all);
        Ok(())
    }

    /// The stored head read (`all`: it is every stored holder).
    fn found(&mut self, stored: Vec<Entry>, all: bool) {
        // Changed holders below the stored head's last row can never be kept.
        if !all && let Some(last) = stored.last() {
            self.floor = self.floor.max(last.0);
        }
        self.stored = Some((stored, all));
    }

    /// Keeps the tracked set small: past four times the depth, the floor rises to the
    /// depth-th richest tracked balance (it only ever rises within a batch, so every
    /// changed address at or above it is tracked).
    fn prune(&mut self, balances: &Balances) {
        if self.high.len() <= 4 * self.policy.depth {
            return;
        }
        let mut nows: Vec<Balance> =
            self.high.iter().filter_map(|a| balances.now(self.token, a).map(|n| n.0)).collect();
        let nth = self.policy.depth - 1;
        nows.select_nth_unstable_by(nth, |x, y| y.cmp(x));
        self.floor = nows[nth];
        let floor = self.floor;
        let token = self.token;
        self.high.retain(|a| balances.now(token, a).is_some_and(|(now, _)| now >= floor));
    }

    /// Writes the rankings taken (inside the batch's transaction, after its COPY).
    pub(super) async fn keep(
        &self,
        client: &tokio_postgres::Client,
        token: super::TokenKey,
    ) -> StoreResult<()> {
        if self.taken.is_empty() {
            return Ok(());
        }
        let blocks: Vec<i64> = self.taken.iter().map(|t| t.block).collect();
        let depths: Vec<i32> = self.taken.iter().map(|t| t.rows.len() as i32).collect();
        let complete: Vec<bool> = self.taken.iter().map(|t| t.complete).collect();
        let counts: Vec<i64> = self.taken.iter().map(|t| t.transfer_count).collect();
        client
            .execute(
                "INSERT INTO rankings (token, block, depth, complete, transfer_count)
                 SELECT $1, b, d, c, n FROM unnest($2::bigint[], $3::integer[], $4::boolean[], $5::bigint[])
                        AS r(b, d, c, n)
                 ON CONFLICT DO NOTHING",
                &[&token.id, &blocks, &depths, &complete, &counts],
            )
            .await
            .what("keeping rankings")?;
        let sink = client
            .copy_in(
                "COPY ranking_rows (token, block, rank, address, balance, last_transfer_block)
                 FROM STDIN BINARY",
            )
            .await
            .what("starting the rankings' COPY")?;
        let types = [Type::INT4, Type::INT8, Type::INT4, Type::BYTEA, Type::NUMERIC, Type::INT8];
        let writer = BinaryCopyInWriter::new(sink, &types);
        futures::pin_mut!(writer);
        for t in &self.taken {
            for (rank, (balance, address, last)) in (1i32..).zip(&t.rows) {
                let row: [&(dyn ToSql + Sync); 6] =
                    [&token.id, &t.block, &rank, address, balance, last];
                writer.as_mut().write(&row).await.what("writing a ranking row")?;
            }
        }
        writer.finish().await.what("finishing the rankings' COPY")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{B256, U256};

    const T: i32 = 1;

    fn who(i: u64) -> Address {
        Address::from_word(B256::from(U256::from(i + 1)))
    }

    fn transfer(block: u64, from: Address, to: Address, value: u64) -> Transfer {
        Transfer {
            token: Address::ZERO,
            block_number: block,
            block_hash: B256::ZERO,
            block_time: Some(1),
            tx_hash: B256::ZERO,
            log_index: 0,
            from,
            to,
            value: U256::from(value),
        }
    }

    /// The ranking of every holder the map knows, richest first.
    fn brute(balances: &Balances, people: &[Address]) -> Vec<(Balance, Address)> {
        let mut all: Vec<(Balance, Address)> = people
            .iter()
            .filter_map(|a| balances.now(T, a).map(|(now, _)| (now, *a)))
            .filter(|(now, _)| *now > Balance::ZERO)
            .collect();
        all.sort_unstable_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
        all
    }

    /// Random transfers among `n` addresses, `stored` of them holding something before
    /// the batch: every ranking taken is the exact head of the whole ranking at its
    /// block, whichever floor the tracking rose to. Amounts are multiples of 10, so that
    /// many holders tie (a tie at the stored head's last row is where it is cut).
    fn rankings_are_exact(n: u64, stored: u64, depth: usize, seed: u64) -> usize {
        let people: Vec<Address> = (0..n).map(who).collect();
        let before: Vec<(Address, Balance)> = people
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let held = if (i as u64) < stored { 1_000 + (i as i64 % 50) * 10 } else { 0 };
                (*a, Balance::try_from(held).unwrap())
            })
            .collect();
        let mut balances = Balances::known(T, &before);
        let mut head: Vec<Entry> =
            before.iter().filter(|(_, b)| *b > Balance::ZERO).map(|(a, b)| (*b, *a, 0)).collect();
        head.sort_unstable_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
        let all = head.len() <= 2 * depth;
        head.truncate(2 * depth);
        let mut r = Rankings::new(RankingPolicy { every: 15, depth }, T, 0, 0);
        r.found(head, all);
        let mut x = seed;
        let mut checked = 0;
        for i in 0..3_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let block = 1 + i / 4;
            if r.block.is_some_and(|b| b != block as i64) && r.since >= r.policy.every {
                let at = r.block.unwrap();
                r.take(at, &balances);
                let kept = r.taken.last().unwrap();
                let truth = brute(&balances, &people);
                let rows: Vec<(Balance, Address)> = kept.rows.iter().map(|e| (e.0, e.1)).collect();
                assert_eq!(rows, truth[..rows.len()].to_vec(), "ranking after block {at}");
                if kept.complete {
                    assert_eq!(rows.len(), truth.len(), "complete after block {at}");
                }
                checked += 1;
            }
            r.block = Some(block as i64);
            let from = people[(x >> 33) as usize % people.len()];
            let to = people[(x >> 45) as usize % people.len()];
            let held = balances.now(T, &from).map_or(Balance::ZERO, |n| n.0);
            // Mostly small moves, sometimes a whole balance, sometimes a mint.
            let (from, value) = match (x >> 20) % 10 {
                0 => (Address::ZERO, 10 * (1 + (x >> 8) % 2_000)),
                1 if held > Balance::ZERO => (from, u64::try_from(held).unwrap()),
                _ => (from, 10 * ((x >> 8) % 30)),
            };
            let t = transfer(block, from, to, value);
            let after = balances.apply(T, &t);
            r.moved(&t, after, &balances);
        }
        assert!(
            !r.taken.is_empty() && r.taken.iter().any(|t| t.rows.len() == depth.min(n as usize))
        );
        checked
    }

    /// The stored head read ends in a tie that continues beyond it: a changed holder
    /// tied with it but with a higher address ranks below holders the head did not read,
    /// so the ranking stops at the head's last row.
    #[test]
    fn a_ranking_stops_at_the_stored_head_s_last_row() {
        let h: Vec<Address> = (0..10).map(who).collect();
        let n = |v: i64| Balance::try_from(v).unwrap();
        let stored = [(h[1], 600), (h[2], 500), (h[3], 400), (h[4], 300), (h[5], 200)];
        let mut known: Vec<(Address, Balance)> = stored.iter().map(|(a, b)| (*a, n(*b))).collect();
        known.extend([(h[6], n(100)), (h[7], n(100)), (h[9], n(0))]);
        let mut balances = Balances::known(T, &known);
        let mut r = Rankings::new(RankingPolicy { every: 1, depth: 3 }, T, 0, 0);
        // The head of 2 x depth rows ends at (100, h6); h7 holds 100 too, beyond it.
        let head: Vec<Entry> = known[..6].iter().map(|(a, b)| (*b, *a, 0)).collect();
        r.found(head, false);
        for (i, who) in [h[1], h[2], h[3], h[4]].into_iter().enumerate() {
            let t = transfer(1, who, Address::ZERO, [600, 500, 400, 300][i]);
            let after = balances.apply(T, &t);
            r.moved(&t, after, &balances);
        }
        let t = transfer(1, Address::ZERO, h[9], 100);
        let after = balances.apply(T, &t);
        r.moved(&t, after, &balances);
        r.take(1, &balances);
        let rows: Vec<Address> = r.taken[0].rows.iter().map(|e| e.1).collect();
        assert_eq!(rows, vec![h[5], h[6]], "h9 (100) ranks after h7 (100), which is not known");
        assert!(!r.taken[0].complete);
    }

    #[test]
    fn rankings_from_memory_are_the_head_of_the_whole_ranking() {
        // Nothing stored: every holder is the batch's (the floor rises by pruning).
        assert!(rankings_are_exact(400, 0, 5, 1) > 50);
        // A stored ranking deeper than the head read, changed by the batch.
        assert!(rankings_are_exact(400, 300, 5, 2) > 50);
        // Few holders: complete rankings.
        assert!(rankings_are_exact(8, 8, 20, 3) > 50);
    }
}
