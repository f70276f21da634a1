//! The ranking queries read a constant number of index entries whatever the number of
//! holders: checked with EXPLAIN on a table of 1,000,000 holders.

use alloy_primitives::Address;
use query_service::store::holders::RANKING_QUERIES;
use rig::db::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranking_queries_use_the_rank_index_at_a_million_holders() {
    rig::init_test_logging();
    let db = TestDb::create().await.unwrap();
    let mut c = db.client().await.unwrap();
    ingestor::store::migrate::run(&mut c).await.unwrap();
    let token = Address::repeat_byte(0xab);
    c.batch_execute(&format!(
        "INSERT INTO tokens (address, chain_id, decimals, start_block, indexed_block, total_supply)
             VALUES ('\\x{token}', 1, 18, 0, 100, 1e30);
         INSERT INTO balances (token, address, balance, last_transfer_block)
             SELECT 1, decode(lpad(to_hex(i), 40, '0'), 'hex'), (i % 100000) * 1e12 + i, i % 100
             FROM generate_series(1, 1000000) i;
         SELECT ensure_transfer_partitions(1, 0, 100, true, NULL);
         INSERT INTO transfers (chain_id, token, block_number, log_index, block_hash, block_time, tx_hash,
                                from_address, to_address, value, seq, from_balance, to_balance)
             SELECT 1, 1, i / 1000, i % 1000, '\\x00', i, '\\x00',
                    decode(lpad(to_hex(i * 7 % 1000000 + 1), 40, '0'), 'hex'),
                    decode(lpad(to_hex(i * 13 % 1000000 + 1), 40, '0'), 'hex'), 1, i, i, i
             FROM generate_series(1, 100000) i;
         ANALYZE balances;
         ANALYZE transfers;",
        token = alloy_primitives::hex::encode(token)
    ))
    .await
    .unwrap();

    for (name, sql) in RANKING_QUERIES {
        let params = match name {
            "top" => {
                "1::integer, 50::bigint, '1000000000000000000000000000000'::text, 1000::bigint"
            }
            "after" => {
                "1::integer, 50::bigint, '1000000000000000000000000000000'::text, 1000::bigint, '50000000000000050000'::text, '\\x000000000000000000000000000000000000c350'::bytea"
            }
            _ => {
                "1::integer, 50::bigint, '1000000000000000000000000000000'::text, ARRAY['\\x000000000000000000000000000000000000c350'::bytea]"
            }
        };
        let text = explain(&c, &format!("q_{name}"), sql, params).await;
        tracing::info!("plan of {name}:\n{text}");
        assert!(!text.contains("Seq Scan on balances"), "{name} scans balances:\n{text}");
        assert!(!text.contains("Sort Method: external"), "{name} sorts on disk:\n{text}");
        // The 7-day sums: one index-only scan of each direction per row, not one per use.
        assert_eq!(
            text.matches("Index Only Scan using transfers_to").count(),
            1,
            "{name}:\n{text}"
        );
        assert_eq!(
            text.matches("Index Only Scan using transfers_from").count(),
            1,
            "{name}:\n{text}"
        );
        match name {
            "lookup" => {
                assert!(text.contains("balances_pkey"), "{name} uses the primary key:\n{text}")
            }
            _ => {
                assert!(text.contains("balances_rank"), "{name} uses the rank index:\n{text}");
                if name == "after" {
                    // The keyset condition is an index condition: the scan starts at the page.
                    assert!(
                        text.contains("Index Cond: ((token = ")
                            && text.contains("ROW((- balance), address) >"),
                        "{name}:\n{text}"
                    );
                }
                // The page is read straight off the index: no sort of the whole table.
                let rows_read = text.lines().find(|l| l.contains("balances_rank")).unwrap();
                assert!(rows_read.contains("rows=1000 "), "{name} reads only its page:\n{text}");
            }
        }
    }

    // While a backfill fills a partition it has no sender and receiver indexes: the
    // week's moves of a page are then one pass over the partition per direction, never
    // one per holder (which would outlast the statement timeout at a million transfers).
    c.batch_execute(
        "DROP INDEX transfers_from_1_at_0; DROP INDEX transfers_to_1_at_0; ANALYZE transfers;",
    )
    .await
    .unwrap();
    for (name, sql) in RANKING_QUERIES.iter().filter(|(n, _)| *n == "top") {
        let params =
            "1::integer, 50::bigint, '1000000000000000000000000000000'::text, 1000::bigint";
        let text = explain(&c, &format!("q_unindexed_{name}"), sql, params).await;
        tracing::info!("plan of {name} without the address indexes:\n{text}");
        let scans: Vec<&str> =
            text.lines().filter(|l| l.contains("Scan on transfers_1_at_0")).collect();
        assert!(!scans.is_empty() && scans.len() <= 2, "{name}:\n{text}");
        assert!(
            scans.iter().all(|l| l.contains("loops=1)")),
            "{name} reads the partition once per direction:\n{text}"
        );
    }
}

