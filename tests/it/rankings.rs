//! Past rankings from the rankings the ingestor keeps (V10) give exactly what the
//! history gives, at every block, shallow rankings included; an answer deeper than a
//! kept ranking comes from the history; a rollback takes the rankings above the fork.

use proto::pb::GetTopHoldersRequest;
use query_service::store::{self, history, rankings};
use rig::history::Spec;
use rig::pair::QueryService;

use crate::{transfer_blocks, world};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_rankings_answer_as_the_history_does_at_every_block() {
    let spec = Spec { holders: 40, days: 4, blocks_per_day: 3, ..Spec::test() };
    let w = world(spec).await;
    // Shallow rankings every 9 transfers, in batches of 20 transfers: rankings are taken
    // mid-batch, from memory.
    w.ingest_with(
        &w.db,
        w.history.start_block,
        w.history.end_block,
        &["--ranking-every", "9", "--ranking-depth", "6", "--batch-transfers", "20"],
    )
    .await;
    w.assert_balances_at(w.history.end_block).await;

    let pool = store::pool(&w.db.url, 2, std::time::Duration::from_secs(30)).unwrap();
    let mut client = pool.get().await.unwrap();
    let tx = store::snapshot(&mut client, None).await.unwrap();
    let wanted = store::tokens::Wanted { token: Some(w.history.token), chain_id: None };
    let token = store::tokens::token(&tx, wanted).await.unwrap();
    let (mut from_kept, mut too_deep) = (0, 0);
    for block in transfer_blocks(&w).await {
        let block = block as i64;
        if block >= token.indexed_block {
            continue;
        }
        let at = history::moment_at(&tx, &token, block).await.unwrap();
        for limit in [1, 3, 6, 40] {
            let truth = history::ranked_from_history(&tx, &token, &at, None, limit).await.unwrap();
            match rankings::ranked_from_kept(&tx, &token, &at, limit).await.unwrap() {
                Some(rows) => {
                    assert_eq!(rows, truth, "block {block}, limit {limit}");
                    from_kept += 1;
                }
                None => too_deep += 1,
            }
        }
    }
    let asked = from_kept + too_deep;
    assert!(2 * from_kept > asked, "most answers come from kept rankings ({from_kept} of {asked})");
    assert!(too_deep > 0, "40 holders is deeper than a ranking of 6");
    tx.commit().await.unwrap();

    // Through the service: the same holders as the history at a past block.
    let qs = QueryService::start(&w.db.url).await.unwrap();
    let mut grpc = qs.client().await.unwrap();
    let blocks = transfer_blocks(&w).await;
    let at = blocks[blocks.len() / 2];
    let top = grpc
        .get_top_holders(GetTopHoldersRequest {
            limit: 3,
            at_block: Some(at),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let chain = w.chain.balances_at(w.history.token, &w.history.addresses, at).await.unwrap();
    let mut held: Vec<_> = chain.iter().copied().filter(|b| !b.is_zero()).collect();
    held.sort_unstable_by(|a, b| b.cmp(a));
    let served: Vec<_> = top.holders.iter().map(|h| crate::u256(&h.balance)).collect();
    assert_eq!(served, held[..3].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_rankings_hold_every_holder() {
    let w = world(Spec { holders: 15, days: 2, ..Spec::test() }).await;
    w.ingest_with(
        &w.db,
        w.history.start_block,
        w.history.end_block,
        &["--ranking-every", "10", "--ranking-depth", "1000"],
    )
    .await;
    w.assert_balances_at(w.history.end_block).await;
    let c = w.db.client().await.unwrap();
    let row = c.query_one("SELECT count(*), bool_and(complete) FROM rankings", &[]).await.unwrap();
    let (kept, complete): (i64, Option<bool>) = (row.get(0), row.get(1));
    assert!(kept > 3, "rankings kept: {kept}");
    assert_eq!(complete, Some(true), "a ranking deeper than the holders is complete");
}
