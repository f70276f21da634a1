//! StreamTransfers against a following ingestor: each transfer within 2 s of being mined,
//! removals after a reorg, resume by cursor, 200 subscribers in order, kill -9 restarts,
//! and the stream limit.

use std::time::{Duration, Instant};

use alloy_primitives::{B256, U256};
use proto::pb::holder_service_client::HolderServiceClient;
use proto::pb::{ListTransfersRequest, StreamTransfersRequest, TransferEvent};
use rig::chain::TestToken;
use rig::history::Spec;
use rig::pair::QueryService;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::transport::Channel;

use crate::{send, small, world};

/// The next event of `stream`, within `within`.
pub(crate) async fn next(stream: &mut Streaming<TransferEvent>, within: Duration) -> TransferEvent {
    tokio::time::timeout(within, stream.message())
        .await
        .expect("an event in time")
        .expect("a healthy stream")
        .expect("open")
}

/// (tx hash, log index, removed) of an event, for comparing streams.
fn key(e: &TransferEvent) -> (String, u32, bool) {
    let t = e.transfer.as_ref().unwrap();
    (t.tx_hash.clone(), t.log_index, e.removed)
}

async fn open(
    client: &mut HolderServiceClient<Channel>,
    req: StreamTransfersRequest,
) -> Streaming<TransferEvent> {
    client.stream_transfers(req).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_transfers_arrive_within_two_seconds_and_reorgs_send_removals() {
    let mut w = world(small(5)).await;
    let stop = CancellationToken::new();
    let ingest = w.follow(&["--poll-interval", "50ms"], stop.clone());
    let qs = QueryService::start(&w.db.url).await.unwrap();
    let mut client = qs.client().await.unwrap();
    // Wait until the history is in, then listen live only.
    crate::wait_indexed(&w.db, w.history.end_block).await;
    let mut live = open(&mut client, StreamTransfersRequest::default()).await;
    let snapshot = w.chain.snapshot().await.unwrap();

    for i in 0..5 {
        let tx = send(&mut w.chain, &w.history, i, i + 1, 100 + i as u64).await;
        w.chain.mine(12).await.unwrap();
        let mined = Instant::now();
        let e = next(&mut live, Duration::from_secs(5)).await;
        let latency = mined.elapsed();
        assert_eq!(e.transfer.as_ref().unwrap().tx_hash, tx.to_string());
        assert!(!e.removed);
        assert!(latency < Duration::from_secs(2), "transfer {i} arrived after {latency:?}");
    }

    // A reorg: the five transfers are taken back, two others replace them.
    w.chain.revert(snapshot).await.unwrap();
    let b1 = send(&mut w.chain, &w.history, 7, 8, 1).await;
    let b2 = send(&mut w.chain, &w.history, 8, 9, 2).await;
    w.chain.mine(13).await.unwrap();
    let mut removed = Vec::new();
    let mut added = Vec::new();
    while added.len() < 2 {
        let e = next(&mut live, Duration::from_secs(10)).await;
        let tx = e.transfer.as_ref().unwrap().tx_hash.clone();
        if e.removed { removed.push(tx) } else { added.push(tx) }
    }
    assert_eq!(removed.len(), 5, "every orphaned transfer is taken back");
    assert_eq!(added, vec![b1.to_string(), b2.to_string()]);

    // ListTransfers shows the new branch, newest first, and nothing orphaned.
    let page = client
        .list_transfers(ListTransfersRequest { page_size: 2, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let hashes: Vec<String> = page.transfers.iter().map(|t| t.tx_hash.clone()).collect();
    assert_eq!(hashes, vec![b2.to_string(), b1.to_string()]);
    stop.cancel();
    ingest.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_from_its_cursor_and_200_subscribers_see_everything_in_order() {
    let mut w = world(small(5)).await;
    let stop = CancellationToken::new();
    let ingest = w.follow(&["--poll-interval", "50ms"], stop.clone());
    let qs = QueryService::start(&w.db.url).await.unwrap();
    let mut client = qs.client().await.unwrap();
    crate::wait_indexed(&w.db, w.history.end_block).await;

    // 200 subscribers from the first block: history, then live.
    let from_start =
        StreamTransfersRequest { from_block: Some(w.history.start_block), ..Default::default() };
    let mut subscribers = Vec::new();
    for _ in 0..200 {
        subscribers.push(open(&mut client, from_start.clone()).await);
    }
    // One client reads three events and leaves.
    let mut first = open(&mut client, from_start.clone()).await;
    let mut cursor = String::new();
    for _ in 0..3 {
        cursor = next(&mut first, Duration::from_secs(5)).await.cursor;
    }
    drop(first);

    for i in 0..6 {
        send(&mut w.chain, &w.history, i, i + 3, 7).await;
        send(&mut w.chain, &w.history, i + 1, i + 4, 8).await;
        w.chain.mine(12).await.unwrap();
    }
    let head = w.chain.head().await.unwrap();
    crate::wait_indexed(&w.db, head).await;

    // The store's order is the truth: every event by sequence number.
    let c = w.db.client().await.unwrap();
    let expected: Vec<(String, u32, bool)> = c
        .query("SELECT tx_hash, log_index FROM transfers ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, B256>(0).to_string(), r.get::<_, i32>(1) as u32, false))
        .collect();
    assert_eq!(expected.len() as u64, w.history.transfers + 12);

    // Resumed: exactly what came after the cursor.
    let mut resumed =
        open(&mut client, StreamTransfersRequest { cursor, ..Default::default() }).await;
    let mut got = Vec::new();
    while got.len() < expected.len() - 3 {
        got.push(key(&next(&mut resumed, Duration::from_secs(10)).await));
    }
    assert_eq!(got, expected[3..]);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), resumed.message()).await.is_err(),
        "nothing more"
    );

    // Every subscriber: everything, once, in order.
    let all = futures::future::join_all(subscribers.into_iter().map(|mut s| {
        let n = expected.len();
        async move {
            let mut got = Vec::with_capacity(n);
            while got.len() < n {
                got.push(key(&next(&mut s, Duration::from_secs(30)).await));
            }
            got
        }
    }))
    .await;
    for (i, got) in all.iter().enumerate() {
        assert_eq!(got, &expected, "subscriber {i}");
    }
    stop.cancel();
    ingest.await.unwrap().unwrap();
}

/// kill -9 of the ingestor binary while it follows a chain that keeps moving: after each
/// restart it resumes from its checkpoint; in the end every transfer is stored once and
/// every balance equals balanceOf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_following_loses_and_repeats_nothing() {
    let mut w = world(small(5)).await;
    let bin = rig::pair::ingestor_binary().unwrap();
    let args = [
        "--rpc-url".to_string(),
        w.chain.url.clone(),
        "--database-url".into(),
        w.db.url.clone(),
        "--token".into(),
        w.history.token.to_string(),
        "--from".into(),
        w.history.start_block.to_string(),
        "--poll-interval".into(),
        "50ms".into(),
        "--metrics-listen".into(),
        "127.0.0.1:0".into(),
        "--health-listen".into(),
        "127.0.0.1:0".into(),
    ];
    let spawn = || {
        tokio::process::Command::new(&bin)
            .args(&args)
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut sent = 0u64;
    for round in 0..4 {
        let mut child = spawn();
        for i in 0..3 {
            send(&mut w.chain, &w.history, round + i, round + i + 2, 3).await;
            w.chain.mine(12).await.unwrap();
            sent += 1;
            tokio::time::sleep(Duration::from_millis(40 * (round as u64 + i as u64))).await;
        }
        child.start_kill().unwrap(); // SIGKILL
        child.wait().await.unwrap();
    }
    let mut child = spawn();
    let head = w.chain.head().await.unwrap();
    crate::wait_indexed(&w.db, head).await;
    child.start_kill().unwrap();

    let c = w.db.client().await.unwrap();
    let stored: i64 = c.query_one("SELECT count(*) FROM transfers", &[]).await.unwrap().get(0);
    assert_eq!(stored as u64, w.history.transfers + sent);
    w.assert_balances_at(head).await;
    w.assert_seq_in_chain_order().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_limit_holds_and_a_cancelled_stream_frees_its_place() {
    let w = world(Spec { holders: 6, days: 1, blocks_per_day: 1, ..small(5) }).await;
    w.ingest_all().await;
    let settings = query_service::Settings {
        health_interval: Duration::from_millis(200),
        max_streams: 2,
        stream_buffer: 64,
        answer_cache: 64,
        ..Default::default()
    };
    let qs = QueryService::start_with(&w.db.url, settings).await.unwrap();
    let mut client = qs.client().await.unwrap();
    let a = open(&mut client, StreamTransfersRequest::default()).await;
    let _b = open(&mut client, StreamTransfersRequest::default()).await;
    let e = client.stream_transfers(StreamTransfersRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    let hint = tonic_types::StatusExt::get_details_retry_info(&e).and_then(|r| r.retry_delay);
    assert_eq!(hint, Some(Duration::from_secs(1)), "a refused stream says when to retry");
    drop(a);
    let started = Instant::now();
    loop {
        match client.stream_transfers(StreamTransfersRequest::default()).await {
            Ok(_) => break,
            Err(e) => assert_eq!(e.code(), tonic::Code::ResourceExhausted),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the cancelled stream's place was not freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A subscriber that stops reading while hundreds of transfers commit falls behind the
/// live buffer (16 events here) and is caught up from the store: it still gets every
/// transfer once, in order. ListTransfers pages through one address's transfers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_is_caught_up_from_the_store() {
    let mut w = world(small(5)).await;
    let stop = CancellationToken::new();
    let ingest = w.follow(&["--poll-interval", "50ms"], stop.clone());
    let settings = query_service::Settings {
        health_interval: Duration::from_millis(200),
        max_streams: 10,
        stream_buffer: 16,
        answer_cache: 64,
        ..Default::default()
    };
    // The feed starts on a migrated store and has seen the token before the burst, so the
    // burst comes live and overflows the buffer.
    crate::wait_indexed(&w.db, w.history.end_block).await;
    let qs = QueryService::start_with(&w.db.url, settings).await.unwrap();
    let mut client = qs.client().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A small HTTP/2 window, so that the transport cannot absorb what the client does not
    // read (hyper's default is 2 MiB).
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", qs.addr))
        .unwrap()
        .initial_stream_window_size(4096)
        .initial_connection_window_size(4096)
        .connect()
        .await
        .unwrap();
    let mut slow =
        open(&mut HolderServiceClient::new(channel), StreamTransfersRequest::default()).await;

    // 600 transfers in 6 transactions (batch transfers of 100), over 3 blocks.
    let sender = w.history.addresses[0];
    for i in 0..6 {
        let to: Vec<_> =
            (0..100).map(|j| w.history.addresses[(i + j) % w.history.addresses.len()]).collect();
        let values = vec![U256::from(1); to.len()];
        w.chain
            .call_from(sender, w.history.token, TestToken::sprayCall { to, values })
            .await
            .unwrap();
        if i % 2 == 1 {
            w.chain.mine(12).await.unwrap();
        }
    }
    let head = w.chain.head().await.unwrap();
    crate::wait_indexed(&w.db, head).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let c = w.db.client().await.unwrap();
    let expected: Vec<(String, u32, bool)> = c
        .query(
            "SELECT tx_hash, log_index FROM transfers WHERE block_number > $1 ORDER BY seq",
            &[&(w.history.end_block as i64)],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, B256>(0).to_string(), r.get::<_, i32>(1) as u32, false))
        .collect();
    assert_eq!(expected.len(), 600);
    let mut got = Vec::new();
    while got.len() < expected.len() {
        got.push(key(&next(&mut slow, Duration::from_secs(10)).await));
    }
    assert_eq!(got, expected);

    // ListTransfers of one address, newest first, in pages of 7, equals the store's.
    let who = w.history.addresses[3];
    let truth: Vec<(u64, u32)> = c
        .query(
            "SELECT block_number, log_index FROM transfers WHERE from_address = $1 OR to_address = $1
             ORDER BY block_number DESC, log_index DESC",
            &[&who],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i32>(1) as u32))
        .collect();
    let mut pages = Vec::new();
    let mut page_token = String::new();
    loop {
        let req = ListTransfersRequest {
            address: who.to_string(),
            page_size: 7,
            page_token: page_token.clone(),
            ..Default::default()
        };
        let page = client.list_transfers(req).await.unwrap().into_inner();
        pages.extend(page.transfers.iter().map(|t| (t.block_number, t.log_index)));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert!(truth.len() > 14, "several pages ({})", truth.len());
    assert_eq!(pages, truth);
    // A block range narrows it.
    let req = ListTransfersRequest {
        address: who.to_string(),
        from_block: Some(head),
        to_block: Some(head),
        page_size: 1000,
        ..Default::default()
    };
    let in_head = client.list_transfers(req).await.unwrap().into_inner().transfers;
    assert_eq!(in_head.len(), truth.iter().filter(|t| t.0 == head).count());
    stop.cancel();
    ingest.await.unwrap().unwrap();
}
