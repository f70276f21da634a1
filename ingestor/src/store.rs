//! The ingestor's side of Postgres: the token row and its checkpoint, and the commit of a
//! batch of transfers. A batch's transfers, balance changes, blocks and checkpoint are
//! written in one transaction, and a commit can be repeated safely: a transfer already
//! stored is skipped, and only the transfers actually inserted move balances.

use std::ops::RangeInclusive;
use std::str::FromStr;

use alloy_primitives::{Address, B256, U256};
use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{NoTls, Row};

use crate::decode::Transfer;
use crate::migrate;
use crate::rpc::{BlockRef, RetryPolicy, TokenMetadata};

/// A token's row: metadata and checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Token address.
    pub address: Address,
    /// Chain the token was indexed from.
    pub chain_id: u64,
    /// First block indexed.
    pub start_block: u64,
    /// Every block in `start_block..=indexed_block` is indexed; `start_block - 1` before
    /// the first commit.
    pub indexed_block: i64,
}

/// What the store says, in one snapshot, for `verify` to compare with the chain.
#[derive(Debug, Clone)]
pub struct VerifySnapshot {
    /// The checkpoint; `start_block - 1` before the first commit.
    pub indexed_block: i64,
    /// First block indexed.
    pub start_block: u64,
    /// Minted minus burned, as indexed (decimal).
    pub total_supply: String,
    /// Σ of the stored balances (decimal).
    pub sum: String,
    /// Balance rows of the token.
    pub rows: u64,
    /// The rows to check: address and stored balance (decimal).
    pub balances: Vec<(Address, String)>,
}

/// Transfers of a contiguous block span, decoded and timestamped, ready to commit.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The blocks this batch covers, whether or not they hold transfers.
    pub span: RangeInclusive<u64>,
    /// The last block of the span: it becomes the checkpoint.
    pub end: BlockRef,
    /// Transfers in the span, every `block_time` filled.
    pub transfers: Vec<Transfer>,
    /// Positions (block, log index) of logs with the Transfer topic but not an ERC-20
    /// Transfer's shape.
    pub rejected: Vec<(u64, u64)>,
    /// Headers of the span's blocks when they were checked against each other (near the
    /// head): their hashes are kept so that a later reorg can be traced to its fork.
    pub verified: Vec<BlockRef>,
}

/// What a commit changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Transfers newly stored (the rest were stored before).
    pub inserted: u64,
    /// Addresses whose balance row changed.
    pub balances_touched: u64,
}

/// A pool of connections to the indexer's database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
}

/// Parses a database URL and makes a pool of at most `size` connections. Nothing connects
/// until the first use.
pub fn pool(database_url: &str, size: usize) -> anyhow::Result<Pool> {
    let config = tokio_postgres::Config::from_str(database_url)
        .map_err(|e| anyhow::anyhow!("--database-url is not a PostgreSQL URL: {e}"))?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    Pool::builder(manager).max_size(size.max(1)).build().context("building the database pool")
}

/// Where a URL points, without its password: for logs.
pub fn describe_url(database_url: &str) -> String {
    match tokio_postgres::Config::from_str(database_url) {
        Ok(c) => {
            let hosts: Vec<String> = c
                .get_hosts()
                .iter()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(s) => s.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .collect();
            format!(
                "postgres://{}@{}:{}/{}",
                c.get_user().unwrap_or("-"),
                hosts.join(","),
                c.get_ports().first().copied().unwrap_or(5432),
                c.get_dbname().unwrap_or("-")
            )
        }
        Err(_) => "<unparsable database URL>".into(),
    }
}

impl Store {
    /// A store over `pool`.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Applies the migrations the database lacks.
    pub async fn migrate(&self) -> anyhow::Result<usize> {
        let mut client = self.pool.get().await.context("connecting to the database")?;
        migrate::run(&mut client).await
    }

    /// The token's row, if it was ever indexed.
    pub async fn token(&self, address: Address) -> anyhow::Result<Option<TokenRow>> {
        let client = self.pool.get().await.context("connecting to the database")?;
        let row = client
            .query_opt("SELECT address, chain_id, start_block, indexed_block FROM tokens WHERE address = $1", &[&address])
            .await
            .context("reading the token row")?;
        Ok(row.map(|r| token_row(&r)))
    }

