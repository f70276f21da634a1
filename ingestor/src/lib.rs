//! Indexes an ERC-20 token's Transfer events from an Ethereum JSON-RPC node into Postgres:
//! transfers, balances derived from them, and a checkpoint, one transaction per batch.
//!
//! Modules in reading order:
//! - [`config`]: the settings, from flags and environment variables;
//! - [`sync`]: where a run starts, batching, commits in block order, following the head;
//! - [`fetch`]: adaptive `eth_getLogs` spans, several in flight, delivered in order;
//! - [`rpc`]: JSON-RPC calls and the sorting of their failures; [`refusal`] reads a
//!   provider's "range too large" in its own words;
//! - [`decode`]: logs to transfers;
//! - [`store`]: the SQL of the write path and the writer lock; [`migrate`]: the schema;
//! - [`metrics`] and [`health`]: what operators and Kubernetes probes read;
//! - [`verify`]: the `verify` subcommand, the store checked against the chain.

pub mod config;
pub mod decode;
pub mod fetch;
pub mod health;
pub mod metrics;
pub mod migrate;
pub mod refusal;
pub mod rpc;
pub mod store;
pub mod sync;
pub mod verify;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::Config;

use crate::fetch::SpanPolicy;
use crate::rpc::{RetryPolicy, Rpc};
use crate::store::Store;
use crate::sync::{FinalityPolicy, Indexer, SyncPolicy};

/// `ingestor verify`: the store checked against the chain at its checkpoint (every holder
/// or a random `sample`), and with `cross_check_span` the Transfer log counts of the first
/// two nodes compared range by range; through the same RPC settings (failover, rate limit,
/// retries) as indexing.
pub async fn verify_store(
    config: &Config,
    sample: Option<u64>,
    cross_check_span: Option<u64>,
) -> anyhow::Result<(verify::Report, Option<verify::CrossCheck>)> {
    let retry = RetryPolicy {
        max_attempts: config.max_attempts,
        base_delay: std::time::Duration::from_millis(250),
        max_delay: config.max_backoff,
    };
    let rpc = Rpc::connect(&config.rpc_url, config.rpc_timeout, retry)
        .await?
        .with_rate_limit(config.max_requests_per_second);
    let store = Store::new(store::pool(&config.database_url, 1)?);
    let report = verify::verify(&rpc, &store, config.token, sample).await?;
    let cross = match cross_check_span {
        Some(span) => Some(verify::cross_check(&rpc, &store, config.token, span).await?),
        None => None,
    };
    Ok((report, cross))
}

/// Runs the ingestor until its range is indexed, or, when following, until `shutdown`.
/// Serves metrics and health while it runs; waits for the token's writer lock before it
/// reads where to start, and stops if it loses the lock.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let retry = RetryPolicy {
        max_attempts: config.max_attempts,
        base_delay: std::time::Duration::from_millis(250),
        max_delay: config.max_backoff,
    };
    if config.migrate_only {
        let store = Store::new(store::pool(&config.database_url, 1)?);
        let applied =
            store::retrying(&retry, || store.migrate()).await.context("migrating the database")?;
        info!(applied, database = %store::describe_url(&config.database_url), "migrations applied");
        return Ok(());
    }
    let metrics = metrics::Metrics::new();
    let servers = shutdown.child_token();
    let _stop_servers = servers.clone().drop_guard();
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .with_context(|| format!("binding --metrics-listen {}", config.metrics_listen))?;
    tokio::spawn(bootstrap::metrics::serve(
        metrics_listener,
        metrics.registry.clone(),
        servers.clone(),
    ));
    let health = health::Health::serve(config.health_listen, servers.clone()).await?;

    let rpc = Rpc::connect(&config.rpc_url, config.rpc_timeout, retry)
        .await?
        .with_rate_limit(config.max_requests_per_second)
        .with_metrics(metrics.clone());
    let store =
        Store::new(store::pool(&config.database_url, usize::from(config.database_pool_size))?);
    info!(database = %store::describe_url(&config.database_url), token = %config.token, "starting");

    let applied =
        store::retrying(&retry, || store.migrate()).await.context("migrating the database")?;
    if applied > 0 {
        info!(applied, "schema migrated");
    }
    // One writer per token: wait for the lock before reading where to start. A lock
    // lost with its connection (Postgres restarted, a network cut) is taken again, and
    // the work starts over from the stored checkpoint, which another ingestor may have
    // moved in between.
    loop {
        let Some(lock) = store::retrying(&retry, || {
            store::writer_lock(&config.database_url, config.token, &shutdown)
        })
        .await?
        else {
            return Ok(());
        };
        let result =
            index(&config, rpc.clone(), store.clone(), &metrics, &health, &lock, &shutdown).await;
        if lock.lost().is_cancelled() && !shutdown.is_cancelled() {
            match &result {
                Ok(()) => {
                    warn!("lost the writer lock (its database connection ended); taking it again")
                }
                Err(e) => warn!(
                    error = format!("{e:#}"),
                    "lost the writer lock (its database connection ended); taking it again"
                ),
            }
            continue;
        }
        return result;
    }
}

