//! Balances as the ingestor computes them. The ingestor is the token's only writer, so it
//! keeps the balances a batch touches in memory, reads those it lacks once, moves them by
//! each transfer (giving every transfer its balances after it) and hands Postgres final
//! values: each touched balance row is written once per batch, and Postgres sums and
//! sorts nothing.
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
const ENTRY_BYTES: usize = (size_of::<(Address, Entry)>() + 1) * 8 / 7;

/// The balances of the addresses a batch (or a backfill) touches.
#[derive(Debug)]
pub struct Balances {
    map: HashMap<Address, Entry>,
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

    /// A map that knows `stored` as the store holds them (tests).
    #[cfg(test)]
    pub(super) fn known(stored: &[(Address, Balance)]) -> Self {
        let mut b = Self::unbounded();
        for (a, balance) in stored {
            b.map.insert(
                *a,
                Entry {
                    has_row: true,
                    held_before: *balance > Balance::ZERO,
                    now: *balance,
                    ..Entry::NEW
                },
            );
        }
        b.set_supply(Balance::ZERO);
        b
    }

    /// Whether this batch changed `address`.
    pub(super) fn is_dirty(&self, address: &Address) -> bool {
        self.map.get(address).is_some_and(|e| e.dirty)
    }

    /// The balance of a known `address` now, and the block of its newest transfer.
    pub(super) fn now(&self, address: &Address) -> Option<(Balance, i64)> {
        self.map.get(address).map(|e| (e.now, e.last_block))
    }

    /// Whether the zero address (minus the supply) is known.
    pub(super) fn knows_supply(&self) -> bool {
        self.map.contains_key(&Address::ZERO)
    }

    /// Takes the stored supply as the zero address's balance (minus it).
    pub(super) fn set_supply(&mut self, supply: Balance) {
        self.map.insert(Address::ZERO, Entry { now: -supply, has_row: true, ..Entry::NEW });
    }

    /// The supply after the changes, if the zero address was touched.
    pub(super) fn changed_supply(&self) -> Option<Balance> {
        self.map.get(&Address::ZERO).filter(|z| z.dirty).map(|z| -z.now)
    }

    /// The addresses of `transfers` the map lacks (the zero address aside), each once.
    pub(super) fn missing(&self, transfers: &[Transfer]) -> Vec<Address> {
        let mut seen = std::collections::HashSet::new();
        transfers
            .iter()
            .flat_map(|t| [t.from, t.to])
            .filter(|a| *a != Address::ZERO && !self.map.contains_key(a) && seen.insert(*a))
            .collect()
    }

