//! `min_balance` and `holder_count`, at the checkpoint and at past blocks (both plans of
//! a past ranking): the filtered ranking is the head of the whole ranking, ranks kept;
//! the count is the number of addresses whose balanceOf at that block is at least the
//! filter; a lookup returns only the addresses at or above it; bad filters are
//! INVALID_ARGUMENT naming the field.

use alloy_primitives::U256;
use proto::pb::{GetHoldersRequest, GetTopHoldersRequest, Holder};
use rig::pair::QueryService;
use tonic::Code;

use crate::{indexed_past, transfer_blocks, u256};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_balance_keeps_the_head_of_the_ranking_and_holder_count_counts_it() {
    let w = indexed_past(43, false).await;
    let token = w.history.token;
    let blocks = transfer_blocks(&w).await;
    // The old side, the recent side, and the checkpoint.
    let picks = [blocks[2], blocks[blocks.len() - 3], w.history.end_block];

    let qs = QueryService::start(&w.db.url).await.unwrap();
    let mut client = qs.client().await.unwrap();
    let everyone: Vec<String> = w.history.addresses.iter().map(|a| a.to_string()).collect();
    for at in picks {
        let chain = w.chain.balances_at(token, &w.history.addresses, at).await.unwrap();
        let mut held: Vec<U256> = chain.iter().copied().filter(|b| !b.is_zero()).collect();
        held.sort_unstable_by(|a, b| b.cmp(a));
        assert!(held.len() > 4, "block {at}: a ranking to cut");
        let at_block = (at != w.history.end_block).then_some(at);
        let whole = client
            .get_top_holders(GetTopHoldersRequest { limit: 10_000, at_block, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(whole.holder_count, held.len() as u64, "block {at}: every holder counted");
        // Cut between the 3rd and 4th richest (or at a balance many share).
        for min in [held[2], held[3], held[held.len() - 1], held[0] + U256::from(1)] {
            let expected = held.iter().filter(|b| **b >= min).count();
            let top = client
                .get_top_holders(GetTopHoldersRequest {
                    limit: 10_000,
                    at_block,
                    min_balance: min.to_string(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(top.holder_count, expected as u64, "block {at}, min {min}: the count");
            assert_eq!(
                top.holders,
                whole.holders[..expected].to_vec(),
                "block {at}, min {min}: the head of the ranking, ranks kept"
            );
            // Pages of 2 give the same holders.
            let mut paged: Vec<Holder> = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .get_holders(GetHoldersRequest {
                        page_size: 2,
                        page_token: page_token.clone(),
                        at_block,
                        min_balance: min.to_string(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(page.holder_count, expected as u64);
                paged.extend(page.holders);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            assert_eq!(paged, top.holders, "block {at}, min {min}: pages");
            // A lookup of every address returns those at or above the filter.
            let looked = client
                .get_holders(GetHoldersRequest {
                    addresses: everyone.clone(),
                    at_block,
                    min_balance: min.to_string(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(looked.holders.len(), expected, "block {at}, min {min}: lookup");
            assert!(looked.holders.iter().all(|h| u256(&h.balance) >= min));
            assert_eq!(looked.holder_count, expected as u64);
        }
    }

    for bad in ["-1", "12abc", "1e18", &format!("{}0", U256::MAX)] {
        let e = client
            .get_top_holders(GetTopHoldersRequest {
                min_balance: bad.to_string(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}");
        assert!(e.message().contains("min_balance"), "{bad}: {}", e.message());
        let e = client
            .get_holders(GetHoldersRequest { min_balance: bad.to_string(), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}");
    }
}
