//! A backfill of a rich history: every balance the query-service serves equals the
//! contract's balanceOf at the indexed block, and re-running or splitting the backfill
//! leaves the store identical.

use alloy_primitives::U256;
use proto::pb::{GetHoldersRequest, GetTopHoldersRequest, ListTokensRequest};
use rig::db::TestDb;
use rig::history::Spec;
use rig::pair::QueryService;

use crate::{addr, all_holders, dump, u256, world};

/// For EVERY holder, the served balance equals balanceOf at the indexed block; the supply
/// equals totalSupply() (here exactly 2^256-1 minus one burned unit); balances sum to it;
/// ranks are 1..n in balance order; the other token and the ERC-721-shaped logs are not
/// counted; the 7-day figures equal balanceOf at the week-ago block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_balance_matches_the_chain() {
    let w = world(Spec::test()).await;
    w.ingest_all().await;
    let qs = QueryService::start(&w.db.url).await.unwrap();
    let mut client = qs.client().await.unwrap();
    let end = w.history.end_block;

    let holders = all_holders(&qs, 7).await;
    let top = client
        .get_top_holders(GetTopHoldersRequest { limit: 10_000, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(top.as_of_block, end);
    assert_eq!(top.token, w.history.token.to_checksum(None));
    assert_eq!(top.holders, holders, "pages of 7 and one GetTopHolders agree");

    // Balances: every address that ever held, against the chain.
    let on_chain = w.chain.balances_at(w.history.token, &w.history.addresses, end).await.unwrap();
    let served: std::collections::HashMap<String, &proto::pb::Holder> =
        holders.iter().map(|h| (h.address.clone(), h)).collect();
    let mut expected_holders = 0;
    for (a, bal) in w.history.addresses.iter().zip(&on_chain) {
        match served.get(&a.to_checksum(None)) {
            Some(h) => assert_eq!(u256(&h.balance), *bal, "balance of {a}"),
            None => assert!(bal.is_zero(), "{a} holds {bal} on chain but is not served"),
        }
        if !bal.is_zero() {
            expected_holders += 1;
        }
    }
    assert_eq!(holders.len(), expected_holders, "no holder beyond those on chain");

    // Supply: derived = totalSupply() = sum of balances; 2^256-1 was reached, then 1 burned.
    let supply = w.chain.total_supply_at(w.history.token, end).await.unwrap();
    assert_eq!(supply, U256::MAX - U256::from(1));
    assert_eq!(u256(&top.total_supply), supply);
    let sum = holders
        .iter()
        .map(|h| u256(&h.balance))
        .fold(U256::ZERO, |a, b| a.checked_add(b).expect("sum fits"));
    assert_eq!(sum, supply);

    // Ranking: richest first, ties by lowest address, ranks 1..n, shares add to 100.
    for (i, h) in holders.iter().enumerate() {
        assert_eq!(h.rank, i as u64 + 1);
        assert!(!u256(&h.balance).is_zero(), "zero balances are not holders");
    }
    for pair in holders.windows(2) {
        let (a, b) = (u256(&pair[0].balance), u256(&pair[1].balance));
        assert!(
            a > b || (a == b && addr(&pair[0].address) < addr(&pair[1].address)),
            "order at rank {}",
            pair[0].rank
        );
    }
    let shares: f64 = holders.iter().map(|h| h.share_of_supply_percent).sum();
    assert!((shares - 100.0).abs() < 1e-6, "shares sum to {shares}");
    assert!(
        holders.iter().all(|h| h.address == addr(&h.address).to_checksum(None)),
        "EIP-55 addresses"
    );

    // The other token is not indexed; rejected logs and transfers are counted.
    let tokens =
        client.list_tokens(ListTokensRequest::default()).await.unwrap().into_inner().tokens;
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].transfer_count, w.history.transfers);
    assert_eq!(tokens[0].holder_count, holders.len() as u64);
    assert_eq!(
        (tokens[0].symbol.as_str(), tokens[0].decimals, tokens[0].start_block),
        ("TDOG", 18, w.history.start_block)
    );
    let c = w.db.client().await.unwrap();
    let rejected: i64 = c.query_one("SELECT rejected_logs FROM tokens", &[]).await.unwrap().get(0);
    assert_eq!(rejected as u64, w.history.rejected_logs);
    let other: i64 = c
        .query_one("SELECT count(*) FROM transfers WHERE token <> (SELECT id FROM tokens WHERE address = $1)", &[&w.history.token])
        .await
        .unwrap()
        .get(0);
    assert_eq!(other, 0);

    // 7 days ago: the state after the last block at least 7 days older than the newest.
    let end_time = w.chain.block_time(end).await.unwrap();
    let mut week_ago = end;
    while w.chain.block_time(week_ago).await.unwrap() > end_time - 7 * 86_400 {
        week_ago -= 1;
    }
    assert!(week_ago > w.history.start_block + 3, "the history spans more than 7 days");
    let then = w.chain.balances_at(w.history.token, &w.history.addresses, week_ago).await.unwrap();
    let mut with_change = 0;
    for ((a, ago), now) in w.history.addresses.iter().zip(&then).zip(&on_chain) {
        let Some(h) = served.get(&a.to_checksum(None)) else { continue };
        assert_eq!(u256(&h.balance_7d_ago), *ago, "balance_7d_ago of {a}");
        match h.weekly_change_percent {
            None => {
                assert!(ago.is_zero(), "weekly change of {a} missing");
            }
            Some(pct) => {
                let expected = (f64::from(*now) - f64::from(*ago)) / f64::from(*ago) * 100.0;
                assert!(
                    (pct - expected).abs() <= 1e-9 * expected.abs().max(1.0),
                    "weekly change of {a}: {pct} vs {expected}"
                );
                with_change += 1;
            }
        }
    }
    assert!(with_change > 10, "most holders have a 7-day change ({with_change})");

    // Lookups: a holder, a never-seen address, duplicates; zero balances come back as "0".
    let known = holders[3].address.clone();
    let never = "0x000000000000000000000000000000000000dEaD".to_string();
    let lookup = client
        .get_holders(GetHoldersRequest {
            addresses: vec![never.clone(), known.to_lowercase(), known.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lookup.holders.len(), 2);
    assert_eq!(lookup.holders[0].address, known);
    assert_eq!(lookup.holders[0].balance, holders[3].balance);
    assert_eq!(lookup.holders[1].address, never);
    assert_eq!((lookup.holders[1].balance.as_str(), lookup.holders[1].rank), ("0", 0));
    assert!(lookup.next_page_token.is_empty());
    // A zero-balance known address (one that sent everything away, if any) is served too.
    let zero: Vec<_> = w
        .history
        .addresses
        .iter()
        .zip(&on_chain)
        .filter(|(_, b)| b.is_zero())
        .map(|(a, _)| a.to_string())
        .collect();
    if let Some(z) = zero.first() {
        let r = client
            .get_holders(GetHoldersRequest { addresses: vec![z.clone()], ..Default::default() })
            .await
            .unwrap();
        assert_eq!(r.into_inner().holders[0].balance, "0");
    }
}

/// The same range indexed twice, in two overlapping halves, or re-read from scratch over
/// stored transfers, leaves exactly the same store as one clean backfill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_and_split_backfills_store_the_same() {
    let spec = Spec { holders: 30, days: 3, extreme_amounts: false, ..Spec::test() };
    let w = world(spec).await;
    let (start, end) = (w.history.start_block, w.history.end_block);
    w.ingest_all().await;
    let once = dump(&w.db).await;
    assert!(once.len() > 50, "the store holds the history");

    // The same range again: nothing changes.
    w.ingest_all().await;
    assert_eq!(dump(&w.db).await, once, "a second run over the same range");

    // Two overlapping halves into a fresh database.
    let halves = TestDb::create().await.unwrap();
    let mid = (start + end) / 2;
    w.ingest(&halves, start, mid).await;
    w.ingest(&halves, mid - 3, end).await;
    assert_eq!(dump(&halves).await, once, "overlapping halves");

    // Every transfer fetched and committed a second time: the store refuses duplicates and
    // only new rows move balances.
    let c = w.db.client().await.unwrap();
    c.execute("UPDATE tokens SET indexed_block = start_block - 1", &[]).await.unwrap();
    w.ingest_all().await;
    assert_eq!(dump(&w.db).await, once, "re-reading stored transfers");
}

