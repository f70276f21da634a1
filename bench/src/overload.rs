//! The overload benchmark (`bench --only-overload`): the release query-service on a
//! filled store, first measured alone (cheap calls; then expensive calls, closed-loop, to
//! find what the expensive lane serves), then under overload: cheap calls at a steady
//! rate, expensive calls offered open-loop at twice what the lane serves, and 1,000
//! streams. What must hold: cheap p99 under 10 ms, excess expensive calls refused (within
//! the bounded wait) rather than queued without bound, memory bounded, health SERVING
//! throughout.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use proto::pb::GetTopHoldersRequest;
use proto::pb::holder_service_client::HolderServiceClient;
use rig::load::{self, LoadReport, LoadSpec};
use tokio::process::Command;
use tonic::Code;

use crate::fill::HISTORY_BLOCKS;

const BEGIN: &str = "<!-- overload:begin (written by scripts/bench.sh --only-overload --results docs/performance.md) -->";
const END: &str = "<!-- overload:end -->";

/// How long an expensive call waits for its turn (--expensive-wait).
const WAIT: &str = "1s";
/// The expensive calls' floor: the count above it at a past block reads the history.
const MIN_BALANCE: &str = "1";

/// What the run measured.
#[derive(Debug)]
pub(crate) struct Overload {
    lane: usize,
    holders: u64,
    transfers: u64,
    cheap_alone_p99: Duration,
    expensive_capacity: f64,
    expensive_p50_alone: Duration,
    offered: f64,
    load: LoadReport,
    seconds: u64,
    rss_start_mib: f64,
    rss_peak_mib: f64,
}

/// Runs it on a fresh store of `holders` holders, for `seconds` of overload, with an
/// expensive lane of `lane` connections.
#[allow(clippy::print_stdout)]
pub(crate) async fn run(
    bin: &Path,
    url: &str,
    holders: u64,
    seconds: u64,
    lane: usize,
) -> anyhow::Result<Overload> {
    let filled = crate::fill::fill(url, holders).await?;
    println!("== overload: {} holders, {} transfers", filled.holders, filled.transfers);
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let child = Command::new(bin.join("query-service"))
        .args(["--database-url", url, "--listen", &addr.to_string()])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(["--expensive-connections", &lane.to_string(), "--expensive-wait", WAIT])
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the query-service")?;
    let pid = child.id().context("the query-service's pid")?;
    let endpoint = format!("http://{addr}");
    let client = rig::pair::wait_for_client(&endpoint).await?;
    let past = (HISTORY_BLOCKS / 4, HISTORY_BLOCKS * 3 / 4);
    let spec = |cheap: f64, expensive: f64, streams: usize, secs: u64| LoadSpec {
        endpoint: endpoint.clone(),
        key: None,
        cheap_per_sec: cheap,
        expensive_per_sec: expensive,
        past_blocks: past,
        expensive_min_balance: MIN_BALANCE.to_string(),
        streams,
        streams_from: HISTORY_BLOCKS + 100,
        duration: Duration::from_secs(secs),
    };

    // Cheap calls alone.
    let alone = load::run(spec(20.0, 0.0, 0, 10), || 0).await?;
    let cheap_alone_p99 =
        load::quantile(&alone.cheap, Duration::ZERO, Duration::MAX, 0.99).unwrap_or_default();
    println!("   cheap alone: p99 {:.2} ms", ms(cheap_alone_p99));

    // What the expensive lane serves: as many callers as it runs at once, closed-loop.
    let (capacity, p50) = capacity(&client, past, lane, Duration::from_secs(10)).await?;
    let offered = (capacity * 2.0).max(1.0);
    println!(
        "   expensive lane serves {capacity:.1}/s (p50 {:.0} ms); offering {offered:.1}/s",
        ms(p50)
    );

    // Overload.
    let rss_start = rss_kib(pid).unwrap_or(0);
    let load = load::run(spec(20.0, offered, 1000, seconds), || 0).await?;
    let peak = vm_hwm(pid).unwrap_or(0);
    drop(child);
    let o = Overload {
        lane,
        holders: filled.holders,
        transfers: filled.transfers,
        cheap_alone_p99,
        expensive_capacity: capacity,
        expensive_p50_alone: p50,
        offered,
        load,
        seconds,
        rss_start_mib: rss_start as f64 / 1024.0,
        rss_peak_mib: peak as f64 / 1024.0,
    };
    println!("{}", o.markdown());
    Ok(o)
}