    /// One consistent view of what `verify` compares with the chain: the checkpoint, the
    /// indexed supply, Σ balances, and every balance row (or a random `sample` of them),
    /// with balances as decimal text so that even a corrupted (negative) one is shown as
    /// it is. `None` when the token is not in the store.
    pub async fn verify_snapshot(
        &self,
        token: Address,
        sample: Option<u64>,
    ) -> anyhow::Result<Option<VerifySnapshot>> {
        let mut client = self.pool.get().await.context("connecting to the database")?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .context("starting a snapshot")?;
        let Some(row) = tx
            .query_opt(
                "SELECT indexed_block, start_block, total_supply::text,
                        (SELECT coalesce(sum(balance), 0)::text FROM balances WHERE token = $1),
                        (SELECT count(*) FROM balances WHERE token = $1)
                 FROM tokens WHERE address = $1",
                &[&token],
            )
            .await
            .context("reading the token")?
        else {
            return Ok(None);
        };
        let rows = match sample {
            Some(n) => {
                tx.query(
                    "SELECT address, balance::text FROM balances WHERE token = $1 ORDER BY random() LIMIT $2",
                    &[&token, &(n as i64)],
                )
                .await
            }
            None => {
                tx.query(
                    "SELECT address, balance::text FROM balances WHERE token = $1 ORDER BY address",
                    &[&token],
                )
                .await
            }
        }
        .context("reading balances")?;
        Ok(Some(VerifySnapshot {
            indexed_block: row.get(0),
            start_block: row.get::<_, i64>(1) as u64,
            total_supply: row.get(2),
            sum: row.get(3),
            rows: row.get::<_, i64>(4) as u64,
            balances: rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        }))
    }

