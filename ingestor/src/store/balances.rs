//! Balances as the ingestor computes them. The ingestor is its tokens' only writer, so it
//! keeps the balances a batch touches in memory, reads those it lacks once, moves them by
//! each transfer (giving every transfer its balances after it) and hands Postgres final
//! values: each touched balance row is written once per batch, and Postgres sums and
//! sorts nothing. One map serves a whole token set, keyed by (token id, address): a batch
//! of many tokens reads and writes its balances in one statement each, not one per token.
//!
//! A backfill keeps the map from batch to batch (a cache: a whale's row is not read again
//! at every batch), bounded by memory, not by count: [`Balances::full`] ends a batch
//! whose changed entries reach the budget, and [`Balances::settle`] empties a cache over
//! it. After a failed transaction the map is dropped ([`Balances::forget`]): its entries
//! may hold what was never stored.

use std::collections::HashMap;

use alloy_primitives::aliases::I512;
use alloy_primitives::{Address, U256};
use futures::{StreamExt, pin_mut};
use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::error::{StoreResult, What};
use crate::decode::Transfer;

/// A balance as the store keeps it: NUMERIC, signed (the zero address holds minus the
/// supply; an index started after a token's creation can see others below zero), and up
/// to 2^256-1 either way, hence wider than I256.
pub(super) type Balance = I512;

/// A balance's place: the token's id in the store and the holder.
pub(super) type Key = (i32, Address);

/// A transfer's amount as a [`Balance`].
pub(super) fn widen(v: U256) -> Balance {
    Balance::from_raw(alloy_primitives::Uint::from(v))
}

/// How a transfer moves the holder count, given the (sender's, receiver's) balances
/// right after it: +1 for a side that goes from nothing to something, -1 for one that
/// goes back. The zero address (mints, burns) and a transfer to oneself move nothing.
/// Summed over a batch it equals what [`Balances::write`] reports.
pub(super) fn holders_moved(t: &Transfer, (from_after, to_after): (Balance, Balance)) -> i64 {
    if t.from == t.to {
        return 0;
    }
    let value = widen(t.value);
    let held = |b: Balance| i64::from(b > Balance::ZERO);
    let mut moved = 0;
    if !t.from.is_zero() {
        moved += held(from_after) - held(from_after + value);
    }
    if !t.to.is_zero() {
        moved += held(to_after) - held(to_after - value);
    }
    moved
}

/// One known address: whether it has a row and held anything at the last commit, its
/// balance now, the block of its newest transfer, and whether this batch changed it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// It has a balance row (possibly zero).
    has_row: bool,
    held_before: bool,
    now: Balance,
    last_block: i64,
    dirty: bool,
}

impl Entry {
    const NEW: Self = Self {
        has_row: false,
        held_before: false,
        now: Balance::ZERO,
        last_block: 0,
        dirty: false,
    };
}

/// Memory one entry takes in the map: key, value and hashbrown's control byte, at its
/// load factor of 7/8.
const ENTRY_BYTES: usize = (size_of::<(Key, Entry)>() + 1) * 8 / 7;

/// What writing a batch's balances did, per token.
#[derive(Debug, Default)]
pub(super) struct Written {
    /// Balance rows written, all tokens together.
    pub rows: u64,
    /// How each token's holder count moves.
    pub holders: HashMap<i32, i64>,
    /// Each token's new supply, where mints or burns changed it.
    pub supplies: HashMap<i32, Balance>,
}

/// The balances of the addresses a batch (or a backfill) touches, of every token it
/// writes.
#[derive(Debug)]
pub struct Balances {
    map: HashMap<Key, Entry>,
    /// Entries the budget allows.
    capacity: usize,
    dirty: usize,
}

impl Balances {
    /// An empty map allowed about `budget_bytes` of memory.
    pub fn new(budget_bytes: usize) -> Self {
        Self { map: HashMap::new(), capacity: (budget_bytes / ENTRY_BYTES).max(1024), dirty: 0 }
    }