    /// Reads the stored balances of `addresses` (none of them known) in one streamed
    /// query; those without a row start at zero.
    pub(super) async fn load<C: GenericClient>(
        &mut self,
        client: &C,
        token: super::TokenKey,
        addresses: Vec<Address>,
    ) -> StoreResult<()> {
        if addresses.is_empty() {
            return Ok(());
        }
        let rows = client
            .query_raw(
                "SELECT address, balance FROM balances WHERE token = $1 AND address = ANY($2::bytea[])",
                [&token.id as &(dyn ToSql + Sync), &addresses],
            )
            .await
            .what("reading the balances the batch touches")?;
        for a in &addresses {
            self.map.insert(*a, Entry::NEW);
        }
        pin_mut!(rows);
        while let Some(r) = rows.next().await {
            let r = r.what("reading the balances the batch touches")?;
            let balance: Balance = r.get("balance");
            if let Some(e) = self.map.get_mut(&r.get::<_, Address>("address")) {
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

    /// Moves the balances by one transfer (both sides known); the (sender's, receiver's)
    /// balance right after it. A transfer to oneself changes nothing.
    pub(super) fn apply(&mut self, t: &Transfer) -> (Balance, Balance) {
        let block = t.block_number as i64;
        let value = if t.from != t.to { widen(t.value) } else { Balance::ZERO };
        let from = self.touch(t.from, block);
        from.now -= value;
        let after_from = from.now;
        let to = self.touch(t.to, block);
        to.now += value;
        (after_from, to.now)
    }

    fn touch(&mut self, a: Address, block: i64) -> &mut Entry {
        let e = self.map.get_mut(&a).expect("a transfer's addresses are loaded before it");
        if !e.dirty {
            e.dirty = true;
            self.dirty += 1;
        }
        e.last_block = block;
        e
    }

    /// Writes each changed balance row once, with its final value: an UPDATE of the rows
    /// that exist and an INSERT of the new ones (no speculative insertion: the read told
    /// which is which). Returns the rows written and how the holder count moves.
    pub(super) async fn write<C: GenericClient>(
        &self,
        client: &C,
        token: super::TokenKey,
    ) -> StoreResult<(u64, i64)> {
        let mut holders_delta = 0i64;
        let (mut known, mut new) = (Columns::default(), Columns::default());
        for (a, e) in self.map.iter().filter(|(a, e)| e.dirty && **a != Address::ZERO) {
            holders_delta += i64::from(e.now > Balance::ZERO) - i64::from(e.held_before);
            let side = if e.has_row { &mut known } else { &mut new };
            side.addresses.push(*a);
            side.balances.push(e.now);
            side.blocks.push(e.last_block);
        }
        let mut written = 0;
        if !known.addresses.is_empty() {
            written += client
                .execute(
                    "UPDATE balances b SET balance = u.b, last_transfer_block = u.l
                     FROM unnest($2::bytea[], $3::numeric[], $4::bigint[]) AS u(a, b, l)
                     WHERE b.token = $1 AND b.address = u.a",
                    &[&token.id, &known.addresses, &known.balances, &known.blocks],
                )
                .await
                .what("updating balances")?;
        }
        if !new.addresses.is_empty() {
            written += client
                .execute(
                    "INSERT INTO balances (token, address, balance, last_transfer_block)
                     SELECT $1, a, b, l FROM unnest($2::bytea[], $3::numeric[], $4::bigint[]) AS u(a, b, l)",
                    &[&token.id, &new.addresses, &new.balances, &new.blocks],
                )
                .await
                .what("inserting balances")?;
        }
        Ok((written, holders_delta))
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

    fn known(addresses: &[Address]) -> Balances {
        let mut b = Balances::unbounded();
        for a in addresses {
            b.map.insert(*a, Entry::NEW);
        }
        b.set_supply(Balance::ZERO);
        b
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
        let rows: Vec<_> = ts.iter().map(|t| balances.apply(t)).collect();
        assert_eq!(rows, vec![(n(-100), n(100)), (n(70), n(30)), (n(30), n(30)), (n(20), n(-90))]);
        assert_eq!(balances.map[&a].now, n(70));
        assert_eq!(balances.map[&b].now, n(20));
        assert_eq!(balances.map[&b].last_block, 3);
        assert_eq!(
            balances.changed_supply(),
            Some(n(90)),
            "the zero address holds minus the supply"
        );
        assert_eq!(balances.dirty, 3);
    }

    #[test]
    fn settling_keeps_the_cache_within_its_budget() {
        let addresses: Vec<Address> =
            (1..=2000u64).map(|i| Address::from_word(B256::from(U256::from(i)))).collect();
        let mut balances = Balances::new(0);
        assert_eq!(balances.capacity, 1024, "a floor keeps tiny budgets useful");
        for a in &addresses[..1500] {
            balances.map.insert(*a, Entry::NEW);
        }
        assert!(
            balances.missing(&[transfer(1, 0, addresses[0], addresses[1999], 1)])
                == vec![addresses[1999]]
        );
        for (i, a) in addresses[..1100].iter().enumerate() {
            balances.apply(&transfer(1, i as u64, *a, *a, 0));
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
        balances.apply(&transfer(1, 0, Address::ZERO, a, 5));
        balances.settle();
        let e = balances.map[&a];
        assert!(e.has_row && e.held_before && !e.dirty);
        assert_eq!(balances.changed_supply(), None, "nothing changed since the commit");
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
            let held = balances.map.get(&from).map_or(Balance::ZERO, |e| e.now);
            let value =
                if (x >> 50).is_multiple_of(3) && from != Address::ZERO && held > Balance::ZERO {
                    u64::try_from(held).unwrap()
                } else {
                    (x >> 20) % 50
                };
            let t = transfer(i, 0, from, to, value);
            let after = balances.apply(&t);
            counted += holders_moved(&t, after);
            let holders = people.iter().filter(|a| balances.map[*a].now > Balance::ZERO).count();
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
