//! Balances at any point in time: for past blocks of a nine-day history (Anvil keeps
//! every block's state), GetHolders and GetTopHolders with at_block or at_time answer
//! what balanceOf and totalSupply said at that block, ranked, with the 7-day change
//! relative to that block; the old side and the recent side of the history (two query
//! plans) both.

use alloy_primitives::{Address, U256};
use proto::pb::{Finality, GetHoldersRequest, GetTopHoldersRequest, Holder};
use rig::pair::QueryService;
use tonic::Code;

use crate::{indexed_past, u256};

const WEEK: i64 = 7 * 24 * 3600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_at_past_blocks_equal_balance_of_at_those_blocks() {
    let w = indexed_past(41, true).await;
    let c = w.db.client().await.unwrap();
    let token = w.history.token;

    // One definition of "balance at a block": at the checkpoint it is the balances table,
    // and minus the zero address's is the supply.
    let off: i64 = c
        .query_one(
            "SELECT count(*) FROM balances b JOIN tokens k ON k.id = b.token
             WHERE (balance_at(b.token, b.address, k.indexed_block)).balance <> b.balance",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(off, 0, "balance_at(checkpoint) differs from the balances table");
    let supply_ok: bool = c
        .query_one(
            "SELECT -(balance_at(id, $1, indexed_block)).balance = total_supply FROM tokens",
            &[&Address::ZERO],
        )
        .await
        .unwrap()
        .get(0);
    assert!(supply_ok);

    // Blocks with transfers, and their times (the chain's).
    let blocks: Vec<(u64, i64)> = c
        .query("SELECT DISTINCT block_number, block_time FROM transfers ORDER BY block_number", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1)))
        .collect();
    assert!(blocks.len() > 10, "a history of many blocks");
    // The first mint (old side: most transfers after it), days later, and near the end
    // (recent side), plus a block without transfers.
    let picks = [
        blocks[0].0,
        blocks[1].0,
        blocks[blocks.len() / 2].0,
        blocks[blocks.len() - 2].0,
        blocks[blocks.len() - 2].0 + 1,
    ];

    let qs = QueryService::start(&w.db.url).await.unwrap();
    let mut client = qs.client().await.unwrap();
    let addresses: Vec<String> = w.history.addresses.iter().map(|a| a.to_string()).collect();
    let mut checked = 0;
    for &at in &picks {
        let chain = w.chain.balances_at(token, &w.history.addresses, at).await.unwrap();
        let supply = w.chain.total_supply_at(token, at).await.unwrap();
        let time = blocks.iter().rev().find(|b| b.0 <= at).unwrap().1;
        // "7 days before": the newest block with transfers at least a week older.
        let week = blocks.iter().rev().find(|b| b.1 <= time - WEEK).map(|b| b.0);
        let week_ago = match week {
            Some(b) => w.chain.balances_at(token, &w.history.addresses, b).await.unwrap(),
            None => vec![U256::ZERO; w.history.addresses.len()],
        };
        let expected = |h: &Holder| {
            let i = w.history.addresses.iter().position(|a| a.to_string() == h.address).unwrap();
            (chain[i], week_ago[i])
        };

        // The addresses, looked up at the block.
        let lookup = client
            .get_holders(GetHoldersRequest {
                addresses: addresses.clone(),
                at_block: Some(at),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((lookup.as_of_block, u256(&lookup.total_supply)), (at, supply));
        assert_eq!(lookup.holders.len(), addresses.len());
        for h in &lookup.holders {
            let (now, ago) = expected(h);
            assert_eq!(
                (u256(&h.balance), u256(&h.balance_7d_ago)),
                (now, ago),
                "{} at {at}",
                h.address
            );
            checked += 1;
        }

        // The ranking at the block: every holder then, richest first, ranks 1..n.
        let top = client
            .get_top_holders(GetTopHoldersRequest {
                limit: 1000,
                at_block: Some(at),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut want: Vec<(U256, String)> = w
            .history
            .addresses
            .iter()
            .zip(&chain)
            .filter(|(_, b)| !b.is_zero())
            .map(|(a, b)| (*b, a.to_checksum(None)))
            .collect();
        want.sort_by(|x, y| {
            y.0.cmp(&x.0).then_with(|| x.1.to_lowercase().cmp(&y.1.to_lowercase()))
        });
        let got: Vec<(U256, String)> =
            top.holders.iter().map(|h| (u256(&h.balance), h.address.clone())).collect();
        assert_eq!(got, want, "ranking at block {at}");
        assert_eq!(u256(&top.total_supply), supply);
        let supply_f: f64 = supply.to_string().parse().unwrap();
        for (i, h) in top.holders.iter().enumerate() {
            assert_eq!(h.rank, i as u64 + 1);
            let (now, ago) = expected(h);
            assert_eq!(u256(&h.balance_7d_ago), ago);
            let share = now.to_string().parse::<f64>().unwrap() * 100.0 / supply_f;
            assert!((h.share_of_supply_percent - share).abs() <= share * 1e-9, "{h:?}");
        }

        // Pages of that ranking.
        let mut paged = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .get_holders(GetHoldersRequest {
                    page_size: 3,
                    page_token: page_token.clone(),
                    at_block: Some(at),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            paged.extend(page.holders.into_iter().map(|h| (h.rank, h.address)));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        let ranked: Vec<(u64, String)> =
            top.holders.iter().map(|h| (h.rank, h.address.clone())).collect();
        assert_eq!(paged, ranked, "pages at block {at}");

        // The same moment by time.
        let by_time = client
            .get_top_holders(GetTopHoldersRequest {
                limit: 1000,
                at_time: Some(prost_types::Timestamp { seconds: time, nanos: 0 }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let stored_at = blocks.iter().rev().find(|b| b.0 <= at).unwrap().0;
        assert_eq!(by_time.as_of_block, stored_at);
        assert_eq!(by_time.holders, top.holders);
    }
    assert!(checked >= 5 * addresses.len());

    // Moments the store cannot answer for, or asked for twice: INVALID_ARGUMENT.
    let indexed = w.history.end_block;
    let bad = [
        GetTopHoldersRequest { at_block: Some(indexed + 1), ..Default::default() },
        GetTopHoldersRequest { at_block: Some(w.history.start_block - 1), ..Default::default() },
        GetTopHoldersRequest {
            at_block: Some(indexed),
            finality: Finality::Finalized as i32,
            ..Default::default()
        },
        GetTopHoldersRequest {
            at_time: Some(prost_types::Timestamp { seconds: i64::MAX / 2, nanos: 0 }),
            ..Default::default()
        },
        GetTopHoldersRequest {
            at_time: Some(prost_types::Timestamp { seconds: 1, nanos: 0 }),
            ..Default::default()
        },
        GetTopHoldersRequest { finality: 7, ..Default::default() },
    ];
    for req in bad {
        let status = client.get_top_holders(req.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{req:?}: {status:?}");
        assert!(status.message().contains("at_") || status.message().contains("finality"));
    }
}
