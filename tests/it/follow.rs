//! Without --to the ingestor keeps polling the head: transfers mined after it caught up
//! are served within seconds, and a shutdown stops it between batches.

use std::time::{Duration, Instant};

use alloy_primitives::U256;
use proto::pb::{GetHoldersRequest, GetTopHoldersRequest};
use query_service::warm;
use rig::chain::TestToken;
use rig::pair::QueryService;
use tokio_util::sync::CancellationToken;

use crate::{small, u256, world};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_picks_up_new_blocks() {
    let mut w = world(small(32)).await;
    let shutdown = CancellationToken::new();
    let running = w.follow(&["--poll-interval", "100ms"], shutdown.clone());
    let qs = QueryService::start(&w.db.url).await.unwrap();
    let mut client = qs.client().await.unwrap();

    // A transfer mined after the start reaches the store and the service.
    let (from_holder, to_holder) = (w.history.addresses[0], w.history.addresses[1]);
    let value = U256::from(12345);
    w.chain
        .call_from(from_holder, w.history.token, TestToken::transferCall { to: to_holder, value })
        .await
        .unwrap();
    let mined = w.chain.mine(12).await.unwrap();
    let expected = w.chain.balances_at(w.history.token, &[to_holder], mined).await.unwrap()[0];
    let started = Instant::now();
    loop {
        let r = client
            .get_holders(GetHoldersRequest {
                addresses: vec![to_holder.to_string()],
                ..Default::default()
            })
            .await;
        if let Ok(r) = r {
            let r = r.into_inner();
            if r.as_of_block >= mined {
                assert_eq!(u256(&r.holders[0].balance), expected);
                assert_eq!(r.holders[0].last_transfer_block, mined);
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "block {mined} not served within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    shutdown.cancel();
    let result =
        tokio::time::timeout(Duration::from_secs(10), running).await.expect("stops within 10 s");
    result.unwrap().expect("a clean stop");
}

/// Ranked answers are kept between commits (the answer cache) but never outlive one: a
/// transfer that makes a new richest holder shows in the next GetTopHolders (asked for
/// its block, or at once when the warm answer is recomputed) and first page, though the
/// same questions were asked (and cached) just before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranked_answers_follow_each_commit() {
    let mut w = world(small(34)).await;
    let shutdown = CancellationToken::new();
    let running = w.follow(&["--poll-interval", "100ms"], shutdown.clone());
    crate::wait_indexed(&w.db, w.history.end_block).await;
    let qs = QueryService::start(&w.db.url).await.unwrap();
    let client = qs.client().await.unwrap();
    let top = || {
        let mut c = client.clone();
        async move {
            let r = GetTopHoldersRequest { limit: 5, ..Default::default() };
            c.get_top_holders(r).await.unwrap().into_inner()
        }
    };
    let page = || {
        let mut c = client.clone();
        async move {
            let r = GetHoldersRequest { page_size: 5, ..Default::default() };
            c.get_holders(r).await.unwrap().into_inner()
        }
    };
    let before = top().await;
    assert_eq!(top().await, before, "a repeat in the same state is the same answer");
    let first_page = page().await;

    // The richest holder sends everything to a fresh address: a new richest holder.
    let richest: alloy_primitives::Address = before.holders[0].address.parse().unwrap();
    let fresh = rig::history::holder(4242, 0);
    let all = u256(&before.holders[0].balance);
    w.chain
        .call_from(richest, w.history.token, TestToken::transferCall { to: fresh, value: all })
        .await
        .unwrap();
    let mined = w.chain.mine(12).await.unwrap();
    crate::wait_indexed(&w.db, mined).await;

    // Asked with the block as min_block, the answer is of it at once. Without, the
    // answer kept warm at the head moves to it as soon as it is recomputed (the
    // previous state's answer serves meanwhile, for at most the recomputation).
    let mut c = client.clone();
    let at_mined = GetTopHoldersRequest { limit: 5, min_block: Some(mined), ..Default::default() };
    let after = c.get_top_holders(at_mined).await.unwrap().into_inner();
    assert_eq!(after.as_of_block, mined);
    let started = Instant::now();
    loop {
        let now = top().await;
        if now.as_of_block == mined {
            assert_eq!(now, after, "the warm answer is the one read from the store");
            break;
        }
        assert!(now.as_of_block < mined, "only the previous state's answer meanwhile");
        assert!(started.elapsed() < warm::STALE_FOR, "the warm answer did not move");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(after.holders[0].address, fresh.to_string());
    assert_eq!(u256(&after.holders[0].balance), all);
    assert!(after.holders.iter().all(|h| h.address != richest.to_string()));
    let next_page = page().await;
    assert_ne!(next_page, first_page);
    assert_eq!(next_page.holders[0].address, fresh.to_string());
    assert_eq!(next_page.as_of_block, mined);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running).await.unwrap().unwrap().unwrap();
}

/// At the head, a question asked again while the store does not move is answered from
/// memory: no connection is leased for it. A commit recomputes it once, whoever asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_holders_question_at_the_head_is_answered_without_a_read() {
    let mut w = world(small(36)).await;
    let shutdown = CancellationToken::new();
    let running = w.follow(&["--poll-interval", "100ms"], shutdown.clone());
    crate::wait_indexed(&w.db, w.history.end_block).await;
    let metrics = crate::free_addr();
    let settings = query_service::Settings { metrics_listen: Some(metrics), ..Default::default() };
    let qs = QueryService::start_with(&w.db.url, settings).await.unwrap();
    let mut c = qs.client().await.unwrap();
    let ask = GetTopHoldersRequest { limit: 7, ..Default::default() };
    let first = c.get_top_holders(ask.clone()).await.unwrap().into_inner();
    let leases = || crate::metric(metrics, "query_database_leases_total{lane=\"cheap\"}");
    let served = || crate::metric(metrics, "query_warm_answers_total{outcome=\"served\"}");
    let before = leases().await.unwrap_or(0.0);
    for _ in 0..20 {
        assert_eq!(c.get_top_holders(ask.clone()).await.unwrap().into_inner(), first);
    }
    assert_eq!(leases().await.unwrap_or(0.0), before, "a warm answer leases nothing");
    assert_eq!(served().await, Some(20.0));

    // A commit: the answer is recomputed once, in the background, and served again.
    let (a, b) = (w.history.addresses[0], w.history.addresses[1]);
    w.chain
        .call_from(a, w.history.token, TestToken::transferCall { to: b, value: U256::from(3) })
        .await
        .unwrap();
    let mined = w.chain.mine(12).await.unwrap();
    crate::wait_metric(metrics, "query_warm_answers_total{outcome=\"recomputed\"}", |n| n >= 1.0)
        .await;
    let at_mined = GetTopHoldersRequest { min_block: Some(mined), ..ask.clone() };
    let fresh = c.get_top_holders(at_mined).await.unwrap().into_inner();
    assert_eq!(fresh.as_of_block, mined);
    assert_eq!(c.get_top_holders(ask.clone()).await.unwrap().into_inner(), fresh);
    // A question with a min_block past the head is not served from memory: it waits.
    let far = GetTopHoldersRequest { min_block: Some(mined + 1), ..ask };
    let e = tokio::time::timeout(Duration::from_millis(300), c.get_top_holders(far)).await;
    assert!(e.is_err(), "answered before block {} existed: {e:?}", mined + 1);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running).await.unwrap().unwrap().unwrap();
}

