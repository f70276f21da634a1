//! The token-set benchmark (`--only-sets`), on one Anvil and one Postgres: a chain of
//! `--set-tokens` tokens (1,000) sharing `--transfers` transfers by a power law (a few
//! take most, hundreds only a handful) among `--holders` holders, and as many more
//! tokens without transfers up to `--set-file-tokens` (10,000); beside it, one token with
//! as many transfers alone. Measured, all in the same run:
//!
//! - the raw fetch of the set's logs (one `eth_getLogs` per span with the address list)
//!   and the set's backfill from a tokens file, with its `eth_getLogs` requests per span,
//!   against the single token's backfill rate;
//! - the backfill of the file of every token, for its peak memory;
//! - the single token added to the tokens file of an ingestor following the set at the
//!   head, while blocks keep coming: how far behind the node the tokens at the head fall
//!   while it backfills, and GetTopHolders(100) of one of them, computed and cached.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use alloy_sol_types::{SolCall, SolConstructor};
use anyhow::Context;
use proto::pb::GetTopHoldersRequest;
use rig::chain::{Chain, DEPLOYER, TestToken};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::chain::{BenchChain, Rng, block_seconds, initial_balance};

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
fn tokens_file(path: &Path, tokens: &[(Address, u64)]) -> anyhow::Result<()> {
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

/// One run of the ingestor binary with `args` to its end: wall time, peak RSS (KiB) and
/// its JSON log.
pub(crate) async fn ingest(
    bin: &Path,
    rpc: &str,
    db: &str,
    args: &[String],
    log: &Path,
) -> anyhow::Result<(Duration, u64)> {
    let file = std::fs::File::create(log)?;
    let started = Instant::now();
    let mut child = Command::new(bin.join("ingestor"))
        .args(rig::pair::LOCAL_PORTS)
        .args(["--rpc-url", rpc, "--database-url", db, "--log-format", "json"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("ingestor pid")?;
    let mut peak = 0;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        peak = peak.max(crate::backfill::vm_hwm_kib(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    anyhow::ensure!(status.success(), "the ingestor failed ({status}); see {}", log.display());
    Ok((started.elapsed(), peak))
}

/// `eth_getLogs` requests and spans of a run's committed batches, from its JSON log.
pub(crate) fn requests_per_span(log: &Path) -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string(log)?;
    let (mut requests, mut spans) = (0, 0);
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        if v["fields"]["message"] == "committed" {
            requests += v["fields"]["requests"].as_u64().unwrap_or(0);
            spans += v["fields"]["spans"].as_u64().unwrap_or(0);
        }
    }
    Ok((requests, spans))
}

/// Every token's transfers are all stored once, and the balances of the largest three
/// and of three of the long tail equal balanceOf at the end block.
async fn check(rpc: &Chain, db_url: &str, set: &SetChain) -> anyhow::Result<()> {
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

/// What the token-set benchmark measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct SetFigures {
    pub(crate) tokens: usize,
    pub(crate) file_tokens: usize,
    pub(crate) transfers: u64,
    pub(crate) biggest: u64,
    pub(crate) tail: u64,
    pub(crate) raw_fetch: f64,
    pub(crate) set_seconds: f64,
    pub(crate) set_rss_mib: f64,
    pub(crate) set_requests_per_span: f64,
    pub(crate) single_seconds: f64,
    pub(crate) single_transfers: u64,
    pub(crate) single_raw_fetch: f64,
    pub(crate) single_requests_per_span: f64,
    pub(crate) file_seconds: f64,
    pub(crate) file_rss_mib: f64,
    pub(crate) added_seconds: f64,
    pub(crate) head_lag: Vec<Duration>,
    pub(crate) top_computed: Vec<Duration>,
    pub(crate) top_cached: Vec<Duration>,
}

/// Runs the whole token-set benchmark; `single` is the lone token's chain on the same node.
#[allow(clippy::print_stdout, clippy::too_many_arguments)]
pub(crate) async fn run(
    bin: &Path,
    anvil_url: &str,
    rpc: &mut Chain,
    admin: &str,
    single: &BenchChain,
    single_seconds: f64,
    single_raw_fetch: f64,
    single_log: &Path,
    set: &SetChain,
    per_block: usize,
) -> anyhow::Result<SetFigures> {
    let active = set.counts.len();
    let dir = std::env::temp_dir().join(format!("bench-sets-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut f = SetFigures {
        tokens: active,
        file_tokens: set.tokens.len(),
        transfers: set.transfers,
        biggest: set.counts[0],
        tail: *set.counts.last().unwrap_or(&0),
        single_seconds,
        single_transfers: single.transfers,
        single_raw_fetch,
        ..Default::default()
    };
    let (single_requests, single_spans) = requests_per_span(single_log)?;
    f.single_requests_per_span = single_requests as f64 / single_spans.max(1) as f64;

    println!(
        "== raw fetch of the set: eth_getLogs with the {active} addresses, spans of about 5,000 logs"
    );
    let (took, fetched) = raw_fetch(anvil_url, set, active, per_block).await?;
    anyhow::ensure!(
        fetched == set.transfers,
        "fetched {fetched} logs, the set has {}",
        set.transfers
    );
    f.raw_fetch = took.as_secs_f64();
    println!(
        "   {fetched} logs in {:.2} s: {:.0} logs/s",
        f.raw_fetch,
        fetched as f64 / f.raw_fetch
    );

    println!("== backfill of the set: {active} tokens from a tokens file");
    let file = dir.join("tokens.txt");
    tokens_file(&file, &set.tokens[..active])?;
    let url = crate::fresh_db(admin, "holders_bench_sets").await?;
    let to = set.end_block.to_string();
    let args: Vec<String> =
        vec!["--tokens-file".into(), file.display().to_string(), "--to".into(), to.clone()];
    let log = bin.join("bench-sets-backfill.log");
    let (took, peak) = ingest(bin, anvil_url, &url, &args, &log).await?;
    check(rpc, &url, set).await?;
    let (requests, spans) = requests_per_span(&log)?;
    f.set_seconds = took.as_secs_f64();
    f.set_rss_mib = peak as f64 / 1024.0;
    f.set_requests_per_span = requests as f64 / spans.max(1) as f64;
    println!(
        "   {} transfers in {:.2} s: {:.0}/s ({:.2}× the raw fetch; the single token: {:.0}/s), peak RSS {:.1} MiB, {:.2} eth_getLogs requests per span (single token: {:.2}); store checked",
        set.transfers,
        f.set_seconds,
        set.transfers as f64 / f.set_seconds,
        f.set_seconds / f.raw_fetch,
        single.transfers as f64 / single_seconds,
        f.set_rss_mib,
        f.set_requests_per_span,
        f.single_requests_per_span,
    );

    println!("== backfill of a tokens file of {} tokens (memory)", set.tokens.len());
    let all_file = dir.join("all-tokens.txt");
    tokens_file(&all_file, &set.tokens)?;
    let all_url = crate::fresh_db(admin, "holders_bench_sets_all").await?;
    let args: Vec<String> =
        vec!["--tokens-file".into(), all_file.display().to_string(), "--to".into(), to];
    let (took, peak) =
        ingest(bin, anvil_url, &all_url, &args, &bin.join("bench-sets-all.log")).await?;
    f.file_seconds = took.as_secs_f64();
    f.file_rss_mib = peak as f64 / 1024.0;
    println!("   {:.2} s, peak RSS {:.1} MiB", f.file_seconds, f.file_rss_mib);

    println!(
        "== the single token ({} transfers) added while the set follows the head",
        single.transfers
    );
    added_while_following(bin, anvil_url, rpc, &url, &file, set, single, &mut f).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(f)
}

/// The set (stored at `url`, its file `file`) followed by an ingestor while a block with
/// transfers of its three largest tokens comes every second; the single token appended
/// to the file; measured until it has caught up: the head tokens' lag behind each new
/// block, and GetTopHolders(100) of the largest token, computed and cached.
#[allow(clippy::print_stdout, clippy::too_many_arguments)]
async fn added_while_following(
    bin: &Path,
    anvil_url: &str,
    rpc: &mut Chain,
    url: &str,
    file: &Path,
    set: &SetChain,
    single: &BenchChain,
    f: &mut SetFigures,
) -> anyhow::Result<()> {
    let log = std::fs::File::create(bin.join("bench-sets-follow.log"))?;
    let _following = Command::new(bin.join("ingestor"))
        .args(rig::pair::LOCAL_PORTS)
        .args(["--rpc-url", anvil_url, "--database-url", url, "--log-format", "json"])
        .args(["--tokens-file", &file.display().to_string(), "--poll-interval", "100ms"])
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let computed = crate::load::serve(&bin.join("query-service"), url, 0).await?;
    let cached = crate::load::serve(&bin.join("query-service"), url, 256).await?;
    let db = rig::db::connect(url).await?;
    let head_tokens: Vec<Vec<u8>> = set.tokens[..3].iter().map(|(a, _)| a.to_vec()).collect();
    let head_checkpoint = || async {
        db.query_one(
            "SELECT min(indexed_block) FROM tokens WHERE address = ANY($1)",
            &[&head_tokens],
        )
        .await
        .map(|r| r.get::<_, Option<i64>>(0).unwrap_or(-1))
    };
    // Caught up to the head first.
    let head = rpc.head().await?;
    while head_checkpoint().await? < head as i64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut lines: Vec<(Address, u64)> = set.tokens[..set.counts.len()].to_vec();
    lines.push((single.token, single.start_block));
    tokens_file(file, &lines)?;
    let added = Instant::now();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let top = set.tokens[0].0.to_string();
    let ask = |served: &crate::load::Served, mut stop: tokio::sync::watch::Receiver<bool>| {
        let mut client = served.client.clone();
        let token = top.clone();
        async move {
            let mut out = Vec::new();
            while !*stop.borrow_and_update() {
                let started = Instant::now();
                client
                    .get_top_holders(GetTopHoldersRequest {
                        token: token.clone(),
                        limit: 100,
                        ..Default::default()
                    })
                    .await?;
                out.push(started.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<_, anyhow::Error>(out)
        }
    };
    let asking =
        (tokio::spawn(ask(&computed, stop.clone())), tokio::spawn(ask(&cached, stop.clone())));
    let single_done = || async {
        db.query_one(
            "SELECT indexed_block FROM tokens WHERE address = $1",
            &[&single.token.as_slice()],
        )
        .await
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(-1)
    };
    let mut rng = Rng(0xadd_ed);
    loop {
        // A new block with transfers of the head tokens (mints: always valid).
        for (token, _) in &set.tokens[..3] {
            let to = vec![set.holders[0][(rng.next() % set.holders[0].len() as u64) as usize]];
            let call = TestToken::mintBatchCall { to, values: vec![U256::from(1_000u64)] };
            rpc.send(DEPLOYER, Some(*token), call.abi_encode(), 200_000).await?;
        }
        let block = rpc.mine(1).await?;
        let mined = Instant::now();
        while head_checkpoint().await? < block as i64 {
            anyhow::ensure!(
                mined.elapsed() < Duration::from_secs(60),
                "the head tokens stopped following"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        f.head_lag.push(mined.elapsed());
        let head = rpc.head().await?;
        if single_done().await >= head as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1000).saturating_sub(mined.elapsed())).await;
    }
    f.added_seconds = added.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    f.top_computed = asking.0.await??;
    f.top_cached = asking.1.await??;
    for v in [&mut f.head_lag, &mut f.top_computed, &mut f.top_cached] {
        v.sort();
    }
    println!(
        "   caught up in {:.1} s; the head tokens' lag behind each block: p50 {:.0} ms, max {:.0} ms ({} blocks); GetTopHolders(100) p99 computed {:.1} ms ({} calls), cached {:.1} ms ({} calls)",
        f.added_seconds,
        ms(q(&f.head_lag, 0.5)),
        ms(q(&f.head_lag, 1.0)),
        f.head_lag.len(),
        ms(q(&f.top_computed, 0.99)),
        f.top_computed.len(),
        ms(q(&f.top_cached, 0.99)),
        f.top_cached.len(),
    );
    Ok(())
}

/// The `p` quantile of sorted durations.
pub(crate) fn q(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl SetFigures {
    /// The section of docs/performance.md between the sets markers.
    pub(crate) fn markdown(&self, machine: &str) -> String {
        let single_rate = self.single_transfers as f64 / self.single_seconds;
        let set_rate = self.transfers as f64 / self.set_seconds;
        format!(
            "Token sets, `bash scripts/bench.sh --only-sets` on {machine}: {} tokens sharing {} transfers by a power law (the largest {}, the smallest {}), beside one token with {} transfers alone, on one Anvil.\n\n\
| figure | measured | floor |\n| --- | --- | --- |\n\
| backfill of the {} tokens from a tokens file | {:.1} s, {:.0} transfers/s, {:.2}× the raw fetch of the same logs ({:.1} s) | ≤ 1.5× |\n\
| the same against the single token's rate ({:.0} transfers/s, {:.2}× its raw fetch) | {:.0}% | ≥ 90% |\n\
| `eth_getLogs` requests per span | {:.2} for the set, {:.2} for the single token | do not grow with the set |\n\
| peak RSS, the {} tokens | {:.1} MiB | |\n\
| peak RSS, a tokens file of {} tokens ({:.1} s) | {:.1} MiB | < 150 MB |\n\
| a token of {} transfers added while the set follows | caught up in {:.1} s | |\n\
| the head tokens behind each new block meanwhile | p50 {:.0} ms, max {:.0} ms ({} blocks) | within 2 s |\n\
| GetTopHolders(100) of a head token meanwhile, computed | p99 {:.1} ms ({} calls) | < 50 ms |\n\
| the same, cached | p99 {:.1} ms ({} calls) | < 20 ms |\n",
            self.tokens,
            self.transfers,
            self.biggest,
            self.tail,
            self.single_transfers,
            self.tokens,
            self.set_seconds,
            set_rate,
            self.set_seconds / self.raw_fetch,
            self.raw_fetch,
            single_rate,
            self.single_seconds / self.single_raw_fetch,
            set_rate / single_rate * 100.0,
            self.set_requests_per_span,
            self.single_requests_per_span,
            self.tokens,
            self.set_rss_mib,
            self.file_tokens,
            self.file_seconds,
            self.file_rss_mib,
            self.single_transfers,
            self.added_seconds,
            ms(q(&self.head_lag, 0.5)),
            ms(q(&self.head_lag, 1.0)),
            self.head_lag.len(),
            ms(q(&self.top_computed, 0.99)),
            self.top_computed.len(),
            ms(q(&self.top_cached, 0.99)),
            self.top_cached.len(),
        )
    }
}

/// Where the sets section goes in docs/performance.md.
pub(crate) const BEGIN: &str =
    "<!-- sets:begin (written by scripts/bench.sh --only-sets --results docs/performance.md) -->";
pub(crate) const END: &str = "<!-- sets:end -->";
