//! The ingestor's side of Postgres. A batch's transfers, balance changes, blocks and
//! checkpoint are written in one transaction by one writer ([`writer`]), and a commit
//! can be repeated safely: blocks already stored are skipped, and only the transfers
//! actually inserted move balances. A reorg is undone in one transaction too
//! ([`rollback`]).
//!
//! - [`writer`]: the batch writer, streamed chunk by chunk or from a [`Batch`] in memory;
//!   [`batch`]: what a commit takes and tells; [`balances`]: the balance arithmetic and
//!   its cache; `blocks`: the block rows, rejected logs and checkpoint a batch moves;
//!   `copy`: the COPY of transfers;
//! - [`rollback`]: everything above a fork block, undone;
//! - [`token`]: the token row (metadata, checkpoint, finality, supplies) and block hashes;
//! - `partitions`: the partitions of `transfers`, made and indexed;
//! - [`ranking`]: the rankings kept every so many transfers, for past rankings;
//! - [`lock`]: the per-token writer lock; [`migrate`]: the schema;
//! - [`verify`]: the reads `ingestor verify` compares with the chain;
//! - [`error`]: [`StoreError`] and which failures are worth repeating.
//!
//! This module knows no RPC.

pub mod balances;
pub mod batch;
mod blocks;
mod copy;
pub mod error;
pub mod lock;
pub mod migrate;
mod partitions;
pub mod ranking;
pub mod rollback;
pub mod token;
pub mod verify;
pub mod writer;

use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

pub use balances::Balances;
pub use batch::{Batch, CommitStats};
pub use error::{StoreError, StoreResult};
pub use lock::WriterLocks;
pub use partitions::{Layout, PARTITION_TRANSFERS};
pub use ranking::RankingPolicy;
pub use token::TokenRow;
pub use verify::VerifySnapshot;
pub use writer::BatchWriter;

use error::What;

/// A token of the store: its surrogate id (what every other table names it by) and its
/// chain (the partitions' key). `(chain_id, address)` is the token; the id stands for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenKey {
    /// `tokens.id`.
    pub id: i32,
    /// `tokens.chain_id`.
    pub chain_id: i64,
}

/// A pool of connections to the indexer's database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    /// Per chain, the block ranges its transfer partitions are known to cover (clones
    /// share it).
    partitions: std::sync::Arc<std::sync::Mutex<partitions::Covered>>,
    /// How often batches keep a ranking.
    rankings: RankingPolicy,
}

/// Parses a database URL and makes a pool of at most `size` connections. Nothing connects
/// until the first use.
pub fn pool(database_url: &str, size: usize) -> StoreResult<Pool> {
    let config = tokio_postgres::Config::from_str(database_url)
        .map_err(|e| StoreError::Config(format!("--database-url is not a PostgreSQL URL: {e}")))?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .build()
        .map_err(|e| StoreError::Config(format!("building the database pool: {e}")))
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
        Self { pool, partitions: Default::default(), rankings: RankingPolicy::default() }
    }

    /// This store, keeping rankings as `policy` says.
    pub fn with_rankings(self, policy: RankingPolicy) -> Self {
        Self { rankings: policy, ..self }
    }

    /// A connection from the pool.
    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// Applies the migrations the database lacks.
    pub async fn migrate(&self) -> StoreResult<usize> {
        let mut client = self.client().await?;
        migrate::run(&mut client).await
    }
}

/// The tokens one batch writes: of one chain, each by its address (what logs name) and
/// its key in the store.
#[derive(Debug, Clone)]
pub struct TokenSet {
    chain_id: i64,
    by_address: std::sync::Arc<std::collections::HashMap<alloy_primitives::Address, TokenKey>>,
}

impl TokenSet {
    /// The set of `tokens`, all of chain `chain_id`.
    pub fn new(
        chain_id: i64,
        tokens: impl IntoIterator<Item = (alloy_primitives::Address, TokenKey)>,
    ) -> Self {
        let by_address = tokens.into_iter().collect();
        Self { chain_id, by_address: std::sync::Arc::new(by_address) }
    }

    /// The set of one token.
    pub fn one(address: alloy_primitives::Address, key: TokenKey) -> Self {
        Self::new(key.chain_id, [(address, key)])
    }

    /// Their chain.
    pub fn chain_id(&self) -> i64 {
        self.chain_id
    }

    /// The key of the token at `address`, if it is in the set.
    pub fn get(&self, address: &alloy_primitives::Address) -> Option<TokenKey> {
        self.by_address.get(address).copied()
    }

