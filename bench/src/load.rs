//! The query side of the benchmark: starts the real query-service on a filled store
//! (`fill`) and measures GetTopHolders(100), 1000-row GetHolders pages and address
//! lookups, at the checkpoint and at past blocks: latency with one client, throughput
//! with several.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use proto::pb::holder_service_client::HolderServiceClient;
use proto::pb::{GetHoldersRequest, GetTopHoldersRequest};
use rig::history::holder;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use crate::chain::{BLOCK_SECONDS, Rng};
use crate::fill::{HISTORY_BLOCKS, TOKEN};

/// Addresses per lookup request.
pub(crate) const LOOKUP_SIZE: usize = 10;

/// One request kind's figures.
#[derive(Debug, Clone)]
pub(crate) struct Figures {
    /// What was asked.
    pub(crate) name: &'static str,
    /// Whether the query-service kept ranked answers (`--answer-cache`).
    pub(crate) cached: bool,
    /// Latency with one client.
    pub(crate) p50: Duration,
    /// 99th percentile with one client.
    pub(crate) p99: Duration,
    /// Requests per second with one client.
    pub(crate) rps_one: f64,
    /// Requests per second with `concurrency` clients.
    pub(crate) rps_many: f64,
    /// 99th percentile with `concurrency` clients.
    pub(crate) p99_many: Duration,
}

/// The query-service binary serving `url`, and a client of it.
pub(crate) struct Served {
    _child: Child,
    pub(crate) client: HolderServiceClient<Channel>,
}

