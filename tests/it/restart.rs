//! Postgres restarted under the pair, on a server of the test's own: during a backfill
//! (`pg_ctl restart`) and while following (`pg_ctl stop`, then `start`). The ingestor
//! reconnects and takes its writer lock again by itself; the query-service's health is
//! NOT_SERVING while the database is down and SERVING after; nothing is lost or doubled.

use std::process::Stdio;
use std::time::{Duration, Instant};

use rig::cluster::Cluster;
use rig::proxy::{FaultProxy, Rules};
use tokio::process::Command;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::{send, world};

/// The checkpoint, read on a fresh connection (the server may have restarted since).
async fn checkpoint(url: &str) -> i64 {
    let Ok(c) = rig::db::connect(url).await else { return -1 };
    c.query_opt("SELECT indexed_block FROM tokens", &[])
        .await
        .ok()
        .flatten()
        .map_or(-1, |r| r.get(0))
}

async fn wait_checkpoint(url: &str, at_least: u64, within: Duration) {
    let started = Instant::now();
    while checkpoint(url).await < at_least as i64 {
        assert!(started.elapsed() < within, "checkpoint below {at_least} after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn health(addr: std::net::SocketAddr) -> i32 {
    let Ok(channel) =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await
    else {
        return -1;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest { service: String::new() })
        .await
        .map_or(-1, |r| r.into_inner().status)
}

async fn wait_health(addr: std::net::SocketAddr, want: i32, within: Duration) {
    let started = Instant::now();
    loop {
        let got = health(addr).await;
        if got == want {
            return;
        }
        assert!(started.elapsed() < within, "health {got}, not {want}, after {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarts_under_a_backfill_and_while_following() {
    let cluster = Cluster::start().await.expect("a private Postgres (initdb, pg_ctl)");
    let db = cluster.create_db("holders").await.unwrap();
    let spec = rig::history::Spec { days: 6, blocks_per_day: 20, ..crate::small(71) };
    let mut w = world(spec).await;
    let node = FaultProxy::start(
        &w.chain.url,
        Rules { latency: Duration::from_millis(20), ..Rules::default() },
    )
    .await
    .unwrap();
    let bin = rig::pair::ingestor_binary().unwrap();
    let (from, to) = (w.history.start_block.to_string(), w.history.end_block.to_string());
    let token = w.history.token.to_string();
    let common = [
        "--rpc-url",
        &node.url,
        "--database-url",
        &db,
        "--token",
        &token,
        "--from",
        &from,
        "--max-backoff",
        "500ms",
        "--poll-interval",
        "100ms",
    ];

    // A backfill, with `pg_ctl restart` in its middle.
    let backfill = Command::new(&bin)
        .args(common)
        .args(crate::TINY_BATCHES)
        .args(["--to", &to])
        .args(rig::pair::LOCAL_PORTS)
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_checkpoint(&db, w.history.start_block + 10, Duration::from_secs(30)).await;
    cluster.restart().await.unwrap();
    let restarted_at = checkpoint(&db).await;
    let status = tokio::time::timeout(Duration::from_secs(120), backfill.wait_with_output())
        .await
        .expect("the backfill finishes after the restart")
        .unwrap()
        .status;
    assert!(status.success(), "the backfill failed after the restart: {status}");
    assert!(restarted_at < w.history.end_block as i64, "the restart came after the backfill");
    w.assert_balances_in(&db, w.history.end_block).await;

    // Following, with the query-service: the server goes down, transfers happen, it
    // comes back.
    let mut follower = Command::new(&bin)
        .args(common)
        .args(crate::TINY_BATCHES)
        .args(rig::pair::LOCAL_PORTS)
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let settings = query_service::Settings {
        health_interval: Duration::from_millis(200),
        max_streams: 10,
        stream_buffer: 64,
        answer_cache: 16,
        ..Default::default()
    };
    let qs = rig::pair::QueryService::start_with(&db, settings).await.unwrap();
    wait_health(qs.addr, 1, Duration::from_secs(10)).await;

    cluster.stop().await.unwrap();
    wait_health(qs.addr, 2, Duration::from_secs(10)).await;
    let mut sent = 0;
    for i in 0..3 {
        send(&mut w.chain, &w.history, i, i + 4, 11).await;
        w.chain.mine(12).await.unwrap();
        sent += 1;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.start_again().await.unwrap();
    wait_health(qs.addr, 1, Duration::from_secs(15)).await;
    let head = w.chain.head().await.unwrap();
    wait_checkpoint(&db, head, Duration::from_secs(60)).await;
    assert!(follower.try_wait().unwrap().is_none(), "the following ingestor gave up");
    follower.start_kill().unwrap();

    w.assert_balances_in(&db, head).await;
    let c = rig::db::connect(&db).await.unwrap();
    let rows: i64 = c.query_one("SELECT count(*) FROM transfers", &[]).await.unwrap().get(0);
    assert_eq!(rows as u64, w.history.transfers + sent, "every transfer stored once");
    let mut client = qs.client().await.unwrap();
    let top = client
        .get_top_holders(proto::pb::GetTopHoldersRequest { limit: 3, ..Default::default() })
        .await
        .expect("answers after the restart");
    assert_eq!(top.into_inner().holders.len(), 3);
}