/// Indexes while `lock` is held: reads where to start, then runs the [`Indexer`] until
/// the range is done, `shutdown`, or the lock is lost.
async fn index(
    config: &Config,
    rpc: Rpc,
    store: Store,
    metrics: &metrics::Metrics,
    health: &health::Health,
    lock: &store::WriterLock,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let retry = rpc.retry_policy();
    let work = shutdown.child_token();
    let lost = lock.lost();
    let stop_work = work.clone();
    tokio::spawn(async move {
        lost.cancelled().await;
        stop_work.cancel();
    });
    health.follow(metrics.clone(), config.ready_max_lag, lock.lost());

    let chain_id = rpc.chain_id().await.context("reading the chain id")?;
    let head = rpc.head().await.context("reading the chain head")?;
    metrics.head(head);
    let existing = store::retrying(&retry, || store.token(config.token)).await?;
    let start = sync::start_block(existing.as_ref(), config.from, head, chain_id)?;
    if let Some(to) = config.to.filter(|&to| to < start) {
        info!(to, indexed = start - 1, "the range is already indexed; nothing to do");
        return Ok(());
    }
    if existing.is_none() && config.from.is_none() {
        info!(
            start,
            "no --from and nothing indexed: following from the latest block; balances count only transfers from here on"
        );
    }
    if start > 0
        && let Ok(checkpoint) = rpc.block(start - 1).await
    {
        metrics.checkpoint(checkpoint.number, checkpoint.timestamp);
    }
    let meta = rpc.token_metadata(config.token).await.context("reading the token's metadata")?;
    info!(name = %meta.name, symbol = %meta.symbol, decimals = meta.decimals, chain_id, head, start, to = ?config.to, "indexing");
    store::retrying(&retry, || store.upsert_token(config.token, chain_id, &meta, start)).await?;

    if let Some(every) = config.verify_every {
        tokio::spawn(verify::every(
            every,
            config.verify_sample,
            rpc.clone(),
            store.clone(),
            config.token,
            metrics.clone(),
            work.clone(),
        ));
    }
    let indexer = Indexer {
        rpc,
        store,
        token: config.token,
        policy: SyncPolicy {
            spans: SpanPolicy {
                initial: config.initial_span,
                max: config.max_span,
                target_logs: config.target_logs as usize,
                concurrency: usize::from(config.concurrency),
            },
            batch_transfers: config.batch_transfers as usize,
            batch_interval: config.batch_interval,
            poll_interval: config.poll_interval,
            finality: FinalityPolicy {
                from_node: config.finality_from == "node",
                depth: config.finality_depth,
            },
            confirmations: config.confirmations,
            draw_progress: config.log_format == "text"
                && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        },
        shutdown: work,
        metrics: metrics.clone(),
        supply_warned: Default::default(),
        recorded: Default::default(),
        depth_noted: Default::default(),
        last_finality: Default::default(),
    };
    indexer.run(start, config.to).await
}
