//! Many tokens on one test chain: TestTokens deployed at different blocks, and blocks of
//! mints, transfers and burns across them, each kept valid by a local model of the
//! balances. For token sets: every holder of every token is then compared with
//! `balanceOf`.

use std::collections::HashMap;

use alloy_primitives::{Address, U256};

use crate::chain::{Chain, DEPLOYER, TestToken};
use crate::history::holder;

/// Tokens deployed on a chain, and the addresses that may hold them.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The contracts, in deployment order.
    pub addresses: Vec<Address>,
    /// The block that created each.
    pub created: Vec<u64>,
    /// Everyone who may hold any of them.
    pub holders: Vec<Address>,
    model: HashMap<(Address, Address), U256>,
    step: u64,
}

impl Tokens {
    /// Deploys `n` tokens, one block apart, among `holders` addresses of `seed`, then
    /// gives each a block of activity. Only the deployments use the deployer's nonces
    /// until then, so the same `n` on two chains gives the same addresses.
    pub async fn deploy(
        chain: &mut Chain,
        n: usize,
        holders: usize,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let names: Vec<(String, String)> =
            (0..n).map(|i| (format!("Token {i}"), format!("T{i}"))).collect();
        Self::deploy_named(chain, &names, holders, seed).await
    }

    /// [`Tokens::deploy`] of tokens with these (name, symbol).
    pub async fn deploy_named(
        chain: &mut Chain,
        names: &[(String, String)],
        holders: usize,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let holders: Vec<Address> = (0..holders.max(2)).map(|i| holder(seed, i)).collect();
        chain.fund(&holders).await?;
        let mut tokens = Self {
            addresses: Vec::new(),
            created: Vec::new(),
            holders,
            model: HashMap::new(),
            step: seed,
        };
        for (name, symbol) in names {
            let token = chain.deploy_token(name, symbol).await?;
            tokens.created.push(chain.head().await?);
            tokens.addresses.push(token);
            chain.mine(12).await?;
        }
        tokens.activity(chain, 1, 2).await?;
        Ok(tokens)
    }

    /// `blocks` blocks, each with `per_token` moves of every token: a mint to someone
    /// holding nothing of it yet, else a transfer of a part of a balance, and now and
    /// then a burn.
    pub async fn activity(
        &mut self,
        chain: &mut Chain,
        blocks: u64,
        per_token: usize,
    ) -> anyhow::Result<()> {
        self.activity_of(chain, &self.addresses.clone(), blocks, per_token).await
    }

    /// [`Tokens::activity`] of the tokens `which` only.
    pub async fn activity_of(
        &mut self,
        chain: &mut Chain,
        which: &[Address],
        blocks: u64,
        per_token: usize,
    ) -> anyhow::Result<()> {
        for _ in 0..blocks {
            for token in which {
                for _ in 0..per_token {
                    self.step = self
                        .step
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let x = self.step >> 16;
                    let from = self.holders[(x % self.holders.len() as u64) as usize];
                    let to = self.holders[((x >> 20) % self.holders.len() as u64) as usize];
                    let held = self.model.get(&(*token, from)).copied().unwrap_or_default();
                    if held.is_zero() || x.is_multiple_of(7) {
                        let value = U256::from(1_000 + x % 1_000_000);
                        chain
                            .call_from(DEPLOYER, *token, TestToken::mintCall { to: from, value })
                            .await?;
                        *self.model.entry((*token, from)).or_default() += value;
                    } else if x.is_multiple_of(11) {
                        let value = held / U256::from(3);
                        chain.call_from(from, *token, TestToken::burnCall { value }).await?;
                        *self.model.entry((*token, from)).or_default() -= value;
                    } else {
                        let value = held * U256::from(1 + x % 60) / U256::from(100);
                        chain
                            .call_from(from, *token, TestToken::transferCall { to, value })
                            .await?;
                        *self.model.entry((*token, from)).or_default() -= value;
                        *self.model.entry((*token, to)).or_default() += value;
                    }
                }
            }
            chain.mine(12).await?;
        }
        Ok(())
    }

    /// What the model says `holder` holds of `token`.
    pub fn balance(&self, token: Address, holder: Address) -> U256 {
        self.model.get(&(token, holder)).copied().unwrap_or_default()
    }
}
