//! The query-service's side of Postgres: reads only. Every answer is read inside one
//! REPEATABLE READ, READ ONLY transaction, so the holders, the supply and the checkpoint
//! it reports all come from the same committed batch.
//!
//! Amounts leave Postgres as decimal text (`numeric::text`) and the percentages are
//! computed there in exact NUMERIC before the final cast to double.

use std::str::FromStr;
use std::time::Duration;

use alloy_primitives::Address;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Transaction};
use tokio_postgres::{IsolationLevel, NoTls, Row};

use crate::error::QueryError;

/// Seconds in the 7 days of "7 days ago".
const WEEK: i64 = 7 * 24 * 3600;

/// A token as the store knows it, with what a holders answer needs.
#[derive(Debug, Clone)]
pub struct TokenView {
    /// Token address.
    pub address: Address,
    /// name().
    pub name: String,
    /// symbol().
    pub symbol: String,
    /// decimals().
    pub decimals: u8,
    /// Minted minus burned, decimal.
    pub total_supply: String,
    /// First block indexed.
    pub start_block: i64,
    /// Last block indexed (start_block - 1 before the first batch).
    pub indexed_block: i64,
    /// Its timestamp.
    pub indexed_time: i64,
    /// Addresses with a balance above zero.
    pub holder_count: i64,
    /// Transfers stored.
    pub transfer_count: i64,
    /// Newest sequence number: moves with every commit and rollback.
    pub last_seq: i64,
    /// "7 days ago": the newest block with transfers whose time is at least 7 days before
    /// `indexed_time`; transfers after it are the week's changes.
    pub week_ago_block: i64,
    /// The chain's safe block as the ingestor last recorded it; -1 while unknown.
    pub safe_block: i64,
    /// The chain's finalized block as the ingestor last recorded it; -1 while unknown.
    pub finalized_block: i64,
}

impl TokenView {
    /// The answer as of the newest indexed block.
    pub fn latest(&self) -> Moment {
        Moment {
            block: self.indexed_block,
            time: self.indexed_time,
            week_ago_block: self.week_ago_block,
            total_supply: self.total_supply.clone(),
            latest: true,
        }
    }
}

/// The block an answer is as of, with what it needs of that moment.
#[derive(Debug, Clone)]
pub struct Moment {
    /// The block.
    pub block: i64,
    /// Its time (of the newest stored block at or below it), Unix seconds.
    pub time: i64,
    /// The newest stored block at least 7 days older than `time`.
    pub week_ago_block: i64,
    /// Minted minus burned after `block`, decimal.
    pub total_supply: String,
    /// True when `block` is the newest indexed one (the balances table answers).
    pub latest: bool,
}

/// One holder's row of an answer.
#[derive(Debug, Clone)]
pub struct HolderRow {
    /// Address.
    pub address: Address,
    /// Balance, decimal.
    pub balance: String,
    /// Balance 7 days before the checkpoint, decimal.
    pub balance_7d_ago: String,
    /// balance / total supply * 100.
    pub share_percent: f64,
    /// (balance - ago) / ago * 100; None when ago is 0.
    pub weekly_change_percent: Option<f64>,
    /// Newest block with a transfer of this address; 0 if none.
    pub last_transfer_block: i64,
}

/// A pool whose connections cancel statements after `statement_timeout`.
pub fn pool(database_url: &str, size: usize, statement_timeout: Duration) -> anyhow::Result<Pool> {
    let mut config = tokio_postgres::Config::from_str(database_url)
        .map_err(|e| anyhow::anyhow!("--database-url is not a PostgreSQL URL: {e}"))?;
    config.options(format!("-c statement_timeout={}", statement_timeout.as_millis()));
    config.application_name("query-service");
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    Ok(Pool::builder(manager).max_size(size.max(1)).build()?)
}