/// ListTransfers reads one page off an index whatever the table holds: checked with
/// EXPLAIN on 500,000 transfers, for all transfers and for one busy address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_transfers_reads_one_page_off_an_index() {
    rig::init_test_logging();
    let db = TestDb::create().await.unwrap();
    let mut c = db.client().await.unwrap();
    ingestor::store::migrate::run(&mut c).await.unwrap();
    c.batch_execute(
        "INSERT INTO tokens (address, chain_id, decimals, start_block, indexed_block)
             VALUES ('\\xabababababababababababababababababababab', 1, 18, 0, 100000);
         SELECT ensure_transfer_partitions(1, 0, 100000, true, NULL);
         INSERT INTO transfers (chain_id, token, block_number, log_index, block_hash, block_time, tx_hash,
                                from_address, to_address, value, seq, from_balance, to_balance)
             SELECT 1, 1, i / 5, i % 5, '\\x00', i, '\\x00',
                    decode(lpad(to_hex(i % 1000), 40, '0'), 'hex'), decode(lpad(to_hex((i + 1) % 1000), 40, '0'), 'hex'),
                    i, i, i, i
             FROM generate_series(1, 500000) i;
         ANALYZE transfers;",
    )
    .await
    .unwrap();
    let token = "1::integer";
    let busy = "'\\x0000000000000000000000000000000000000007'::bytea";
    for (name, sql) in query_service::store::transfers::TRANSFER_QUERIES {
        let params = match name {
            "all" => format!(
                "{token}, 0::bigint, 9223372036854775807::bigint, 9223372036854775807::bigint, 0, 1000::bigint"
            ),
            _ => format!(
                "{token}, 0::bigint, 9223372036854775807::bigint, 50000::bigint, 0, 100::bigint, {busy}"
            ),
        };
        let text = explain(&c, &format!("t_{name}"), sql, &params).await;
        tracing::info!("plan of ListTransfers {name}:\n{text}");
        assert!(!text.contains("Seq Scan"), "{name} scans:\n{text}");
        match name {
            // The key of each partition (transfers_key_<chain>_at_<first>).
            "all" => assert!(
                text.contains("Index Scan Backward using transfers_key_"),
                "{name}:\n{text}"
            ),
            _ => {
                assert!(
                    text.contains("transfers_from") && text.contains("transfers_to"),
                    "{name}:\n{text}"
                );
                // Each direction reads at most one page (100 rows) of the index.
                for line in text.lines().filter(|l| {
                    l.contains("using transfers_from") || l.contains("using transfers_to")
                }) {
                    let rows: u64 = line
                        .split("rows=")
                        .nth(2)
                        .and_then(|r| r.split(' ').next())
                        .and_then(|r| r.parse().ok())
                        .unwrap();
                    assert!(rows <= 100, "{name} reads {rows} rows:\n{text}");
                }
            }
        }
    }
}