    /// Unbounded: a batch held in memory touches what it touches.
    pub(super) fn unbounded() -> Self {
        Self { map: HashMap::new(), capacity: usize::MAX, dirty: 0 }
    }

    /// Whether the changed entries fill the budget: the batch should be committed now.
    pub fn full(&self) -> bool {
        self.dirty >= self.capacity
    }

    /// A map that knows `stored` of `token` as the store holds them (tests).
    #[cfg(test)]
    pub(super) fn known(token: i32, stored: &[(Address, Balance)]) -> Self {
        let mut b = Self::unbounded();
        for (a, balance) in stored {
            b.map.insert(
                (token, *a),
                Entry {
                    has_row: true,
                    held_before: *balance > Balance::ZERO,
                    now: *balance,
                    ..Entry::NEW
                },
            );
        }
        b.set_supply(token, Balance::ZERO);
        b
    }

    /// Whether this batch changed `address`'s balance of `token`.
    pub(super) fn is_dirty(&self, token: i32, address: &Address) -> bool {
        self.map.get(&(token, *address)).is_some_and(|e| e.dirty)
    }

    /// The balance of `token` a known `address` holds now, and the block of its newest
    /// transfer.
    pub(super) fn now(&self, token: i32, address: &Address) -> Option<(Balance, i64)> {
        self.map.get(&(token, *address)).map(|e| (e.now, e.last_block))
    }

    /// Whether `token`'s zero address (minus the supply) is known.
    pub(super) fn knows_supply(&self, token: i32) -> bool {
        self.map.contains_key(&(token, Address::ZERO))
    }

    /// Takes `token`'s stored supply as its zero address's balance (minus it).
    pub(super) fn set_supply(&mut self, token: i32, supply: Balance) {
        self.map
            .insert((token, Address::ZERO), Entry { now: -supply, has_row: true, ..Entry::NEW });
    }