/// Begins the snapshot every answer is read from.
pub async fn snapshot(
    client: &mut deadpool_postgres::Object,
) -> Result<Transaction<'_>, QueryError> {
    Ok(client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

/// The columns of a [`TokenView`]; $1 is [`WEEK`].
macro_rules! token_columns {
    () => {
        "SELECT t.address, t.name, t.symbol, t.decimals, t.total_supply::text, t.start_block,
                t.indexed_block, t.indexed_time, t.holder_count, t.transfer_count, t.last_seq,
                coalesce((SELECT b.number FROM blocks b
                          WHERE b.token = t.address AND b.time <= t.indexed_time - $1
                          ORDER BY b.time DESC, b.number DESC LIMIT 1),
                         t.start_block - 1),
                t.safe_block, t.finalized_block
         FROM tokens t "
    };
}

/// Every indexed token, by address.
pub async fn tokens(tx: &Transaction<'_>) -> Result<Vec<TokenView>, QueryError> {
    let stmt = tx.prepare_cached(concat!(token_columns!(), "ORDER BY t.address")).await?;
    let rows = tx.query(&stmt, &[&WEEK]).await?;
    Ok(rows.iter().map(token_view).collect())
}

/// The token a request is about: the one named, or the only one indexed.
pub async fn token(tx: &Transaction<'_>, wanted: Option<Address>) -> Result<TokenView, QueryError> {
    if let Some(address) = wanted {
        let stmt = tx.prepare_cached(concat!(token_columns!(), "WHERE t.address = $2")).await?;
        if let Some(row) = tx.query_opt(&stmt, &[&WEEK, &address]).await? {
            return Ok(token_view(&row));
        }
    }
    let all = tokens(tx).await?;
    let names = || all.iter().map(|t| t.address.to_string()).collect::<Vec<_>>().join(", ");
    match (wanted, all.len()) {
        (Some(a), 0) => {
            Err(QueryError::NotFound(format!("token {a} is not indexed; no token is indexed yet")))
        }
        (Some(a), _) => Err(QueryError::NotFound(format!(
            "token {a} is not indexed; indexed tokens: {}",
            names()
        ))),
        (None, 0) => Err(QueryError::NotReady("no token is indexed yet: run the ingestor".into())),
        (None, 1) => Ok(all.into_iter().next().expect("one token")),
        (None, _) => Err(QueryError::invalid(
            "token",
            format!("several tokens are indexed; name one of: {}", names()),
        )),
    }
}

fn token_view(r: &Row) -> TokenView {
    TokenView {
        address: r.get(0),
        name: r.get(1),
        symbol: r.get(2),
        decimals: r.get::<_, i16>(3).clamp(0, 255) as u8,
        total_supply: r.get(4),
        start_block: r.get(5),
        indexed_block: r.get(6),
        indexed_time: r.get(7),
        holder_count: r.get(8),
        transfer_count: r.get(9),
        last_seq: r.get(10),
        week_ago_block: r.get(11),
        safe_block: r.get(12),
        finalized_block: r.get(13),
    }
}

/// Wraps a query `$inner` that yields `address, balance, last_transfer_block` rows in
/// ranking order with the share of the supply ($3, decimal text) and the 7-day figures,
/// given `$ago`, the SQL of a row's balance at the week-ago block $2 (row `p`).
macro_rules! holder_columns {
    ($inner:literal, $ago:literal) => {
        concat!(
            "WITH page AS (",
            $inner,
            ")
            SELECT p.address, p.balance::text, w.ago::text,
                   coalesce((p.balance * 100 / nullif($3::text::numeric, 0))::float8, 0),
                   CASE WHEN w.ago = 0 THEN NULL ELSE ((p.balance - w.ago) * 100 / w.ago)::float8 END,
                   p.last_transfer_block
            FROM page p
            -- OFFSET 0 keeps this a subquery: inlined, its lookups would run once per use.
            CROSS JOIN LATERAL (SELECT ",
            $ago,
            " AS ago OFFSET 0) w
            ORDER BY -p.balance, p.address"
        )
    };
}

/// [`holder_columns!`] at the checkpoint: the week's changes of each row come from two
/// index-only range scans (transfers_to, transfers_from) over blocks after
/// `week_ago_block`. Parameters: $1 token, $2 week_ago_block, $3 total supply (decimal
/// text), then the inner query's own.
macro_rules! with_week {
    ($inner:literal) => {
        holder_columns!(
            $inner,
            "CASE
                -- No transfer after the week-ago block: nothing to add up (most holders).
                WHEN p.last_transfer_block <= $2 THEN p.balance
                ELSE p.balance
                - coalesce((SELECT sum(t.value) FROM transfers t
                            WHERE t.token = $1 AND t.to_address = p.address AND t.block_number > $2), 0)
                + coalesce((SELECT sum(t.value) FROM transfers t
                            WHERE t.token = $1 AND t.from_address = p.address AND t.block_number > $2), 0)
                END"
        )
    };
}

/// The first `limit` holders in ranking order. $4 limit.
const TOP: &str = with_week!(
    "SELECT address, balance, last_transfer_block FROM balances
     WHERE token = $1 AND balance > 0
     ORDER BY -balance, address LIMIT $4"
);

/// The `limit` holders ranked after (balance $5, address $6). $4 limit.
const AFTER: &str = with_week!(
    "SELECT address, balance, last_transfer_block FROM balances
     WHERE token = $1 AND balance > 0 AND (-balance, address) > (-($5::text::numeric), $6::bytea)
     ORDER BY -balance, address LIMIT $4"
);

/// The holders at addresses $4, known or not.
const LOOKUP: &str = with_week!(
    "SELECT q.address, coalesce(b.balance, 0) AS balance, coalesce(b.last_transfer_block, 0) AS last_transfer_block
     FROM unnest($4::bytea[]) AS q(address)
     LEFT JOIN balances b ON b.token = $1 AND b.address = q.address"
);

/// The first `limit` holders of `token`, or those after `after` (balance, address).
pub async fn ranked(
    tx: &Transaction<'_>,
    token: &TokenView,
    after: Option<(String, Address)>,
    limit: i64,
) -> Result<Vec<HolderRow>, QueryError> {
    let rows = match &after {
        None => {
            let stmt = tx.prepare_cached(TOP).await?;
            tx.query(&stmt, &[&token.address, &token.week_ago_block, &token.total_supply, &limit])
                .await?
        }
        Some((balance, address)) => {
            let stmt = tx.prepare_cached(AFTER).await?;
            tx.query(
                &stmt,
                &[
                    &token.address,
                    &token.week_ago_block,
                    &token.total_supply,
                    &limit,
                    balance,
                    address,
                ],
            )
            .await?
        }
    };
    Ok(rows.iter().map(holder_row).collect())
}

/// The holders at `addresses` (each once), zero balances included, in ranking order.
pub async fn lookup(
    tx: &Transaction<'_>,
    token: &TokenView,
    addresses: &[Address],
) -> Result<Vec<HolderRow>, QueryError> {
    let stmt = tx.prepare_cached(LOOKUP).await?;
    let rows = tx
        .query(&stmt, &[&token.address, &token.week_ago_block, &token.total_supply, &addresses])
        .await?;
    Ok(rows.iter().map(holder_row).collect())
}

/// The moment of a past `block` of `token` (at or below its checkpoint): its time, the
/// block 7 days before it, and the supply then (minus the zero address's balance).
pub async fn moment_at(
    tx: &Transaction<'_>,
    token: &TokenView,
    block: i64,
) -> Result<Moment, QueryError> {
    let stmt = tx
        .prepare_cached(
            "WITH m AS (SELECT coalesce((SELECT time FROM blocks WHERE token = $1 AND number <= $2
                                         ORDER BY number DESC LIMIT 1), 0) AS time)
             SELECT m.time,
                    coalesce((SELECT b.number FROM blocks b WHERE b.token = $1 AND b.time <= m.time - $3
                              ORDER BY b.time DESC, b.number DESC LIMIT 1), $4::bigint - 1),
                    (-(balance_at($1, $5, $2)).balance)::text
             FROM m",
        )
        .await?;
    let row = tx
        .query_one(&stmt, &[&token.address, &block, &WEEK, &token.start_block, &Address::ZERO])
        .await?;
    Ok(Moment {
        block,
        time: row.get(0),
        week_ago_block: row.get(1),
        total_supply: row.get(2),
        latest: false,
    })
}