/// GetTopHolders(n) and the first GetHolders page of n are different answers (the page
/// has a next page token) though they hold the same rows: the cache keeps them apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_page_after_the_same_top_holders_still_pages_on() {
    let w = world(small(36)).await;
    w.ingest_all().await;
    let qs = QueryService::start(&w.db.url).await.unwrap();
    let mut client = qs.client().await.unwrap();
    let top = client
        .get_top_holders(GetTopHoldersRequest { limit: 5, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(top.next_page_token.is_empty());
    let page = client
        .get_holders(GetHoldersRequest { page_size: 5, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.holders, top.holders);
    assert!(!page.next_page_token.is_empty(), "the first page came from GetTopHolders' answer");
    assert_eq!(crate::all_holders(&qs, 5).await.len() as u64, page.holder_count);
}

/// Over ws:// the ingestor hears of new blocks from an eth_subscribe newHeads
/// subscription: with polling set to 30 s, a new transfer is still stored within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_node_announces_new_blocks() {
    let mut w = world(small(33)).await;
    let stop = CancellationToken::new();
    let ws = w.chain.url.replace("http://", "ws://");
    let running = w.follow_via(&ws, &["--poll-interval", "30s"], stop.clone());
    crate::wait_indexed(&w.db, w.history.end_block).await;
    // Let the first poll pass, so that only the subscription can explain what follows.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (a, b) = (w.history.addresses[0], w.history.addresses[1]);
    w.chain
        .call_from(a, w.history.token, TestToken::transferCall { to: b, value: U256::from(9) })
        .await
        .unwrap();
    let mined = w.chain.mine(12).await.unwrap();
    let started = Instant::now();
    crate::wait_indexed(&w.db, mined).await;
    assert!(started.elapsed() < Duration::from_secs(2), "indexed after {:?}", started.elapsed());
    stop.cancel();
    running.await.unwrap().unwrap();
}

/// With --confirmations 2 a block is indexed only once two more blocks sit on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmations_hold_back_the_newest_blocks() {
    let mut w = world(small(34)).await;
    let stop = CancellationToken::new();
    let running = w.follow(&["--poll-interval", "50ms", "--confirmations", "2"], stop.clone());
    let head = w.chain.head().await.unwrap();
    crate::wait_indexed(&w.db, head - 2).await;
    let (a, b) = (w.history.addresses[0], w.history.addresses[1]);
    w.chain
        .call_from(a, w.history.token, TestToken::transferCall { to: b, value: U256::from(9) })
        .await
        .unwrap();
    let block = w.chain.mine(12).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = w.db.client().await.unwrap();
    let indexed = |c: tokio_postgres::Client| async move {
        let v: i64 = c.query_one("SELECT indexed_block FROM tokens", &[]).await.unwrap().get(0);
        (c, v as u64)
    };
    let (c, now) = indexed(c).await;
    assert_eq!(now, block - 2, "only blocks two deep are indexed");
    w.chain.mine(12).await.unwrap();
    w.chain.mine(12).await.unwrap();
    crate::wait_indexed(&w.db, block).await;
    let stored: i64 = c
        .query_one("SELECT count(*) FROM transfers WHERE block_number = $1", &[&(block as i64)])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1);
    stop.cancel();
    running.await.unwrap().unwrap();
}

/// Polling stays on as the fallback of a newHeads subscription: with the node's
/// notifications swallowed by a proxy, new blocks are still indexed, by polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_carries_on_when_the_subscription_goes_silent() {
    let mut w = world(small(35)).await;
    let proxy =
        rig::silent_heads::SilentHeadsProxy::start(&w.chain.url.replace("http://", "ws://"))
            .await
            .unwrap();
    let stop = CancellationToken::new();
    let running = w.follow_via(&proxy.url, &["--poll-interval", "200ms"], stop.clone());
    crate::wait_indexed(&w.db, w.history.end_block).await;
    for i in 0..3 {
        let (a, b) = (w.history.addresses[i], w.history.addresses[i + 1]);
        w.chain
            .call_from(a, w.history.token, TestToken::transferCall { to: b, value: U256::from(9) })
            .await
            .unwrap();
        let mined = w.chain.mine(12).await.unwrap();
        // No notification arrives: only the polling backstop (10 x 200 ms) can see it.
        let started = Instant::now();
        crate::wait_indexed(&w.db, mined).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "block {mined} indexed after {:?}",
            started.elapsed()
        );
    }
    stop.cancel();
    running.await.unwrap().unwrap();
}