    /// The places `transfers` (of the tokens `ids`, position by position) touch that the
    /// map lacks (zero addresses aside), each once.
    pub(super) fn missing<'a>(
        &self,
        ids: &[i32],
        transfers: impl IntoIterator<Item = &'a Transfer>,
    ) -> Vec<Key> {
        let mut seen = std::collections::HashSet::new();
        ids.iter()
            .zip(transfers)
            .flat_map(|(id, t)| [(*id, t.from), (*id, t.to)])
            .filter(|k| k.1 != Address::ZERO && !self.map.contains_key(k) && seen.insert(*k))
            .collect()
    }

    /// Reads the stored balances of `keys` (none of them known) in one streamed query;
    /// those without a row start at zero.
    pub(super) async fn load<C: GenericClient>(
        &mut self,
        client: &C,
        keys: Vec<Key>,
    ) -> StoreResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let (tokens, addresses): (Vec<i32>, Vec<Address>) = keys.iter().copied().unzip();
        let rows = client
            .query_raw(
                "SELECT b.token, b.address, b.balance
                 FROM unnest($1::integer[], $2::bytea[]) AS k(token, address)
                 JOIN balances b ON b.token = k.token AND b.address = k.address",
                [&tokens as &(dyn ToSql + Sync), &addresses],
            )
            .await
            .what("reading the balances the batch touches")?;
        for k in &keys {
            self.map.insert(*k, Entry::NEW);
        }
        pin_mut!(rows);
        while let Some(r) = rows.next().await {
            let r = r.what("reading the balances the batch touches")?;
            let balance: Balance = r.get("balance");
            let key = (r.get::<_, i32>("token"), r.get::<_, Address>("address"));
            if let Some(e) = self.map.get_mut(&key) {
                *e = Entry {
                    has_row: true,
                    held_before: balance > Balance::ZERO,
                    now: balance,
                    ..Entry::NEW
                };
            }
        }
        Ok(())
    }

    /// Moves `token`'s balances by one transfer (both sides known); the (sender's,
    /// receiver's) balance right after it. A transfer to oneself changes nothing.
    pub(super) fn apply(&mut self, token: i32, t: &Transfer) -> (Balance, Balance) {
        let block = t.block_number as i64;
        let value = if t.from != t.to { widen(t.value) } else { Balance::ZERO };
        let from = self.touch((token, t.from), block);
        from.now -= value;
        let after_from = from.now;
        let to = self.touch((token, t.to), block);
        to.now += value;
        (after_from, to.now)
    }

    fn touch(&mut self, key: Key, block: i64) -> &mut Entry {
        let e = self.map.get_mut(&key).expect("a transfer's addresses are loaded before it");
        if !e.dirty {
            e.dirty = true;
            self.dirty += 1;
        }
        e.last_block = block;
        e
    }

    /// Writes each changed balance row once, with its final value, every token at once:
    /// an UPDATE of the rows that exist and an INSERT of the new ones (no speculative
    /// insertion: the read told which is which). Returns the rows written, how each
    /// token's holder count moves and the supplies that changed.
    pub(super) async fn write<C: GenericClient>(&self, client: &C) -> StoreResult<Written> {
        let mut out = Written::default();
        let (mut known, mut new) = (Columns::default(), Columns::default());
        for ((token, a), e) in self.map.iter().filter(|(_, e)| e.dirty) {
            if a.is_zero() {
                out.supplies.insert(*token, -e.now);
                continue;
            }
            *out.holders.entry(*token).or_default() +=
                i64::from(e.now > Balance::ZERO) - i64::from(e.held_before);
            let side = if e.has_row { &mut known } else { &mut new };
            side.tokens.push(*token);
            side.addresses.push(*a);
            side.balances.push(e.now);
            side.blocks.push(e.last_block);
        }
        if !known.addresses.is_empty() {
            out.rows += client
                .execute(
                    "UPDATE balances b SET balance = u.b, last_transfer_block = u.l
                     FROM unnest($1::integer[], $2::bytea[], $3::numeric[], $4::bigint[]) AS u(t, a, b, l)
                     WHERE b.token = u.t AND b.address = u.a",
                    &[&known.tokens, &known.addresses, &known.balances, &known.blocks],
                )
                .await
                .what("updating balances")?;
        }
        if !new.addresses.is_empty() {
            out.rows += client
                .execute(
                    "INSERT INTO balances (token, address, balance, last_transfer_block)
                     SELECT t, a, b, l FROM unnest($1::integer[], $2::bytea[], $3::numeric[], $4::bigint[]) AS u(t, a, b, l)",
                    &[&new.tokens, &new.addresses, &new.balances, &new.blocks],
                )
                .await
                .what("inserting balances")?;
        }
        Ok(out)
    }

    /// After a commit: the changed entries are what the store holds now. Empties a map
    /// over its budget (a cache of the most recent batch is all a bounded memory buys).
    pub(super) fn settle(&mut self) {
        if self.map.len() > self.capacity {
            self.map = HashMap::new();
        } else {
            for e in self.map.values_mut().filter(|e| e.dirty) {
                *e =
                    Entry { has_row: true, held_before: e.now > Balance::ZERO, dirty: false, ..*e };
            }
        }
        self.dirty = 0;
    }

    /// After a failed transaction: nothing known is trusted any more.
    pub fn forget(&mut self) {
        self.map = HashMap::new();
        self.dirty = 0;
    }
}

/// Balance rows to write, column by column.
#[derive(Debug, Default)]
struct Columns {
    tokens: Vec<i32>,
    addresses: Vec<Address>,
    balances: Vec<Balance>,
    blocks: Vec<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{B256, address};