    /// Logs the store holds for `token` in `span`: transfers and rejected logs (what a
    /// node's `eth_getLogs` for the Transfer topic returns there).
    pub async fn logs_in(&self, token: Address, span: RangeInclusive<u64>) -> anyhow::Result<u64> {
        let client = self.pool.get().await.context("connecting to the database")?;
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM transfers WHERE token = $1 AND block_number BETWEEN $2 AND $3)
                      + (SELECT count(*) FROM rejected_logs WHERE token = $1 AND block_number BETWEEN $2 AND $3)",
                &[&token, &(*span.start() as i64), &(*span.end() as i64)],
            )
            .await
            .context("counting stored logs")?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// Creates the token's row starting at `start_block`, or refreshes its metadata when it
    /// exists (the start and checkpoint of an existing row never change here).
    pub async fn upsert_token(
        &self,
        address: Address,
        chain_id: u64,
        meta: &TokenMetadata,
        start_block: u64,
    ) -> anyhow::Result<TokenRow> {
        let client = self.pool.get().await.context("connecting to the database")?;
        let row = client
            .query_one(
                "INSERT INTO tokens (address, chain_id, name, symbol, decimals, start_block, indexed_block)
                 VALUES ($1, $2, $3, $4, $5, $6::bigint, $6::bigint - 1)
                 ON CONFLICT (address) DO UPDATE
                    SET name = excluded.name, symbol = excluded.symbol, decimals = excluded.decimals,
                        updated_at = now()
                 RETURNING address, chain_id, start_block, indexed_block",
                &[
                    &address,
                    &(chain_id as i64),
                    &meta.name,
                    &meta.symbol,
                    &i16::from(meta.decimals),
                    &(start_block as i64),
                ],
            )
            .await
            .context("writing the token row")?;
        Ok(token_row(&row))
    }

    /// Records `totalSupply()` as read from the chain at `block`, for checks against the
    /// supply derived from transfers.
    pub async fn record_chain_supply(
        &self,
        token: Address,
        block: u64,
        supply: U256,
    ) -> anyhow::Result<()> {
        let client = self.pool.get().await.context("connecting to the database")?;
        client
            .execute(
                "UPDATE tokens SET chain_supply = $2, chain_supply_block = $3 WHERE address = $1",
                &[&token, &supply, &(block as i64)],
            )
            .await
            .context("recording totalSupply()")?;
        Ok(())
    }

    /// The supply derived from transfers (minted minus burned) and the chain's totalSupply()
    /// when they were read at the same block: (derived, chain).
    pub async fn supplies(&self, token: Address) -> anyhow::Result<(String, Option<String>)> {
        let client = self.pool.get().await.context("connecting to the database")?;
        let row = client
            .query_one(
                "SELECT total_supply::text,
                        CASE WHEN chain_supply_block = indexed_block THEN chain_supply::text END
                 FROM tokens WHERE address = $1",
                &[&token],
            )
            .await
            .context("reading supplies")?;
        Ok((row.get(0), row.get(1)))
    }

    /// Writes a batch in one transaction: its transfers (each at most once), the balance
    /// changes of the newly stored ones, its blocks and the checkpoint. Safe to repeat.
    /// Refuses a batch that would leave a gap after the checkpoint.
    pub async fn commit(&self, token: Address, batch: &Batch) -> anyhow::Result<CommitStats> {
        let mut client = self.pool.get().await.context("connecting to the database")?;
        let tx = client.transaction().await.context("starting the batch transaction")?;

        // Locks the token row: one writer per token at a time, no gap, and sequence numbers
        // handed out in commit order.
        let (indexed, last_seq) = lock_token(&tx, token).await?;
        let (from, to) = (*batch.span.start() as i64, *batch.span.end() as i64);
        anyhow::ensure!(
            from <= indexed + 1,
            "batch {from}..={to} would leave blocks {}..={} unindexed",
            indexed + 1,
            from - 1
        );

        // A backfill batch aggregates tens of thousands of balance changes: let the
        // grouping stay in memory. The staging table exists from the connection's first
        // batch on; Postgres would say so in a NOTICE (logged) at every batch.
        tx.batch_execute(
            "SET LOCAL work_mem = '256MB';
             SET LOCAL client_min_messages = warning;
             CREATE TEMP TABLE IF NOT EXISTS staging_transfers (
                block_number bigint, log_index integer, block_hash bytea, block_time bigint,
                tx_hash bytea, from_address bytea, to_address bytea, value numeric(78,0),
                seq bigint
             ) ON COMMIT DELETE ROWS",
        )
        .await
        .context("creating the staging table")?;
        // Sequence numbers follow (block, log index); chunks arrive sorted, so this
        // copies only if a caller did not.
        let key = |t: &Transfer| (t.block_number, t.log_index);
        let sorted = if batch.transfers.is_sorted_by_key(key) {
            std::borrow::Cow::Borrowed(&batch.transfers)
        } else {
            let mut v = batch.transfers.clone();
            v.sort_by_key(key);
            std::borrow::Cow::Owned(v)
        };
        copy_transfers(&tx, &sorted, last_seq + 1).await?;

        let zero = Address::ZERO;
        let mut blocks = batch.verified.clone();
        blocks.push(batch.end);
        let apply = tx.prepare_cached(APPLY_BATCH).await.context("preparing the batch")?;
        let row = tx
            .query_one(
                &apply,
                &[
                    &token,
                    &zero,
                    &to,
                    &batch.end.hash,
                    &(batch.end.timestamp as i64),
                    &batch.rejected.iter().map(|r| r.0 as i64).collect::<Vec<_>>(),
                    &batch.rejected.iter().map(|r| r.1 as i32).collect::<Vec<_>>(),
                    &blocks.iter().map(|b| b.number as i64).collect::<Vec<_>>(),
                    &blocks.iter().map(|b| b.hash).collect::<Vec<_>>(),
                    &blocks.iter().map(|b| b.timestamp as i64).collect::<Vec<_>>(),
                ],
            )
            .await
            .context("applying the batch")?;
        let stats = CommitStats {
            inserted: row.get::<_, i64>(0) as u64,
            balances_touched: row.get::<_, i64>(1) as u64,
        };
        if stats.inserted > 0 {
            notify(&tx, token).await?;
        }
        tx.commit().await.context("committing the batch")?;
        Ok(stats)
    }

    /// Records the chain's safe and finalized blocks for `token`, never lowering them, and
    /// announces it (streams of final transfers wait for it). Returns what is now stored.
    pub async fn record_finality(
        &self,
        token: Address,
        safe: u64,
        finalized: u64,
    ) -> anyhow::Result<(u64, u64)> {
        let client = self.pool.get().await.context("connecting to the database")?;
        let row = client
            .query_one(
                "WITH t AS (
                     UPDATE tokens SET safe_block = greatest(safe_block, $2),
                                       finalized_block = greatest(finalized_block, $3)
                     WHERE address = $1
                     RETURNING safe_block, finalized_block, last_seq)
                 SELECT safe_block, finalized_block,
                        pg_notify($4, encode($1, 'hex') || ':' || last_seq)::text
                 FROM t",
                &[&token, &(safe as i64), &(finalized as i64), &CHANNEL],
            )
            .await
            .context("recording the finalized block")?;
        Ok((row.get::<_, i64>(0).max(0) as u64, row.get::<_, i64>(1).max(0) as u64))
    }

    /// The hash stored for `block`, if the store kept one (blocks with transfers, verified
    /// blocks near the head, and every checkpoint).
    pub async fn block_hash(&self, token: Address, block: u64) -> anyhow::Result<Option<B256>> {
        let client = self.pool.get().await.context("connecting to the database")?;
        let row = client
            .query_opt(
                "SELECT hash FROM blocks WHERE token = $1 AND number = $2",
                &[&token, &(block as i64)],
            )
            .await
            .context("reading a block hash")?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Stored block hashes at or below `below`, newest first, at most `limit`.
    pub async fn recent_blocks(
        &self,
        token: Address,
        below: u64,
        limit: i64,
    ) -> anyhow::Result<Vec<(u64, B256)>> {
        let client = self.pool.get().await.context("connecting to the database")?;
        let rows = client
            .query(
                "SELECT number, hash FROM blocks WHERE token = $1 AND number <= $2 ORDER BY number DESC LIMIT $3",
                &[&token, &(below as i64), &limit],
            )
            .await
            .context("reading stored block hashes")?;
        Ok(rows.iter().map(|r| (r.get::<_, i64>(0) as u64, r.get(1))).collect())
    }

    /// Undoes everything above block `fork` in one transaction: its transfers move to
    /// removed_transfers with new sequence numbers (newest first), their balance changes
    /// and supply are reversed, their blocks and rejected logs are dropped, and the
    /// checkpoint moves back to `fork`. Returns how many transfers were removed.
    pub async fn roll_back(&self, token: Address, fork: &BlockRef) -> anyhow::Result<u64> {
        let mut client = self.pool.get().await.context("connecting to the database")?;
        let tx = client.transaction().await.context("starting the rollback transaction")?;
        let (indexed, last_seq) = lock_token(&tx, token).await?;
        anyhow::ensure!(
            (fork.number as i64) <= indexed,
            "cannot roll back to block {} above the checkpoint {indexed}",
            fork.number
        );
        let row = tx
            .query_one(
                ROLL_BACK,
                &[
                    &token,
                    &Address::ZERO,
                    &(fork.number as i64),
                    &fork.hash,
                    &(fork.timestamp as i64),
                    &last_seq,
                ],
            )
            .await
            .context("rolling back")?;
        let removed = row.get::<_, i64>(0) as u64;
        notify(&tx, token).await?;
        tx.commit().await.context("committing the rollback")?;
        Ok(removed)
    }
}

