//! What reading from a streaming replica costs, measured: a private primary and a hot
//! standby (`pg_basebackup -R`), the ingestor following Anvil into the primary, one
//! query-service reading the primary and one reading the standby with its feed on the
//! primary. For `--transfers` transfers, each mined in a block of its own, the time from
//! the block being mined to its event on a stream through each; then replay paused for
//! `--pause`, how long until the replica's readiness turns NOT_SERVING (bound 1 s) and,
//! after resuming, until the held-back events arrive and it is SERVING again.
//! `cargo run --release -p rig --bin replica-lag`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use clap::Parser;
use proto::pb::StreamTransfersRequest;
use rig::chain::{Chain, TestToken};
use rig::cluster::Cluster;
use rig::pair::QueryService;
use tonic::Streaming;

/// Measures stream latency through a replica and how readiness follows its lag.
#[derive(Debug, Parser)]
struct Args {
    /// Transfers to time.
    #[arg(long, default_value_t = 50)]
    transfers: usize,
    /// How long replay stays paused.
    #[arg(long, default_value_t = 3)]
    pause_seconds: u64,
}

async fn indexed(url: &str) -> u64 {
    let Ok(c) = rig::db::connect(url).await else { return 0 };
    let row = c.query_opt("SELECT indexed_block FROM tokens", &[]).await.ok().flatten();
    row.map_or(0, |r| r.get::<_, i64>(0).max(0) as u64)
}

async fn readiness(qs: &QueryService) -> i32 {
    rig::load::readiness(&format!("http://{}", qs.addr)).await
}

/// Time until `qs`'s readiness is `want`.
async fn until_readiness(qs: &QueryService, want: i32) -> Duration {
    let started = Instant::now();
    while readiness(qs).await != want && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

async fn next_block(stream: &mut Streaming<proto::pb::TransferEvent>) -> anyhow::Result<u64> {
    let event = tokio::time::timeout(Duration::from_secs(30), stream.message()).await??;
    Ok(event.and_then(|e| e.transfer).map_or(0, |t| t.block_number))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn quantile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

#[allow(clippy::print_stdout)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let genesis =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() - 30 * 86_400;
    let anvil = rig::anvil::Anvil::start(genesis).await?;
    let mut chain = Chain::connect(&anvil.url).await?;
    let spec = rig::history::Spec { extreme_amounts: false, ..rig::history::Spec::test() };
    let h = rig::history::build(&mut chain, spec).await?;
    let primary = Cluster::start().await?;
    let primary_db = primary.create_db("holders").await?;
    let standby = primary.standby().await?;
    let standby_db = rig::db::url_with_db(&standby.url, "holders");
    let _ingestor = rig::pair::follow_binary(
        &anvil.url,
        &primary_db,
        h.token,
        h.start_block,
        2,
        Stdio::null(),
    )?;
    while indexed(&standby_db).await < h.end_block {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let on_primary = QueryService::start(&primary_db).await?;
    let settings = query_service::Settings {
        feed_database_url: Some(primary_db.clone()),
        max_replica_lag: Duration::from_secs(1),
        ..Default::default()
    };
    let on_replica = QueryService::start_with(&standby_db, settings).await?;
    let from = StreamTransfersRequest { from_block: Some(h.end_block + 1), ..Default::default() };
    let mut a = on_primary.client().await?.stream_transfers(from.clone()).await?.into_inner();
    let mut b = on_replica.client().await?.stream_transfers(from).await?.into_inner();
    let senders: Vec<Address> = h.addresses.iter().take(6).copied().collect();

    // Latency of each transfer through each stream.
    let (mut via_primary, mut via_replica) = (Vec::new(), Vec::new());
    for i in 0..args.transfers {
        let (from, to) = (senders[i % senders.len()], h.addresses[(i * 7 + 1) % h.addresses.len()]);
        chain
            .call_from(from, h.token, TestToken::transferCall { to, value: U256::from(1) })
            .await?;
        let block = chain.mine(12).await?;
        let mined = Instant::now();
        let (ta, tb) = tokio::join!(
            async {
                let got = next_block(&mut a).await;
                (got, mined.elapsed())
            },
            async {
                let got = next_block(&mut b).await;
                (got, mined.elapsed())
            }
        );
        anyhow::ensure!(ta.0? == block && tb.0? == block, "a stream skipped block {block}");
        via_primary.push(ta.1);
        via_replica.push(tb.1);
    }

    // Replay paused: readiness, then catch-up.
    standby.pause_replay().await?;
    let paused = Instant::now();
    let mut held = Vec::new();
    for (i, from) in senders.iter().copied().take(3).enumerate() {
        let to = h.addresses[i + 2];
        chain
            .call_from(from, h.token, TestToken::transferCall { to, value: U256::from(1) })
            .await?;
        held.push(chain.mine(12).await?);
    }
    until_readiness(&on_replica, 2).await;
    let not_serving_after = paused.elapsed();
    tokio::time::sleep(Duration::from_secs(args.pause_seconds).saturating_sub(paused.elapsed()))
        .await;
    standby.resume_replay().await?;
    let resumed = Instant::now();
    for want in &held {
        anyhow::ensure!(next_block(&mut b).await? == *want, "the replica's stream skipped {want}");
    }
    let caught_up = resumed.elapsed();
    let serving_again = until_readiness(&on_replica, 1).await + caught_up;
    for want in &held {
        anyhow::ensure!(next_block(&mut a).await? == *want, "the primary's stream skipped {want}");
    }

    println!("| stream latency, mined to received ({} transfers) | p50 | p99 |", args.transfers);
    println!("| --- | --- | --- |");
    for (name, v) in
        [("reads on the primary", &mut via_primary), ("reads on the replica", &mut via_replica)]
    {
        println!("| {name} | {:.0} ms | {:.0} ms |", ms(quantile(v, 0.5)), ms(quantile(v, 0.99)));
    }
    println!();
    println!(
        "replay paused: readiness NOT_SERVING {:.1} s after the pause (bound 1 s after the first commit it lacks); \
         resumed after {} s: the 3 held-back transfers arrived {:.0} ms later, in order; SERVING again {:.0} ms after resuming",
        not_serving_after.as_secs_f64(),
        args.pause_seconds,
        ms(caught_up),
        ms(serving_again)
    );
    Ok(())
}
