//! Where a backfill meets the head: the deep range's last batch stays open and the first
//! verified step above it joins it, so both commit as one transaction. When the step's
//! logs come from another branch than its headers (the chain moved between the calls),
//! the final blocks commit alone and the step is taken again; either way the store ends
//! as the chain is.

use rig::history::Spec;
use rig::proxy::{FaultProxy, Rules};
use serde_json::json;

use crate::{World, world};

/// Verified steps for the last four blocks; one batch for everything below them.
const FLAGS: [&str; 6] =
    ["--finality-from", "depth", "--finality-depth", "4", "--batch-interval", "1h"];

/// The first block above the final ones, for a backfill of the whole history.
async fn split(w: &World) -> u64 {
    let head = w.chain.head().await.unwrap();
    let split = w.history.end_block.min(head - 4) + 1;
    assert!(split > w.history.start_block && split <= w.history.end_block);
    split
}

/// The transactions the stored transfers were committed in, below and from `split`.
async fn commits(w: &World, split: u64) -> (Vec<String>, Vec<String>) {
    let c = w.db.client().await.unwrap();
    let xmins = |sql: &'static str| {
        let c = &c;
        async move {
            let rows = c.query(sql, &[&(split as i64)]).await.unwrap();
            rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>()
        }
    };
    (
        xmins("SELECT DISTINCT xmin::text FROM transfers WHERE block_number < $1").await,
        xmins("SELECT DISTINCT xmin::text FROM transfers WHERE block_number >= $1").await,
    )
}

/// The kept hashes of the verified blocks equal the chain's, and every balance and
/// transfer is the chain's.
async fn assert_as_the_chain(w: &World, split: u64) {
    let end = w.history.end_block;
    let c = w.db.client().await.unwrap();
    for n in split..=end {
        let block = w.chain.rpc("eth_getBlockByNumber", json!([format!("{n:#x}"), false])).await;
        let hash: String = block.unwrap()["hash"].as_str().unwrap().to_string();
        let kept: Vec<u8> = c
            .query_one("SELECT hash FROM blocks WHERE number = $1", &[&(n as i64)])
            .await
            .unwrap_or_else(|e| panic!("block {n} is kept: {e}"))
            .get(0);
        assert_eq!(format!("0x{}", hex(&kept)), hash, "the kept hash of block {n}");
    }
    w.assert_transfer_count(w.history.transfers).await;
    w.assert_balances_at(end).await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_final_batch_and_the_first_step_commit_as_one() {
    let w = world(Spec { holders: 20, days: 2, extreme_amounts: false, ..Spec::test() }).await;
    let split = split(&w).await;
    w.ingest_with(&w.db, w.history.start_block, w.history.end_block, &FLAGS).await;
    let (below, above) = commits(&w, split).await;
    assert_eq!(below.len(), 1, "the final blocks in one transaction: {below:?}");
    assert_eq!(above, below, "the verified blocks in the same one");
    assert_as_the_chain(&w, split).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_another_branch_leave_the_final_blocks_to_commit_alone() {
    let w = world(Spec { holders: 20, days: 2, extreme_amounts: false, ..Spec::test() }).await;
    let split = split(&w).await;
    let proxy = FaultProxy::start(&w.chain.url, Rules::default()).await.unwrap();
    proxy.other_branch_logs_from(split);
    let token = w.history.token.to_string();
    let (from, to) = (w.history.start_block.to_string(), w.history.end_block.to_string());
    let mut flags = vec!["--token", &token, "--from", &from, "--to", &to];
    flags.extend(FLAGS);
    flags.extend(["--poll-interval", "50ms"]);
    rig::pair::ingest(&proxy.url, &w.db.url, &flags).await.expect("ingest");
    assert_eq!(proxy.branched(), 1, "one answer came from another branch");
    let (below, above) = commits(&w, split).await;
    assert_eq!(below.len(), 1, "the final blocks in one transaction: {below:?}");
    assert_eq!(above.len(), 1, "the step in one transaction: {above:?}");
    assert_ne!(above, below, "the step taken again, in a transaction of its own");
    assert_as_the_chain(&w, split).await;
}
