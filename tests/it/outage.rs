//! A database away for longer than any retry budget (a failover, a maintenance window):
//! the following ingestor waits, says so (metric, readiness, one log line), and resumes
//! where it was; `--max-outage` is the one setting that makes it give up.

use std::process::Stdio;
use std::time::{Duration, Instant};

use rig::cluster::Cluster;
use tokio::process::Command;

use crate::ops::wait_health;
use crate::{send, wait_metric, world};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_following_ingestor_waits_out_a_database_outage_of_any_length() {
    let cluster = Cluster::start().await.expect("a private Postgres (initdb, pg_ctl)");
    let db = cluster.create_db("holders").await.unwrap();
    let mut w = world(crate::small(261)).await;
    let (metrics, health) = (crate::free_addr(), crate::free_addr());
    // A retry budget of two attempts 200 ms apart: the old ingestor gave up on the
    // database within a second of it going away.
    let mut follower = Command::new(rig::pair::ingestor_binary().unwrap())
        .args(["--rpc-url", &w.chain.url, "--database-url", &db])
        .args(["--token", &w.history.token.to_string()])
        .args(["--from", &w.history.start_block.to_string()])
        .args(["--poll-interval", "100ms", "--max-attempts", "2", "--max-backoff", "200ms"])
        .args(["--metrics-listen", &metrics.to_string(), "--health-listen", &health.to_string()])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = crate::read_stderr(&mut follower);
    wait_metric(metrics, "ingestor_indexed_block", |b| b >= w.history.end_block as f64).await;

    cluster.stop().await.unwrap();
    send(&mut w.chain, &w.history, 0, 3, 7).await;
    w.chain.mine(1).await.unwrap();
    wait_metric(metrics, "ingestor_outage_waits", |n| n >= 1.0).await;
    // Readiness says so too (2: NOT_SERVING), liveness does not.
    wait_health(health, "", 2, Duration::from_secs(10)).await;
    wait_health(health, "liveness", 1, Duration::from_secs(1)).await;
    let away = Instant::now();
    while away.elapsed() < Duration::from_secs(8) {
        assert!(follower.try_wait().unwrap().is_none(), "the ingestor gave up on the database");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    cluster.start_again().await.unwrap();
    let head = w.chain.head().await.unwrap();
    wait_metric(metrics, "ingestor_indexed_block", |b| b >= head as f64).await;
    wait_metric(metrics, "ingestor_outage_waits", |n| n == 0.0).await;
    wait_health(health, "", 1, Duration::from_secs(10)).await;
    w.assert_balances_in(&db, head).await;
    follower.start_kill().unwrap();
    let _ = follower.wait().await;
    let log = log.await.unwrap();
    let waiting = log.lines().filter(|l| l.contains("waiting for it to come back")).count();
    assert!(waiting >= 1, "the outage is logged: {log}");
    assert!(
        log.lines().filter(|l| l.contains("still unavailable")).count() <= 2 * waiting,
        "not a line per retry: {log}"
    );

    // With --max-outage, the setting says otherwise: it gives up, non-zero.
    let started = Instant::now();
    let mut bounded = Command::new(rig::pair::ingestor_binary().unwrap())
        .args(["--rpc-url", &w.chain.url, "--database-url", &db])
        .args(["--token", &w.history.token.to_string(), "--max-outage", "2s"])
        .args(rig::pair::LOCAL_PORTS)
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.stop().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), bounded.wait())
        .await
        .expect("--max-outage ends the wait")
        .unwrap();
    assert!(!status.success());
    assert!(started.elapsed() >= Duration::from_secs(2));
}