/// Locks the token's row for this transaction; returns its checkpoint and last sequence
/// number.
async fn lock_token(
    tx: &tokio_postgres::Transaction<'_>,
    token: Address,
) -> anyhow::Result<(i64, i64)> {
    let row = tx
        .query_opt(
            "SELECT indexed_block, last_seq FROM tokens WHERE address = $1 FOR UPDATE",
            &[&token],
        )
        .await
        .context("locking the token row")?
        .with_context(|| format!("token {token} has no row: register it first"))?;
    Ok((row.get(0), row.get(1)))
}

/// The channel on which every commit and rollback is announced (delivered at commit):
/// the payload is the token (hex) and its newest sequence number, `<hex>:<seq>`.
pub const CHANNEL: &str = "holders_transfers";

async fn notify(tx: &tokio_postgres::Transaction<'_>, token: Address) -> anyhow::Result<()> {
    tx.execute(
        "SELECT pg_notify($2, encode(address, 'hex') || ':' || last_seq) FROM tokens WHERE address = $1",
        &[&token, &CHANNEL],
    )
    .await
    .context("announcing the commit")?;
    Ok(())
}

/// Reverses the transfers above block $3. $1 token, $2 zero address, $3 fork block, $4 its
/// hash, $5 its time, $6 the token's last sequence number.
const ROLL_BACK: &str = "
WITH gone AS (
    DELETE FROM transfers WHERE token = $1 AND block_number > $3
    RETURNING seq, block_number, log_index, block_hash, block_time, tx_hash, from_address, to_address, value
), moved AS (
    INSERT INTO removed_transfers (token, removed_seq, seq, block_number, log_index, block_hash, block_time,
                                   tx_hash, from_address, to_address, value)
    SELECT $1, $6 + row_number() OVER (ORDER BY block_number DESC, log_index DESC), seq, block_number, log_index,
           block_hash, block_time, tx_hash, from_address, to_address, value
    FROM gone
    RETURNING removed_seq
), moves AS (
    SELECT to_address AS address, -value AS delta FROM gone WHERE to_address <> $2
    UNION ALL
    SELECT from_address, value FROM gone WHERE from_address <> $2
), agg AS (
    SELECT address, sum(delta) AS delta FROM moves GROUP BY address
), prev AS (
    SELECT a.delta, b.balance AS old FROM agg a JOIN balances b ON b.token = $1 AND b.address = a.address
), upd AS (
    UPDATE balances b SET
        balance = b.balance + a.delta,
        -- The statement sees the rows it deletes, hence the explicit bound.
        last_transfer_block = greatest(
            coalesce((SELECT max(t.block_number) FROM transfers t
                      WHERE t.token = $1 AND t.from_address = b.address AND t.block_number <= $3), 0),
            coalesce((SELECT max(t.block_number) FROM transfers t
                      WHERE t.token = $1 AND t.to_address = b.address AND t.block_number <= $3), 0))
    FROM agg a
    WHERE b.token = $1 AND b.address = a.address
    RETURNING 1
), blk AS (
    DELETE FROM blocks WHERE token = $1 AND number > $3 RETURNING 1
), rej AS (
    DELETE FROM rejected_logs WHERE token = $1 AND block_number > $3 RETURNING 1
), fork AS (
    INSERT INTO blocks (token, number, hash, time) VALUES ($1, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING 1
), tok AS (
    UPDATE tokens SET
        total_supply = total_supply
            - (SELECT coalesce(sum(value), 0) FROM gone WHERE from_address = $2)
            + (SELECT coalesce(sum(value), 0) FROM gone WHERE to_address = $2),
        transfer_count = transfer_count - (SELECT count(*) FROM gone),
        holder_count = holder_count
            + (SELECT count(*) FILTER (WHERE old + delta > 0) - count(*) FILTER (WHERE old > 0) FROM prev),
        rejected_logs = rejected_logs - (SELECT count(*) FROM rej),
        last_seq = coalesce((SELECT max(removed_seq) FROM moved), last_seq),
        indexed_block = $3,
        indexed_hash = $4,
        indexed_time = $5,
        updated_at = now()
    WHERE address = $1
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM upd), (SELECT count(*) FROM blk),
       (SELECT count(*) FROM fork), (SELECT count(*) FROM tok)";

/// One statement applies a staged batch: data-modifying CTEs all see the snapshot taken
/// before it, so `prev` reads balances as they were before `upsert` changes them.
/// $1 token, $2 zero address, $3 checkpoint block, $4 its hash, $5 its time, $6 and $7 the
/// block numbers and log indexes of rejected logs, $8-$10 numbers, hashes and times of the
/// blocks to remember (the checkpoint among them). Sequence numbers come staged.
const APPLY_BATCH: &str = "
WITH new AS (
    SELECT * FROM staging_transfers s
    -- Only rows at or below the newest stored block can meet a stored row (a re-read),
    -- so only those are probed: cheaper than ON CONFLICT's speculative insertion of
    -- every row. The newest stored block is one backward step of the primary key.
    WHERE s.block_number > (SELECT coalesce(max(t.block_number), -1) FROM transfers t
                            WHERE t.token = $1)
       OR NOT EXISTS (SELECT 1 FROM transfers t WHERE t.token = $1
                      AND t.block_number = s.block_number AND t.log_index = s.log_index)
), legs AS (
    SELECT seq, to_address AS address, value AS delta, block_number, log_index FROM new
    UNION ALL
    SELECT seq, from_address, -value, block_number, log_index FROM new
), start AS (
    -- Balances before the batch; the zero address's is minus the supply.
    SELECT a.address, coalesce(b.balance,
               CASE WHEN a.address = $2 THEN -(SELECT total_supply FROM tokens WHERE address = $1)
                    ELSE 0 END) AS balance
    FROM (SELECT DISTINCT address FROM legs) a
    LEFT JOIN balances b ON b.token = $1 AND b.address = a.address
), after AS (
    -- Each address's balance right after each of its transfers (both legs of a transfer
    -- to oneself are peers, hence DISTINCT).
    SELECT DISTINCT ON (seq, address) seq, address, balance FROM (
        SELECT l.seq, l.address,
               s.balance + sum(l.delta) OVER (PARTITION BY l.address ORDER BY l.block_number, l.log_index) AS balance
        FROM legs l JOIN start s USING (address)) r
), ins AS (
    INSERT INTO transfers (token, block_number, log_index, block_hash, block_time, tx_hash,
                           from_address, to_address, value, seq, from_balance, to_balance)
    SELECT $1, n.block_number, n.log_index, n.block_hash, n.block_time, n.tx_hash, n.from_address,
           n.to_address, n.value, n.seq, f.balance, t.balance
    FROM new n
    JOIN after f ON f.seq = n.seq AND f.address = n.from_address
    JOIN after t ON t.seq = n.seq AND t.address = n.to_address
    RETURNING block_number, block_hash, block_time, from_address, to_address, value, seq
), moves AS (
    SELECT to_address AS address, value AS delta, block_number FROM ins WHERE to_address <> $2
    UNION ALL
    SELECT from_address, -value, block_number FROM ins WHERE from_address <> $2
), agg AS (
    SELECT address, sum(delta) AS delta, max(block_number) AS last_block FROM moves GROUP BY address
), prev AS (
    SELECT a.delta, coalesce(b.balance, 0) AS old
    FROM agg a LEFT JOIN balances b ON b.token = $1 AND b.address = a.address
), upsert AS (
    INSERT INTO balances (token, address, balance, last_transfer_block)
    SELECT $1, address, delta, last_block FROM agg
    ON CONFLICT (token, address) DO UPDATE
       SET balance = balances.balance + excluded.balance,
           last_transfer_block = greatest(balances.last_transfer_block, excluded.last_transfer_block)
    RETURNING 1
), blk AS (
    INSERT INTO blocks (token, number, hash, time)
    SELECT DISTINCT $1::bytea, block_number, block_hash, block_time FROM ins
    UNION
    SELECT $1, n, h, t FROM unnest($8::bigint[], $9::bytea[], $10::bigint[]) AS b(n, h, t)
    ON CONFLICT DO NOTHING
    RETURNING 1
), rej AS (
    INSERT INTO rejected_logs (token, block_number, log_index)
    SELECT $1, b, i FROM unnest($6::bigint[], $7::integer[]) AS r(b, i)
    ON CONFLICT DO NOTHING
    RETURNING 1
), tok AS (
    UPDATE tokens SET
        total_supply = total_supply
            + (SELECT coalesce(sum(value), 0) FROM ins WHERE from_address = $2)
            - (SELECT coalesce(sum(value), 0) FROM ins WHERE to_address = $2),
        transfer_count = transfer_count + (SELECT count(*) FROM ins),
        holder_count = holder_count
            + (SELECT count(*) FILTER (WHERE old + delta > 0) - count(*) FILTER (WHERE old > 0) FROM prev),
        rejected_logs = rejected_logs + (SELECT count(*) FROM rej),
        last_seq = coalesce((SELECT max(seq) FROM ins), last_seq),
        indexed_hash = CASE WHEN $3 >= indexed_block THEN $4 ELSE indexed_hash END,
        indexed_time = CASE WHEN $3 >= indexed_block THEN $5 ELSE indexed_time END,
        indexed_block = greatest(indexed_block, $3),
        updated_at = now()
    WHERE address = $1
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM upsert), (SELECT count(*) FROM blk), (SELECT count(*) FROM tok)";