/// The newest stored block of `token` whose time is at or before `time`: blocks without
/// transfers are not stored, and balances after them equal those after this one.
pub async fn block_at_time(
    tx: &Transaction<'_>,
    token: Address,
    time: i64,
) -> Result<Option<i64>, QueryError> {
    let stmt = tx
        .prepare_cached(
            "SELECT number FROM blocks WHERE token = $1 AND time <= $2
             ORDER BY time DESC, number DESC LIMIT 1",
        )
        .await?;
    Ok(tx.query_opt(&stmt, &[&token, &time]).await?.map(|r| r.get(0)))
}

/// [`holder_columns!`] for a past moment: the balance 7 days before is one
/// `balance_at()` lookup. Parameters: $1 token, $2 week_ago_block, $3 total supply then,
/// $4 limit or addresses, $5 the moment's block, $6 the zero address, then the inner
/// query's own.
macro_rules! with_week_at {
    ($inner:literal) => {
        holder_columns!(
            $inner,
            "CASE WHEN p.last_transfer_block <= $2 OR p.address = $6 THEN p.balance
                  ELSE (balance_at($1, p.address, $2)).balance END"
        )
    };
}

/// The ranking at block $5 for a recent block: addresses with no transfer after it hold
/// what they hold now (one walk of balances_rank, skipping the others); one with a
/// transfer after it held, at $5, its balance before the first of them (the balance that
/// transfer left, less its effect; nothing for a transfer to oneself). Costs the
/// transfers after $5 and a sort, plus a page. Ranked after (balance $7, address $8).
const RANKED_AT_RECENT: &str = with_week_at!(
    "WITH legs AS (
        SELECT from_address AS address, block_number, log_index,
               from_balance + CASE WHEN from_address = to_address THEN 0 ELSE value END AS before
        FROM transfers WHERE token = $1 AND block_number > $5
        UNION ALL
        SELECT to_address, block_number, log_index,
               to_balance - CASE WHEN from_address = to_address THEN 0 ELSE value END
        FROM transfers WHERE token = $1 AND block_number > $5
     ), moved AS MATERIALIZED (
        SELECT DISTINCT ON (address) address, before AS balance
        FROM legs ORDER BY address, block_number, log_index
     ), ranked AS (
        SELECT * FROM (
            (SELECT address, balance, last_transfer_block FROM balances
             WHERE token = $1 AND balance > 0 AND address NOT IN (SELECT address FROM moved)
               AND (-balance, address) > (-($7::text::numeric), $8::bytea)
             ORDER BY -balance, address LIMIT $4)
            UNION ALL
            (SELECT address, balance, NULL::bigint FROM moved
             WHERE address <> $6 AND balance > 0
               AND (-balance, address) > (-($7::text::numeric), $8::bytea))
        ) u ORDER BY -balance, address LIMIT $4
     )
     -- The newest transfer at or before $5 of the page's moved addresses only.
     SELECT r.address, r.balance,
            coalesce(r.last_transfer_block, (balance_at($1, r.address, $5)).last_block) AS last_transfer_block
     FROM ranked r"
);

