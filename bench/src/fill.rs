//! The benchmark's query stores: N holders (and a tenth as many transfers over 30 days,
//! so the 7-day figures have work to do) filled by COPY into a migrated, empty database,
//! with indexes built after the load and rankings kept where the ingestor would keep them.

use std::time::{Duration, Instant};

use alloy_primitives::{Address, keccak256};
use anyhow::Context;
use futures::SinkExt;
use rig::history::holder;

use crate::chain::{self, BLOCK_SECONDS, Rng, initial_balance};

/// The token of the filled store.
pub(crate) const TOKEN: Address =
    alloy_primitives::address!("0x00000000000000000000000000000000000b3c4e");
/// Blocks in the filled history: 30 days.
pub(crate) const HISTORY_BLOCKS: u64 = 30 * 86_400 / BLOCK_SECONDS;

/// A filled store.
#[derive(Debug)]
pub(crate) struct Filled {
    /// Holders stored.
    pub(crate) holders: u64,
    /// Transfers stored.
    pub(crate) transfers: u64,
    /// Time the fill took.
    pub(crate) elapsed: Duration,
}

/// Fills the migrated, empty database at `url` with `holders` holders.
pub(crate) async fn fill(url: &str, holders: u64) -> anyhow::Result<Filled> {
    let started = Instant::now();
    let db = rig::db::connect(url).await?;
    let transfers = holders / 10;
    let genesis = chain::unix_now() - HISTORY_BLOCKS * BLOCK_SECONDS;
    let id: i32 = db
        .query_one(
            "INSERT INTO tokens (address, chain_id, name, symbol, decimals, start_block, indexed_block)
             VALUES ($1, 31337, 'Bench Token', 'BENCH', 18, 1, 0) RETURNING id",
            &[&TOKEN.as_slice()],
        )
        .await?
        .get(0);
    // Index builds after the load are much faster than index upkeep during it.
    db.batch_execute("SET maintenance_work_mem = '1GB'; SET max_parallel_maintenance_workers = 2")
        .await?;
    // Partitions without their sender and receiver indexes, built after the load.
    db.execute(
        "SELECT ensure_transfer_partitions(31337, 0, $1, false, NULL)",
        &[&((HISTORY_BLOCKS + 10) as i64)],
    )
    .await?;
    let rebuild = drop_indexes(&db, &["balances", "transfers"]).await?;

    let token = id;
    let mut rng = Rng(0x5eed);
    copy(
        &db,
        "COPY balances (token, address, balance, last_transfer_block) FROM STDIN",
        holders,
        |i, out| {
            let address = hex(holder(7, i as usize).as_slice());
            let block = 1 + rng.next() % HISTORY_BLOCKS;
            out.push_str(&format!(
                "{token}\t\\\\x{address}\t{}\t{block}\n",
                initial_balance(i as usize)
            ));
        },
    )
    .await
    .context("loading balances")?;
    let n = holders as usize;
    // In block order, as the ingestor writes them: a range of blocks is then a range of
    // the heap, not pages all over it.
    let mut blocks: Vec<u64> = (0..transfers).map(|_| 1 + rng.next() % HISTORY_BLOCKS).collect();
    blocks.sort_unstable();
    copy(
        &db,
        "COPY transfers (chain_id, token, block_number, log_index, block_hash, block_time, tx_hash, from_address, to_address, value, seq, from_balance, to_balance) FROM STDIN",
        transfers,
        |i, out| {
            let block = blocks[i as usize];
            let (from, to) = (rng.counterparty(n), rng.counterparty(n));
            let value = initial_balance(to) / alloy_primitives::U256::from(1 + rng.next() % 100);
            out.push_str(&format!(
                "31337\t{token}\t{block}\t{i}\t\\\\x{}\t{}\t\\\\x{}\t\\\\x{}\t\\\\x{}\t{value}\t{}\t{}\t{}\n",
                hex(keccak256(block.to_be_bytes()).as_slice()),
                genesis + block * BLOCK_SECONDS,
                hex(keccak256(i.to_be_bytes()).as_slice()),
                hex(holder(7, from).as_slice()),
                hex(holder(7, to).as_slice()),
                i + 1,
                // Balances after the transfer: the point-in-time lookups read them; their
                // values do not change what a lookup costs.
                initial_balance(from),
                initial_balance(to),
            ));
        },
    )
    .await
    .context("loading transfers")?;
    for sql in rebuild {
        db.batch_execute(&sql).await.with_context(|| format!("rebuilding: {sql}"))?;
    }
    db.execute(
        "SELECT sum(index_transfer_partitions(31337, 0, $1, true, side))
         FROM unnest(ARRAY['key', 'seq', 'from', 'to']) AS side",
        &[&((HISTORY_BLOCKS + 10) as i64)],
    )
    .await?;
    db.execute(
        // The filled transfers' balances are not a history (see above), so every block
        // keeps the final holder count: past counts cost what they cost, whatever it is.
        "INSERT INTO blocks (token, number, hash, time, holders)
         SELECT DISTINCT ON (block_number) token, block_number, block_hash, block_time, $2
         FROM transfers WHERE token = $1 ORDER BY block_number",
        &[&id, &(holders as i64)],
    )
    .await?;
    db.execute(
        "UPDATE tokens SET
             total_supply = (SELECT sum(balance) FROM balances WHERE token = $1),
             holder_count = $2, transfer_count = $3, last_seq = $3,
             (indexed_block, indexed_hash, indexed_time) =
                 (SELECT number, hash, time FROM blocks WHERE token = $1 ORDER BY number DESC LIMIT 1)
         WHERE id = $1",
        &[&id, &(holders as i64), &(transfers as i64)],
    )
    .await?;
    keep_rankings(&db, id).await?;
    // Index-only scans (the 7-day sums) need the visibility map that VACUUM writes.
    db.batch_execute("VACUUM ANALYZE balances, transfers, blocks, tokens, rankings, ranking_rows")
        .await?;
    Ok(Filled { holders, transfers, elapsed: started.elapsed() })
}

