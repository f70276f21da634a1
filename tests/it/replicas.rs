//! Reads on a real Postgres streaming replica: a private primary, a hot standby made by
//! `pg_basebackup -R`, the ingestor writing to the primary, a query-service reading from
//! the standby with its feed (LISTEN) on the primary. Replay paused on the standby makes
//! it lag on demand.

use std::process::Stdio;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use proto::pb::{
    ExportHoldersRequest, GetTopHoldersRequest, HoldersResponse, ListTransfersRequest,
    StreamTransfersRequest,
};
use rig::chain::TestToken;
use rig::cluster::Cluster;
use rig::pair::QueryService;
use tonic::Code;

use crate::{small, world};

/// The store's indexed block on the server at `url`.
async fn indexed(url: &str) -> u64 {
    let c = rig::db::connect(url).await.unwrap();
    let row = c.query_opt("SELECT indexed_block FROM tokens", &[]).await.ok().flatten();
    row.map_or(0, |r| r.get::<_, i64>(0).max(0) as u64)
}

async fn wait_indexed(url: &str, block: u64) {
    let started = Instant::now();
    while indexed(url).await < block {
        assert!(started.elapsed() < Duration::from_secs(30), "block {block} not at {url}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// grpc.health.v1 readiness ("") of the service: 1 SERVING, 2 NOT_SERVING.
async fn readiness(qs: &QueryService) -> i32 {
    rig::load::readiness(&format!("http://{}", qs.addr)).await
}

async fn wait_readiness(qs: &QueryService, want: i32, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if readiness(qs).await == want {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "readiness not {want} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The query-service's `query_replica_lag_seconds`.
async fn replica_lag(metrics: std::net::SocketAddr) -> f64 {
    crate::metric(metrics, "query_replica_lag_seconds").await.expect("query_replica_lag_seconds")
}

fn top(limit: u32, at_block: Option<u64>, min_block: Option<u64>) -> GetTopHoldersRequest {
    GetTopHoldersRequest { limit, at_block, min_block, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_service_on_a_streaming_replica_serves_streams_and_waits_for_it() {
    let mut w = world(small(95)).await;
    let primary = Cluster::start().await.expect("a private primary (initdb, pg_ctl)");
    let primary_db = primary.create_db("holders").await.unwrap();
    let standby = primary.standby().await.expect("a hot standby (pg_basebackup -R)");
    let standby_db = rig::db::url_with_db(&standby.url, "holders");
    let h = w.history.clone();
    let _ingestor = rig::pair::follow_binary(
        &w.chain.url,
        &primary_db,
        h.token,
        h.start_block,
        2,
        Stdio::null(),
    )
    .unwrap();
    wait_indexed(&primary_db, h.end_block).await;
    wait_indexed(&standby_db, h.end_block).await;

    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let settings = query_service::Settings {
        metrics_listen: Some(metrics),
        feed_database_url: Some(primary_db.clone()),
        max_replica_lag: Duration::from_secs(1),
        min_block_wait: Duration::from_secs(2),
        health_interval: Duration::from_millis(200),
        ..Default::default()
    };
    let replica = QueryService::start_with(&standby_db, settings).await.unwrap();
    let on_primary = QueryService::start(&primary_db).await.unwrap();
    let mut client = replica.client().await.unwrap();
    wait_readiness(&replica, 1, Duration::from_secs(10)).await;

    // Every holder equals balanceOf at the replica's block.
    let holders = crate::all_holders(&replica, 7).await;
    let block = indexed(&standby_db).await;
    let addresses: Vec<Address> = holders.iter().map(|x| crate::addr(&x.address)).collect();
    let on_chain = w.chain.balances_at(h.token, &addresses, block).await.unwrap();
    for (x, want) in holders.iter().zip(&on_chain) {
        assert_eq!(crate::u256(&x.balance), *want, "{}", x.address);
    }
    assert!(!holders.is_empty());

    // A live stream through the replica; transfers come while it follows.
    let richest: Vec<Address> = client
        .get_top_holders(top(3, None, None))
        .await
        .unwrap()
        .into_inner()
        .holders
        .iter()
        .map(|x| crate::addr(&x.address))
        .collect();
    let stream_from =
        StreamTransfersRequest { from_block: Some(h.end_block + 1), ..Default::default() };
    let mut stream = client.stream_transfers(stream_from).await.unwrap().into_inner();
    let mut made = Vec::new();
    let transfer = async |w: &mut crate::World, i: usize| {
        let (from, to) = (richest[i % richest.len()], h.addresses[(i * 7 + 3) % h.addresses.len()]);
        let value = U256::from(1000 + i);
        w.chain.call_from(from, h.token, TestToken::transferCall { to, value }).await.unwrap();
        w.chain.mine(12).await.unwrap()
    };
    for i in 0..3 {
        made.push(transfer(&mut w, i).await);
    }
    let mut got = Vec::new();
    while got.len() < made.len() {
        let e = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
        let e = e.expect("a live transfer through the replica").unwrap().unwrap();
        got.push(e.transfer.unwrap().block_number);
    }
    assert_eq!(got, made, "each transfer once, in order");

    // The replica stops replaying; transfers keep coming and the primary has them.
    standby.pause_replay().await.unwrap();
    let held = indexed(&standby_db).await;
    for i in 3..6 {
        made.push(transfer(&mut w, i).await);
    }
    let newest = *made.last().unwrap();
    wait_indexed(&primary_db, newest).await;
    // The stream holds back (no gap, nothing out of order), answers stay at the replica's
    // block, and readiness leaves the rotation past the 1 s bound.
    let quiet = tokio::time::timeout(Duration::from_millis(1500), stream.message()).await;
    assert!(quiet.is_err(), "the stream sent something the replica does not hold: {quiet:?}");
    let answer = client.get_top_holders(top(5, None, None)).await.unwrap().into_inner();
    assert_eq!(answer.as_of_block, held, "answers are what the replica holds");
    wait_readiness(&replica, 2, Duration::from_secs(5)).await;
    // The lag shows in the metrics.
    let lag = replica_lag(metrics).await;
    assert!(lag > 1.0, "query_replica_lag_seconds {lag} while replay is paused");
    // min_block above the replica's block: waits its bound, then UNAVAILABLE naming it,
    // on every method that takes it.
    let export = ExportHoldersRequest { min_block: Some(newest), ..Default::default() };
    let e = client.export_holders(export).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let list = ListTransfersRequest { min_block: Some(newest), ..Default::default() };
    let e = client.list_transfers(list).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let started = Instant::now();
    let e = client.get_top_holders(top(5, None, Some(newest))).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains(&format!("holds block {held}")), "{e:?}");
    assert!(started.elapsed() >= Duration::from_secs(2), "{:?}", started.elapsed());
    // A request waiting for min_block is answered once replay resumes.
    let mut waiting_client = client.clone();
    let waiting =
        tokio::spawn(
            async move { waiting_client.get_top_holders(top(5, None, Some(newest))).await },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    standby.resume_replay().await.unwrap();
    let answer: HoldersResponse =
        waiting.await.unwrap().expect("answered once caught up").into_inner();
    assert!(answer.as_of_block >= newest, "{} < {newest}", answer.as_of_block);
    // The stream delivers the held-back transfers, in order, once; readiness comes back.
    while got.len() < made.len() {
        let e = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
        let e = e.expect("the held-back transfers").unwrap().unwrap();
        got.push(e.transfer.unwrap().block_number);
    }
    assert_eq!(got, made, "every transfer once, in order, across the lag");
    let extra = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
    assert!(extra.is_err(), "a repeat: {extra:?}");
    wait_readiness(&replica, 1, Duration::from_secs(5)).await;
    assert_eq!(replica_lag(metrics).await, 0.0, "the lag is gone once caught up");

    // A query-service on the primary and one on the replica answer alike at one block.
    let mut primary_client = on_primary.client().await.unwrap();
    for at in [Some(h.end_block), Some(made[2]), None] {
        let min = Some(newest);
        let a = client.get_top_holders(top(20, at, min)).await.unwrap().into_inner();
        let b = primary_client.get_top_holders(top(20, at, min)).await.unwrap().into_inner();
        assert_eq!(a, b, "at {at:?}");
    }
    assert_eq!(crate::all_holders(&replica, 5).await, crate::all_holders(&on_primary, 5).await);
    assert_eq!(crate::metric(metrics, "query_feed_connected").await, Some(1.0));

    // The primary goes down while the replica lags: the lag is then measured against the
    // last commits the feed heard of, so the replica, having received them, is back in
    // the rotation once it has replayed them, with the primary still down.
    standby.pause_replay().await.unwrap();
    made.push(transfer(&mut w, 6).await);
    wait_indexed(&primary_db, *made.last().unwrap()).await;
    wait_readiness(&replica, 2, Duration::from_secs(5)).await;
    primary.stop().await.unwrap();
    crate::wait_metric(metrics, "query_feed_connected", |v| v == 0.0).await;
    standby.resume_replay().await.unwrap();
    wait_readiness(&replica, 1, Duration::from_secs(10)).await;
    let answer = client.get_top_holders(top(5, None, None)).await.unwrap().into_inner();
    assert_eq!(answer.as_of_block, *made.last().unwrap(), "answers with the primary down");
    // The primary back: the feed listens again and the stream goes on where it was.
    primary.start_again().await.unwrap();
    crate::wait_metric(metrics, "query_feed_connected", |v| v == 1.0).await;
    made.push(transfer(&mut w, 7).await);
    while got.len() < made.len() {
        let e = tokio::time::timeout(Duration::from_secs(20), stream.message()).await;
        let e = e.expect("transfers across the primary's outage").unwrap().unwrap();
        got.push(e.transfer.unwrap().block_number);
    }
    assert_eq!(got, made, "every transfer once, in order, across the primary's outage");
}