/// The ranking at block $5 for an old block: each address's newest transfer at or
/// before it carries its balance then. Costs the transfers up to $5.
const RANKED_AT_OLD: &str = with_week_at!(
    "WITH legs AS (
        SELECT from_address AS address, block_number, log_index, from_balance AS balance
        FROM transfers WHERE token = $1 AND block_number <= $5
        UNION ALL
        SELECT to_address, block_number, log_index, to_balance
        FROM transfers WHERE token = $1 AND block_number <= $5
     ), last AS (
        SELECT DISTINCT ON (address) address, balance, block_number AS last_transfer_block
        FROM legs ORDER BY address, block_number DESC, log_index DESC
     )
     SELECT address, balance, last_transfer_block FROM last
     WHERE balance > 0 AND address <> $6 AND (-balance, address) > (-($7::text::numeric), $8::bytea)
     ORDER BY -balance, address LIMIT $4"
);

/// The holders at addresses $4 at block $5: one `balance_at()` lookup each. Public for
/// EXPLAIN in tests.
pub const LOOKUP_AT: &str = with_week_at!(
    "SELECT q.address,
            CASE WHEN q.address = $6 THEN 0 ELSE b.balance END AS balance,
            CASE WHEN q.address = $6 THEN 0 ELSE b.last_block END AS last_transfer_block
     FROM unnest($4::bytea[]) AS q(address)
     CROSS JOIN LATERAL balance_at($1, q.address, $5) b"
);

/// Above any uint256: the cursor before the first holder.
const ABOVE_ALL: &str =
    "115792089237316195423570985008687907853269984665640564039457584007913129639936";