/// A backfill's partitions end where its final blocks end: the one it fills last is
/// indexed while the verified steps above write into a partition of their own; both end
/// with both indexes, and the store matches the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partition_a_backfill_ends_in_ends_where_finality_ends() {
    let w = world(Spec { holders: 20, days: 2, extreme_amounts: false, ..Spec::test() }).await;
    let (start, end) = (w.history.start_block, w.history.end_block);
    let head = w.chain.head().await.unwrap();
    w.ingest_with(&w.db, start, end, &["--finality-from", "depth", "--finality-depth", "4"]).await;
    let split = (end.min(head - 4) + 1) as i64;
    assert!(
        split > start as i64 && split <= end as i64,
        "the history has blocks on both sides of {split}"
    );

    let c = w.db.client().await.unwrap();
    let chain: i64 = c.query_one("SELECT chain_id FROM tokens", &[]).await.unwrap().get(0);
    let parts: Vec<(String, i64, i64)> = c
        .query("SELECT name, first, next FROM transfer_partitions_of($1) ORDER BY first", &[&chain])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(parts.len(), 2, "the final blocks' partition and the verified steps': {parts:?}");
    let (below, above) = (&parts[0], &parts[1]);
    assert!(below.1 <= start as i64 && below.2 == split, "below the split: {below:?}");
    assert!(above.1 == split && above.2 > end as i64, "from the split: {above:?}");
    for (name, first, _) in &parts {
        assert_eq!(name, &format!("transfers_{chain}_at_{first}"), "named by its first block");
        let suffix = name.trim_start_matches("transfers_");
        for side in ["from", "to"] {
            let index = format!("transfers_{side}_{suffix}");
            let valid: bool = c
                .query_one(
                    "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)",
                    &[&index],
                )
                .await
                .unwrap_or_else(|e| panic!("{index} is missing: {e}"))
                .get(0);
            assert!(valid, "{index} is valid");
        }
    }
    let filled: i64 =
        c.query_one(&format!("SELECT count(*) FROM {}", below.0), &[]).await.unwrap().get(0);
    let all: i64 = c.query_one("SELECT count(*) FROM transfers", &[]).await.unwrap().get(0);
    assert_eq!(all as u64, w.history.transfers, "every transfer stored once");
    assert!(filled > 0 && filled <= all, "the backfill filled the partition below the split");
    w.assert_balances_at(end).await;
}

