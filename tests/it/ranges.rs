//! A node that refuses wide eth_getLogs spans, in each provider's words, and sends logs
//! without blockTimestamp, still yields every transfer.

use rig::db::TestDb;
use rig::history::Spec;
use rig::proxy::{FaultProxy, Rules};

use crate::{dump, world};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_spans_are_split_until_every_transfer_is_in() {
    let spec = Spec { holders: 20, days: 4, extreme_amounts: false, ..Spec::test() };
    let w = world(spec).await;
    // Empty blocks after the history: many spans to fetch, so that spans grow, are
    // refused again and every wording comes round.
    w.chain.rpc("anvil_mine", serde_json::json!(["0x190"])).await.unwrap();
    // The reference: a direct backfill, with the same reorg window.
    w.ingest_with(
        &w.db,
        w.history.start_block,
        w.history.end_block,
        &["--finality-from", "depth", "--finality-depth", "8"],
    )
    .await;

    let proxy = FaultProxy::start(
        &w.chain.url,
        Rules { max_blocks: 3, strip_block_timestamp: true, ..Rules::default() },
    )
    .await
    .unwrap();
    let via_proxy = TestDb::create().await.unwrap();
    let end = w.chain.head().await.unwrap();
    w.ingest_with(
        &w.db,
        w.history.end_block + 1,
        end,
        &["--finality-from", "depth", "--finality-depth", "8"],
    )
    .await;
    let direct = dump(&w.db).await;
    let (from, to) = (w.history.start_block.to_string(), end.to_string());
    let token = w.history.token.to_string();
    rig::pair::ingest(
        &proxy.url,
        &via_proxy.url,
        &[
            "--token",
            &token,
            "--from",
            &from,
            "--to",
            &to,
            "--initial-span",
            "1000",
            "--concurrency",
            "3",
            // Most blocks are then "deep": fetched in wide, adaptive ranges.
            "--finality-from",
            "depth",
            "--finality-depth",
            "8",
        ],
    )
    .await
    .expect("ingest through the refusing proxy");

    assert!(
        proxy.refusals() >= 10,
        "every refusal wording was used ({} refusals)",
        proxy.refusals()
    );
    assert_eq!(dump(&via_proxy).await, direct, "the same store as a direct backfill");
}

/// An answer of several blocks over the ingestor's byte cap is refused before it is held
/// (a node that answers any size would otherwise hand back a dense stretch whole), while
/// one block is read whatever its size; the ingestor narrows such spans and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_the_byte_cap_is_narrowed_not_held() {
    use alloy_primitives::U256;
    use ingestor::retry::RetryPolicy;
    use ingestor::rpc::{Rpc, RpcError};
    use rig::chain::TestToken;
    use std::time::Duration;

    let spec = Spec { holders: 20, days: 1, extreme_amounts: false, ..Spec::test() };
    let mut w = world(spec).await;
    // 8 blocks of 1,000 transfers each: about 5.6 MB of logs in all, 0.7 MB a block.
    let first = w.history.end_block + 1;
    let sender = w.history.addresses[0];
    for _ in 0..8 {
        for i in 0..10 {
            let to: Vec<_> = (0..100)
                .map(|j| w.history.addresses[(i + j) % w.history.addresses.len()])
                .collect();
            let values = vec![U256::from(1); to.len()];
            w.chain
                .call_from(sender, w.history.token, TestToken::sprayCall { to, values })
                .await
                .unwrap();
        }
        w.chain.mine(12).await.unwrap();
    }
    let end = w.chain.head().await.unwrap();

    let rpc = Rpc::new(
        &w.chain.url,
        Duration::from_secs(30),
        RetryPolicy::new(3, Duration::from_secs(1)),
    )
    .unwrap()
    .with_answer_cap(256 << 10);
    let token = [w.history.token];
    let e = rpc.transfer_logs(&token, first..=end).await.unwrap_err();
    // The size comes with the refusal: the span is narrowed in proportion.
    assert!(
        matches!(e, RpcError::TooLarge { over_cap: Some((bytes, cap)), .. } if bytes > cap && cap == 256 << 10),
        "{e:?}"
    );
    let one = rpc.transfer_logs(&token, first..=first).await.unwrap();
    assert_eq!(one.len(), 1000, "a single block over the cap is read whole");

    // --target-logs 2000 caps answers at 4 MiB; the first spans (1,000 blocks, one at a
    // time while no answer has tried that width) reach the 8 dense blocks: narrowed by
    // their last block asked alone first, or refused at the cap and narrowed.
    w.ingest_with(
        &w.db,
        w.history.start_block,
        end,
        &["--initial-span", "1000", "--target-logs", "2000"],
    )
    .await;
    w.assert_balances_at(end).await;
    let c = w.db.client().await.unwrap();
    let stored: i64 = c.query_one("SELECT count(*) FROM transfers", &[]).await.unwrap().get(0);
    assert_eq!(stored as u64, w.history.transfers + 8000);
}