/// The ranking of `token` at a past moment, from the start or after `after`. Reads the
/// smaller side of the moment: the transfers after it, or those up to it.
pub async fn ranked_at(
    tx: &Transaction<'_>,
    token: &TokenView,
    at: &Moment,
    after: Option<(String, Address)>,
    limit: i64,
) -> Result<Vec<HolderRow>, QueryError> {
    // Either side costs a scan of its transfers and a sort: read the smaller one.
    let half = token.transfer_count / 2 + 1;
    let stmt = tx
        .prepare_cached(
            "SELECT count(*) FROM (SELECT 1 FROM transfers WHERE token = $1 AND block_number > $2 LIMIT $3) t",
        )
        .await?;
    let newer: i64 = tx.query_one(&stmt, &[&token.address, &at.block, &half]).await?.get(0);
    // The sort of every address's first or last transfer: keep it in memory.
    tx.batch_execute("SET LOCAL work_mem = '64MB'").await?;
    let sql = if newer < half { RANKED_AT_RECENT } else { RANKED_AT_OLD };
    let (balance, address) = after.unwrap_or_else(|| (ABOVE_ALL.to_string(), Address::ZERO));
    // The empty bytea sorts before every address, so ABOVE_ALL with it admits all.
    let address: &[u8] = if balance == ABOVE_ALL { &[] } else { address.as_slice() };
    let stmt = tx.prepare_cached(sql).await?;
    let rows = tx
        .query(
            &stmt,
            &[
                &token.address,
                &at.week_ago_block,
                &at.total_supply,
                &limit,
                &at.block,
                &Address::ZERO,
                &balance,
                &address,
            ],
        )
        .await?;
    Ok(rows.iter().map(holder_row).collect())
}

/// The holders at `addresses` at a past moment, zero balances included, ranking order.
pub async fn lookup_at(
    tx: &Transaction<'_>,
    token: &TokenView,
    at: &Moment,
    addresses: &[Address],
) -> Result<Vec<HolderRow>, QueryError> {
    let stmt = tx.prepare_cached(LOOKUP_AT).await?;
    let rows = tx
        .query(
            &stmt,
            &[
                &token.address,
                &at.week_ago_block,
                &at.total_supply,
                &addresses,
                &at.block,
                &Address::ZERO,
            ],
        )
        .await?;
    Ok(rows.iter().map(holder_row).collect())
}

fn holder_row(r: &Row) -> HolderRow {
    HolderRow {
        address: r.get(0),
        balance: r.get(1),
        balance_7d_ago: r.get(2),
        share_percent: r.get(3),
        weekly_change_percent: r.get(4),
        last_transfer_block: r.get(5),
    }
}

/// Whether the database answers and has the schema.
pub async fn ping(pool: &Pool) -> Result<(), QueryError> {
    let client = pool.get().await?;
    client.query_one("SELECT count(*) FROM tokens", &[]).await?;
    Ok(())
}

/// The SQL of the ranking queries, for EXPLAIN in tests: (name, SQL, sample parameters
/// are the caller's).
pub const RANKING_QUERIES: [(&str, &str); 3] = [("top", TOP), ("after", AFTER), ("lookup", LOOKUP)];

/// One event of a token's stream: a transfer added, or taken back by a reorg.
#[derive(Debug, Clone)]
pub struct EventRow {
    /// Sequence number: the event's place in the stream.
    pub seq: i64,
    /// True for a removal.
    pub removed: bool,
    /// The transfer.
    pub transfer: TransferRow,
}

/// A stored transfer.
#[derive(Debug, Clone)]
pub struct TransferRow {
    /// Block number.
    pub block_number: i64,
    /// Position in the block.
    pub log_index: i32,
    /// Block hash.
    pub block_hash: alloy_primitives::B256,
    /// Block time, Unix seconds.
    pub block_time: i64,
    /// Transaction hash.
    pub tx_hash: alloy_primitives::B256,
    /// Sender.
    pub from: Address,
    /// Receiver.
    pub to: Address,
    /// Amount, decimal.
    pub value: String,
    /// Whether its block is final (and it is still stored).
    pub finalized: bool,
}