    fn transfer(block: u64, log: u64, from: Address, to: Address, value: u64) -> Transfer {
        Transfer {
            token: Address::ZERO,
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

    const T: i32 = 1;

    fn known(addresses: &[Address]) -> Balances {
        let mut b = Balances::unbounded();
        for a in addresses {
            b.map.insert((T, *a), Entry::NEW);
        }
        b.set_supply(T, Balance::ZERO);
        b
    }

    fn supply(b: &Balances) -> Option<Balance> {
        b.map.get(&(T, Address::ZERO)).filter(|z| z.dirty).map(|z| -z.now)
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
        let mut balances = known(&[a, b]);
        let n = |v: i64| Balance::try_from(v).unwrap();
        let rows: Vec<_> = ts.iter().map(|t| balances.apply(T, t)).collect();
        assert_eq!(rows, vec![(n(-100), n(100)), (n(70), n(30)), (n(30), n(30)), (n(20), n(-90))]);
        assert_eq!(balances.map[&(T, a)].now, n(70));
        assert_eq!(balances.map[&(T, b)].now, n(20));
        assert_eq!(balances.map[&(T, b)].last_block, 3);
        assert_eq!(supply(&balances), Some(n(90)), "the zero address holds minus the supply");
        assert_eq!(balances.dirty, 3);
    }

    #[test]
    fn settling_keeps_the_cache_within_its_budget() {
        let addresses: Vec<Address> =
            (1..=2000u64).map(|i| Address::from_word(B256::from(U256::from(i)))).collect();
        let mut balances = Balances::new(0);
        assert_eq!(balances.capacity, 1024, "a floor keeps tiny budgets useful");
        for a in &addresses[..1500] {
            balances.map.insert((T, *a), Entry::NEW);
        }
        assert!(
            balances.missing(&[T], &[transfer(1, 0, addresses[0], addresses[1999], 1)])
                == vec![(T, addresses[1999])]
        );
        for (i, a) in addresses[..1100].iter().enumerate() {
            balances.apply(T, &transfer(1, i as u64, *a, *a, 0));
        }
        assert!(balances.full());
        balances.settle();
        assert!(balances.map.is_empty(), "a map over its budget is emptied after the commit");
        assert!(!balances.full());
    }

    #[test]
    fn settled_entries_remember_what_was_stored() {
        let a = address!("0x00000000000000000000000000000000000000aa");
        let mut balances = known(&[a]);
        balances.apply(T, &transfer(1, 0, Address::ZERO, a, 5));
        balances.settle();
        let e = balances.map[&(T, a)];
        assert!(e.has_row && e.held_before && !e.dirty);
        assert_eq!(supply(&balances), None, "nothing changed since the commit");
    }

    #[test]
    fn holders_moved_follows_the_holder_count_transfer_by_transfer() {
        let people: Vec<Address> =
            (1..=6u64).map(|i| Address::from_word(B256::from(U256::from(i)))).collect();
        let mut balances = known(&people);
        let mut counted = 0i64;
        // Mints, burns, transfers to oneself and whole balances sent away, in a fixed
        // pseudo-random order.
        let mut x = 0x9e37_79b9_u64;
        for i in 0..2_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let pick = |k: u64| match (x >> k) % 8 {
                0 => Address::ZERO,
                n => people[(n as usize - 1) % people.len()],
            };
            let (from, to) = (pick(33), pick(41));
            let held = balances.map.get(&(T, from)).map_or(Balance::ZERO, |e| e.now);
            let value =
                if (x >> 50).is_multiple_of(3) && from != Address::ZERO && held > Balance::ZERO {
                    u64::try_from(held).unwrap()
                } else {
                    (x >> 20) % 50
                };
            let t = transfer(i, 0, from, to, value);
            let after = balances.apply(T, &t);
            counted += holders_moved(&t, after);
            let holders =
                people.iter().filter(|a| balances.map[&(T, **a)].now > Balance::ZERO).count();
            assert_eq!(counted, holders as i64, "after transfer {i} ({from} -> {to}, {value})");
        }
    }

    #[test]
    fn balances_reach_past_i256() {
        let max = widen(U256::MAX);
        assert_eq!(-(-max), max);
        assert!(max + max > max, "no overflow at twice 2^256-1");
    }
}
