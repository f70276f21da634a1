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
pub use lock::{WriterLock, writer_lock};
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
    /// Per chain, the newest block whose transfer partition is known to exist (clones
    /// share it).
    partitions_to: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<i64, i64>>>,
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
        Self { pool, partitions_to: Default::default(), rankings: RankingPolicy::default() }
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

/// Locks the token's row for this transaction; returns its checkpoint and last sequence
/// number. Every write of the batch kind takes it first: one writer per token at a time,
/// and sequence numbers handed out in commit order.
async fn lock_token<C: tokio_postgres::GenericClient>(
    tx: &C,
    token: TokenKey,
) -> StoreResult<(i64, i64)> {
    let row = tx
        .query_opt(
            "SELECT indexed_block, last_seq FROM tokens WHERE id = $1 FOR UPDATE",
            &[&token.id],
        )
        .await
        .what("locking the token row")?
        .ok_or_else(|| {
            StoreError::Refused(format!("token id {} has no row: register it first", token.id))
        })?;
    Ok((row.get("indexed_block"), row.get("last_seq")))
}

/// The block of the token's newest stored transfer (-1 if none): one backward step of
/// the primary key per partition. Rows above the checkpoint exist only if something moved
/// the checkpoint back by hand; a batch skips them.
async fn newest_transfer<C: tokio_postgres::GenericClient>(
    tx: &C,
    token: TokenKey,
) -> StoreResult<i64> {
    Ok(tx
        .query_one(
            "SELECT coalesce(max(block_number), -1) FROM transfers WHERE token = $1 AND chain_id = $2",
            &[&token.id, &token.chain_id],
        )
        .await
        .what("reading the newest stored transfer")?
        .get(0))
}

/// Announces a commit or rollback of `token` on [`bootstrap::NOTIFY_CHANNEL`] (delivered
/// when `tx` commits).
async fn notify<C: tokio_postgres::GenericClient>(tx: &C, token: TokenKey) -> StoreResult<()> {
    tx.execute(
        "SELECT pg_notify($2, chain_id || ':' || encode(address, 'hex') || ':' || last_seq) FROM tokens WHERE id = $1",
        &[&token.id, &bootstrap::NOTIFY_CHANNEL],
    )
    .await
    .what("announcing the commit")?;
    Ok(())
}