/// Streams the transfers into the staging table with binary COPY. U256, Address and B256
/// travel through alloy's ToSql (NUMERIC and BYTEA): the one conversion of uint256 to
/// Postgres in the ingestor.
async fn copy_transfers(
    tx: &tokio_postgres::Transaction<'_>,
    transfers: &[Transfer],
    first_seq: i64,
) -> anyhow::Result<()> {
    let sink = tx
        .copy_in(
            "COPY staging_transfers (block_number, log_index, block_hash, block_time, tx_hash,
                                     from_address, to_address, value, seq) FROM STDIN BINARY",
        )
        .await
        .context("starting COPY")?;
    let types = [
        Type::INT8,
        Type::INT4,
        Type::BYTEA,
        Type::INT8,
        Type::BYTEA,
        Type::BYTEA,
        Type::BYTEA,
        Type::NUMERIC,
        Type::INT8,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    // Sequence numbers in (block, log index) order; a row that turns out to be stored
    // already leaves its number unused.
    for (t, seq) in transfers.iter().zip(first_seq..) {
        let block_time =
            t.block_time.context("a transfer without a block time reached the store")? as i64;
        let row: [&(dyn ToSql + Sync); 9] = [
            &(t.block_number as i64),
            &(t.log_index as i32),
            &t.block_hash,
            &block_time,
            &t.tx_hash,
            &t.from,
            &t.to,
            &t.value,
            &seq,
        ];
        writer.as_mut().write(&row).await.context("writing a COPY row")?;
    }
    writer.finish().await.context("finishing COPY")?;
    Ok(())
}

