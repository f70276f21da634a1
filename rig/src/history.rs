//! Builds a deterministic token history on a test chain: a mint to every holder (one
//! transaction, many Transfers), then days of blocks with transfers, batch transfers,
//! self-transfers, zero-value transfers and burns, an amount past 2^128, a supply driven
//! to 2^256-1, a second token whose Transfers must be ignored, and ERC-721-shaped
//! Transfer logs that must be rejected. A local model of the balances keeps every
//! transaction valid.

use std::collections::HashMap;

use alloy_primitives::{Address, U256, keccak256};

use crate::chain::{Chain, DEPLOYER, TestToken};

/// The size and shape of a history.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Addresses that receive the first mint.
    pub holders: usize,
    /// Days of activity after the first mint.
    pub days: u64,
    /// Blocks per day (spaced evenly).
    pub blocks_per_day: u64,
    /// Plain transfers per block.
    pub transfers_per_block: usize,
    /// Recipients of each block's batch transfer.
    pub spray_width: usize,
    /// Mint one amount past 2^128 at the start and drive the supply to 2^256-1 at the end.
    pub extreme_amounts: bool,
    /// Seed of the choices.
    pub seed: u64,
}

impl Spec {
    /// Small enough for a test, rich enough to cover every case.
    pub fn test() -> Self {
        Self {
            holders: 60,
            days: 10,
            blocks_per_day: 3,
            transfers_per_block: 6,
            spray_width: 8,
            extreme_amounts: true,
            seed: 7,
        }
    }
}

/// What was built.
#[derive(Debug, Clone)]
pub struct History {
    /// The indexed token.
    pub token: Address,
    /// A second token whose Transfers the indexer must ignore.
    pub other_token: Address,
    /// The block that created `token`.
    pub start_block: u64,
    /// The last block of the history.
    pub end_block: u64,
    /// Every address that ever held or received the token.
    pub addresses: Vec<Address>,
    /// ERC-721-shaped Transfer logs emitted by `token`.
    pub rejected_logs: u64,
    /// Transfer events emitted by `token`.
    pub transfers: u64,
}

/// A deterministic address for holder `i`.
pub fn holder(seed: u64, i: usize) -> Address {
    let h = keccak256([seed.to_be_bytes(), (i as u64).to_be_bytes()].concat());
    Address::from_slice(&h[12..])
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Builds the history of `spec` on `chain`.
pub async fn build(chain: &mut Chain, spec: Spec) -> anyhow::Result<History> {
    let mut rng = Rng(spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let token = chain.deploy_token("Test Doge", "TDOG").await?;
    let start_block = chain.head().await?;
    let other_token = chain.deploy_token("Other", "OTHER").await?;
    let holders: Vec<Address> = (0..spec.holders.max(4)).map(|i| holder(spec.seed, i)).collect();
    chain.fund(&holders).await?;

    let mut model: HashMap<Address, U256> = HashMap::new();
    let mut transfers = 0u64;
    let mut rejected_logs = 0u64;
    let unit = U256::from(10).pow(U256::from(18));

    // The first mint: a few whales, a long tail, and one amount past 2^128.
    let mut amounts = Vec::with_capacity(holders.len());
    for i in 0..holders.len() {
        let tokens =
            if i % 17 == 0 { 1_000_000 + rng.below(9_000_000) } else { 1 + rng.below(5_000) };
        amounts.push(unit * U256::from(tokens));
    }
    if spec.extreme_amounts {
        amounts[0] = U256::from(1) << 200;
    }
    for (chunk_h, chunk_a) in holders.chunks(200).zip(amounts.chunks(200)) {
        chain
            .call_from(
                DEPLOYER,
                token,
                TestToken::mintBatchCall { to: chunk_h.to_vec(), values: chunk_a.to_vec() },
            )
            .await?;
        transfers += chunk_h.len() as u64;
    }
    for (h, a) in holders.iter().zip(&amounts) {
        *model.entry(*h).or_default() += *a;
    }
    chain.mine(3600).await?;

    let spacing = 86_400 / spec.blocks_per_day.max(1);
    for day in 0..spec.days {
        for slot in 0..spec.blocks_per_day {
            let pick = |rng: &mut Rng| holders[rng.below(holders.len())];
            // Plain transfers of a part of the sender's balance.
            for _ in 0..spec.transfers_per_block {
                let (from, to) = (pick(&mut rng), pick(&mut rng));
                let bal = model.get(&from).copied().unwrap_or_default();
                let value = if bal.is_zero() {
                    U256::ZERO
                } else {
                    bal * U256::from(1 + rng.below(30)) / U256::from(100)
                };
                chain.call_from(from, token, TestToken::transferCall { to, value }).await?;
                *model.entry(from).or_default() -= value;
                *model.entry(to).or_default() += value;
                transfers += 1;
            }
            // A batch transfer: many Transfers in one transaction.
            let from = pick(&mut rng);
            let bal = model.get(&from).copied().unwrap_or_default();
            let each = bal / U256::from(4 * spec.spray_width.max(1));
            let to: Vec<Address> = (0..spec.spray_width).map(|_| pick(&mut rng)).collect();
            let values = vec![each; to.len()];
            for t in &to {
                *model.entry(from).or_default() -= each;
                *model.entry(*t).or_default() += each;
            }
            transfers += to.len() as u64;
            chain.call_from(from, token, TestToken::sprayCall { to, values }).await?;
            // A self-transfer and a zero-value transfer.
            let me = pick(&mut rng);
            let half = model.get(&me).copied().unwrap_or_default() / U256::from(2);
            chain.call_from(me, token, TestToken::transferCall { to: me, value: half }).await?;
            let (a, b) = (pick(&mut rng), pick(&mut rng));
            chain.call_from(a, token, TestToken::transferCall { to: b, value: U256::ZERO }).await?;
            transfers += 2;
            // Noise the indexer must not count: another token's Transfer.
            chain
                .call_from(
                    DEPLOYER,
                    other_token,
                    TestToken::mintCall { to: pick(&mut rng), value: unit },
                )
                .await?;
            if slot == 0 {
                // A burn, and an ERC-721-shaped Transfer log from the token itself.
                let burner = pick(&mut rng);
                let value = model.get(&burner).copied().unwrap_or_default() / U256::from(10);
                chain.call_from(burner, token, TestToken::burnCall { value }).await?;
                *model.entry(burner).or_default() -= value;
                transfers += 1;
                chain
                    .call_from(
                        DEPLOYER,
                        token,
                        TestToken::emitNftShapedTransferCall {
                            from: a,
                            to: b,
                            tokenId: U256::from(day),
                        },
                    )
                    .await?;
                rejected_logs += 1;
            }
            chain.mine(spacing).await?;
        }
    }

    if spec.extreme_amounts {
        // Mint up to a supply of exactly 2^256-1, then move and burn a part of it.
        let supply: U256 = model.values().copied().sum();
        let rich = holders[1];
        chain
            .call_from(DEPLOYER, token, TestToken::mintCall { to: rich, value: U256::MAX - supply })
            .await?;
        chain.mine(60).await?;
        let big = U256::MAX / U256::from(3);
        chain
            .call_from(rich, token, TestToken::transferCall { to: holders[2], value: big })
            .await?;
        chain.call_from(rich, token, TestToken::burnCall { value: U256::from(1) }).await?;
        chain.mine(60).await?;
        transfers += 3;
    }

    let end_block = chain.head().await?;
    Ok(History {
        token,
        other_token,
        start_block,
        end_block,
        addresses: holders,
        rejected_logs,
        transfers,
    })
}
