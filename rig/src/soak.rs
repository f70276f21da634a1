//! The soak: the whole pair under the mixed load of [`crate::load`] while the ingestor
//! follows a moving Anvil chain, with a kill -9 of the ingestor at a third of the run and
//! a Postgres restart at two thirds. Afterwards every holder must equal `balanceOf`, every
//! stream must have seen every transfer once and in order (across its resumes), and the
//! cheap calls' p99 must be back within 10 s of each fault.
//!
//! Runs on a private Postgres server ([`crate::cluster`]) so that restarting it touches
//! nothing else; `cargo run --release -p rig --bin soak` is the documented 10-minute run,
//! `tests/it/soak.rs` a short one.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use anyhow::Context;
use tokio::process::{Child, Command};
use tonic::Code;

use crate::anvil::Anvil;
use crate::chain::{Chain, TestToken};
use crate::history::{self, History, Spec};
use crate::load::{self, LoadReport, LoadSpec};

/// The soak's shape.
#[derive(Debug, Clone)]
pub struct SoakSpec {
    /// How long the load runs.
    pub duration: Duration,
    /// Streams held open.
    pub streams: usize,
    /// Cheap calls a second.
    pub cheap_per_sec: f64,
    /// Expensive calls a second.
    pub expensive_per_sec: f64,
    /// Transfers the chain makes a second (a block each).
    pub transfers_per_sec: f64,
    /// The cheap p99 counts as recovered at twice its value before the faults, or at this
    /// when that is lower (a test sharing the machine with others needs more room than
    /// the documented run on a quiet one).
    pub p99_floor: Duration,
}

