//! The token set's chain for the benchmark: many tokens deployed, transfers spread over
//! them by a power law, a tokens file naming them, and the node's raw fetch of their logs.

use std::path::Path;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use alloy_sol_types::{SolCall, SolConstructor};
use anyhow::Context;
use rig::chain::{Chain, DEPLOYER, TestToken};
use serde_json::{Value, json};

use crate::chain::{Rng, block_seconds, initial_balance};

/// The set's chain.
#[derive(Debug, Clone)]
pub(crate) struct SetChain {
    /// Every token deployed (the first `active` have transfers), with its creation block.
    pub(crate) tokens: Vec<(Address, u64)>,
    /// Transfers of each active token.
    pub(crate) counts: Vec<u64>,
    /// Holders of each active token.
    pub(crate) holders: Vec<Vec<Address>>,
    pub(crate) first_block: u64,
    pub(crate) end_block: u64,
    pub(crate) transfers: u64,
}

/// Transfers of token `i` of `n` out of `total`: a power law (exponent 1.2), at least 3.
fn shares(n: usize, total: u64) -> Vec<u64> {
    let w: Vec<f64> = (0..n).map(|i| 1.0 / ((i + 1) as f64).powf(1.2)).collect();
    let sum: f64 = w.iter().sum();
    let mut out: Vec<u64> = w.iter().map(|x| ((x / sum) * total as f64).max(3.0) as u64).collect();
    let given: u64 = out.iter().sum();
    out[0] = (out[0] + total).saturating_sub(given).max(3);
    out
}

/// Deploys `all` tokens (many per block), then emits `transfers` Transfers among the first
/// `active` of them by [`shares`], each among its own holders drawn from `holders`
/// addresses, about `per_block` a block, the tokens interleaved within blocks.
#[allow(clippy::print_stderr)]
pub(crate) async fn build(
    chain: &mut Chain,
    all: usize,
    active: usize,
    transfers: u64,
    holders: usize,
    per_block: usize,
) -> anyhow::Result<SetChain> {
    let seconds = block_seconds(transfers / per_block as u64 + 10);
    let first_block = chain.head().await? + 1;
    let nonce = rig::chain::hex_u64(
        &chain.rpc("eth_getTransactionCount", json!([DEPLOYER, "pending"])).await?,
    )?;
    let mut tokens = Vec::with_capacity(all);
    let started = Instant::now();
    for chunk in (0..all).collect::<Vec<_>>().chunks(60) {
        for &i in chunk {
            let mut data = rig::chain::bytecode()?;
            data.extend(
                TestToken::constructorCall { name_: format!("Set {i}"), symbol_: format!("S{i}") }
                    .abi_encode(),
            );
            chain.send(DEPLOYER, None, data, 3_000_000).await?;
        }
        chain.mine(seconds).await?;
        let block = chain.head().await?;
        for &i in chunk {
            tokens.push((DEPLOYER.create(nonce + i as u64), block));
        }
    }
    eprintln!("    {all} tokens deployed in {:.0} s", started.elapsed().as_secs_f64());

    let counts = shares(active, transfers);
    let universe: Vec<Address> = (0..holders).map(|i| rig::history::holder(77, i)).collect();
    let mut owners: Vec<Vec<Address>> = Vec::with_capacity(active);
    let mut balances: Vec<Vec<U256>> = Vec::with_capacity(active);
    // Per token: transfers still to emit (mints first).
    let mut left: Vec<u64> = counts.clone();
    for (i, &count) in counts.iter().enumerate() {
        let k = ((count / 10) as usize).clamp(2, holders);
        owners.push((0..k).map(|j| universe[(i * 7919 + j) % holders]).collect());
        balances.push((0..k).map(initial_balance).collect());
    }
    let mut minted = vec![0usize; active];
    let mut rng = Rng(0x5e75_0f70_c0de);
    let mut done = 0u64;
    let mut last_report = Instant::now();
    let mut cursor = 0usize;
    while done < transfers {
        // One block: chunks of tokens in turn until it holds about `per_block`.
        let mut in_block = 0usize;
        let mut idle = 0usize;
        while in_block < per_block && idle < active {
            let i = cursor % active;
            cursor += 1;
            if left[i] == 0 {
                idle += 1;
                continue;
            }
            idle = 0;
            let n = (left[i] as usize).min(200).min(per_block - in_block);
            let token = tokens[i].0;
            let k = owners[i].len();
            if minted[i] < k {
                let m = n.min(k - minted[i]);
                let to = owners[i][minted[i]..minted[i] + m].to_vec();
                let values = balances[i][minted[i]..minted[i] + m].to_vec();
                let call = TestToken::mintBatchCall { to, values };
                chain
                    .send(DEPLOYER, Some(token), call.abi_encode(), 100_000 + 60_000 * m as u64)
                    .await?;
                minted[i] += m;
                left[i] -= m as u64;
                in_block += m;
                continue;
            }
            let (mut from, mut to, mut values) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..n {
                let s = rng.skewed(k);
                let mut r = rng.counterparty(k);
                if r == s {
                    r = (r + 1) % k;
                }
                let value = balances[i][s] * U256::from(rng.next() % 1000) / U256::from(4000u64);
                balances[i][s] -= value;
                balances[i][r] += value;
                from.push(owners[i][s]);
                to.push(owners[i][r]);
                values.push(value);
            }
            let call = TestToken::moveBatchCall { from, to, values };
            chain
                .send(DEPLOYER, Some(token), call.abi_encode(), 100_000 + 60_000 * n as u64)
                .await?;
            left[i] -= n as u64;
            in_block += n;
        }
        chain.mine(seconds).await?;
        done += in_block as u64;
        if last_report.elapsed().as_secs() >= 10 {
            last_report = Instant::now();
            eprintln!("    set chain: {done} of {transfers} transfers");
        }
    }
    let end_block = chain.head().await?;
    Ok(SetChain { tokens, counts, holders: owners, first_block, end_block, transfers: done })
}