/// Expensive calls served a second by `lane` callers one after another, and
/// their median latency.
async fn capacity(
    client: &HolderServiceClient<tonic::transport::Channel>,
    past: (u64, u64),
    lane: usize,
    within: Duration,
) -> anyhow::Result<(f64, Duration)> {
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for c in 0..lane as u64 {
        let mut client = client.clone();
        callers.spawn(async move {
            let mut took = Vec::new();
            let mut i = c;
            while started.elapsed() < within {
                let block = past.0 + (i * 7919) % (past.1 - past.0);
                i += lane as u64;
                let r = GetTopHoldersRequest {
                    limit: 100,
                    at_block: Some(block),
                    min_balance: MIN_BALANCE.to_string(),
                    ..Default::default()
                };
                let t = Instant::now();
                client.get_top_holders(r).await?;
                took.push(t.elapsed());
            }
            anyhow::Ok(took)
        });
    }
    let mut all = Vec::new();
    while let Some(r) = callers.join_next().await {
        all.extend(r??);
    }
    all.sort();
    let p50 = all.get(all.len() / 2).copied().unwrap_or_default();
    Ok((all.len() as f64 / started.elapsed().as_secs_f64(), p50))
}

impl Overload {
    /// The section of docs/performance.md.
    pub(crate) fn markdown(&self) -> String {
        let l = &self.load;
        let q = |s: &[load::Sample], p| load::quantile(s, Duration::ZERO, Duration::MAX, p);
        let cheap_p50 = q(&l.cheap, 0.5).unwrap_or_default();
        let cheap_p99 = q(&l.cheap, 0.99).unwrap_or_default();
        let cheap_failed = l.cheap.len() - load::count(&l.cheap, Code::Ok);
        let served = load::count(&l.expensive, Code::Ok);
        let refused = load::count(&l.expensive, Code::ResourceExhausted);
        let other = l.expensive.len() - served - refused;
        let mut refusal: Vec<Duration> = l
            .expensive
            .iter()
            .filter(|s| s.code == Code::ResourceExhausted)
            .map(|s| s.latency)
            .collect();
        refusal.sort();
        let refusal_max = refusal.last().copied().unwrap_or_default();
        let not_serving = l.health.iter().filter(|h| h.1 != 1).count();
        let windows: Vec<String> = (0..self.seconds.div_ceil(10))
            .map(|w| {
                let from = Duration::from_secs(w * 10);
                let p = load::quantile(&l.cheap, from, from + Duration::from_secs(10), 0.99);
                format!("{:.1}", ms(p.unwrap_or_default()))
            })
            .collect();
        let streams_open = l.streams.len();
        format!(
            "Run {date} on {machine}. Store: {holders} holders, {transfers} transfers (filled by COPY); \
query-service release build, `--expensive-connections {lane} --expensive-wait {WAIT}`, other settings default.\n\n\
| | |\n| --- | --- |\n\
| cheap calls alone (cached GetTopHolders(10), 20/s) | p99 {alone:.2} ms |\n\
| expensive lane, closed-loop ({lane} callers; GetTopHolders(100) at a past block with min_balance, so the count reads the history) | {cap:.1} calls/s, p50 {ep50:.0} ms |\n\
| **overload**, {secs} s: cheap 20/s + expensive {offered:.1}/s offered (2×) + {streams_open} open streams | |\n\
| cheap calls | {cheap} sent, {cheap_failed} failed, p50 {cp50:.2} ms, **p99 {cp99:.2} ms** |\n\
| cheap p99 by 10 s window, ms | {windows} |\n\
| expensive calls | {sent} sent: {served} served, **{refused} refused** (RESOURCE_EXHAUSTED), {other} other; slowest refusal {rmax:.0} ms |\n\
| health probes (every 100 ms) | {probes}, **{not_serving} not SERVING** |\n\
| query-service memory | RSS {rss0:.1} MiB before, peak {rss1:.1} MiB |\n",
            date = chrono_free_date(),
            machine = crate::report::machine(),
            holders = self.holders,
            transfers = self.transfers,
            alone = ms(self.cheap_alone_p99),
            cap = self.expensive_capacity,
            ep50 = ms(self.expensive_p50_alone),
            secs = self.seconds,
            offered = self.offered,
            cheap = l.cheap.len(),
            cp50 = ms(cheap_p50),
            cp99 = ms(cheap_p99),
            sent = l.expensive.len(),
            rmax = ms(refusal_max),
            probes = l.health.len(),
            rss0 = self.rss_start_mib,
            rss1 = self.rss_peak_mib,
            windows = windows.join(", "),
            lane = self.lane,
        )
    }

    /// Writes the section into `file` between its overload markers.
    pub(crate) fn write_into(&self, file: &Path) -> anyhow::Result<()> {
        crate::report::write_between(file, BEGIN, END, &self.markdown())
    }
}

/// Today's date, `YYYY-MM-DD`, from `date` (no date crate for one line).
fn chrono_free_date() -> String {
    std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

fn vm_hwm(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
