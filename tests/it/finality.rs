//! Finality from the node: the ingestor records Anvil's `safe` and `finalized` blocks
//! (`--slots-in-an-epoch 2`: head - 2 and head - 4), transfers become final that many
//! blocks later, streams of final transfers hold them back until then, and answers "as
//! of FINALIZED / SAFE" equal balanceOf at those blocks. A node without the tags falls
//! back to --finality-depth.

use std::time::{Duration, Instant};

use proto::pb::{
    Finality, GetHoldersRequest, GetTopHoldersRequest, ListTokensRequest, ListTransfersRequest,
    StreamTransfersRequest, TransferEvent,
};
use rig::pair::QueryService;
use rig::proxy::{FaultProxy, Rules};
use tokio_util::sync::CancellationToken;
use tonic::Streaming;

use crate::reorg::wait_synced;
use crate::streaming::next;
use crate::{send, small, u256, world, world_with};

/// The final transfers a stream sends within `quiet` of each other.
async fn drain(stream: &mut Streaming<TransferEvent>, quiet: Duration) -> Vec<TransferEvent> {
    let mut out = Vec::new();
    while let Ok(next) = tokio::time::timeout(quiet, stream.message()).await {
        out.push(next.expect("a healthy stream").expect("open"));
    }
    out
}

