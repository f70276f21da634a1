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
