//! A node that fails in every way a hosted provider does (rate limits with and without
//! Retry-After, 5xx, resets, stalls, truncated JSON, error objects, a head that goes
//! back), a request quota, and a list of nodes to fail over to: each run ends with every
//! transfer stored once and every balance equal to balanceOf.

use std::time::{Duration, Instant};

use rig::proxy::{Fault, FaultProxy, Rules};
use tokio_util::sync::CancellationToken;

use crate::{send, small, wait_indexed, world};

/// Flags that make a backfill take many small requests, so that every fault comes round,
/// and give up on a stalled request soon.
const MANY_REQUESTS: [&str; 10] = [
    "--initial-span",
    "1",
    "--max-span",
    "3",
    "--batch-transfers",
    "20",
    "--rpc-timeout",
    "1s",
    "--max-backoff",
    "400ms",
];

#[allow(clippy::print_stdout)] // figures scripts/reliability.sh prints for docs/reliability.md
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_faults_of_every_kind_lose_and_repeat_nothing() {
    let mut w = world(rig::history::Spec { days: 8, blocks_per_day: 10, ..small(31) }).await;
    let rules =
        Rules { max_blocks: 2, fault_every: 3, stall: Duration::from_secs(2), ..Rules::default() };
    let proxy = FaultProxy::start(&w.chain.url, rules).await.unwrap();
    let (from, to) = (w.history.start_block.to_string(), w.history.end_block.to_string());
    let token = w.history.token.to_string();
    let mut flags = vec!["--token", &token, "--from", &from, "--to", &to];
    flags.extend(MANY_REQUESTS);
    rig::pair::ingest(&proxy.url, &w.db.url, &flags).await.expect("backfill through faults");
    w.assert_balances_at(w.history.end_block).await;

    // Following through the same proxy: new transfers, a head that sometimes goes back.
    let stop = CancellationToken::new();
    let mut follow: Vec<&str> = vec!["--poll-interval", "100ms"];
    follow.extend(MANY_REQUESTS);
    let following = w.follow_via(&proxy.url, &follow, stop.clone());
    let mut sent = 0;
    for i in 0..6 {
        send(&mut w.chain, &w.history, i, i + 5, 7).await;
        w.chain.mine(12).await.unwrap();
        sent += 1;
    }
    let head = w.chain.head().await.unwrap();
    wait_indexed(&w.db, head).await;
    stop.cancel();
    following.await.unwrap().expect("following through faults");

    let injected = proxy.injected();
    for (fault, n) in &injected {
        assert!(*n > 0, "{} was never injected: {injected:?}", fault.name());
    }
    assert!(proxy.refusals() > 0, "no span was refused");
    let c = w.db.client().await.unwrap();
    let stored: i64 = c.query_one("SELECT count(*) FROM transfers", &[]).await.unwrap().get(0);
    assert_eq!(stored as u64, w.history.transfers + sent, "every transfer stored once");
    w.assert_balances_at(head).await;
    w.assert_seq_in_chain_order().await;
    // A head that went back was waited out, not taken for a reorg.
    let removed: i64 =
        c.query_one("SELECT count(*) FROM removed_transfers", &[]).await.unwrap().get(0);
    assert_eq!(removed, 0, "a lagging node caused a rollback");
    let kinds: Vec<String> = injected.iter().map(|(f, n)| format!("{}: {n}", f.name())).collect();
    println!(
        "figures: rpc faults injected {} ({}; spans refused in providers' words: {}), transfers lost 0, stored twice 0",
        injected.iter().map(|(_, n)| n).sum::<u64>(),
        kinds.join(", "),
        proxy.refusals()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_keeps_calls_within_the_quota() {
    let w = world(rig::history::Spec { days: 6, blocks_per_day: 10, ..small(32) }).await;
    let proxy =
        FaultProxy::start(&w.chain.url, Rules { max_blocks: 2, ..Rules::default() }).await.unwrap();
    let (from, to) = (w.history.start_block.to_string(), w.history.end_block.to_string());
    let token = w.history.token.to_string();
    let mut flags = vec!["--token", &token, "--from", &from, "--to", &to];
    flags.extend(MANY_REQUESTS);
    flags.extend(["--max-requests-per-second", "20", "--concurrency", "8"]);
    let started = Instant::now();
    rig::pair::ingest(&proxy.url, &w.db.url, &flags).await.expect("backfill");
    let elapsed = started.elapsed().as_secs_f64();
    let calls = proxy.calls();
    assert!(calls > 40, "too few calls ({calls}) to test a quota of 20/s");
    // No second holds more than the quota (one call of slack for arrival jitter), so n
    // calls take at least n / 20 - 1 seconds.
    let busiest = proxy.busiest_second();
    assert!(busiest <= 20 + 1, "{busiest} calls within one second");
    w.assert_transfer_count(w.history.transfers).await;
    assert!(
        elapsed >= calls as f64 / 20.0 - 1.0,
        "{calls} calls in {elapsed:.2} s: above 20 calls/s"
    );
    w.assert_balances_at(w.history.end_block).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_rpc_url_takes_over_when_one_fails() {
    let mut w = world(small(33)).await;
    // The first node answers nothing (a closed port); the second fails every other
    // request; the third is healthy.
    let flaky = FaultProxy::start(&w.chain.url, Rules { fault_every: 2, ..Rules::default() })
        .await
        .unwrap();
    let healthy = FaultProxy::start(&w.chain.url, Rules::default()).await.unwrap();
    let dead = "http://127.0.0.1:9";
    let urls = format!("{dead},{},{}", flaky.url, healthy.url);
    let (from, to) = (w.history.start_block.to_string(), w.history.end_block.to_string());
    let token = w.history.token.to_string();
    rig::pair::ingest(
        &urls,
        &w.db.url,
        &["--token", &token, "--from", &from, "--to", &to, "--max-backoff", "200ms"],
    )
    .await
    .expect("backfill over three nodes");
    assert!(flaky.calls() > 0, "the second node was never tried");
    assert!(healthy.calls() > 0, "the third node never took over");
    w.assert_balances_at(w.history.end_block).await;
    w.assert_transfer_count(w.history.transfers).await;

    // Following, the healthy node serves, and new transfers come in through it.
    let stop = CancellationToken::new();
    let following = w.follow_via(&urls, &["--poll-interval", "100ms"], stop.clone());
    send(&mut w.chain, &w.history, 1, 2, 5).await;
    w.chain.mine(12).await.unwrap();
    let head = w.chain.head().await.unwrap();
    wait_indexed(&w.db, head).await;
    stop.cancel();
    following.await.unwrap().unwrap();
    w.assert_balances_at(head).await;
    w.assert_transfer_count(w.history.transfers + 1).await;
}

/// A node whose head goes back below the checkpoint, and that does not know the blocks
/// above its head (a lagging backend behind a load balancer), while the chain it lags on
/// is the stored one: the ingestor waits for it and rolls nothing back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_is_waited_for_not_taken_for_a_reorg() {
    let mut w = world(small(34)).await;
    let proxy = FaultProxy::start(&w.chain.url, Rules::default()).await.unwrap();
    let stop = CancellationToken::new();
    let following = w.follow_via(&proxy.url, &["--poll-interval", "50ms"], stop.clone());
    // Three blocks with a transfer each: a rollback of three would remove them.
    for i in 0..3 {
        send(&mut w.chain, &w.history, i, i + 1, 3).await;
    }
    let head = w.chain.head().await.unwrap();
    wait_indexed(&w.db, head).await;
    for _ in 0..3 {
        proxy.lag_next_head();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(proxy.injected().iter().find(|(f, _)| *f == Fault::LaggingHead).unwrap().1, 3);
    send(&mut w.chain, &w.history, 4, 5, 3).await;
    let head = w.chain.head().await.unwrap();
    wait_indexed(&w.db, head).await;
    stop.cancel();
    following.await.unwrap().unwrap();
    let c = w.db.client().await.unwrap();
    let removed: i64 =
        c.query_one("SELECT count(*) FROM removed_transfers", &[]).await.unwrap().get(0);
    assert_eq!(removed, 0, "a lagging node was taken for a reorg");
    w.assert_balances_at(head).await;
}

/// A node behind a load balancer whose error pages are HTML over many lines, quoting the
/// URL asked for, API key and all: each is logged as one short line, the URL's path cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_s_error_pages_are_logged_in_one_line_without_the_key() {
    let w = world(small(33)).await;
    let rules = Rules { fault_every: 3, ..Rules::default() };
    let proxy = FaultProxy::start(&w.chain.url, rules).await.unwrap();
    let url = format!("{}/v3/SECRETKEY123", proxy.url.trim_end_matches('/'));
    let (from, to) = (w.history.start_block.to_string(), w.history.end_block.to_string());
    let out = tokio::process::Command::new(rig::pair::ingestor_binary().unwrap())
        .args(["--rpc-url", &url, "--database-url", &w.db.url])
        .args(["--token", &w.history.token.to_string(), "--from", &from, "--to", &to])
        .args(["--max-backoff", "100ms", "--initial-span", "1", "--max-span", "1"])
        .args(rig::pair::LOCAL_PORTS)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(proxy.injected().iter().any(|(f, n)| *f == Fault::BadGateway && *n > 0));
    assert!(log.contains("502 Bad Gateway"), "the page's words are logged: {log}");
    assert!(!log.contains("SECRETKEY123"), "the key leaked: {log}");
    assert!(!log.contains("<html>") && !log.contains("<h1>"), "markup logged: {log}");
    for line in log.lines() {
        assert!(line.starts_with("20") || line.trim().is_empty(), "a line of its own: {line:?}");
    }
    w.assert_balances_at(w.history.end_block).await;
}
