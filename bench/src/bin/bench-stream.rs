//! Benchmark of StreamTransfers fan-out: commit-to-client latency with many concurrent
//! subscribers, and the query-service's memory with them. Runs the real `ingestor` and
//! `query-service` binaries (from the same target folder) against Anvil and the
//! PostgreSQL at DATABASE_URL. `scripts/bench-stream.sh` builds and runs it.
//!
//! The commit time of an event is when its commit's NOTIFY reaches a separate LISTEN
//! connection of the benchmark (Postgres delivers NOTIFY at commit); its latency is when a
//! subscriber receives it, minus that.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use proto::pb::StreamTransfersRequest;
use query_service::input::Cursor;
use rig::anvil::Anvil;
use rig::chain::{Chain, TestToken};
use rig::history::{self, Spec};
use tokio::process::Command;
use tokio_postgres::AsyncMessage;

const DB: &str = "holders_bench_stream";

#[allow(clippy::print_stdout)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let arg = |name: &str, default: usize| -> usize {
        let args: Vec<String> = std::env::args().collect();
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let subscribers = arg("--subscribers", 1000);
    let blocks = arg("--blocks", 40);
    let per_block = arg("--transfers-per-block", 5);
    let bin = std::env::current_exe()?.parent().context("binary folder")?.to_path_buf();

    let genesis =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() - 86_400;
    let anvil = Anvil::start(genesis).await?;
    let mut chain = Chain::connect(&anvil.url).await?;
    let spec = Spec {
        holders: 50,
        days: 1,
        blocks_per_day: 2,
        transfers_per_block: 5,
        spray_width: 5,
        extreme_amounts: false,
        seed: 99,
    };
    let h = history::build(&mut chain, spec).await?;

    let admin = rig::db::admin_url();
    let client = rig::db::connect(&admin).await?;
    client.execute(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"), &[]).await?;
    client.execute(&format!("CREATE DATABASE {DB}"), &[]).await?;
    let db_url = rig::db::url_with_db(&admin, DB);

    let mut ingestor = Command::new(bin.join("ingestor"))
        .args(rig::pair::LOCAL_PORTS)
        .args(["--rpc-url", &anvil.url, "--database-url", &db_url, "--token", &h.token.to_string()])
        .args(["--from", &h.start_block.to_string(), "--poll-interval", "20ms"])
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    let mut qs = Command::new(bin.join("query-service"))
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args([
            "--database-url",
            &db_url,
            "--listen",
            &addr.to_string(),
            "--max-streams",
            &(subscribers + 10).to_string(),
        ])
        .args(["--database-pool-size", "8"])
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let qs_pid = qs.id().context("query-service pid")?;

    // Wait for the history to be indexed.
    let db = rig::db::connect(&db_url).await?;
    let started = Instant::now();
    loop {
        let row = db.query_opt("SELECT indexed_block FROM tokens", &[]).await.ok().flatten();
        if row.is_some_and(|r| r.get::<_, i64>(0) as u64 >= h.end_block) {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "the history was not indexed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Commit times, from the ingestor's NOTIFY.
    let commits: Arc<Mutex<BTreeMap<i64, Instant>>> = Arc::default();
    let (listen, mut connection) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls).await?;
    let record = commits.clone();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m
                && let Some(seq) =
                    n.payload().rsplit(':').next().and_then(|s| s.parse::<i64>().ok())
            {
                record.lock().expect("commits").insert(seq, Instant::now());
            }
        }
    });
    listen.batch_execute("LISTEN holders_transfers").await?;
    // Cursors are signed with the store's key (migration V11); the bench reads their
    // sequence numbers with it.
    let key: Vec<u8> =
        listen.query_one("SELECT key FROM token_mac_key WHERE id = 1", &[]).await?.get(0);
    let seal = query_service::input::Seal::new(&key);

    // Subscribers, live only, over 10 connections.
    let endpoint = format!("http://{addr}");
    let mut channels = Vec::new();
    for _ in 0..10 {
        channels.push(rig::pair::wait_for_client(&endpoint).await?);
    }
    let expected = blocks * per_block;
    let received: Arc<Mutex<Vec<(i64, Instant)>>> =
        Arc::new(Mutex::new(Vec::with_capacity(subscribers * expected)));
    let mut tasks = Vec::new();
    for i in 0..subscribers {
        let mut client = channels[i % channels.len()].clone();
        let mut stream =
            client.stream_transfers(StreamTransfersRequest::default()).await?.into_inner();
        let received = received.clone();
        let (token, seal) = (h.token, seal.clone());
        tasks.push(tokio::spawn(async move {
            let mut got = 0;
            while got < expected {
                let Ok(Ok(Some(e))) =
                    tokio::time::timeout(Duration::from_secs(30), stream.message()).await
                else {
                    break;
                };
                let at = Instant::now();
                let seq = Cursor::decode(&e.cursor, 31337, token, &seal).map_or(-1, |c| c.seq);
                received.lock().expect("received").push((seq, at));
                got += 1;
            }
            got
        }));
    }
    let rss_idle = rss_kib(qs_pid, "VmRSS")?;

    // Traffic: `blocks` blocks of `per_block` transfers, 100 ms apart.
    for b in 0..blocks {
        for t in 0..per_block {
            let (from, to) = (
                h.addresses[(b + t) % h.addresses.len()],
                h.addresses[(b + t + 7) % h.addresses.len()],
            );
            chain
                .call_from(
                    from,
                    h.token,
                    TestToken::transferCall { to, value: alloy_primitives::U256::from(1) },
                )
                .await?;
        }
        chain.mine(12).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut complete = 0;
    for t in tasks {
        if t.await? == expected {
            complete += 1;
        }
    }
    let peak = rss_kib(qs_pid, "VmHWM")?;

    // Latency of each delivery: receive time minus the time of the commit that holds it
    // (the first NOTIFY whose sequence number reaches it).
    let commits = commits.lock().expect("commits").clone();
    let mut latencies: Vec<f64> = received
        .lock()
        .expect("received")
        .iter()
        .filter_map(|(seq, at)| {
            let (_, committed) = commits.range(*seq..).next()?;
            Some(at.saturating_duration_since(*committed).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!("subscribers: {subscribers} ({complete} received all {expected} transfers)");
    println!("deliveries measured: {}", latencies.len());
    println!(
        "commit-to-client latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    println!(
        "query-service memory: {:.1} MiB with the streams open, peak {:.1} MiB",
        rss_idle / 1024.0,
        peak / 1024.0
    );
    println!(
        "| {subscribers} | {expected} | {:.1} ms | {:.1} ms | {:.1} MiB |",
        pct(0.5),
        pct(0.99),
        peak / 1024.0
    );

    let _ = qs.start_kill();
    let _ = ingestor.start_kill();
    let _ = qs.wait().await;
    let _ = ingestor.wait().await;
    client.execute(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"), &[]).await?;
    anyhow::ensure!(
        complete == subscribers,
        "{} subscribers missed transfers",
        subscribers - complete
    );
    Ok(())
}

/// A memory figure of a process from /proc, in KiB.
fn rss_kib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line =
        status.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field}"))?;
    Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
}