/// EXPLAIN (ANALYZE, BUFFERS) of `sql` prepared as `name`, executed with `params`.
async fn explain(c: &tokio_postgres::Client, name: &str, sql: &str, params: &str) -> String {
    c.batch_execute(&format!("PREPARE {name} AS {sql}")).await.unwrap();
    let rows = c
        .query(&format!("EXPLAIN (ANALYZE, BUFFERS) EXECUTE {name}({params})"), &[])
        .await
        .unwrap();
    rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("\n")
}

/// Looking up addresses at a past block costs about the same at 1,000,000 transfers as at
/// 10,000: each address is one backward step in transfers_from and one in transfers_to,
/// whatever the table holds and however busy the address (one takes part in half of
/// all transfers). Measured as buffers touched by EXPLAIN (ANALYZE, BUFFERS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_in_time_lookups_cost_the_same_at_a_hundred_times_the_transfers() {
    rig::init_test_logging();
    let mut buffers = Vec::new();
    for transfers in [10_000i64, 1_000_000] {
        let db = TestDb::create().await.unwrap();
        let mut c = db.client().await.unwrap();
        ingestor::store::migrate::run(&mut c).await.unwrap();
        // Transfer i moves from address i % A to (i + 1) % A, where A = transfers / 20
        // (each address in ~40 transfers), except that every other transfer comes from
        // the whale, address A + 7 (looked up too).
        c.batch_execute(&format!(
            "INSERT INTO tokens (address, chain_id, decimals, start_block, indexed_block, total_supply)
                 VALUES ('\\xabababababababababababababababababababab', 1, 18, 0, {transfers}, 1e30);
             SELECT ensure_transfer_partitions(1, 0, {transfers}, true, NULL);
             INSERT INTO transfers (chain_id, token, block_number, log_index, block_hash, block_time, tx_hash,
                                    from_address, to_address, value, seq, from_balance, to_balance)
                 SELECT 1, 1, i, 0, '\\x00', i * 12, '\\x00',
                        decode(lpad(to_hex(CASE WHEN i % 2 = 0 THEN a + 7 ELSE i % a + 1 END), 40, '0'), 'hex'),
                        decode(lpad(to_hex((i + 1) % a + 1), 40, '0'), 'hex'),
                        1, i, 1000000 - i, i
                 FROM generate_series(1, {transfers}) i, (SELECT {transfers} / 20 AS a) s;
             ANALYZE transfers;"
        ))
        .await
        .unwrap();
        let addresses = (0..99)
            .map(|k| k * 7 + 1)
            .chain([transfers / 20 + 7])
            .map(|k| format!("decode(lpad(to_hex({k}), 40, '0'), 'hex')"))
            .collect::<Vec<_>>()
            .join(", ");
        let params = format!(
            "1::integer, {}::bigint, '1000000000000000000000000000000'::text, ARRAY[{addresses}], {}::bigint, '\\x0000000000000000000000000000000000000000'::bytea",
            transfers / 4,
            transfers / 2
        );
        let text =
            explain(&c, "q_lookup_at", query_service::store::history::LOOKUP_AT, &params).await;
        tracing::info!("plan at {transfers} transfers:\n{text}");
        assert!(!text.contains("Seq Scan on transfers"), "{text}");
        let first = text.lines().find(|l| l.contains("Buffers:")).expect("buffers");
        let touched: u64 = first
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("hit=").or_else(|| w.strip_prefix("read=")))
            .filter_map(|n| n.parse::<u64>().ok())
            .sum();
        buffers.push(touched);
    }
    let (small, large) = (buffers[0], buffers[1]);
    // One more B-tree level per probe at most, never a scan of the address's history.
    assert!(large <= small * 2, "{small} buffers at 10k transfers, {large} at 1M");
    tracing::info!(
        small,
        large,
        "point-in-time lookup of 100 addresses: buffers at 10k and 1M transfers"
    );
}
