//! SIGTERM: the ingestor stops after the batch in flight (the store is whole at its
//! checkpoint and a restart carries on), the query-service ends open streams with
//! UNAVAILABLE and exits, and a program that cannot stop in time exits at the end of
//! --shutdown-grace.

use std::process::Stdio;
use std::time::{Duration, Instant};

use proto::pb::StreamTransfersRequest;
use rig::proxy::{FaultProxy, Rules};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use crate::world;

fn sigterm(child: &Child) {
    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: kill(2) on a child process this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

/// Waits for `child` to exit within `within`; its exit code and stderr.
async fn exit_within(mut child: Child, within: Duration) -> (Option<i32>, String) {
    let status = tokio::time::timeout(within, child.wait())
        .await
        .unwrap_or_else(|_| panic!("still running {within:?} after SIGTERM"))
        .unwrap();
    let mut log = String::new();
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut log).await.unwrap();
    }
    (status.code(), log)
}

/// Sends SIGTERM to `child` two seconds from now; its exit code, stderr, and how long it
/// took to exit after the signal.
async fn sigterm_after_2s(child: Child, within: Duration) -> (Option<i32>, String, Duration) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let signalled = Instant::now();
    sigterm(&child);
    let (code, log) = exit_within(child, within).await;
    (code, log, signalled.elapsed())
}

async fn checkpoint(c: &tokio_postgres::Client) -> i64 {
    // Before the migration there is no table: nothing indexed.
    c.query_opt("SELECT indexed_block FROM tokens", &[])
        .await
        .ok()
        .flatten()
        .map_or(-1, |r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_ingestor_between_batches() {
    let spec = rig::history::Spec { days: 6, blocks_per_day: 20, ..crate::small(61) };
    let w = world(spec).await;
    let rules = Rules { latency: Duration::from_millis(20), ..Rules::default() };
    let node = FaultProxy::start(&w.chain.url, rules).await.unwrap();
    let mut args = w.tiny_backfill_args(&node.url);
    args.extend(["--shutdown-grace".to_string(), "10s".to_string()]);
    let bin = rig::pair::ingestor_binary().unwrap();
    let mut child =
        Command::new(&bin).args(&args).stderr(Stdio::piped()).kill_on_drop(true).spawn().unwrap();
    let c = w.db.client().await.unwrap();
    let started = Instant::now();
    while checkpoint(&c).await < w.history.start_block as i64 + 10 {
        if started.elapsed() > Duration::from_secs(30) || child.try_wait().unwrap().is_some() {
            child.start_kill().unwrap();
            let (_, log) = exit_within(child, Duration::from_secs(5)).await;
            panic!("no progress:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sigterm(&child);
    let (code, log) = exit_within(child, Duration::from_secs(5)).await;
    // A range cut short is not indexed: non-zero, saying where it stopped.
    assert_eq!(code, Some(1), "a --to range stopped by a signal exits 1:\n{log}");
    assert!(log.contains("shutdown requested"), "{log}");
    assert!(log.contains("stopped by a signal with block"), "{log}");
    let stopped = checkpoint(&c).await;
    assert!(stopped < w.history.end_block as i64, "it stopped before the end ({stopped})");
    // Whole at its checkpoint: counts agree and balances are the chain's at that block.
    let row = c
        .query_one("SELECT (SELECT count(*) FROM transfers), transfer_count FROM tokens", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), row.get::<_, i64>(1));
    w.assert_balances_at(stopped as u64).await;

    // A restart carries on to the end.
    let status = Command::new(&bin).args(&args).stderr(Stdio::null()).status().await.unwrap();
    assert!(status.success());
    w.assert_balances_at(w.history.end_block).await;
    let rows: i64 = c.query_one("SELECT count(*) FROM transfers", &[]).await.unwrap().get(0);
    assert_eq!(rows as u64, w.history.transfers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_ingestor_exits_at_the_end_of_its_grace() {
    let w = world(crate::small(62)).await;
    // Every answer takes a minute: the ingestor is stuck in its first call.
    let rules = Rules { latency: Duration::from_secs(60), ..Rules::default() };
    let node = FaultProxy::start(&w.chain.url, rules).await.unwrap();
    let bin = rig::pair::ingestor_binary().unwrap();
    let child = Command::new(&bin)
        .args(["--rpc-url", &node.url, "--database-url", &w.db.url])
        .args(["--rpc-timeout", "120s", "--shutdown-grace", "1s"])
        .args(rig::pair::LOCAL_PORTS)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (code, log, took) = sigterm_after_2s(child, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(900), "it waited for its grace");
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("not stopped within --shutdown-grace"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_with_unavailable_and_the_query_service_exits() {
    let w = world(crate::small(63)).await;
    w.ingest_all().await;
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let bin = rig::pair::ingestor_binary().unwrap().with_file_name("query-service");
    let child = Command::new(bin)
        .args(["--database-url", &w.db.url, "--listen", &listen.to_string()])
        .args(["--metrics-listen", "127.0.0.1:0", "--shutdown-grace", "5s"])
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut client = rig::pair::wait_for_client(&format!("http://{listen}")).await.unwrap();
    let from_start =
        StreamTransfersRequest { from_block: Some(w.history.start_block), ..Default::default() };
    let mut stream = client.stream_transfers(from_start).await.unwrap().into_inner();
    // The replay of the stored history comes first.
    for _ in 0..w.history.transfers {
        stream.message().await.unwrap().expect("a stored transfer");
    }
    sigterm(&child);
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the stream ends at shutdown")
        .expect_err("with a status");
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    assert!(ended.message().contains("shutting down"), "{}", ended.message());
    let (code, log) = exit_within(child, Duration::from_secs(6)).await;
    assert_eq!(code, Some(0), "{log}");
}

/// SIGTERM while the ingestor waits for a database that is away, at start-up: nothing is
/// in flight, so it stops at once (exit 0), not at the end of its grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_waiting_for_the_database_stops_at_once() {
    let bin = rig::pair::ingestor_binary().unwrap();
    let child = Command::new(&bin)
        .args(["--rpc-url", "http://127.0.0.1:1", "--database-url", "postgres://u@127.0.0.1:1/db"])
        .args(["--shutdown-grace", "30s"])
        .args(rig::pair::LOCAL_PORTS)
        .env_remove("DATABASE_URL")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (code, log, took) = sigterm_after_2s(child, Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(3), "it waited for its grace");
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("waiting for it to come back"), "{log}");
}