fn token_row(r: &Row) -> TokenRow {
    TokenRow {
        address: r.get(0),
        chain_id: r.get::<_, i64>(1) as u64,
        start_block: r.get::<_, i64>(2) as u64,
        indexed_block: r.get(3),
    }
}

/// Whether a failed store call is worth repeating: the database was unreachable, the
/// connection broke, or the server asked to retry. A repeated commit is safe (see
/// [`Store::commit`]); a refused batch (a gap) or a SQL error is not transient.
pub fn is_transient(e: &anyhow::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.chain().any(|cause| {
        if cause.downcast_ref::<deadpool_postgres::PoolError>().is_some() {
            return true;
        }
        let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() else { return false };
        match pg.code() {
            // No SQLSTATE: the connection itself failed.
            None => true,
            Some(code) => {
                [
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(code)
                    || code.code().starts_with("08")
            }
        }
    })
}

/// Repeats a store call while the database is unreachable (see [`is_transient`]), with the
/// backoff of `retry`.
pub async fn retrying<T, F, Fut>(retry: &RetryPolicy, mut op: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if attempt < retry.max_attempts && is_transient(&e) => {
                let delay = retry.backoff(attempt);
                tracing::warn!(
                    attempt,
                    error = format!("{e:#}"),
                    delay_ms = delay.as_millis() as u64,
                    "database unavailable; retrying"
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The single-writer lock of one token: a Postgres advisory lock held by a connection of
/// its own for as long as this value lives. If that connection ends, the lock is gone
/// (another ingestor may take over) and [`WriterLock::lost`] fires.
#[derive(Debug)]
pub struct WriterLock {
    _client: tokio_postgres::Client,
    lost: tokio_util::sync::CancellationToken,
}

impl WriterLock {
    /// Fires when the lock's connection ends.
    pub fn lost(&self) -> tokio_util::sync::CancellationToken {
        self.lost.clone()
    }
}

/// Takes the writer lock of `token`, waiting while another ingestor holds it; `None` if
/// `shutdown` comes first.
pub async fn writer_lock(
    database_url: &str,
    token: Address,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Option<WriterLock>> {
    let (client, connection) = tokio_postgres::connect(database_url, NoTls)
        .await
        .context("connecting for the writer lock")?;
    let lost = tokio_util::sync::CancellationToken::new();
    let fire = lost.clone();
    tokio::spawn(async move {
        let _ = connection.await;
        fire.cancel();
    });
    // A key of our own per token: the token's first 8 bytes, tagged.
    let key = i64::from_be_bytes(token.as_slice()[..8].try_into().expect("8 bytes"))
        ^ 0x4552_4332_3057_5254;
    let mut waiting_logged = false;
    loop {
        let got: bool = client.query_one("SELECT pg_try_advisory_lock($1)", &[&key]).await?.get(0);
        if got {
            return Ok(Some(WriterLock { _client: client, lost }));
        }
        if !waiting_logged {
            tracing::info!(%token, "another ingestor holds this token's writer lock; waiting");
            waiting_logged = true;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    }
}
