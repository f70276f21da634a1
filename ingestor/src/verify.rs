//! `ingestor verify`: checks the store against the chain at the indexed block. Σ of the
//! stored balances must equal the indexed supply and `totalSupply()` at that block, and
//! `balanceOf(holder)` at that block must equal the stored balance for every holder (or a
//! random sample); every mismatch is reported.

use std::ops::RangeInclusive;

use alloy_primitives::{Address, U256};
use anyhow::Context;
use serde_json::json;

use crate::metrics::Metrics;
use crate::rpc::{CallPath, Rpc};
use crate::store::{Store, TokenRow};

/// A holder whose stored balance is not the chain's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The holder.
    pub address: Address,
    /// Its balance in the store (decimal, as stored).
    pub stored: String,
    /// `balanceOf` at the checked block.
    pub on_chain: U256,
}

/// What a verification found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The token checked.
    pub token: Address,
    /// The block it was checked at: the store's checkpoint.
    pub block: u64,
    /// Holders whose balance was compared.
    pub checked: u64,
    /// Balance rows in the store.
    pub rows: u64,
    /// Minted minus burned, as indexed.
    pub stored_supply: String,
    /// Σ of the stored balances.
    pub sum: String,
    /// `totalSupply()` at `block`; `None` when the contract has no such function.
    pub chain_supply: Option<U256>,
    /// Every holder whose balance differs.
    pub mismatches: Vec<Mismatch>,
    /// How the balanceOf calls went: Multicall3 or JSON-RPC batches.
    pub via: CallPath,
}

impl Report {
    /// Σ balances = the indexed supply = `totalSupply()` (where the contract has it).
    pub fn supply_matches(&self) -> bool {
        self.sum == self.stored_supply
            && self.chain_supply.is_none_or(|c| c.to_string() == self.sum)
    }

    /// Everything checked matches.
    pub fn matches(&self) -> bool {
        self.mismatches.is_empty() && self.supply_matches()
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        let supply = match self.chain_supply {
            Some(c) => format!("totalSupply() {c}"),
            None => "no totalSupply()".to_string(),
        };
        format!(
            "verify {} at block {}: {}; {} of {} holders checked (via {}), {} mismatched; Σ balances {}, indexed supply {}, {supply}{}",
            self.token,
            self.block,
            if self.matches() { "OK" } else { "MISMATCH" },
            self.checked,
            self.rows,
            self.via.name(),
            self.mismatches.len(),
            self.sum,
            self.stored_supply,
            if self.supply_matches() { "" } else { " (supply differs)" },
        )
    }