/// SQL: whether a transfer of token $1 in block `block_number` is final.
macro_rules! is_final {
    () => {
        "block_number <= (SELECT least(finalized_block, indexed_block) FROM tokens WHERE address = $1)"
    };
}

/// An event row: sequence number, removed, then a [`TransferRow`].
fn event_row(r: &Row) -> EventRow {
    EventRow { seq: r.get(0), removed: r.get(1), transfer: transfer_row(r, 2) }
}

fn transfer_row(r: &Row, at: usize) -> TransferRow {
    TransferRow {
        block_number: r.get(at),
        log_index: r.get(at + 1),
        block_hash: r.get(at + 2),
        block_time: r.get(at + 3),
        tx_hash: r.get(at + 4),
        from: r.get(at + 5),
        to: r.get(at + 6),
        value: r.get(at + 7),
        finalized: r.get(at + 8),
    }
}

/// Events of `token` after sequence number `after`, in order, at most `limit`; only those
/// touching `addresses` when it is not empty. A transfer later taken back appears twice:
/// its addition (its original number) and its removal (a later one).
pub async fn events_after(
    client: &deadpool_postgres::Object,
    token: Address,
    after: i64,
    limit: i64,
    addresses: &[Address],
) -> Result<Vec<EventRow>, QueryError> {
    const SQL: &str = concat!(
        "SELECT seq, removed, block_number, log_index, block_hash, block_time, tx_hash, from_address, to_address, value::text,
                kept AND ",
        is_final!(),
        "
        FROM (
            SELECT seq, false AS removed, true AS kept, block_number, log_index, block_hash, block_time, tx_hash,
                   from_address, to_address, value
            FROM transfers WHERE token = $1 AND seq > $2
            UNION ALL
            SELECT seq, false, false, block_number, log_index, block_hash, block_time, tx_hash, from_address, to_address, value
            FROM removed_transfers WHERE token = $1 AND seq > $2
            UNION ALL
            SELECT removed_seq, true, false, block_number, log_index, block_hash, block_time, tx_hash,
                   from_address, to_address, value
            FROM removed_transfers WHERE token = $1 AND removed_seq > $2
        ) e
        WHERE cardinality($4::bytea[]) = 0 OR from_address = ANY($4) OR to_address = ANY($4)
        ORDER BY seq
        LIMIT $3"
    );
    let stmt = client.prepare_cached(SQL).await?;
    let rows = client.query(&stmt, &[&token, &after, &limit, &addresses]).await?;
    Ok(rows.iter().map(event_row).collect())
}

/// Final transfers of `token` after sequence number `after`, in order, at most `limit`;
/// only those touching `addresses` when it is not empty. Stored transfers' numbers grow
/// with the chain and a final one is never removed, so a stream of these never goes back.
pub async fn final_after(
    client: &deadpool_postgres::Object,
    token: Address,
    after: i64,
    limit: i64,
    addresses: &[Address],
) -> Result<Vec<EventRow>, QueryError> {
    const SQL: &str = concat!(
        "SELECT seq, false, block_number, log_index, block_hash, block_time, tx_hash, from_address, to_address, value::text, true
         FROM transfers
         WHERE token = $1 AND seq > $2 AND ",
        is_final!(),
        "
           AND (cardinality($4::bytea[]) = 0 OR from_address = ANY($4) OR to_address = ANY($4))
         ORDER BY seq LIMIT $3"
    );
    let stmt = client.prepare_cached(SQL).await?;
    let rows = client.query(&stmt, &[&token, &after, &limit, &addresses]).await?;
    Ok(rows.iter().map(event_row).collect())
}

/// The sequence number of `token`'s newest final transfer (0 when none): where a stream
/// of final transfers "from now" starts.
pub async fn last_final_seq(
    client: &deadpool_postgres::Object,
    token: Address,
) -> Result<i64, QueryError> {
    const SQL: &str = concat!(
        "SELECT coalesce((SELECT seq FROM transfers WHERE token = $1 AND ",
        is_final!(),
        " ORDER BY block_number DESC, log_index DESC LIMIT 1), 0)"
    );
    Ok(client.query_one(SQL, &[&token]).await?.get(0))
}

