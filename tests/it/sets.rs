//! Token sets and chains: one ingestor indexes many tokens (one request per span for all),
//! tokens come and go with the tokens file, the same address on two chains is two
//! tokens, a reorg touches one chain's tokens only, and ingestors share a chain's tokens
//! by their writer locks. Every holder of every token is checked against `balanceOf`.

use std::path::Path;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256, U256};
use proto::pb::{GetHoldersRequest, GetTopHoldersRequest};
use rig::anvil::Anvil;
use rig::chain::Chain;
use rig::db::TestDb;
use rig::many::Tokens;
use rig::pair::QueryService;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::genesis_time;

/// A chain of chain id `chain_id` with `n` tokens on it.
async fn chain_with(chain_id: u64, n: usize, seed: u64) -> (Anvil, Chain, Tokens) {
    rig::init_test_logging();
    let id = chain_id.to_string();
    let anvil = Anvil::start_with(genesis_time(), &["--chain-id", &id]).await.expect("anvil");
    let mut chain = Chain::connect(&anvil.url).await.expect("chain");
    let tokens = Tokens::deploy(&mut chain, n, 10, seed).await.expect("tokens");
    (anvil, chain, tokens)
}

/// Writes `lines` to `path` the way a ConfigMap update does: a new file renamed over it.
fn write_tokens_file(path: &Path, lines: &[String]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, lines.join("\n") + "\n").unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// An ingestor following `chain` into `db` with `flags`, until `stop`.
fn follow(
    chain: &Chain,
    db: &TestDb,
    flags: &[&str],
    stop: CancellationToken,
) -> JoinHandle<anyhow::Result<()>> {
    let (rpc, url) = (chain.url.clone(), db.url.clone());
    let mut flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    flags.extend(["--poll-interval", "50ms"].map(String::from));
    tokio::spawn(async move {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        rig::pair::ingest_until(&rpc, &url, &flags, stop).await
    })
}

/// The head's number and hash.
async fn head(chain: &Chain) -> (u64, B256) {
    let n = chain.head().await.unwrap();
    let block = chain
        .rpc("eth_getBlockByNumber", serde_json::json!([format!("{n:#x}"), false]))
        .await
        .unwrap();
    (n, serde_json::from_value(block["hash"].clone()).unwrap())
}

