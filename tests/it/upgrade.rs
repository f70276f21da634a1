//! A populated store of an older schema (V11: one token per address, transfers
//! partitioned by block alone, with balances, blocks, kept rankings, removed transfers)
//! upgrades in place to V12 (the chain in every key), then to V13 (partitions by
//! density, beside the fixed ones), V14 (each partition's own key and sequence
//! index) and V15 (tokens by address), and every row and every answer is what a store
//! written by the current ingestor holds.
//!
//! The V11 store is made from a store the current ingestor wrote: migrated to V11 only,
//! then every row copied across with the token named by its address, the way V11 kept
//! it; its partitions made and indexed by V11's own functions.

use rig::db::TestDb;
use rig::pair::QueryService;

use crate::{all_holders, dump, indexed_past};

/// Every table of the store, each row as V11 keeps it: (table, its columns, the SELECT
/// that reads them from a current store).
const TABLES: [(&str, &str, &str); 8] = [
    (
        "tokens",
        "address, chain_id, name, symbol, decimals, start_block, indexed_block, indexed_hash,
         indexed_time, total_supply, chain_supply, chain_supply_block, transfer_count,
         holder_count, rejected_logs, updated_at, last_seq, safe_block, finalized_block",
        "SELECT address, chain_id, name, symbol, decimals, start_block, indexed_block, indexed_hash,
                indexed_time, total_supply, chain_supply, chain_supply_block, transfer_count,
                holder_count, rejected_logs, updated_at, last_seq, safe_block, finalized_block
         FROM tokens",
    ),
    (
        "transfers",
        "token, block_number, log_index, block_hash, block_time, tx_hash, from_address,
         to_address, value, seq, from_balance, to_balance",
        "SELECT k.address, t.block_number, t.log_index, t.block_hash, t.block_time, t.tx_hash,
                t.from_address, t.to_address, t.value, t.seq, t.from_balance, t.to_balance
         FROM transfers t JOIN tokens k ON k.id = t.token",
    ),
    (
        "balances",
        "token, address, balance, last_transfer_block",
        "SELECT k.address, b.address, b.balance, b.last_transfer_block
         FROM balances b JOIN tokens k ON k.id = b.token",
    ),
    (
        "blocks",
        "token, number, hash, time, holders",
        "SELECT k.address, b.number, b.hash, b.time, b.holders
         FROM blocks b JOIN tokens k ON k.id = b.token",
    ),
    (
        "rejected_logs",
        "token, block_number, log_index",
        "SELECT k.address, r.block_number, r.log_index
         FROM rejected_logs r JOIN tokens k ON k.id = r.token",
    ),
    (
        "removed_transfers",
        "token, removed_seq, seq, block_number, log_index, block_hash, block_time, tx_hash,
         from_address, to_address, value",
        "SELECT k.address, r.removed_seq, r.seq, r.block_number, r.log_index, r.block_hash,
                r.block_time, r.tx_hash, r.from_address, r.to_address, r.value
         FROM removed_transfers r JOIN tokens k ON k.id = r.token",
    ),
    (
        "rankings",
        "token, block, depth, complete, transfer_count",
        "SELECT k.address, r.block, r.depth, r.complete, r.transfer_count
         FROM rankings r JOIN tokens k ON k.id = r.token",
    ),
    (
        "ranking_rows",
        "token, block, rank, address, balance, last_transfer_block",
        "SELECT k.address, r.block, r.rank, r.address, r.balance, r.last_transfer_block
         FROM ranking_rows r JOIN tokens k ON k.id = r.token",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_populated_v11_store_upgrades_and_answers_as_before() {
    let w = indexed_past(291, false).await;
    let expected_rows = dump(&w.db).await;
    let expected = {
        let qs = QueryService::start(&w.db.url).await.unwrap();
        all_holders(&qs, 3).await
    };

    // The same store as V11 held it.
    let old = TestDb::create().await.unwrap();
    let mut admin = rig::db::connect(&old.url).await.unwrap();
    let applied = ingestor::store::migrate::run_to(&mut admin, 11).await.unwrap();
    assert_eq!(applied, 11);
    let from = w.db.client().await.unwrap();
    let (lo, hi): (i64, i64) = {
        let r = from
            .query_one("SELECT min(block_number), max(block_number) FROM transfers", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    // Small partitions, several of them, one split as a backfill leaves it.
    admin
        .batch_execute(&format!(
            "UPDATE transfer_partitioning SET blocks = 16;
             SELECT split_transfer_partition({split});
             SELECT ensure_transfer_partitions({lo}, {hi}, false);",
            split = (lo + hi) / 2 + 3
        ))
        .await
        .unwrap();
    for (table, columns, select) in TABLES {
        copy_rows(&from, &admin, select, table, columns).await;
    }
    admin
        .batch_execute(&format!(
            "SELECT index_transfer_partitions(0, {hi}, true, 'from') + index_transfer_partitions(0, {hi}, true, 'to')"
        ))
        .await
        .unwrap();
    let parts: i64 = admin
        .query_one("SELECT count(*) FROM pg_inherits WHERE inhparent = 'transfers'::regclass", &[])
        .await
        .unwrap()
        .get(0);
    assert!(parts >= 3, "the V11 store has {parts} partitions");
    let rankings: i64 = admin.query_one("SELECT count(*) FROM rankings", &[]).await.unwrap().get(0);
    assert!(rankings > 0, "the store keeps rankings");

    let applied = ingestor::store::migrate::run_to(&mut admin, 12).await.unwrap();
    assert_eq!(applied, 1, "V12 alone");
    assert_eq!(dump(&old).await, expected_rows, "every row as the current ingestor writes it");
    // One partition per chain, and that chain's block ranges below it.
    let tree: Vec<(String, i32, bool)> = admin
        .query(
            "SELECT relid::text, level, isleaf FROM pg_partition_tree('transfers') WHERE level > 0",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut want = vec![("transfers_31337".to_string(), 1, false)];
    want.extend((lo / 16..=hi / 16).map(|k| (format!("transfers_31337_{k}"), 2, true)));
    let mut tree = tree;
    tree.sort();
    want.sort();
    assert_eq!(tree, want, "the chain's partition, and one per 16 blocks of data below it");
    let unindexed = lacking(&admin, &["from", "to"]).await;
    assert!(unindexed.is_empty(), "partitions without address indexes: {unindexed:?}");

    // V13 (partitions by density) keeps V12's partitions as they are, reads them by their
    // bounds, and makes new ones in the gaps beside them, named by their first block.
    let applied = ingestor::store::migrate::run_to(&mut admin, 13).await.unwrap();
    assert_eq!(applied, 1, "V13 alone");
    assert_eq!(dump(&old).await, expected_rows, "V13 moves no row");
    let bounds: Vec<(String, i64, i64)> = admin
        .query("SELECT name, first, next FROM transfer_partitions_of(31337) ORDER BY first", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let want: Vec<(String, i64, i64)> = (lo / 16..=hi / 16)
        .map(|k| (format!("transfers_31337_{k}"), k * 16, k * 16 + 16))
        .collect();
    assert_eq!(bounds, want, "V12's partitions, read by their bounds");
    let top = hi / 16 * 16 + 16;
    let covered: i64 = admin
        .query_one(
            "SELECT ensure_transfer_partitions(31337, $1, $2, true, 1000)",
            &[&lo, &(top + 40)],
        )
        .await
        .unwrap()
        .get(0);
    assert!(covered >= top + 40, "covered to {covered}");
    let made: Vec<(String, i64, i64)> = admin
        .query(
            "SELECT name, first, next FROM transfer_partitions_of(31337) WHERE first >= $1 ORDER BY first",
            &[&top],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(made.first().map(|m| m.1), Some(top), "the first new one starts where V12's end");
    for w in made.windows(2) {
        assert_eq!(w[0].2, w[1].1, "new partitions follow each other without a gap");
    }
    for (name, first, next) in &made {
        assert_eq!(name, &format!("transfers_31337_at_{first}"));
        assert!(next - first <= 16, "never larger than transfer_partitioning.blocks");
    }

    // V14 moves the key and the sequence index from the parent to each partition.
    let applied = ingestor::store::migrate::run_to(&mut admin, 14).await.unwrap();
    assert_eq!(applied, 1, "V14 alone");
    assert_eq!(dump(&old).await, expected_rows, "V14 moves no row");
    let keyless = lacking(&admin, &["key", "seq", "from", "to"]).await;
    assert!(keyless.is_empty(), "partitions without their four indexes: {keyless:?}");
    let parent_indexes: i64 = admin
        .query_one("SELECT count(*) FROM pg_indexes WHERE tablename = 'transfers'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(parent_indexes, 0, "the parent keeps no index of its own");
    // The key still refuses a row stored twice.
    let twice = admin
        .batch_execute(&format!(
            "INSERT INTO transfers SELECT * FROM transfers WHERE block_number = {hi} LIMIT 1"
        ))
        .await
        .expect_err("a transfer stored twice");
    assert_eq!(twice.code(), Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION), "{twice}");

    // V15 indexes the tokens by address: the plan of a question by address reads it.
    let applied = ingestor::store::migrate::run(&mut admin).await.unwrap();
    assert_eq!(applied, 1, "V15 alone");
    assert_eq!(dump(&old).await, expected_rows, "V15 moves no row");
    admin.batch_execute("SET enable_seqscan = off").await.unwrap();
    let plan: Vec<String> = admin
        .query("EXPLAIN SELECT id FROM tokens WHERE address = '\\x00'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(plan.iter().any(|l| l.contains("tokens_address")), "{plan:?}");
    admin.batch_execute("RESET enable_seqscan").await.unwrap();

    let qs = QueryService::start(&old.url).await.unwrap();
    assert_eq!(all_holders(&qs, 3).await, expected, "every page answers as before");
}

/// The transfer partitions that lack one of the indexes `sides` (named
/// transfers_<side>_<partition suffix>).
pub(crate) async fn lacking(admin: &tokio_postgres::Client, sides: &[&str]) -> Vec<String> {
    let sides: Vec<String> = sides.iter().map(|s| s.to_string()).collect();
    admin
        .query(
            "SELECT relid::text FROM pg_partition_tree('transfers') WHERE isleaf
               AND EXISTS (SELECT 1 FROM unnest($1::text[]) AS side
                           WHERE to_regclass(replace(relid::text, 'transfers_', 'transfers_' || side || '_')) IS NULL)",
            &[&sides],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Copies the rows `select` reads on `from` into `table` (`columns`) on `to`, as text.
async fn copy_rows(
    from: &tokio_postgres::Client,
    to: &tokio_postgres::Client,
    select: &str,
    table: &str,
    columns: &str,
) {
    use futures::{SinkExt, StreamExt};
    let out = from.copy_out(&format!("COPY ({select}) TO STDOUT")).await.unwrap();
    let sink = to.copy_in(&format!("COPY {table} ({columns}) FROM STDIN")).await.unwrap();
    futures::pin_mut!(out);
    futures::pin_mut!(sink);
    while let Some(chunk) = out.next().await {
        sink.send(chunk.unwrap()).await.unwrap();
    }
    sink.close().await.unwrap();
}
