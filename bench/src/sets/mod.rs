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

mod chain;
mod follow;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use rig::chain::Chain;
use serde_json::Value;
use tokio::process::Command;

pub(crate) use chain::{SetChain, build};
use chain::{check, raw_fetch, tokens_file};

use crate::chain::BenchChain;

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
    // BENCH_WRAP (e.g. "heaptrack -o /tmp/{run}") runs the ingestor under a profiler;
    // {run} becomes the name of the run's log.
    let wrap = std::env::var("BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let stem =
                log.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let mut c = Command::new(program);
            c.args(words.map(|w| w.replace("{run}", &stem))).arg(bin.join("ingestor"));
            c
        }
        None => Command::new(bin.join("ingestor")),
    };
    let mut child = command
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
        if v["fields"]["message"].as_str().is_some_and(|m| m.starts_with("committed")) {
            requests += v["fields"]["requests"].as_u64().unwrap_or(0);
            spans += v["fields"]["spans"].as_u64().unwrap_or(0);
        }
    }
    Ok((requests, spans))
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
    follow::added_while_following(bin, anvil_url, rpc, &url, &file, set, single, &mut f).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(f)
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