/// A tokens file of `tokens`, each with its creation block.
pub(crate) fn tokens_file(path: &Path, tokens: &[(Address, u64)]) -> anyhow::Result<()> {
    let text: String = tokens.iter().map(|(a, b)| format!("{a} {b}\n")).collect();
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The raw fetch of the set's logs: plain `eth_getLogs` over the range with the address
/// list (spans of about 5,000 logs, one after the other), nothing stored.
pub(crate) async fn raw_fetch(
    url: &str,
    set: &SetChain,
    active: usize,
    per_block: usize,
) -> anyhow::Result<(Duration, u64)> {
    let http = reqwest::Client::new();
    let span = (5_000 / per_block.max(1)).max(1) as u64;
    let addresses: Vec<String> =
        set.tokens[..active].iter().map(|(a, _)| format!("{a:#x}")).collect();
    let topic = format!("{:#x}", ingestor::abi::TRANSFER_TOPIC);
    let started = Instant::now();
    let mut total = 0u64;
    let mut from = set.first_block;
    while from <= set.end_block {
        let to = (from + span - 1).min(set.end_block);
        let body = json!({
            "jsonrpc": "2.0", "id": 1, "method": "eth_getLogs",
            "params": [{ "address": addresses, "topics": [topic],
                         "fromBlock": format!("{from:#x}"), "toBlock": format!("{to:#x}") }],
        });
        let answer: Value = http.post(url).json(&body).send().await?.json().await?;
        total +=
            answer["result"].as_array().with_context(|| format!("eth_getLogs: {answer}"))?.len()
                as u64;
        from = to + 1;
    }
    Ok((started.elapsed(), total))
}

/// Every token's transfers are all stored once, and the balances of the largest three
/// and of three of the long tail equal balanceOf at the end block.
pub(crate) async fn check(rpc: &Chain, db_url: &str, set: &SetChain) -> anyhow::Result<()> {
    let db = rig::db::connect(db_url).await?;
    let active = set.counts.len();
    for (i, (token, _)) in set.tokens[..active].iter().enumerate() {
        let row = db
            .query_one(
                "SELECT transfer_count, indexed_block FROM tokens WHERE address = $1",
                &[&token.as_slice()],
            )
            .await?;
        let (count, indexed): (i64, i64) = (row.get(0), row.get(1));
        anyhow::ensure!(
            count as u64 == set.counts[i],
            "{token}: {count} transfers stored, {} on chain",
            set.counts[i]
        );
        anyhow::ensure!(indexed as u64 >= set.end_block, "{token}: indexed to {indexed}");
    }
    for i in [0, 1, 2, active / 2, active - 2, active - 1] {
        let token = set.tokens[i].0;
        let on_chain = rpc.balances_at(token, &set.holders[i], set.end_block).await?;
        for (holder, expected) in set.holders[i].iter().zip(on_chain) {
            let stored: Option<String> = db
                .query_opt(
                    "SELECT balance::text FROM balances
                     WHERE token = (SELECT id FROM tokens WHERE address = $1) AND address = $2",
                    &[&token.as_slice(), &holder.as_slice()],
                )
                .await?
                .map(|r| r.get(0));
            anyhow::ensure!(
                stored.as_deref().unwrap_or("0") == expected.to_string(),
                "{token} {holder}: stored {stored:?}, balanceOf {expected}"
            );
        }
    }
    Ok(())
}