/// Waits until every token of `tokens` on chain `chain_id` has its checkpoint at the
/// node's head, same hash.
async fn wait_at_head(chain: &Chain, db: &TestDb, chain_id: u64, tokens: &[Address]) -> u64 {
    let c = db.client().await.unwrap();
    let started = Instant::now();
    loop {
        let (n, hash) = head(chain).await;
        let rows = c
            .query(
                "SELECT address FROM tokens WHERE chain_id = $1 AND indexed_block = $2 AND indexed_hash = $3",
                &[&(chain_id as i64), &(n as i64), &hash],
            )
            .await
            // Before the ingestor's migrations: nothing there yet.
            .unwrap_or_default();
        let there: Vec<Address> = rows.iter().map(|r| r.get(0)).collect();
        if tokens.iter().all(|t| there.contains(t)) {
            return n;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "tokens of chain {chain_id} did not reach head {n}: {} of {} there",
            there.len(),
            tokens.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts, for every token of `tokens` on chain `chain_id`, that every holder holds in
/// the store what balanceOf says at the token's checkpoint, that its holder count is
/// the chain's, and that each of its Transfer logs is stored once (compared with the
/// node's logs up to the checkpoint).
async fn assert_tokens_match(
    chain: &Chain,
    db: &TestDb,
    chain_id: u64,
    tokens: &Tokens,
    which: &[Address],
) {
    let c = db.client().await.unwrap();
    for token in which {
        let row = c
            .query_one(
                "SELECT id, indexed_block, holder_count, transfer_count, start_block FROM tokens
                 WHERE chain_id = $1 AND address = $2",
                &[&(chain_id as i64), token],
            )
            .await
            .unwrap_or_else(|e| panic!("token {token} of chain {chain_id}: {e}"));
        let (id, block, holders, count): (i32, i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let on_chain = chain.balances_at(*token, &tokens.holders, block as u64).await.unwrap();
        for (h, expected) in tokens.holders.iter().zip(&on_chain) {
            let stored: Option<U256> = c
                .query_opt(
                    "SELECT balance FROM balances WHERE token = $1 AND address = $2",
                    &[&id, h],
                )
                .await
                .unwrap()
                .map(|r| r.get(0));
            assert_eq!(
                stored.unwrap_or_default(),
                *expected,
                "{token} (chain {chain_id}): balance of {h} at {block}"
            );
        }
        assert_eq!(
            holders as usize,
            on_chain.iter().filter(|b| !b.is_zero()).count(),
            "{token}: holders"
        );
        let logs = chain
            .rpc(
                "eth_getLogs",
                serde_json::json!([{"address": token, "fromBlock": "0x0", "toBlock": format!("{block:#x}"),
                    "topics": [format!("{}", rig_transfer_topic())]}]),
            )
            .await
            .unwrap();
        let logs = logs.as_array().unwrap().len() as i64;
        let stored = c
            .query_one(
                "SELECT count(*), count(DISTINCT (block_number, log_index)) FROM transfers WHERE token = $1",
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(
            (stored.get::<_, i64>(0), stored.get::<_, i64>(1), count),
            (logs, logs, logs),
            "{token}: each transfer once"
        );
        let seqs: Vec<i64> = c
            .query(
                "SELECT seq FROM transfers WHERE token = $1 ORDER BY block_number, log_index",
                &[&id],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(seqs.windows(2).all(|p| p[0] < p[1]), "{token}: sequence numbers in chain order");
    }
}

fn rig_transfer_topic() -> B256 {
    alloy_primitives::keccak256("Transfer(address,address,uint256)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_address_on_two_chains_is_two_tokens() {
    let (_a1, mut eth, mut on_eth) = chain_with(1, 2, 11).await;
    let (_a2, mut base, mut on_base) = chain_with(8453, 2, 12).await;
    assert_eq!(on_eth.addresses, on_base.addresses, "same deployer, same nonces: same addresses");
    on_eth.activity(&mut eth, 3, 3).await.unwrap();
    on_base.activity(&mut base, 5, 2).await.unwrap();
    let db = TestDb::create().await.unwrap();
    let tokens: Vec<String> = on_eth.addresses.iter().map(|a| a.to_string()).collect();
    for chain in [&eth, &base] {
        let to = chain.head().await.unwrap().to_string();
        // No start given: each token's creation block is found from the node.
        let flags = ["--token", &tokens[0], "--token", &tokens[1], "--to", &to];
        rig::pair::ingest(&chain.url, &db.url, &flags).await.unwrap();
    }
    assert_tokens_match(&eth, &db, 1, &on_eth, &on_eth.addresses).await;
    assert_tokens_match(&base, &db, 8453, &on_base, &on_base.addresses).await;
    let c = db.client().await.unwrap();
    for (chain_id, tokens) in [(1i64, &on_eth), (8453, &on_base)] {
        for (token, created) in tokens.addresses.iter().zip(&tokens.created) {
            let start: i64 = c
                .query_one(
                    "SELECT start_block FROM tokens WHERE chain_id = $1 AND address = $2",
                    &[&chain_id, token],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(start as u64, *created, "{token} on chain {chain_id}: its creation block");
        }
    }

    let qs = QueryService::start(&db.url).await.unwrap();
    let mut client = qs.client().await.unwrap();
    let token = on_eth.addresses[0].to_string();
    let err = client
        .get_top_holders(GetTopHoldersRequest {
            token: token.clone(),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("chain_id")
            && err.message().contains("8453")
            && err.message().contains('1'),
        "{}",
        err.message()
    );
    for (chain_id, chain, tokens) in [(1u64, &eth, &on_eth), (8453, &base, &on_base)] {
        let block = chain.head().await.unwrap();
        let on_chain =
            chain.balances_at(tokens.addresses[0], &tokens.holders, block).await.unwrap();
        let page = client
            .get_holders(GetHoldersRequest {
                token: token.clone(),
                chain_id,
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.chain_id, chain_id);
        let mut served: Vec<(Address, U256)> = page
            .holders
            .iter()
            .map(|h| (h.address.parse().unwrap(), h.balance.parse().unwrap()))
            .collect();
        served.sort();
        let mut expected: Vec<(Address, U256)> = tokens
            .holders
            .iter()
            .zip(&on_chain)
            .filter(|(_, b)| !b.is_zero())
            .map(|(a, b)| (*a, *b))
            .collect();
        expected.sort();
        assert_eq!(served, expected, "holders of {token} on chain {chain_id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_tokens_created_at_different_blocks_are_indexed_from_their_creation() {
    let (_anvil, mut chain, mut tokens) = chain_with(31337, 50, 21).await;
    tokens.activity(&mut chain, 2, 1).await.unwrap();
    let db = TestDb::create().await.unwrap();
    let dir = crate::access::tempdir("token-set");
    let file = dir.join("tokens.txt");
    let mut lines = vec!["# fifty tokens, no start blocks".to_string()];
    lines.extend(tokens.addresses.iter().map(|a| a.to_string()));
    write_tokens_file(&file, &lines);
    let to = chain.head().await.unwrap().to_string();
    let flags = ["--tokens-file", file.to_str().unwrap(), "--to", &to, "--max-span", "16"];
    rig::pair::ingest(&chain.url, &db.url, &flags).await.unwrap();
    let c = db.client().await.unwrap();
    for (token, created) in tokens.addresses.iter().zip(&tokens.created) {
        let start: i64 = c
            .query_one("SELECT start_block FROM tokens WHERE address = $1", &[token])
            .await
            .unwrap()
            .get(0);
        assert_eq!(start as u64, *created, "{token}: its creation block");
    }
    assert_tokens_match(&chain, &db, 31337, &tokens, &tokens.addresses).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_added_to_the_file_catch_up_and_removed_ones_stop() {
    let (_anvil, mut chain, mut tokens) = chain_with(31337, 4, 31).await;
    tokens.activity(&mut chain, 6, 2).await.unwrap();
    let db = TestDb::create().await.unwrap();
    let dir = crate::access::tempdir("token-set");
    let file = dir.join("tokens.txt");
    let line = |a: &Address| a.to_string();
    let (a, b, c, d) =
        (tokens.addresses[0], tokens.addresses[1], tokens.addresses[2], tokens.addresses[3]);
    write_tokens_file(&file, &[line(&a), line(&b)]);
    let stop = CancellationToken::new();
    let running = follow(&chain, &db, &["--tokens-file", file.to_str().unwrap()], stop.clone());
    wait_at_head(&chain, &db, 31337, &[a, b]).await;

    // Two more tokens, one from its creation and one from a start block of its own,
    // while the chain and the others go on.
    let d_start = tokens.created[3] + 2;
    write_tokens_file(
        &file,
        &[line(&a), line(&b), line(&c), format!("{} {d_start}  # from a later block", line(&d))],
    );
    for _ in 0..10 {
        tokens.activity(&mut chain, 1, 2).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_at_head(&chain, &db, 31337, &[a, b, c, d]).await;
    assert_tokens_match(&chain, &db, 31337, &tokens, &[a, b, c]).await;
    let db_client = db.client().await.unwrap();
    let started: i64 = db_client
        .query_one("SELECT start_block FROM tokens WHERE address = $1", &[&d])
        .await
        .unwrap()
        .get(0);
    assert_eq!(started as u64, d_start, "the file's start block");

    // A removed: it stops where it is, listed as not followed; the others go on.
    write_tokens_file(&file, &[line(&b), line(&c), line(&d)]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let following: bool = db_client
            .query_one("SELECT following FROM tokens WHERE address = $1", &[&a])
            .await
            .unwrap()
            .get(0);
        if !following {
            break;
        }
        assert!(Instant::now() < deadline, "the removed token is still followed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a_at: i64 = db_client
        .query_one("SELECT indexed_block FROM tokens WHERE address = $1", &[&a])
        .await
        .unwrap()
        .get(0);
    tokens.activity(&mut chain, 3, 2).await.unwrap();
    let now = wait_at_head(&chain, &db, 31337, &[b, c, d]).await;
    let a_now: i64 = db_client
        .query_one("SELECT indexed_block FROM tokens WHERE address = $1", &[&a])
        .await
        .unwrap()
        .get(0);
    assert_eq!(a_now, a_at, "a removed token is not indexed any more");
    assert!((a_now as u64) < now);
    let followed: Vec<bool> = db_client
        .query("SELECT following FROM tokens WHERE address <> $1", &[&a])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(followed, vec![true; 3]);
    let qs = QueryService::start(&db.url).await.unwrap();
    let listed = qs
        .client()
        .await
        .unwrap()
        .list_tokens(proto::pb::ListTokensRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tokens;
    let not_followed: Vec<&str> =
        listed.iter().filter(|t| !t.following).map(|t| t.address.as_str()).collect();
    assert_eq!(not_followed, vec![a.to_checksum(None)], "ListTokens says which is not followed");
    assert_tokens_match(&chain, &db, 31337, &tokens, &[a, b, c]).await;
    stop.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_on_one_chain_rolls_back_its_tokens_and_nothing_of_the_other() {
    let (_a1, mut eth, mut on_eth) = chain_with(1, 2, 41).await;
    let (_a2, mut base, mut on_base) = chain_with(8453, 2, 42).await;
    let db = TestDb::create().await.unwrap();
    let stop = CancellationToken::new();
    let tokens: Vec<String> = on_eth.addresses.iter().map(|a| a.to_string()).collect();
    let flags = ["--token", &tokens[0], "--token", &tokens[1]];
    let running =
        [follow(&eth, &db, &flags, stop.clone()), follow(&base, &db, &flags, stop.clone())];
    wait_at_head(&eth, &db, 1, &on_eth.addresses).await;
    wait_at_head(&base, &db, 8453, &on_base.addresses).await;

    // Both chains move; then Base forgets its last blocks and takes another branch.
    let snapshot = base.snapshot().await.unwrap();
    let before = on_base.clone();
    on_base.activity(&mut base, 2, 2).await.unwrap();
    on_eth.activity(&mut eth, 2, 2).await.unwrap();
    wait_at_head(&base, &db, 8453, &on_base.addresses).await;
    wait_at_head(&eth, &db, 1, &on_eth.addresses).await;
    base.revert(snapshot).await.unwrap();
    on_base = before;
    on_base.activity(&mut base, 3, 1).await.unwrap();
    wait_at_head(&base, &db, 8453, &on_base.addresses).await;

    let c = db.client().await.unwrap();
    let removed: Vec<(i64, i64)> = c
        .query(
            "SELECT k.chain_id, count(*) FROM removed_transfers r JOIN tokens k ON k.id = r.token
             GROUP BY k.chain_id ORDER BY k.chain_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(removed.len(), 1, "only Base's transfers were taken back: {removed:?}");
    assert_eq!(removed[0].0, 8453);
    let per_token: i64 = c
        .query_one(
            "SELECT count(DISTINCT r.token) FROM removed_transfers r JOIN tokens k ON k.id = r.token WHERE k.chain_id = 8453",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(per_token, 2, "both of Base's tokens rolled back");
    assert_tokens_match(&eth, &db, 1, &on_eth, &on_eth.addresses).await;
    assert_tokens_match(&base, &db, 8453, &on_base, &on_base.addresses).await;
    stop.cancel();
    for r in running {
        r.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingestors_share_a_chain_by_token_and_an_overlapping_one_takes_over() {
    let (_anvil, mut chain, mut tokens) = chain_with(31337, 5, 51).await;
    tokens.activity(&mut chain, 3, 1).await.unwrap();
    let db = TestDb::create().await.unwrap();
    let t: Vec<String> = tokens.addresses.iter().map(|a| a.to_string()).collect();
    let (stop1, stop2, stop3) =
        (CancellationToken::new(), CancellationToken::new(), CancellationToken::new());
    let first = follow(&chain, &db, &["--token", &t[0], "--token", &t[1]], stop1.clone());
    let second = follow(&chain, &db, &["--token", &t[2], "--token", &t[3]], stop2.clone());
    wait_at_head(&chain, &db, 31337, &tokens.addresses[..4]).await;
    // The third wants B and C (held) and E (free): it indexes E and waits for the rest.
    let third =
        follow(&chain, &db, &["--token", &t[1], "--token", &t[2], "--token", &t[4]], stop3.clone());
    tokens.activity(&mut chain, 2, 1).await.unwrap();
    wait_at_head(&chain, &db, 31337, &tokens.addresses).await;
    let c = db.client().await.unwrap();
    let locks: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(locks, 5, "each token's lock held once");
    // The first stops: the third takes B over.
    stop1.cancel();
    first.await.unwrap().unwrap();
    tokens.activity(&mut chain, 2, 1).await.unwrap();
    wait_at_head(&chain, &db, 31337, &tokens.addresses[1..]).await;
    assert_tokens_match(&chain, &db, 31337, &tokens, &tokens.addresses[1..]).await;
    stop2.cancel();
    stop3.cancel();
    second.await.unwrap().unwrap();
    third.await.unwrap().unwrap();
}

/// Each token's rows as text, tokens named by chain and address (ids differ between two
/// stores): the token rows' counters and checkpoints, transfers and balances.
async fn dump_by_address(db: &TestDb) -> Vec<String> {
    let c = db.client().await.unwrap();
    let mut out = Vec::new();
    for sql in [
        "SELECT chain_id, address, start_block, indexed_block, indexed_hash, total_supply::text,
                transfer_count, holder_count, last_seq FROM tokens ORDER BY chain_id, address",
        "SELECT k.chain_id, k.address, t.block_number, t.log_index, t.block_hash, t.tx_hash, t.from_address,
                t.to_address, t.value::text, t.seq, t.from_balance::text, t.to_balance::text
         FROM transfers t JOIN tokens k ON k.id = t.token ORDER BY k.chain_id, k.address, t.block_number, t.log_index",
        "SELECT k.chain_id, k.address, b.address, b.balance::text, b.last_transfer_block
         FROM balances b JOIN tokens k ON k.id = b.token ORDER BY k.chain_id, k.address, b.address",
    ] {
        for row in c.query(sql, &[]).await.unwrap() {
            let mut line = String::new();
            for i in 0..row.len() {
                let cell = if let Ok(v) = row.try_get::<_, Option<String>>(i) {
                    format!("{v:?}")
                } else if let Ok(v) = row.try_get::<_, Option<i64>>(i) {
                    format!("{v:?}")
                } else if let Ok(v) = row.try_get::<_, Option<i32>>(i) {
                    format!("{v:?}")
                } else {
                    format!("{:?}", row.try_get::<_, Option<Vec<u8>>>(i).unwrap())
                };
                line.push_str(&cell);
                line.push('|');
            }
            out.push(line);
        }
    }
    out
}

/// kill -9 at moments spread over a run of 20 tokens, ten following the head and ten
/// added to the tokens file (catching up in tiny batches behind a slow node), while the
/// chain moves: after the last run every token's rows equal an uninterrupted run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9s_with_twenty_tokens_catching_up_and_at_the_head_change_nothing() {
    use rig::proxy::{FaultProxy, Rules};
    use std::process::Stdio;
    let (_anvil, mut chain, mut tokens) = chain_with(31337, 20, 61).await;
    tokens.activity(&mut chain, 12, 1).await.unwrap();
    let rules = Rules { latency: Duration::from_millis(40), ..Rules::default() };
    let node = FaultProxy::start(&chain.url, rules).await.unwrap();
    let db = TestDb::create().await.unwrap();
    let dir = crate::access::tempdir("token-set-kills");
    let file = dir.join("tokens.txt");
    let lines: Vec<String> = tokens.addresses.iter().map(|a| a.to_string()).collect();
    write_tokens_file(&file, &lines[..10]);
    let bin = rig::pair::ingestor_binary().unwrap();
    let mut args: Vec<String> =
        ["--rpc-url", &node.url, "--database-url", &db.url].iter().map(|s| s.to_string()).collect();
    args.extend(
        [
            "--tokens-file",
            file.to_str().unwrap(),
            "--poll-interval",
            "50ms",
            "--finality-from",
            "depth",
            "--finality-depth",
            "3",
        ]
        .map(String::from),
    );
    args.extend(
        ["--batch-transfers", "3", "--initial-span", "1", "--max-span", "1", "--concurrency", "1"]
            .map(String::from),
    );
    args.extend(
        rig::pair::LOCAL_PORTS.iter().chain(&rig::pair::TEST_RANKINGS).map(|s| s.to_string()),
    );
    let start = || {
        tokio::process::Command::new(&bin)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("KILLS_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut child = start();
    wait_at_head(&chain, &db, 31337, &tokens.addresses[..10]).await;
    write_tokens_file(&file, &lines);
    let c = db.client().await.unwrap();
    let (mut moved_between_kills, mut mid_catch_up) = (0, 0);
    for round in 0..10u64 {
        let before: i64 = c
            .query_one("SELECT sum(indexed_block)::bigint FROM tokens", &[])
            .await
            .unwrap()
            .get::<_, Option<i64>>(0)
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(1000 + (round * 389) % 1500)).await;
        tokens.activity(&mut chain, 1, 1).await.unwrap();
        let behind: i64 = c
            .query_one(
                "SELECT count(*) FROM tokens WHERE indexed_block < (SELECT max(indexed_block) FROM tokens)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        child.start_kill().unwrap(); // SIGKILL
        child.wait().await.unwrap();
        mid_catch_up += usize::from(behind > 0);
        let after: i64 = c
            .query_one("SELECT sum(indexed_block)::bigint FROM tokens", &[])
            .await
            .unwrap()
            .get::<_, Option<i64>>(0)
            .unwrap_or(0);
        moved_between_kills += usize::from(after > before);
        child = start();
    }
    assert!(mid_catch_up >= 2, "only {mid_catch_up} of 10 kills landed while tokens caught up");
    assert!(
        moved_between_kills >= 5,
        "only {moved_between_kills} of 10 runs moved a checkpoint before their kill"
    );
    let head = wait_at_head(&chain, &db, 31337, &tokens.addresses).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let reference = TestDb::create().await.unwrap();
    let to = head.to_string();
    let flags = ["--tokens-file", file.to_str().unwrap(), "--to", &to];
    rig::pair::ingest(&chain.url, &reference.url, &flags).await.unwrap();
    let (got, want) = (dump_by_address(&db).await, dump_by_address(&reference).await);
    assert_eq!(got.len(), want.len(), "rows");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
    assert_tokens_match(&chain, &db, 31337, &tokens, &tokens.addresses).await;
}

/// One stream of several tokens: every transfer of each, named by its token and chain, in
/// order per token; its cursor resumes the same list with no gap and no repeat, and is
/// refused for another list; tokens of two chains need chain_id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_of_several_tokens_resumes_by_its_cursor() {
    use proto::pb::{ListTokensRequest, StreamTransfersRequest};
    let (_anvil, mut chain, mut tokens) = chain_with(8453, 3, 71).await;
    tokens.activity(&mut chain, 4, 2).await.unwrap();
    let db = TestDb::create().await.unwrap();
    let t: Vec<String> = tokens.addresses.iter().map(|a| a.to_string()).collect();
    let stop = CancellationToken::new();
    let running =
        follow(&chain, &db, &["--token", &t[0], "--token", &t[1], "--token", &t[2]], stop.clone());
    wait_at_head(&chain, &db, 8453, &tokens.addresses).await;
    let qs = QueryService::start(&db.url).await.unwrap();
    let mut client = qs.client().await.unwrap();
    let listed = vec![t[2].clone(), t[0].clone(), t[1].clone()];
    let request = |cursor: String, from_block: Option<u64>| StreamTransfersRequest {
        tokens: listed.clone(),
        cursor,
        from_block,
        ..Default::default()
    };
    // (token, block, log index, removed) of each event received.
    let mut got: Vec<(String, u64, u32, bool)> = Vec::new();
    let key = |e: &proto::pb::TransferEvent| {
        let tr = e.transfer.as_ref().unwrap();
        assert_eq!(tr.chain_id, 8453, "each transfer names its chain");
        (tr.token.clone(), tr.block_number, tr.log_index, e.removed)
    };
    let stored: i64 = db
        .client()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM transfers", &[])
        .await
        .unwrap()
        .get(0);
    let mut stream =
        client.stream_transfers(request(String::new(), Some(0))).await.unwrap().into_inner();
    let half = stored as usize / 2;
    let mut cursor = String::new();
    for _ in 0..half {
        let e = crate::streaming::next(&mut stream, Duration::from_secs(5)).await;
        got.push(key(&e));
        cursor = e.cursor;
    }
    drop(stream);
    // More transfers while nobody listens; then resume after the cursor.
    tokens.activity(&mut chain, 2, 2).await.unwrap();
    wait_at_head(&chain, &db, 8453, &tokens.addresses).await;
    let total: i64 = db
        .client()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM transfers", &[])
        .await
        .unwrap()
        .get(0);
    let mut stream =
        client.stream_transfers(request(cursor.clone(), None)).await.unwrap().into_inner();
    while got.len() < total as usize {
        let e = crate::streaming::next(&mut stream, Duration::from_secs(5)).await;
        got.push(key(&e));
    }
    drop(stream);
    let mut want: Vec<(String, u64, u32, bool)> = db
        .client()
        .await
        .unwrap()
        .query(
            "SELECT k.address, t.block_number, t.log_index FROM transfers t JOIN tokens k ON k.id = t.token",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let a: Address = r.get(0);
            (a.to_checksum(None), r.get::<_, i64>(1) as u64, r.get::<_, i32>(2) as u32, false)
        })
        .collect();
    let mut sorted = got.clone();
    sorted.sort();
    want.sort();
    assert_eq!(sorted, want, "every transfer of the three tokens once, none missed at the resume");
    for token in &tokens.addresses {
        let of: Vec<(u64, u32)> =
            got.iter().filter(|g| g.0 == token.to_checksum(None)).map(|g| (g.1, g.2)).collect();
        assert!(of.windows(2).all(|w| w[0] < w[1]), "{token}: in chain order");
    }

    // The cursor is the list's: another list, or one token's stream, refuses it.
    let other = StreamTransfersRequest {
        tokens: vec![t[0].clone(), t[1].clone()],
        cursor: cursor.clone(),
        ..Default::default()
    };
    let err = client.stream_transfers(other).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("cursor"), "{}", err.message());
    let one = StreamTransfersRequest { token: t[0].clone(), cursor, ..Default::default() };
    assert_eq!(
        client.stream_transfers(one).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    let many = StreamTransfersRequest { tokens: vec![t[0].clone(); 1001], ..Default::default() };
    let err = client.stream_transfers(many).await.unwrap_err();
    assert!(
        err.message().starts_with("tokens") && err.message().contains("at most 1000"),
        "{}",
        err.message()
    );

    // Each token of the set is listed as followed.
    let listed_tokens =
        client.list_tokens(ListTokensRequest::default()).await.unwrap().into_inner().tokens;
    assert_eq!(listed_tokens.len(), 3);
    assert!(listed_tokens.iter().all(|t| t.following && t.chain_id == 8453));
    stop.cancel();
    running.await.unwrap().unwrap();
}

/// A wrong tokens file stops the ingestor at start with one line naming the file and the
/// line; a token without code stops it naming the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_tokens_file_or_token_stops_the_ingestor_in_one_line() {
    let (_anvil, chain, tokens) = chain_with(31337, 1, 81).await;
    let db = TestDb::create().await.unwrap();
    let dir = crate::access::tempdir("token-set-wrong");
    let file = dir.join("tokens.txt");
    std::fs::write(&file, format!("{}\n0xnot-an-address 5\n", tokens.addresses[0])).unwrap();
    let bin = rig::pair::ingestor_binary().unwrap();
    let run = |args: Vec<String>| {
        let (rpc, url) = (chain.url.clone(), db.url.clone());
        let bin = bin.clone();
        async move {
            tokio::process::Command::new(bin)
                .args(["--rpc-url", &rpc, "--database-url", &url])
                .args(rig::pair::LOCAL_PORTS)
                .args(args)
                .output()
                .await
                .unwrap()
        }
    };
    let out = run(vec!["--tokens-file".into(), file.to_str().unwrap().into()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let line = stderr.lines().last().unwrap_or_default();
    assert!(line.contains("--tokens-file") && line.contains("line 2"), "{stderr}");
    // An address without code among good ones: named, nothing indexed.
    let nobody = "0x000000000000000000000000000000000000dEaD";
    let good = tokens.addresses[0].to_string();
    let out = run(vec!["--token".into(), good, "--token".into(), nobody.into()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.lines().last().unwrap_or_default().contains(nobody), "{stderr}");
    let c = db.client().await.unwrap();
    let committed: i64 = c
        .query_one("SELECT count(*) FROM tokens WHERE indexed_block >= start_block", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(committed, 0, "nothing indexed for a set with a wrong token");
}