    /// The report for machines.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "token": self.token,
            "block": self.block,
            "ok": self.matches(),
            "checked": self.checked,
            "holders": self.rows,
            "via": self.via.name(),
            "supply": {
                "sum_of_balances": self.sum,
                "indexed": self.stored_supply,
                "total_supply_on_chain": self.chain_supply.map(|c| c.to_string()),
                "ok": self.supply_matches(),
            },
            "mismatches": self.mismatches.iter().map(|m| json!({
                "address": m.address,
                "stored": m.stored,
                "on_chain": m.on_chain.to_string(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Compares the store's view of `token` with the chain at the store's checkpoint, for
/// every holder or a random `sample` of them. An error means it could not check (the
/// token is not stored, the node cannot answer for that block, ...).
pub async fn verify(
    rpc: &Rpc,
    store: &Store,
    row: &TokenRow,
    sample: Option<u64>,
) -> anyhow::Result<Report> {
    let token = row.address;
    let snap = store
        .verify_snapshot(row.key, sample)
        .await?
        .with_context(|| format!("token {token} is not in the store"))?;
    anyhow::ensure!(
        snap.indexed_block >= snap.start_block as i64,
        "token {token}: nothing is indexed yet"
    );
    let block = snap.indexed_block as u64;
    let chain_supply =
        rpc.total_supply(token, block).await.context("reading totalSupply() at the checkpoint")?;
    let holders: Vec<Address> = snap.balances.iter().map(|(a, _)| *a).collect();
    let (on_chain, via) = rpc
        .balances_at(token, &holders, block)
        .await
        .with_context(|| format!("reading balanceOf at block {block}"))?;
    let mismatches = snap
        .balances
        .iter()
        .zip(on_chain)
        .filter(|((_, stored), chain)| *stored != chain.to_string())
        .map(|((address, stored), on_chain)| Mismatch {
            address: *address,
            stored: stored.clone(),
            on_chain,
        })
        .collect();
    Ok(Report {
        token,
        block,
        checked: holders.len() as u64,
        rows: snap.rows,
        stored_supply: snap.total_supply,
        sum: snap.sum,
        chain_supply,
        mismatches,
        via,
    })
}

/// While the ingestor indexes: every `period`, verifies a random `sample` of holders of
/// every token indexed (`indexed`, as the token set changes) and exports the result as
/// metrics (summed over the tokens), until `stop`. Mismatches are logged, one line each.
pub async fn every(
    period: std::time::Duration,
    sample: u64,
    rpc: Rpc,
    store: Store,
    indexed: tokio::sync::watch::Receiver<Vec<TokenRow>>,
    metrics: Metrics,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        let tokens = indexed.borrow().clone();
        let (mut checked, mut mismatched, mut ran) = (0u64, 0usize, false);
        for token in &tokens {
            if stop.is_cancelled() {
                return;
            }
            match verify(&rpc, &store, token, Some(sample)).await {
                Ok(report) => {
                    ran = true;
                    checked += report.checked;
                    mismatched += report.mismatches.len() + usize::from(!report.supply_matches());
                    for m in &report.mismatches {
                        tracing::warn!(token = %report.token, address = %m.address, stored = %m.stored, on_chain = %m.on_chain, block = report.block, "verify: stored balance differs from balanceOf");
                    }
                    if report.matches() {
                        tracing::info!(
                            token = %report.token,
                            checked = report.checked,
                            block = report.block,
                            "verify: sample matches the chain"
                        );
                    } else {
                        tracing::warn!("{}", report.summary());
                    }
                }
                Err(e) => {
                    metrics.verify_errors.inc();
                    tracing::warn!(token = %token.address, error = format!("{e:#}"), "verify: could not check");
                }
            }
        }
        if ran {
            metrics.verify_checked.set(checked as i64);
            metrics.verify_mismatched.set(mismatched as i64);
            metrics.verify_last_run.set(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64),
            );
        }
    }
}

/// A block range where the two nodes, or a node and the store, count different logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeDiff {
    /// First block.
    pub from: u64,
    /// Last block.
    pub to: u64,
    /// Transfer-topic logs of the token each node returned.
    pub nodes: [u64; 2],
    /// Logs the store holds there (transfers and rejected logs).
    pub stored: u64,
}

/// What `verify --cross-check` found.
#[derive(Debug, Clone)]
pub struct CrossCheck {
    /// Blocks compared.
    pub span: RangeInclusive<u64>,
    /// Ranges asked of each node.
    pub ranges: u64,
    /// Logs each node returned in all.
    pub totals: [u64; 2],
    /// Logs the store holds in the span.
    pub stored: u64,
    /// Every range that differs.
    pub diffs: Vec<RangeDiff>,
}

impl CrossCheck {
    /// One line for people.
    pub fn summary(&self) -> String {
        format!(
            "cross-check blocks {}..={} in {} ranges: {}; --rpc-url #1 {} logs, #2 {} logs, store {}",
            self.span.start(),
            self.span.end(),
            self.ranges,
            if self.diffs.is_empty() { "OK" } else { "MISMATCH" },
            self.totals[0],
            self.totals[1],
            self.stored
        )
    }

    /// The report for machines.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "from": self.span.start(), "to": self.span.end(), "ranges": self.ranges,
            "ok": self.diffs.is_empty(), "logs": self.totals, "stored": self.stored,
            "diffs": self.diffs.iter().map(|d| json!({
                "from": d.from, "to": d.to, "nodes": d.nodes, "stored": d.stored,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Compares, range by range over the indexed blocks, how many Transfer logs of `token` the
/// first two `--rpc-url` nodes return and how many the store holds: a provider that
/// truncates answers silently shows as a range where the counts differ. Ranges of `span`
/// blocks are halved where a node refuses them.
pub async fn cross_check(
    rpc: &Rpc,
    store: &Store,
    stored: &TokenRow,
    span: u64,
) -> anyhow::Result<CrossCheck> {
    anyhow::ensure!(rpc.node_count() >= 2, "--cross-check needs two --rpc-url values");
    let token = stored.address;
    anyhow::ensure!(
        stored.indexed_block >= stored.start_block as i64,
        "token {token}: nothing is indexed yet"
    );
    let whole = stored.start_block..=stored.indexed_block as u64;
    let mut todo: Vec<RangeInclusive<u64>> = Vec::new();
    let mut from = *whole.start();
    while from <= *whole.end() {
        let to = whole.end().min(&from.saturating_add(span.max(1) - 1)).to_owned();
        todo.push(from..=to);
        from = to + 1;
    }
    todo.reverse();
    let mut report =
        CrossCheck { span: whole, ranges: 0, totals: [0, 0], stored: 0, diffs: Vec::new() };
    while let Some(range) = todo.pop() {
        let mut counts = [0u64; 2];
        let mut refused = false;
        for (node, count) in counts.iter_mut().enumerate() {
            match rpc.transfer_logs_on(node, token, range.clone()).await {
                Ok(logs) => *count = logs.len() as u64,
                Err(crate::rpc::RpcError::TooLarge { .. }) if range.start() < range.end() => {
                    refused = true;
                    break;
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "eth_getLogs {}..={} on --rpc-url #{}",
                        range.start(),
                        range.end(),
                        node + 1
                    )));
                }
            }
        }
        if refused {
            let mid = range.start() + (range.end() - range.start()) / 2;
            todo.push(mid + 1..=*range.end());
            todo.push(*range.start()..=mid);
            continue;
        }
        let stored = store.logs_in(stored.key, range.clone()).await?;
        report.ranges += 1;
        report.totals[0] += counts[0];
        report.totals[1] += counts[1];
        report.stored += stored;
        if counts[0] != counts[1] || counts[0] != stored {
            report.diffs.push(RangeDiff {
                from: *range.start(),
                to: *range.end(),
                nodes: counts,
                stored,
            });
        }
    }
    Ok(report)
}