/// What the soak saw, and what failed its checks (empty when it passed).
#[derive(Debug)]
pub struct SoakReport {
    /// The load's samples.
    pub load: LoadReport,
    /// Each fault and when it came, since the load began.
    pub faults: Vec<(&'static str, Duration)>,
    /// Transfers made during the load.
    pub transfers: u64,
    /// Holders checked against `balanceOf` at the end.
    pub holders_checked: usize,
    /// Cheap calls' p99 before the first fault, and in the 5 s from 10 s after each fault.
    pub p99: Vec<(&'static str, Option<Duration>)>,
    /// The checks that failed.
    pub failures: Vec<String>,
}

/// The ingestor binary, following `rpc_url` into `db` from `from`.
fn ingestor(rpc_url: &str, db: &str, token: Address, from: u64) -> anyhow::Result<Child> {
    crate::pair::follow_binary(rpc_url, db, token, from, 4, Stdio::null())
}

/// The block the store has indexed, if it answers.
async fn indexed(db: &str) -> Option<u64> {
    let c = crate::db::connect(db).await.ok()?;
    let row = c.query_opt("SELECT indexed_block FROM tokens", &[]).await.ok()??;
    Some(row.get::<_, i64>(0).max(0) as u64)
}

async fn wait_indexed(db: &str, block: u64, within: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    while indexed(db).await.is_none_or(|b| b < block) {
        anyhow::ensure!(started.elapsed() < within, "block {block} not indexed within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Runs the soak.
pub async fn run(spec: SoakSpec) -> anyhow::Result<SoakReport> {
    let cluster = crate::cluster::Cluster::start().await?;
    let db = cluster.create_db("soak").await?;
    let genesis =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() - 30 * 86_400;
    let anvil = Anvil::start(genesis).await?;
    let mut chain = Chain::connect(&anvil.url).await?;
    let h = history::build(&mut chain, Spec { extreme_amounts: false, ..Spec::test() }).await?;
    let mut ingest = ingestor(&anvil.url, &db, h.token, h.start_block)?;
    wait_indexed(&db, h.end_block, Duration::from_secs(120)).await?;

    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let _query = Command::new(crate::pair::ingestor_binary()?.with_file_name("query-service"))
        .args(["--database-url", &db, "--listen", &listen.to_string()])
        .args(["--metrics-listen", "127.0.0.1:0", "--health-interval", "200ms"])
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the query-service")?;
    crate::pair::wait_for_client(&format!("http://{listen}")).await?;

    // The chain moves: a transfer a block, from the history's richest to anyone.
    let last_mined = Arc::new(AtomicU64::new(h.end_block));
    let mover = tokio::spawn(move_chain(
        chain,
        h.clone(),
        db.clone(),
        spec.transfers_per_sec,
        spec.duration.saturating_sub(Duration::from_secs(1)),
        last_mined.clone(),
    ));

    // The faults, at a third and two thirds of the run.
    let load_started = Instant::now();
    let faults = {
        let (db, rpc, token, from) = (db.clone(), anvil.url.clone(), h.token, h.start_block);
        let third = spec.duration / 3;
        tokio::spawn(async move {
            let mut faults = Vec::new();
            tokio::time::sleep(third).await;
            faults.push(("kill -9 of the ingestor", load_started.elapsed()));
            ingest.start_kill()?;
            ingest.wait().await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            ingest = ingestor(&rpc, &db, token, from)?;
            tokio::time::sleep(third.saturating_sub(Duration::from_secs(1))).await;
            faults.push(("Postgres restart", load_started.elapsed()));
            cluster.restart().await?;
            anyhow::Ok((faults, ingest, cluster))
        })
    };
    let until = last_mined.clone();
    let load = load::run(
        LoadSpec {
            endpoint: format!("http://{listen}"),
            key: None,
            cheap_per_sec: spec.cheap_per_sec,
            expensive_per_sec: spec.expensive_per_sec,
            past_blocks: (h.start_block, h.end_block),
            expensive_min_balance: String::new(),
            streams: spec.streams,
            streams_from: h.end_block,
            duration: spec.duration,
        },
        move || until.load(Ordering::SeqCst),
    )
    .await?;
    let transfers = mover.await??;
    let (faults, _ingest, _cluster) = faults.await??;
    let last = last_mined.load(Ordering::SeqCst);
    wait_indexed(&db, last, Duration::from_secs(60)).await?;

    let mut failures = Vec::new();
    // Every holder equals balanceOf at the last block.
    let client = crate::db::connect(&db).await?;
    let stored: std::collections::HashMap<Address, U256> = client
        .query("SELECT address, balance::text FROM balances WHERE balance > 0", &[])
        .await?
        .iter()
        .map(|r| {
            let a: Vec<u8> = r.get(0);
            (Address::from_slice(&a), r.get::<_, String>(1).parse().unwrap_or(U256::MAX))
        })
        .collect();
    let mut addresses: Vec<Address> = h.addresses.clone();
    addresses.extend(stored.keys().copied());
    addresses.sort();
    addresses.dedup();
    let chain = Chain::connect(&anvil.url).await?;
    let on_chain = chain.balances_at(h.token, &addresses, last).await?;
    for (a, want) in addresses.iter().zip(&on_chain) {
        let got = stored.get(a).copied().unwrap_or_default();
        if got != *want {
            failures.push(format!("{a}: stored {got}, balanceOf {want}"));
        }
    }
    // Every stream saw every transfer after the history once, in order.
    let expected: Vec<(u64, u32, bool)> = client
        .query(
            "SELECT block_number, log_index FROM transfers WHERE block_number > $1
             ORDER BY block_number, log_index",
            &[&(h.end_block as i64)],
        )
        .await?
        .iter()
        .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i32>(1) as u32, false))
        .collect();
    if expected.len() as u64 != transfers {
        failures.push(format!("{transfers} transfers made, {} stored", expected.len()));
    }
    for (i, got) in load.streams.iter().enumerate() {
        if *got != expected {
            let first_diff = got.iter().zip(&expected).position(|(a, b)| a != b);
            failures.push(format!(
                "stream {i}: {} events, {} expected, first difference at {first_diff:?}",
                got.len(),
                expected.len()
            ));
            if failures.len() > 20 {
                break;
            }
        }
    }
    // The cheap calls' p99 is back within 10 s of each fault.
    let first_fault = faults.first().map_or(spec.duration, |f| f.1);
    let before = load::quantile(&load.cheap, Duration::from_secs(3), first_fault, 0.99);
    let bound = before.unwrap_or_default().mul_f64(2.0).max(spec.p99_floor);
    let mut p99 = vec![("before the faults", before)];
    for (name, at) in &faults {
        let (from, to) = (*at + Duration::from_secs(10), *at + Duration::from_secs(15));
        let after = load::quantile(&load.cheap, from, to, 0.99);
        p99.push((name, after));
        let failed = load.cheap.iter().filter(|s| s.at >= from && s.at < to && s.code != Code::Ok);
        let failed = failed.count();
        match after {
            Some(p) if p <= bound && failed == 0 => {}
            _ => failures.push(format!(
                "10-15 s after the {name}: cheap p99 {after:?} (bound {bound:?}), {failed} failed"
            )),
        }
    }
    Ok(SoakReport { load, faults, transfers, holders_checked: addresses.len(), p99, failures })
}

/// Makes a transfer a block, `per_sec` a second, for `duration`; the last block mined goes
/// to `last_mined`. Returns the transfers made.
async fn move_chain(
    mut chain: Chain,
    h: History,
    db: String,
    per_sec: f64,
    duration: Duration,
    last_mined: Arc<AtomicU64>,
) -> anyhow::Result<u64> {
    // The richest holders at the start send; a few units each, so they never run dry.
    let c = crate::db::connect(&db).await?;
    let senders: Vec<Address> = c
        .query("SELECT address FROM balances ORDER BY balance DESC LIMIT 10", &[])
        .await?
        .iter()
        .map(|r| Address::from_slice(&r.get::<_, Vec<u8>>(0)))
        .collect();
    drop(c);
    let started = Instant::now();
    let every = Duration::from_secs_f64(1.0 / per_sec.max(0.01));
    let mut made = 0u64;
    while started.elapsed() < duration {
        let from = senders[made as usize % senders.len()];
        let to = h.addresses[(made as usize * 31 + 7) % h.addresses.len()];
        let value = U256::from(1 + made % 997);
        chain.call_from(from, h.token, TestToken::transferCall { to, value }).await?;
        let block = chain.mine(12).await?;
        last_mined.store(block, Ordering::SeqCst);
        made += 1;
        tokio::time::sleep(every).await;
    }
    Ok(made)
}

impl SoakReport {
    /// A few lines for people.
    pub fn summary(&self) -> String {
        let l = &self.load;
        let events: usize = l.streams.iter().map(Vec::len).sum();
        let mut out = format!(
            "cheap calls {} ({} ok), expensive {} ({} ok, {} refused), {} streams received {} events ({} resumes), {} transfers, {} holders checked\n",
            l.cheap.len(),
            load::count(&l.cheap, Code::Ok),
            l.expensive.len(),
            load::count(&l.expensive, Code::Ok),
            load::count(&l.expensive, Code::ResourceExhausted),
            l.streams.len(),
            events,
            l.resumes,
            self.transfers,
            self.holders_checked,
        );
        for (name, at) in &self.faults {
            out += &format!("{name} at {:.1} s\n", at.as_secs_f64());
        }
        for (name, p) in &self.p99 {
            out += &format!("cheap p99 {name}: {p:?}\n");
        }
        let not_serving = l.health.iter().filter(|h| h.1 != 1).count();
        out += &format!("health probes {}, not SERVING {}\n", l.health.len(), not_serving);
        if self.failures.is_empty() {
            out += "every check passed\n";
        }
        for f in &self.failures {
            out += &format!("FAILED: {f}\n");
        }
        out
    }
}
