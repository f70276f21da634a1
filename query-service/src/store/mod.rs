//! The query-service's side of Postgres: reads only. Every answer is read inside one
//! REPEATABLE READ, READ ONLY transaction ([`snapshot`]), so the holders, the supply and
//! the checkpoint it reports all come from the same committed batch.
//!
//! Amounts leave Postgres as decimal text (`numeric::text`) and the percentages are
//! computed there in exact NUMERIC before the final cast to double.
//!
//! - [`tokens`]: the token rows (metadata, checkpoint, finality, "7 days ago");
//! - [`holders`]: rankings and lookups at the checkpoint;
//! - [`history`]: the same at a past block or time;
//! - [`rankings`]: a past ranking's head from the nearest ranking the ingestor kept;
//! - [`export`]: every holder of one moment, for ExportHolders;
//! - [`events`]: the stream's events by sequence number;
//! - [`transfers`]: ListTransfers pages.

pub mod events;
pub mod export;
pub mod history;
pub mod holders;
pub mod rankings;
pub mod tokens;
pub mod transfers;

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Transaction};
use tokio_postgres::{IsolationLevel, NoTls};

use crate::error::QueryError;

pub use events::EventRow;
pub use history::Moment;
pub use holders::HolderRow;
pub use tokens::TokenView;
pub use transfers::{TransferFilter, TransferRow};

/// Seconds in the 7 days of "7 days ago".
const WEEK: i64 = 7 * 24 * 3600;

/// A pool whose connections cancel statements after `statement_timeout`.
pub fn pool(database_url: &str, size: usize, statement_timeout: Duration) -> anyhow::Result<Pool> {
    pool_with(database_url, size, statement_timeout, "")
}

/// The expensive lane's pool: as [`pool`], but its statements run without parallel
/// workers, so the lane takes at most one core per connection and cheap answers keep the
/// rest of the database server's CPU.
pub fn expensive_pool(
    database_url: &str,
    size: usize,
    statement_timeout: Duration,
) -> anyhow::Result<Pool> {
    pool_with(database_url, size, statement_timeout, " -c max_parallel_workers_per_gather=0")
}

fn pool_with(
    database_url: &str,
    size: usize,
    statement_timeout: Duration,
    options: &str,
) -> anyhow::Result<Pool> {
    let mut config = tokio_postgres::Config::from_str(database_url)
        .map_err(|e| anyhow::anyhow!("--database-url is not a PostgreSQL URL: {e}"))?;
    config.options(format!("-c statement_timeout={}{options}", statement_timeout.as_millis()));
    config.application_name("query-service");
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    Ok(Pool::builder(manager).max_size(size.max(1)).build()?)
}

/// Begins the snapshot every answer is read from. With a `budget` (the caller's
/// deadline, nearer than the pool's statement timeout) its statements stop at that
/// budget instead: Postgres cancels work nobody waits for.
pub async fn snapshot(
    client: &mut deadpool_postgres::Object,
    budget: Option<Duration>,
) -> Result<Transaction<'_>, QueryError> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    if let Some(budget) = budget {
        let ms = budget.as_millis().max(1);
        tx.batch_execute(&format!("SET LOCAL statement_timeout = {ms}")).await?;
    }
    Ok(tx)
}

/// Ends a snapshot that has read all it needs without waiting for Postgres: the
/// transaction read only, so its end need not be heard. Dropping it sends ROLLBACK
/// unanswered, queued before whatever the connection's next holder sends; an answer
/// that waited for a COMMIT's round trip paid for one more wake-up of each side, which
/// on a busy host is what the slowest answers wait on.
pub fn end_snapshot(tx: Transaction<'_>) {
    drop(tx);
}

/// Whether the database answers and has the schema.
pub async fn ping(pool: &Pool) -> Result<(), QueryError> {
    let client = pool.get().await?;
    client.query_one("SELECT count(*) FROM tokens", &[]).await?;
    Ok(())
}

/// SQL: whether a transfer of token $1 in block `block_number` is final.
macro_rules! is_final {
    () => {
        "block_number <= (SELECT least(finalized_block, indexed_block) FROM tokens WHERE id = $1)"
    };
}
pub(crate) use is_final;