/// Starts `bin` (the query-service) on `url`, with `answer_cache` ranked answers kept.
pub(crate) async fn serve(bin: &Path, url: &str, answer_cache: u32) -> anyhow::Result<Served> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    let child = Command::new(bin)
        .args([
            "--database-url",
            url,
            "--listen",
            &addr.to_string(),
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args(["--answer-cache", &answer_cache.to_string()])
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let client = rig::pair::wait_for_client(&format!("http://{addr}")).await?;
    Ok(Served { _child: child, client })
}

/// A request the load generator sends, `i` picking its variant.
#[derive(Clone, Copy)]
enum Kind {
    Top100,
    Page1000,
    Lookup,
}

/// Measures the three request kinds against `served`.
pub(crate) async fn measure(
    served: &Served,
    cached: bool,
    holders: u64,
    seconds: u64,
    concurrency: usize,
) -> anyhow::Result<Vec<Figures>> {
    let token = TOKEN.to_string();
    // Page tokens of the first pages: keyset pages cost the same at any depth.
    let mut client = served.client.clone();
    let mut pages = vec![String::new()];
    let wanted = (holders / 1000).clamp(1, 50) as usize;
    while pages.len() < wanted {
        let r = client
            .get_holders(GetHoldersRequest {
                page_size: 1000,
                page_token: pages.last().cloned().unwrap_or_default(),
                token: token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        anyhow::ensure!(
            r.holders.len() == 1000,
            "page {} has {} rows, not 1000",
            pages.len(),
            r.holders.len()
        );
        pages.push(r.next_page_token);
    }
    let setup = Setup { token, pages, holders };
    let mut out = Vec::new();
    let mut kinds = vec![
        ("GetTopHolders(limit 100)", Kind::Top100),
        ("GetHolders 1000-row page", Kind::Page1000),
    ];
    if !cached {
        // Lookups are never cached: one run measures them.
        kinds.push(("GetHolders lookup of 10 addresses", Kind::Lookup));
    }
    for (name, kind) in kinds {
        let (one, one_elapsed) = run(served, &setup, kind, 1, seconds).await?;
        let (many, many_elapsed) = run(served, &setup, kind, concurrency, seconds).await?;
        out.push(Figures {
            name,
            cached,
            p50: percentile(&one, 0.50),
            p99: percentile(&one, 0.99),
            rps_one: one.len() as f64 / one_elapsed.as_secs_f64(),
            rps_many: many.len() as f64 / many_elapsed.as_secs_f64(),
            p99_many: percentile(&many, 0.99),
        });
    }
    Ok(out)
}

struct Setup {
    token: String,
    pages: Vec<String>,
    holders: u64,
}

/// `clients` loops of `kind` for `seconds` (after a one-second warm-up); every latency.
async fn run(
    served: &Served,
    setup: &Setup,
    kind: Kind,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let warm_up = Instant::now() + Duration::from_secs(1);
    let deadline = warm_up + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = served.client.clone();
        let token = setup.token.clone();
        let pages = setup.pages.clone();
        let holders = setup.holders;
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0xabcd + c as u64);
            let mut latencies = Vec::new();
            loop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                let rows = match kind {
                    Kind::Top100 => client
                        .get_top_holders(GetTopHoldersRequest {
                            limit: 100,
                            token: token.clone(),
                            ..Default::default()
                        })
                        .await?
                        .into_inner()
                        .holders
                        .len(),
                    Kind::Page1000 => {
                        let page = pages[(rng.next() % pages.len() as u64) as usize].clone();
                        let r = GetHoldersRequest {
                            page_size: 1000,
                            page_token: page,
                            token: token.clone(),
                            ..Default::default()
                        };
                        client.get_holders(r).await?.into_inner().holders.len()
                    }
                    Kind::Lookup => {
                        let addresses = (0..LOOKUP_SIZE)
                            .map(|_| holder(7, (rng.next() % holders) as usize).to_string())
                            .collect();
                        let r = GetHoldersRequest {
                            addresses,
                            token: token.clone(),
                            ..Default::default()
                        };
                        client.get_holders(r).await?.into_inner().holders.len()
                    }
                };
                anyhow::ensure!(rows > 0, "an empty answer");
                if now >= warm_up {
                    latencies.push(now.elapsed());
                }
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort();
    Ok((all, Duration::from_secs(seconds)))
}

/// The `q` quantile of sorted latencies.
pub(crate) fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// What answering at a past block costs.
#[derive(Debug, Clone)]
pub(crate) struct PastFigures {
    /// The request.
    pub(crate) name: String,
    /// Median latency.
    pub(crate) p50: Duration,
    /// Slowest.
    pub(crate) max: Duration,
    /// Requests timed.
    pub(crate) count: usize,
}

/// Times answers at past blocks of the filled store, one client, no cache: the ranking
/// (GetTopHolders(100)) at 3, 15 and 27 days back, and 10-address lookups 15 days back.
pub(crate) async fn measure_past(
    served: &Served,
    holders: u64,
) -> anyhow::Result<Vec<PastFigures>> {
    let mut client = served.client.clone();
    let token = TOKEN.to_string();
    let day = 86_400 / BLOCK_SECONDS;
    let mut out = Vec::new();
    for (days, runs) in [(3u64, 5usize), (15, 5), (27, 5)] {
        let at = HISTORY_BLOCKS - days * day;
        let mut times = Vec::new();
        let mut timeouts = 0;
        for _ in 0..runs {
            let started = Instant::now();
            let answer = client
                .get_top_holders(GetTopHoldersRequest {
                    limit: 100,
                    token: token.clone(),
                    at_block: Some(at),
                    ..Default::default()
                })
                .await;
            times.push(started.elapsed());
            match answer {
                Ok(r) => {
                    let r = r.into_inner();
                    anyhow::ensure!(
                        r.holders.len() == 100 && r.as_of_block <= at,
                        "a short answer"
                    );
                }
                // Past the query-service's statement timeout: reported as such.
                Err(s) if s.code() == tonic::Code::DeadlineExceeded => timeouts += 1,
                Err(s) => return Err(anyhow::anyhow!("GetTopHolders at block {at}: {s}")),
            }
        }
        times.sort();
        let timed_out = if timeouts > 0 {
            format!(" ({timeouts} of {runs} past the 5 s statement timeout)")
        } else {
            String::new()
        };
        out.push(PastFigures {
            name: format!("GetTopHolders(limit 100) at a block {days} days back{timed_out}"),
            p50: percentile(&times, 0.5),
            max: *times.last().expect("runs"),
            count: runs,
        });
    }
    let at = HISTORY_BLOCKS - 15 * day;
    let mut rng = Rng(0x9a57);
    let mut times = Vec::new();
    for _ in 0..200 {
        let addresses = (0..LOOKUP_SIZE)
            .map(|_| holder(7, (rng.next() % holders) as usize).to_string())
            .collect();
        let started = Instant::now();
        let r = client
            .get_holders(GetHoldersRequest {
                addresses,
                token: token.clone(),
                at_block: Some(at),
                ..Default::default()
            })
            .await?
            .into_inner();
        times.push(started.elapsed());
        anyhow::ensure!(r.holders.len() == LOOKUP_SIZE, "a short answer");
    }
    times.sort();
    out.push(PastFigures {
        name: format!("GetHolders lookup of {LOOKUP_SIZE} addresses 15 days back"),
        p50: percentile(&times, 0.5),
        max: *times.last().expect("runs"),
        count: times.len(),
    });
    Ok(out)
}
