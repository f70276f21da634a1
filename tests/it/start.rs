//! Where a token's index starts: with no `--from`, at its creation block, found from the
//! node by bisection on `eth_getCode` (balances are sums over the whole history);
//! `--from head` follows from the newest block; a node without old state is named with
//! the setting to give instead.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{small, world, world_with};

async fn start_of(db: &rig::db::TestDb) -> Option<(i64, i64)> {
    let c = db.client().await.unwrap();
    let row = c.query_opt("SELECT start_block, indexed_block FROM tokens", &[]).await.ok()??;
    Some((row.get(0), row.get(1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_from_a_token_starts_at_its_creation_block() {
    let w = world(small(301)).await;
    let token = w.history.token.to_string();
    let to = w.history.end_block.to_string();
    rig::pair::ingest(&w.chain.url, &w.db.url, &["--token", &token, "--to", &to]).await.unwrap();
    let (start, indexed) = start_of(&w.db).await.unwrap();
    assert_eq!(start, w.history.start_block as i64, "the block the token was deployed in");
    assert_eq!(indexed, w.history.end_block as i64);
    w.assert_balances_at(w.history.end_block).await;
    w.assert_transfer_count(w.history.transfers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_head_follows_from_the_newest_block() {
    let w = world(small(302)).await;
    let head = w.chain.head().await.unwrap() as i64;
    let stop = CancellationToken::new();
    let (rpc, db, token) = (w.chain.url.clone(), w.db.url.clone(), w.history.token.to_string());
    let following = tokio::spawn({
        let stop = stop.clone();
        async move {
            let flags = ["--token", &token, "--from", "head", "--poll-interval", "100ms"];
            rig::pair::ingest_until(&rpc, &db, &flags, stop).await
        }
    });
    let started = std::time::Instant::now();
    while start_of(&w.db).await.is_none_or(|(_, indexed)| indexed < head) {
        assert!(started.elapsed() < Duration::from_secs(20), "not following");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(start_of(&w.db).await.unwrap().0, head);
    stop.cancel();
    following.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_old_state_is_named_with_the_setting_to_give() {
    let w = world_with(small(303), &["--prune-history"]).await;
    let out = tokio::process::Command::new(rig::pair::ingestor_binary().unwrap())
        .args(["--rpc-url", &w.chain.url, "--database-url", &w.db.url])
        .args(["--token", &w.history.token.to_string()])
        .args(["--max-backoff", "50ms"])
        .args(rig::pair::LOCAL_PORTS)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let line: Vec<&str> = err.lines().filter(|l| l.starts_with("ingestor: error:")).collect();
    assert_eq!(line.len(), 1, "{err}");
    assert!(line[0].contains("--from") && line[0].contains("old"), "{}", line[0]);
    assert!(line[0].contains(&w.history.token.to_checksum(None)), "{}", line[0]);
    assert!(start_of(&w.db).await.is_none(), "nothing registered");
}