/// A history younger than a week: the week reaches back before the first indexed block,
/// so every holder held nothing 7 days ago. The query-service says so without summing
/// the week's transfers (here the whole history), and that is what the sums give: each
/// stored balance is exactly what its transfers add up to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_week_before_the_first_block_held_nothing() {
    let w = world(Spec::test()).await;
    let start = w.history.start_block;
    let first_time = w.chain.block_time(start).await.unwrap();
    let mut end = start;
    while w.chain.block_time(end + 1).await.unwrap() < first_time + 3 * 86_400 {
        end += 1;
    }
    assert!(end > start + 3, "several blocks within three days");
    w.ingest(&w.db, start, end).await;
    let qs = QueryService::start(&w.db.url).await.unwrap();
    let mut client = qs.client().await.unwrap();

    let top = client
        .get_top_holders(GetTopHoldersRequest { limit: 10_000, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(top.as_of_block, end);
    let on_chain = w.chain.balances_at(w.history.token, &w.history.addresses, end).await.unwrap();
    let held = on_chain.iter().filter(|b| !b.is_zero()).count();
    assert!(
        held > 5 && top.holders.len() == held,
        "{} holders served, {held} on chain",
        top.holders.len()
    );
    let lookup = client
        .get_holders(GetHoldersRequest {
            addresses: w.history.addresses.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lookup.holders.len(), w.history.addresses.len());
    for h in top.holders.iter().chain(&lookup.holders) {
        assert_eq!(u256(&h.balance_7d_ago), U256::ZERO, "{h:?}");
        assert_eq!(h.weekly_change_percent, None, "{h:?}");
    }
    let served: std::collections::HashMap<&str, U256> =
        lookup.holders.iter().map(|h| (h.address.as_str(), u256(&h.balance))).collect();
    for (a, bal) in w.history.addresses.iter().zip(&on_chain) {
        assert_eq!(served.get(a.to_checksum(None).as_str()), Some(bal), "{a}");
    }

    // The summed way: balance minus the week's moves (all of them) is 0 for every holder.
    let c = w.db.client().await.unwrap();
    let left: Vec<(Vec<u8>, String)> = pairs(
        &c,
        "SELECT b.address, (b.balance - coalesce(i.v, 0) + coalesce(o.v, 0))::text
         FROM balances b
         LEFT JOIN (SELECT to_address a, sum(value) v FROM transfers GROUP BY 1) i ON i.a = b.address
         LEFT JOIN (SELECT from_address a, sum(value) v FROM transfers GROUP BY 1) o ON o.a = b.address
         WHERE b.balance > 0",
    )
    .await;
    assert_eq!(left.len(), held);
    assert!(left.iter().all(|(_, v)| v == "0"), "{left:?}");
}

/// The two columns of every row `sql` returns.
async fn pairs<A, B>(c: &tokio_postgres::Client, sql: &str) -> Vec<(A, B)>
where
    A: for<'a> tokio_postgres::types::FromSql<'a>,
    B: for<'a> tokio_postgres::types::FromSql<'a>,
{
    c.query(sql, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect()
}
