//! The seed-equivalent strategy, built only to be compared with inside the benchmark: what
//! the Python script it replaces does, in Rust so that the language is not what is
//! measured. Fixed 1000-block `eth_getLogs` windows; for every event one `balanceOf` call
//! for the sender and one for the receiver; every row written by its own statement after
//! a query that checks it is not stored yet. It stops after a time budget, and the
//! benchmark extrapolates from the share it did.

use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, Bytes, U256};
use alloy_sol_types::SolCall;
use anyhow::Context;
use rig::chain::{Chain, TestToken};
use serde_json::json;

/// Blocks per `eth_getLogs` call, as the script's fixed windows.
const WINDOW: u64 = 1000;

/// How far the strategy got.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeedRun {
    /// Transfers stored.
    pub(crate) transfers: u64,
    /// Time taken.
    pub(crate) elapsed: Duration,
    /// Whether it reached the end block within the budget.
    pub(crate) complete: bool,
    /// Its time for the whole history: measured when complete, else the time per
    /// `eth_getLogs` window times the windows plus the time per event times the events.
    pub(crate) whole: Duration,
}

/// Runs the strategy over `start..=end` until done or `budget` has passed.
pub(crate) async fn run(
    rpc_url: &str,
    database_url: &str,
    token: Address,
    start: u64,
    end: u64,
    total_transfers: u64,
    budget: Duration,
) -> anyhow::Result<SeedRun> {
    let chain = Chain::connect(rpc_url).await?;
    let db = rig::db::connect(database_url).await?;
    db.batch_execute(
        "CREATE TABLE seed_transfers (
             tx_hash bytea NOT NULL, log_index integer NOT NULL, block_number bigint NOT NULL,
             from_address bytea NOT NULL, to_address bytea NOT NULL, value numeric(78,0) NOT NULL,
             PRIMARY KEY (tx_hash, log_index));
         CREATE TABLE seed_balances (address bytea PRIMARY KEY, balance numeric(78,0) NOT NULL);",
    )
    .await
    .context("creating the seed strategy's tables")?;
    let topic = alloy_primitives::keccak256("Transfer(address,address,uint256)");
    let started = Instant::now();
    let mut stored = 0u64;
    let mut fetching = Duration::ZERO;
    let mut windows = 0u64;
    let all_windows = (end - start) / WINDOW + 1;
    let estimate = |stored: u64, fetching: Duration, windows: u64| {
        let per_window = fetching / windows.max(1) as u32;
        let per_event = (started.elapsed() - fetching).as_secs_f64() / stored.max(1) as f64;
        per_window * all_windows as u32
            + Duration::from_secs_f64(per_event * total_transfers as f64)
    };
    let mut from_block = start;
    while from_block <= end {
        let to_block = (from_block + WINDOW - 1).min(end);
        let fetch_started = Instant::now();
        let logs = chain
            .rpc(
                "eth_getLogs",
                json!([{"address": token, "topics": [topic],
                        "fromBlock": format!("{from_block:#x}"), "toBlock": format!("{to_block:#x}")}]),
            )
            .await?;
        fetching += fetch_started.elapsed();
        windows += 1;
        for log in logs.as_array().context("eth_getLogs answer")? {
            if started.elapsed() >= budget {
                return Ok(SeedRun {
                    transfers: stored,
                    elapsed: started.elapsed(),
                    complete: false,
                    whole: estimate(stored, fetching, windows),
                });
            }
            let topics = log["topics"].as_array().context("topics")?;
            let from = Address::from_word(serde_json::from_value::<B256>(topics[1].clone())?);
            let to = Address::from_word(serde_json::from_value::<B256>(topics[2].clone())?);
            let value: U256 =
                U256::from_be_slice(&serde_json::from_value::<Bytes>(log["data"].clone())?);
            let tx_hash: B256 = serde_json::from_value(log["transactionHash"].clone())?;
            let log_index = rig::chain::hex_u64(&log["logIndex"])? as i32;
            let block = rig::chain::hex_u64(&log["blockNumber"])? as i64;

            let exists = db
                .query_opt(
                    "SELECT 1 FROM seed_transfers WHERE tx_hash = $1 AND log_index = $2",
                    &[&tx_hash.as_slice(), &log_index],
                )
                .await?;
            if exists.is_none() {
                db.execute(
                    "INSERT INTO seed_transfers VALUES ($1, $2, $3, $4, $5, $6::text::numeric)",
                    &[
                        &tx_hash.as_slice(),
                        &log_index,
                        &block,
                        &from.as_slice(),
                        &to.as_slice(),
                        &value.to_string(),
                    ],
                )
                .await?;
            }
            for who in [from, to] {
                if who == Address::ZERO {
                    continue;
                }
                let balance = balance_of(&chain, token, who).await?;
                let known = db
                    .query_opt("SELECT 1 FROM seed_balances WHERE address = $1", &[&who.as_slice()])
                    .await?;
                let sql = if known.is_some() {
                    "UPDATE seed_balances SET balance = $2::text::numeric WHERE address = $1"
                } else {
                    "INSERT INTO seed_balances VALUES ($1, $2::text::numeric)"
                };
                db.execute(sql, &[&who.as_slice(), &balance.to_string()]).await?;
            }
            stored += 1;
        }
        from_block = to_block + 1;
    }
    Ok(SeedRun {
        transfers: stored,
        elapsed: started.elapsed(),
        complete: true,
        whole: started.elapsed(),
    })
}

/// balanceOf(who) at the newest block, as the script asks it: one request per call.
async fn balance_of(chain: &Chain, token: Address, who: Address) -> anyhow::Result<U256> {
    let data = Bytes::from(TestToken::balanceOfCall { who }.abi_encode());
    let v = chain.rpc("eth_call", json!([{"to": token, "data": data}, "latest"])).await?;
    Ok(U256::from_be_slice(&serde_json::from_value::<Bytes>(v).context("eth_call answer")?))
}