/// The store's (safe, finalized) blocks once they are at least `at_least`.
async fn recorded(db: &rig::db::TestDb, at_least: i64) -> (i64, i64) {
    let c = db.client().await.unwrap();
    let started = Instant::now();
    loop {
        let row = c.query_one("SELECT safe_block, finalized_block FROM tokens", &[]).await.unwrap();
        let (safe, finalized): (i64, i64) = (row.get(0), row.get(1));
        if finalized >= at_least {
            return (safe, finalized);
        }
        assert!(started.elapsed() < Duration::from_secs(10), "finalized stays at {finalized}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_become_final_with_the_nodes_finalized_block() {
    let mut w = world_with(small(31), &["--slots-in-an-epoch", "2"]).await;
    // The history's last transfers two blocks deep: some final, some not.
    for _ in 0..2 {
        w.chain.mine(12).await.unwrap();
    }
    let stop = CancellationToken::new();
    let running = w.follow(&["--poll-interval", "50ms"], stop.clone());
    let head = wait_synced(&w.chain, &w.db).await;
    let (safe, finalized) = recorded(&w.db, head as i64 - 4).await;
    assert_eq!((safe, finalized), (head as i64 - 2, head as i64 - 4), "Anvil's safe and finalized");
    let qs = QueryService::start(&w.db.url).await.unwrap();
    let mut client = qs.client().await.unwrap();
    let token = client.list_tokens(ListTokensRequest::default()).await.unwrap().into_inner().tokens;
    assert_eq!((token[0].finalized_block, token[0].safe_block), (head - 4, head - 2));

    // The history's final transfers, and only those, from a stream of final transfers.
    let mut finals = client
        .stream_transfers(StreamTransfersRequest {
            from_block: Some(w.history.start_block),
            finalized_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut first = vec![next(&mut finals, Duration::from_secs(10)).await];
    first.extend(drain(&mut finals, Duration::from_millis(1500)).await);
    let c = w.db.client().await.unwrap();
    let final_count: i64 = c
        .query_one("SELECT count(*) FROM transfers WHERE block_number <= $1", &[&finalized])
        .await
        .unwrap()
        .get(0);
    assert!(final_count > 0, "the history has final transfers");
    assert_eq!(first.len() as i64, final_count);
    for e in &first {
        let t = e.transfer.as_ref().unwrap();
        assert!(t.finalized && !e.removed && t.block_number <= head - 4, "{t:?}");
    }

    // As of FINALIZED and SAFE: balanceOf at those blocks, every holder.
    let addresses: Vec<String> = w.history.addresses.iter().map(|a| a.to_string()).collect();
    for (finality, block) in [(Finality::Finalized, head - 4), (Finality::Safe, head - 2)] {
        let answer = client
            .get_holders(GetHoldersRequest {
                addresses: addresses.clone(),
                finality: finality as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.as_of_block, block, "{finality:?}");
        assert_eq!(answer.as_of_finalized_block, head - 4);
        let chain =
            w.chain.balances_at(w.history.token, &w.history.addresses, block).await.unwrap();
        for h in &answer.holders {
            let i = w.history.addresses.iter().position(|a| a.to_string() == h.address).unwrap();
            assert_eq!(u256(&h.balance), chain[i], "{} at {block}", h.address);
        }
        let top = client
            .get_top_holders(GetTopHoldersRequest {
                limit: 1000,
                finality: finality as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(top.as_of_block, block);
        let held = chain.iter().filter(|b| !b.is_zero()).count();
        assert_eq!(top.holders.len(), held, "{finality:?}");
        assert_eq!(
            u256(&top.total_supply),
            w.chain.total_supply_at(w.history.token, block).await.unwrap()
        );
    }

    // A new transfer: stored at once, not final, not streamed until four blocks later.
    let tx = send(&mut w.chain, &w.history, 0, 1, 5).await;
    let mined = w.chain.mine(12).await.unwrap();
    wait_synced(&w.chain, &w.db).await;
    let newest = client
        .list_transfers(ListTransfersRequest { page_size: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .transfers;
    assert_eq!((newest[0].tx_hash.clone(), newest[0].finalized), (tx.to_string(), false));
    // Not final yet: nothing for a while after each of the next three blocks.
    for _ in 0..3 {
        w.chain.mine(12).await.unwrap();
        wait_synced(&w.chain, &w.db).await;
        let events = drain(&mut finals, Duration::from_millis(1500)).await;
        assert!(
            events.iter().all(|e| e.transfer.as_ref().unwrap().tx_hash != tx.to_string()),
            "streamed before its block {mined} was final"
        );
    }
    // The fourth block makes it final: it comes (after any older final transfer a slow
    // poll still held).
    assert_eq!(w.chain.mine(12).await.unwrap(), mined + 4);
    loop {
        let e = next(&mut finals, Duration::from_secs(10)).await;
        let t = e.transfer.as_ref().unwrap();
        assert!(t.finalized && !e.removed && t.block_number <= mined, "{t:?}");
        if t.tx_hash == tx.to_string() {
            break;
        }
    }
    let is_final: bool = c
        .query_one("SELECT final FROM transfers_finality WHERE tx_hash = $1", &[&tx])
        .await
        .unwrap()
        .get(0);
    assert!(is_final);

    stop.cancel();
    running.await.unwrap().unwrap();
}

/// A node without the tags (as before the Merge): the finalized block is --finality-depth
/// below the head, the safe one half as far.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_finality_tags_falls_back_to_the_depth() {
    let mut w = world(small(32)).await;
    for _ in 0..8 {
        w.chain.mine(12).await.unwrap();
    }
    let proxy =
        FaultProxy::start(&w.chain.url, Rules { no_finality_tags: true, ..Rules::default() })
            .await
            .unwrap();
    let stop = CancellationToken::new();
    let running = w.follow_via(
        &proxy.url,
        &["--poll-interval", "50ms", "--finality-depth", "5"],
        stop.clone(),
    );
    let head = wait_synced(&w.chain, &w.db).await;
    let (safe, finalized) = recorded(&w.db, head as i64 - 5).await;
    assert_eq!((safe, finalized), (head as i64 - 3, head as i64 - 5));
    stop.cancel();
    running.await.unwrap().unwrap();

    // The same chain with its tags (Anvil's default epoch: 32 slots, finalized = head - 64).
    let stop = CancellationToken::new();
    let running = w.follow(&["--poll-interval", "50ms", "--finality-depth", "5"], stop.clone());
    w.chain.mine(12).await.unwrap();
    let head = wait_synced(&w.chain, &w.db).await;
    let c = w.db.client().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let row = c.query_one("SELECT safe_block, finalized_block FROM tokens", &[]).await.unwrap();
    // Recorded values never go back: the tags say less than the depth did.
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (head as i64 - 4, head as i64 - 6));
    stop.cancel();
    running.await.unwrap().unwrap();
}