/// The token's newest sequence number.
pub async fn last_seq(
    client: &deadpool_postgres::Object,
    token: Address,
) -> Result<i64, QueryError> {
    let row = client.query_opt("SELECT last_seq FROM tokens WHERE address = $1", &[&token]).await?;
    row.map(|r| r.get(0))
        .ok_or_else(|| QueryError::NotFound(format!("token {token} is not indexed")))
}

/// The newest sequence number of every token.
pub async fn last_seqs(client: &tokio_postgres::Client) -> Result<Vec<(Address, i64)>, QueryError> {
    let rows = client.query("SELECT address, last_seq FROM tokens", &[]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The sequence number to resume after so that a stream starts with the transfers of
/// `block`: just before the first stored transfer at or after it (or the newest number,
/// when there is none yet).
pub async fn seq_before_block(
    client: &deadpool_postgres::Object,
    token: Address,
    block: i64,
) -> Result<i64, QueryError> {
    let row = client
        .query_one(
            "SELECT coalesce(
                 (SELECT seq - 1 FROM transfers WHERE token = $1 AND block_number >= $2
                  ORDER BY block_number, log_index LIMIT 1),
                 (SELECT last_seq FROM tokens WHERE address = $1))",
            &[&token, &block],
        )
        .await?;
    Ok(row.get::<_, Option<i64>>(0).unwrap_or(0))
}

/// Filters of a ListTransfers page.
#[derive(Debug, Clone, Copy)]
pub struct TransferFilter {
    /// Only transfers from or to this address.
    pub address: Option<Address>,
    /// Lowest block.
    pub from_block: i64,
    /// Highest block.
    pub to_block: i64,
    /// Strictly before this (block, log index).
    pub before: (i64, i32),
    /// Page size.
    pub limit: i64,
}

/// ListTransfers without an address: $1 token, $2..$3 blocks, before ($4, $5), $6 limit.
const LIST_ALL: &str = concat!(
    "
    SELECT block_number, log_index, block_hash, block_time, tx_hash, from_address, to_address, value::text, ",
    is_final!(),
    "
    FROM transfers
    WHERE token = $1 AND block_number BETWEEN $2 AND $3 AND (block_number, log_index) < ($4, $5)
    ORDER BY block_number DESC, log_index DESC LIMIT $6"
);
/// ListTransfers of one address ($7): as sender and as receiver, one page each, merged.
const LIST_ONE: &str = concat!(
    "
    SELECT block_number, log_index, block_hash, block_time, tx_hash, from_address, to_address, value::text, ",
    is_final!(),
    "
    FROM (
        (SELECT * FROM transfers
         WHERE token = $1 AND from_address = $7 AND block_number BETWEEN $2 AND $3
           AND (block_number, log_index) < ($4, $5)
         ORDER BY block_number DESC, log_index DESC LIMIT $6)
        UNION
        (SELECT * FROM transfers
         WHERE token = $1 AND to_address = $7 AND block_number BETWEEN $2 AND $3
           AND (block_number, log_index) < ($4, $5)
         ORDER BY block_number DESC, log_index DESC LIMIT $6)
    ) t
    ORDER BY block_number DESC, log_index DESC LIMIT $6"
);

/// The SQL of ListTransfers, for EXPLAIN in tests.
pub const TRANSFER_QUERIES: [(&str, &str); 2] = [("all", LIST_ALL), ("one", LIST_ONE)];

/// Stored transfers, newest first. With an address, two index range scans (as sender, as
/// receiver) each read at most one page.
pub async fn list_transfers(
    tx: &Transaction<'_>,
    token: Address,
    f: &TransferFilter,
) -> Result<Vec<TransferRow>, QueryError> {
    let rows = match f.address {
        None => {
            let stmt = tx.prepare_cached(LIST_ALL).await?;
            tx.query(
                &stmt,
                &[&token, &f.from_block, &f.to_block, &f.before.0, &f.before.1, &f.limit],
            )
            .await?
        }
        Some(a) => {
            let stmt = tx.prepare_cached(LIST_ONE).await?;
            tx.query(
                &stmt,
                &[&token, &f.from_block, &f.to_block, &f.before.0, &f.before.1, &f.limit, &a],
            )
            .await?
        }
    };
    Ok(rows.iter().map(|r| transfer_row(r, 0)).collect())
}
