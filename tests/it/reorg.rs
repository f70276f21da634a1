//! Reorgs while following: the orphaned branch's transfers leave the store (kept as
//! removals), the new branch's come in, and every balance equals balanceOf on the new
//! chain. A reorg that would change a finalized block stops the ingestor instead.

use std::time::{Duration, Instant};

use alloy_primitives::{B256, U256};
use rig::chain::Chain;
use rig::db::TestDb;
use tokio_util::sync::CancellationToken;

use crate::{send, small, world, world_with};

/// Waits until the store's checkpoint is the node's head block, same hash.
pub(crate) async fn wait_synced(chain: &Chain, db: &TestDb) -> u64 {
    let c = db.client().await.unwrap();
    let started = Instant::now();
    loop {
        let head = chain.head().await.unwrap();
        let block = chain
            .rpc("eth_getBlockByNumber", serde_json::json!([format!("{head:#x}"), false]))
            .await
            .unwrap();
        let hash: B256 = serde_json::from_value(block["hash"].clone()).unwrap();
        if let Ok(Some(row)) =
            c.query_opt("SELECT indexed_block, indexed_hash FROM tokens", &[]).await
            && row.get::<_, i64>(0) as u64 == head
            && row.get::<_, Option<B256>>(1) == Some(hash)
        {
            return head;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the store did not reach head {head}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_replaces_the_orphaned_transfers() {
    let mut w = world(small(11)).await;
    let stop = CancellationToken::new();
    let running = w.follow(&["--poll-interval", "50ms"], stop.clone());
    let fork = wait_synced(&w.chain, &w.db).await;
    let snapshot = w.chain.snapshot().await.unwrap();

    // Branch A: two blocks of transfers, indexed.
    let a1 = send(&mut w.chain, &w.history, 0, 1, 111).await;
    w.chain.mine(12).await.unwrap();
    let a2 = send(&mut w.chain, &w.history, 2, 3, 222).await;
    w.chain.mine(12).await.unwrap();
    wait_synced(&w.chain, &w.db).await;
    assert_eq!((w.stored_from_tx(a1).await, w.stored_from_tx(a2).await), (1, 1));

    // Branch B from the same parent: other transfers, one block shorter than A's... then
    // one more block, so both a shorter and a longer chain are seen.
    w.chain.revert(snapshot).await.unwrap();
    let b1 = send(&mut w.chain, &w.history, 4, 5, 333).await;
    w.chain.mine(13).await.unwrap();
    wait_synced(&w.chain, &w.db).await;
    let b2 = send(&mut w.chain, &w.history, 6, 7, 444).await;
    w.chain.mine(13).await.unwrap();
    w.chain.mine(13).await.unwrap();
    let head = wait_synced(&w.chain, &w.db).await;

    assert_eq!(
        (w.stored_from_tx(a1).await, w.stored_from_tx(a2).await),
        (0, 0),
        "orphaned transfers are gone"
    );
    assert_eq!(
        (w.stored_from_tx(b1).await, w.stored_from_tx(b2).await),
        (1, 1),
        "the new branch is in"
    );
    let c = w.db.client().await.unwrap();
    let removed: Vec<(i64, B256)> = c
        .query("SELECT removed_seq, tx_hash FROM removed_transfers ORDER BY removed_seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        removed.iter().map(|r| r.1).collect::<Vec<_>>(),
        vec![a2, a1],
        "removals, newest first"
    );

    // Every stored transfer above the fork sits on the node's chain.
    for row in c
        .query(
            "SELECT block_number, block_hash FROM transfers WHERE block_number > $1",
            &[&(fork as i64)],
        )
        .await
        .unwrap()
    {
        let (n, hash): (i64, B256) = (row.get(0), row.get(1));
        let block = w
            .chain
            .rpc("eth_getBlockByNumber", serde_json::json!([format!("{n:#x}"), false]))
            .await
            .unwrap();
        assert_eq!(
            serde_json::from_value::<B256>(block["hash"].clone()).unwrap(),
            hash,
            "block {n}"
        );
    }

    // Balances, holders and supply equal the chain's at the new head.
    let on_chain = w.assert_balances_at(head).await;
    let (holders, supply): (i64, U256) = c
        .query_one("SELECT holder_count, total_supply FROM tokens", &[])
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(holders as usize, on_chain.iter().filter(|b| !b.is_zero()).count());
    assert_eq!(supply, w.chain.total_supply_at(w.history.token, head).await.unwrap());
    w.assert_seq_in_chain_order().await;

    stop.cancel();
    running.await.unwrap().unwrap();
}

/// With Anvil's finality two blocks per epoch (safe = head - 2, finalized = head - 4): a
/// reorg above the finalized block is rolled back; one that rewrites a finalized block
/// stops the ingestor, and nothing final is taken back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_above_the_finalized_block_is_rolled_back_and_none_below_it_accepted() {
    let mut w = world_with(small(11), &["--slots-in-an-epoch", "2"]).await;
    let stop = CancellationToken::new();
    let running = w.follow(&["--poll-interval", "50ms"], stop.clone());
    wait_synced(&w.chain, &w.db).await;
    let c = w.db.client().await.unwrap();

    // Above the finalized block: a one-block reorg.
    let snapshot = w.chain.snapshot().await.unwrap();
    let orphan = send(&mut w.chain, &w.history, 0, 1, 111).await;
    w.chain.mine(12).await.unwrap();
    wait_synced(&w.chain, &w.db).await;
    assert_eq!(w.stored_from_tx(orphan).await, 1);
    w.chain.revert(snapshot).await.unwrap();
    let kept = send(&mut w.chain, &w.history, 2, 3, 222).await;
    w.chain.mine(13).await.unwrap();
    w.chain.mine(13).await.unwrap();
    let head = wait_synced(&w.chain, &w.db).await;
    assert_eq!((w.stored_from_tx(orphan).await, w.stored_from_tx(kept).await), (0, 1));
    w.assert_balances_at(head).await;

    // A transfer becomes final (six blocks later, finalized = head - 4)...
    let snapshot = w.chain.snapshot().await.unwrap();
    let deep = send(&mut w.chain, &w.history, 4, 5, 333).await;
    w.chain.mine(12).await.unwrap();
    for _ in 0..6 {
        w.chain.mine(12).await.unwrap();
    }
    let head = wait_synced(&w.chain, &w.db).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (finalized, deep_block) = loop {
        let row = c
            .query_one(
                "SELECT k.finalized_block, t.block_number, t.final
                 FROM transfers_finality t JOIN tokens k ON k.id = t.token
                 WHERE t.tx_hash = $1",
                &[&deep],
            )
            .await
            .unwrap();
        let (f, b, is_final): (i64, i64, bool) = (row.get(0), row.get(1), row.get(2));
        if is_final {
            break (f, b);
        }
        assert!(Instant::now() < deadline, "block {b} never became final (finalized {f})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(finalized as u64, head - 4, "Anvil's finalized tag");
    assert!(deep_block <= finalized);

    // ...then the node rewrites its block: refused, and the final transfer stays.
    w.chain.revert(snapshot).await.unwrap();
    for _ in 0..10 {
        send(&mut w.chain, &w.history, 6, 7, 444).await;
        w.chain.mine(13).await.unwrap();
    }
    let result = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the ingestor stops")
        .unwrap();
    let err = format!("{:#}", result.expect_err("a reorg of a final block is an error"));
    assert!(err.contains("reorg below the finalized block"), "{err}");
    assert_eq!(w.stored_from_tx(deep).await, 1, "a final transfer is never taken back");
    let removed: i64 = c
        .query_one("SELECT count(*) FROM removed_transfers WHERE tx_hash = $1", &[&deep])
        .await
        .unwrap()
        .get(0);
    assert_eq!(removed, 0);
}

/// A reorg while the ingestor is down, noticed at restart even though the restart is
/// far behind the head (deeper than the window, where wide ranges check no parents).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_while_stopped_is_rolled_back_at_restart() {
    let mut w = world(small(11)).await;
    let stop = CancellationToken::new();
    let running = w.follow(&["--poll-interval", "50ms", "--reorg-window", "4"], stop.clone());
    wait_synced(&w.chain, &w.db).await;
    let snapshot = w.chain.snapshot().await.unwrap();
    let orphan = send(&mut w.chain, &w.history, 0, 1, 111).await;
    w.chain.mine(12).await.unwrap();
    wait_synced(&w.chain, &w.db).await;
    stop.cancel();
    running.await.unwrap().unwrap();

    // While it is down: another branch, then 20 more blocks.
    w.chain.revert(snapshot).await.unwrap();
    let kept = send(&mut w.chain, &w.history, 2, 3, 222).await;
    w.chain.mine(13).await.unwrap();
    for _ in 0..20 {
        w.chain.mine(12).await.unwrap();
    }
    let stop = CancellationToken::new();
    let running = w.follow(&["--poll-interval", "50ms", "--reorg-window", "4"], stop.clone());
    wait_synced(&w.chain, &w.db).await;
    assert_eq!((w.stored_from_tx(orphan).await, w.stored_from_tx(kept).await), (0, 1));
    stop.cancel();
    running.await.unwrap().unwrap();
}
