//! Makes the benchmark's chain: a token whose history has a realistic shape (a few
//! whales, a long tail) and as many Transfers as asked, made quickly by putting hundreds
//! of Transfers in each transaction (`mintBatch` to seed the holders, then `moveBatch`
//! between them). A local model of the balances keeps every transfer valid.

use std::time::Instant;

use alloy_primitives::{Address, U256};
use alloy_sol_types::SolCall;
use rig::chain::{Chain, DEPLOYER, TestToken};
use rig::history::holder;

/// Seconds between blocks on mainnet.
pub(crate) const BLOCK_SECONDS: u64 = 12;

/// Seconds between the blocks of a chain of `blocks`: the history spans 30 days (at
/// least [`BLOCK_SECONDS`] a block), so its last 7 days are the last quarter of its
/// blocks and the 7-day figures the query-service answers with during a backfill read a
/// quarter of the history, not all of it and not none.
pub(crate) fn block_seconds(blocks: u64) -> u64 {
    (30 * 86_400 / blocks.max(1)).max(BLOCK_SECONDS)
}

/// What was built.
#[derive(Debug, Clone)]
pub(crate) struct BenchChain {
    /// The token.
    pub(crate) token: Address,
    /// The block that created it.
    pub(crate) start_block: u64,
    /// The last block with its transfers.
    pub(crate) end_block: u64,
    /// Transfers emitted.
    pub(crate) transfers: u64,
    /// Every address that ever held the token.
    pub(crate) holders: Vec<Address>,
}

/// xorshift64*: deterministic choices without a dependency.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// The next 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A counterparty below `n`: half the time skewed to the whales, else anyone.
    pub(crate) fn counterparty(&mut self, n: usize) -> usize {
        if self.next().is_multiple_of(2) {
            self.skewed(n)
        } else {
            (self.next() % n as u64) as usize
        }
    }

    /// An index below `n` skewed towards 0: the whales are the low indices.
    pub(crate) fn skewed(&mut self, n: usize) -> usize {
        ((self.unit().powi(4) * n as f64) as usize).min(n - 1)
    }
}

/// The first mint of holder `i` of `n`: a power law, so a few hold most of the supply.
pub(crate) fn initial_balance(i: usize) -> U256 {
    let tokens = 1e9 / ((i + 1) as f64).powf(1.1);
    U256::from((tokens * 1e6) as u128) * U256::from(10u64).pow(U256::from(12))
}

/// Deploys a token and emits `transfers` Transfers among `holders` addresses,
/// `per_block` in each block.
#[allow(clippy::print_stderr)]
pub(crate) async fn build(
    chain: &mut Chain,
    holders: usize,
    transfers: u64,
    per_block: usize,
) -> anyhow::Result<BenchChain> {
    anyhow::ensure!(holders >= 2, "--holders must be at least 2");
    anyhow::ensure!(
        transfers >= holders as u64,
        "--transfers ({transfers}) must be at least --holders ({holders}): every holder is minted to once"
    );
    let token = chain.deploy_token("Bench Token", "BENCH").await?;
    let start_block = chain.head().await?;
    let seconds = block_seconds(transfers / per_block as u64 + 10);
    let addresses: Vec<Address> = (0..holders).map(|i| holder(5, i)).collect();
    let mut balances: Vec<U256> = (0..holders).map(initial_balance).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    let mut done = 0u64;
    let mut last_report = Instant::now();

    // Mints: every holder once.
    for (chunk, amounts) in addresses.chunks(per_block).zip(balances.chunks(per_block)) {
        let call = TestToken::mintBatchCall { to: chunk.to_vec(), values: amounts.to_vec() };
        let gas = 100_000 + 60_000 * chunk.len() as u64;
        chain.send(DEPLOYER, Some(token), call.abi_encode(), gas).await?;
        chain.mine(seconds).await?;
        done += chunk.len() as u64;
    }

    // Moves: senders weighted to the whales, receivers half whales, half the long tail.
    while done < transfers {
        let n = per_block.min((transfers - done) as usize);
        let (mut from, mut to, mut values) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let s = rng.skewed(holders);
            let mut r = rng.counterparty(holders);
            if r == s {
                r = (r + 1) % holders;
            }
            let value = balances[s] * U256::from(rng.next() % 1000) / U256::from(4000u64);
            balances[s] -= value;
            balances[r] += value;
            from.push(addresses[s]);
            to.push(addresses[r]);
            values.push(value);
        }
        let call = TestToken::moveBatchCall { from, to, values };
        let gas = 100_000 + 60_000 * n as u64;
        chain.send(DEPLOYER, Some(token), call.abi_encode(), gas).await?;
        chain.mine(seconds).await?;
        done += n as u64;
        if last_report.elapsed().as_secs() >= 10 {
            last_report = Instant::now();
            let rate = done as f64 / started.elapsed().as_secs_f64();
            eprintln!(
                "    chain: {done} of {transfers} transfers ({rate:.0}/s, {:.0} s to go)",
                (transfers - done) as f64 / rate
            );
        }
    }
    let end_block = chain.head().await?;
    Ok(BenchChain { token, start_block, end_block, transfers: done, holders: addresses })
}

/// Seconds since the Unix epoch: where the benchmark's histories end.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