/// Rankings where the ingestor would keep them with its defaults (every 10,000
/// transfers, 1,000 holders deep), so that past rankings cost here what they cost in a
/// store the ingestor wrote. Their rows are the filled head of the ranking: the filled
/// transfers' balances are not a history (see above), so no ranking follows from them;
/// what a past answer costs is the same (a header, a ranking's rows, the transfers since).
async fn keep_rankings(db: &tokio_postgres::Client, id: i32) -> anyhow::Result<()> {
    let (every, depth) = (10_000i64, 1_000i64);
    db.execute(
        "INSERT INTO rankings (token, block, depth, complete, transfer_count)
         SELECT $1, max(block_number), $3, false, max(n) FROM (
             SELECT block_number, row_number() OVER (ORDER BY block_number, log_index) AS n
             FROM transfers WHERE token = $1) t
         GROUP BY n / $2 HAVING count(*) = $2",
        &[&id, &every, &(depth as i32)],
    )
    .await?;
    db.execute(
        "INSERT INTO ranking_rows (token, block, rank, address, balance, last_transfer_block)
         SELECT $1, r.block, h.rank, h.address, h.balance, h.last_transfer_block
         FROM rankings r CROSS JOIN (
             SELECT row_number() OVER (ORDER BY -balance, address)::integer AS rank, address, balance,
                    last_transfer_block
             FROM balances WHERE token = $1 AND balance > 0 ORDER BY -balance, address LIMIT $2) h
         WHERE r.token = $1",
        &[&id, &depth],
    )
    .await?;
    Ok(())
}

/// Drops the indexes and primary keys of `tables`; returns the statements that rebuild them.
async fn drop_indexes(db: &tokio_postgres::Client, tables: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut rebuild = Vec::new();
    for table in tables {
        for row in db
            .query(
                "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint
                 WHERE conrelid = $1::text::regclass AND contype = 'p'",
                &[table],
            )
            .await?
        {
            let (name, def): (String, String) = (row.get(0), row.get(1));
            db.batch_execute(&format!("ALTER TABLE {table} DROP CONSTRAINT {name}")).await?;
            rebuild.push(format!("ALTER TABLE {table} ADD CONSTRAINT {name} {def}"));
        }
        for row in db
            .query(
                "SELECT indexname::text, indexdef FROM pg_indexes WHERE tablename = $1",
                &[table],
            )
            .await?
        {
            let (name, def): (String, String) = (row.get(0), row.get(1));
            db.batch_execute(&format!("DROP INDEX {name}")).await?;
            rebuild.push(def);
        }
    }
    Ok(rebuild)
}

/// Streams `rows` rows made by `row` into `statement` (COPY ... FROM STDIN, text format).
async fn copy(
    db: &tokio_postgres::Client,
    statement: &str,
    rows: u64,
    mut row: impl FnMut(u64, &mut String),
) -> anyhow::Result<()> {
    let sink = db.copy_in::<_, bytes::Bytes>(statement).await?;
    futures::pin_mut!(sink);
    let mut buf = String::with_capacity(1 << 20);
    for i in 0..rows {
        row(i, &mut buf);
        if buf.len() >= 1 << 20 {
            sink.send(bytes::Bytes::from(std::mem::take(&mut buf))).await?;
        }
    }
    sink.send(bytes::Bytes::from(buf)).await?;
    sink.finish().await?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
