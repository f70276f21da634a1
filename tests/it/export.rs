//! ExportHolders: every holder of one moment, in GetTopHolders' order, in chunks of at
//! most 10,000 from one snapshot. At the checkpoint and at past blocks (both plans of a
//! past ranking) the export equals balanceOf for every address; a store of 55,000
//! holders comes in six chunks whose ranks continue one another, and a caller that goes
//! away mid-export frees its snapshot at once.

use alloy_primitives::U256;
use futures::StreamExt;
use proto::pb::{ExportHoldersRequest, GetTopHoldersRequest, Holder, HoldersChunk};
use rig::db::TestDb;
use rig::pair::QueryService;
use tonic::Code;

use crate::{indexed_past, transfer_blocks, u256};

/// Every chunk of an export of `req`.
async fn export(qs: &QueryService, req: ExportHoldersRequest) -> Vec<HoldersChunk> {
    let mut client = qs.client().await.unwrap();
    let mut stream = client.export_holders(req).await.unwrap().into_inner();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.next().await {
        chunks.push(chunk.unwrap());
    }
    chunks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_at_any_block_equals_balance_of_for_every_holder() {
    let w = indexed_past(47, true).await;
    let blocks = transfer_blocks(&w).await;
    let qs = QueryService::start(&w.db.url).await.unwrap();
    let mut client = qs.client().await.unwrap();
    for at in [blocks[2], blocks[blocks.len() / 2], blocks[blocks.len() - 3], w.history.end_block] {
        let at_block = (at != w.history.end_block).then_some(at);
        let chunks = export(&qs, ExportHoldersRequest { at_block, ..Default::default() }).await;
        assert_eq!(chunks.len(), 1, "block {at}: 20 holders make one chunk");
        let holders: Vec<Holder> = chunks.iter().flat_map(|c| c.holders.clone()).collect();
        assert!(chunks.iter().all(|c| c.as_of_block == at), "block {at}: one moment");
        let chain = w.chain.balances_at(w.history.token, &w.history.addresses, at).await.unwrap();
        let held = chain.iter().filter(|b| !b.is_zero()).count();
        assert_eq!(holders.len(), held, "block {at}: every holder, no other");
        for (a, bal) in w.history.addresses.iter().zip(&chain) {
            match holders.iter().find(|h| h.address == a.to_checksum(None)) {
                Some(h) => assert_eq!(u256(&h.balance), *bal, "block {at}: {a}"),
                None => assert!(bal.is_zero(), "block {at}: {a} holds {bal} but is missing"),
            }
        }
        let top = client
            .get_top_holders(GetTopHoldersRequest { limit: 10_000, at_block, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(holders, top.holders, "block {at}: GetTopHolders' order and figures");
        assert_eq!(chunks[0].total_supply, top.total_supply);
        // A filter keeps the head.
        let min = u256(&holders[3].balance);
        let kept: Vec<Holder> = export(
            &qs,
            ExportHoldersRequest { at_block, min_balance: min.to_string(), ..Default::default() },
        )
        .await
        .into_iter()
        .flat_map(|c| c.holders)
        .collect();
        let expected = holders.iter().filter(|h| u256(&h.balance) >= min).count();
        assert_eq!(kept, holders[..expected].to_vec(), "block {at}: min_balance");
    }

    let mut c = qs.client().await.unwrap();
    for (req, field) in [
        (ExportHoldersRequest { min_balance: "-3".into(), ..Default::default() }, "min_balance"),
        (ExportHoldersRequest { at_block: Some(u64::MAX >> 1), ..Default::default() }, "at_block"),
        (ExportHoldersRequest { token: "0x12".into(), ..Default::default() }, "token"),
    ] {
        let e = c.export_holders(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_export_comes_in_chunks_of_ten_thousand_ranked_on() {
    rig::init_test_logging();
    let db = TestDb::create().await.unwrap();
    let mut c = db.client().await.unwrap();
    ingestor::store::migrate::run(&mut c).await.unwrap();
    // 55,000 holders; balances repeat, so ties are broken by address across chunks.
    c.batch_execute(
        "INSERT INTO tokens (address, chain_id, decimals, start_block, indexed_block, total_supply, holder_count)
             VALUES ('\\xabababababababababababababababababababab', 1, 18, 0, 100, 1e30, 55000);
         INSERT INTO balances (token, address, balance, last_transfer_block)
             SELECT 1, decode(lpad(to_hex(i), 40, '0'), 'hex'), (i % 700) + 1, 0
             FROM generate_series(1, 55000) i;",
    )
    .await
    .unwrap();
    let qs = QueryService::start(&db.url).await.unwrap();
    let chunks = export(&qs, ExportHoldersRequest::default()).await;
    let sizes: Vec<usize> = chunks.iter().map(|c| c.holders.len()).collect();
    assert_eq!(sizes, vec![10_000, 10_000, 10_000, 10_000, 10_000, 5_000]);
    let holders: Vec<Holder> = chunks.into_iter().flat_map(|c| c.holders).collect();
    let ranks: Vec<u64> = holders.iter().map(|h| h.rank).collect();
    assert_eq!(ranks, (1..=55_000).collect::<Vec<u64>>(), "ranks continue across chunks");
    let expected: Vec<(U256, String)> = c
        .query(
            "SELECT balance::text AS b, '0x' || encode(address, 'hex') FROM balances
             ORDER BY balances.balance DESC, balances.address",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0).parse().unwrap(), r.get::<_, String>(1)))
        .collect();
    let got: Vec<(U256, String)> =
        holders.iter().map(|h| (u256(&h.balance), h.address.to_lowercase())).collect();
    assert_eq!(got, expected, "every holder once, in ranking order");

    // A caller that reads one chunk and goes away: the export's transaction stays open
    // while the stream waits (two chunks buffered), and ends once it is dropped.
    let open = || async {
        c.query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND xact_start IS NOT NULL
               AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    let mut client = qs.client().await.unwrap();
    let mut stream =
        client.export_holders(ExportHoldersRequest::default()).await.unwrap().into_inner();
    assert_eq!(stream.next().await.unwrap().unwrap().holders.len(), 10_000);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(open().await, 1, "the export holds its snapshot while the caller waits");
    drop(stream);
    let started = std::time::Instant::now();
    while open().await > 0 {
        assert!(started.elapsed().as_secs() < 5, "a cancelled export keeps its snapshot");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