    /// Their keys.
    pub fn keys(&self) -> impl Iterator<Item = TokenKey> + '_ {
        self.by_address.values().copied()
    }

    /// Their addresses and keys.
    pub fn iter(&self) -> impl Iterator<Item = (alloy_primitives::Address, TokenKey)> + '_ {
        self.by_address.iter().map(|(a, k)| (*a, *k))
    }

    /// Their ids, ascending (the order rows are locked in, so that two writers of
    /// overlapping sets never wait for each other in a circle).
    pub fn ids(&self) -> Vec<i32> {
        let mut ids: Vec<i32> = self.by_address.values().map(|k| k.id).collect();
        ids.sort_unstable();
        ids
    }

    /// How many tokens.
    pub fn len(&self) -> usize {
        self.by_address.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.by_address.is_empty()
    }
}

/// A token row as a batch finds it, locked.
#[derive(Debug)]
struct Locked {
    key: TokenKey,
    /// The checkpoint.
    indexed: i64,
    last_seq: i64,
    supply: balances::Balance,
    /// The newest block stored for the token (-1 if none): its transfers and block rows.
    /// Rows above the checkpoint exist only if something moved the checkpoint back by
    /// hand; a batch skips them.
    newest: i64,
    /// Transfers stored, and how many of them came after the last ranking kept.
    transfer_count: i64,
    since_ranking: i64,
}

/// Locks the rows of every token of `set` for this transaction (in id order) and reads
/// their checkpoints, last sequence numbers, supplies and newest stored blocks in one
/// statement. Every write of the batch kind takes it first: one writer per token at a
/// time, and sequence numbers handed out in commit order.
async fn lock_tokens<C: tokio_postgres::GenericClient>(
    tx: &C,
    set: &TokenSet,
) -> StoreResult<Vec<Locked>> {
    let ids = set.ids();
    let rows = tx
        .query(
            "SELECT k.id, k.chain_id, k.indexed_block, k.last_seq, k.total_supply, k.transfer_count,
                    k.transfer_count - coalesce((SELECT r.transfer_count FROM rankings r
                                                 WHERE r.token = k.id
                                                 ORDER BY r.block DESC LIMIT 1), 0) AS since_ranking
             FROM tokens k WHERE k.id = ANY($1) ORDER BY k.id FOR UPDATE OF k",
            &[&ids],
        )
        .await
        .what("locking the token rows")?;
    if rows.len() != ids.len() {
        return Err(StoreError::Refused(format!(
            "{} of {} tokens have no row: register them first",
            ids.len() - rows.len(),
            ids.len()
        )));
    }
    // Every block with a transfer of a token has its row in `blocks`: one backward step
    // of that table's key per token. (Not of the transfers: a partition a backfill is
    // filling has no key index yet, see migration V14.)
    let newest = tx
        .query(
            "SELECT k.id, coalesce((SELECT max(b.number) FROM blocks b WHERE b.token = k.id), -1)
             FROM unnest($1::integer[]) AS k(id)",
            &[&ids],
        )
        .await
        .what("reading the newest stored blocks")?;
    let newest: std::collections::HashMap<i32, i64> =
        newest.iter().map(|r| (r.get(0), r.get(1))).collect();
    rows.iter()
        .map(|r| {
            let key = TokenKey { id: r.get("id"), chain_id: r.get("chain_id") };
            if key.chain_id != set.chain_id() {
                return Err(StoreError::Refused(format!(
                    "token id {} is of chain {}, not of the batch's chain {}",
                    key.id,
                    key.chain_id,
                    set.chain_id()
                )));
            }
            Ok(Locked {
                key,
                indexed: r.get("indexed_block"),
                last_seq: r.get("last_seq"),
                supply: r.get("total_supply"),
                newest: newest.get(&key.id).copied().unwrap_or(-1),
                transfer_count: r.get("transfer_count"),
                since_ranking: r.get("since_ranking"),
            })
        })
        .collect()
}

/// Announces a commit or rollback of the tokens `ids` on [`bootstrap::NOTIFY_CHANNEL`]
/// (delivered when `tx` commits), one notification each.
async fn notify<C: tokio_postgres::GenericClient>(tx: &C, ids: &[i32]) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    tx.execute(
        "SELECT pg_notify($2, chain_id || ':' || encode(address, 'hex') || ':' || last_seq)
         FROM tokens WHERE id = ANY($1) ORDER BY id",
        &[&ids, &bootstrap::NOTIFY_CHANNEL],
    )
    .await
    .what("announcing the commit")?;
    Ok(())
}
