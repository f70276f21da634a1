//! Indexes ERC-20 tokens' Transfer events from an Ethereum JSON-RPC node into Postgres:
//! transfers, balances derived from them, and a checkpoint per token, one transaction per
//! batch of the whole token set.
//!
//! Modules in the order a Transfer goes through them:
//! - [`config`]: the settings, from flags and environment variables; [`tokens`]: the
//!   token set, from the flags and the watched tokens file;
//! - `lanes`: the token set at work: writer locks per token, the head lane and the
//!   catch-up lane of tokens added while running;
//! - [`sync`]: where a run starts, backfill in batches, verified steps and reorgs at the
//!   head, finality, following new heads;
//! - [`fetch`]: adaptive `eth_getLogs` spans, several in flight, delivered in order;
//! - [`rpc`]: JSON-RPC calls and the sorting of their failures; [`abi`]: the contract
//!   surfaces; [`retry`]: the one backoff policy;
//! - [`decode`]: logs to transfers;
//! - [`store`]: the SQL of the write path, the writer lock and the schema;
//! - [`metrics`] and [`health`]: what operators and Kubernetes probes read;
//! - [`verify`]: the `verify` subcommand, the store checked against the chain.

pub mod abi;
pub mod config;
pub mod decode;
pub mod fetch;
pub mod health;
mod lanes;
pub mod metrics;
pub mod retry;
pub mod rpc;
pub mod store;
pub mod sync;
pub mod tokens;
pub mod verify;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::Config;

use crate::config::FinalityFrom;
use crate::fetch::SpanPolicy;
use crate::retry::{RetryPolicy, retrying};
use crate::rpc::Rpc;
use crate::store::Store;
use crate::sync::{FinalityPolicy, SyncPolicy};

/// A setting (or what it points at) that cannot work: the binary stops with this one
/// line and exit code 2, as for a bad flag, rather than retrying or exiting 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Misconfigured(pub String);

/// What `ingestor verify` found for one token.
pub type Verified = (verify::Report, Option<verify::CrossCheck>);

/// `ingestor verify`: the store checked against the chain at each token's checkpoint
/// (every holder or a random `sample`), and with `cross_check_span` the Transfer log
/// counts of the first two nodes compared range by range; through the same RPC settings
/// (failover, rate limit, retries) as indexing. The tokens checked: `--token` (and
/// TOKEN_ADDRESSES, TOKEN_ADDRESS) if given, else those of `--tokens-file`, else DOG.
pub async fn verify_store(
    config: &Config,
    sample: Option<u64>,
    cross_check_span: Option<u64>,
) -> anyhow::Result<Vec<Verified>> {
    let mut tokens = config.flag_tokens();
    if tokens.is_empty()
        && let Some(path) = &config.tokens_file
    {
        tokens = tokens::read(path).map_err(Misconfigured)?.iter().map(|w| w.address).collect();
    }
    anyhow::ensure!(!tokens.is_empty(), "no token to check: give --token or --tokens-file");
    let rpc = connect(config).await?;
    let store = Store::new(store::pool(config.database_url(), 1)?);
    let chain_id = rpc.chain_id().await.context("reading the chain id")?;
    let mut out = Vec::with_capacity(tokens.len());
    for token in tokens {
        let row = store
            .token(chain_id, token)
            .await?
            .with_context(|| format!("token {token} of chain {chain_id} is not in the store"))?;
        let report = verify::verify(&rpc, &store, &row, sample).await?;
        let cross = match cross_check_span {
            Some(span) => Some(verify::cross_check(&rpc, &store, &row, span).await?),
            None => None,
        };
        out.push((report, cross));
    }
    Ok(out)
}

/// Brings the schema up to date, waiting out outages. What the database holds that
/// stops it (another tool's tables, a newer schema) is [`Misconfigured`]: one line, exit 2.
async fn migrate(store: &Store, retry: &RetryPolicy) -> anyhow::Result<usize> {
    use crate::retry::Transient;
    retrying(retry, "migrating", || store.migrate()).await.map_err(|e| {
        if e.is_transient() {
            anyhow::Error::new(e).context("migrating the database")
        } else {
            Misconfigured(format!("migrating the database: {}", bootstrap::ErrorChain(&e))).into()
        }
    })
}

/// Where `token` was created, from the node; a node without old state is a setting to
/// change ([`Misconfigured`]), named with the one to give instead.
async fn creation_block(
    rpc: &Rpc,
    token: alloy_primitives::Address,
    chain_id: u64,
    head: u64,
) -> anyhow::Result<u64> {
    match rpc.creation_block(token, head).await {
        Ok(block) => {
            info!(%token, block, "found the token's creation block");
            Ok(block)
        }
        Err(e) => Err(Misconfigured(format!(
            "cannot find where token {} was created on chain {chain_id}: the node does not answer eth_getCode at old blocks ({}); give --from <its creation block> (or --from head to follow from now), or a node that keeps old state",
            token.to_checksum(None),
            bootstrap::one_line(&e.to_string())
        ))
        .into()),
    }
}

/// The nodes of `--rpc-url` with the configured timeout, retries and rate limit, and an
/// answer of several blocks read only up to about twice `--target-logs` (at ~700 bytes
/// a log): a denser span is narrowed before it is held.
async fn connect(config: &Config) -> anyhow::Result<Rpc> {
    let retry = config.retry_policy();
    let cap = (config.target_logs as usize).saturating_mul(1536).max(4 << 20);
    Ok(Rpc::connect(&config.rpc_url, config.rpc_timeout, retry)
        .await?
        .with_rate_limit(config.max_requests_per_second)
        .with_answer_cap(cap))
}

/// Runs the ingestor until its range is indexed, or, when following, until `shutdown`.
/// Serves metrics and health while it runs; waits for the token's writer lock before it
/// reads where to start, and stops if it loses the lock. Returns once every task it
/// started has ended.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let retry = config.retry_policy();
    let database_url = config.database_url();
    if config.migrate_only {
        let store = Store::new(store::pool(database_url, 1)?);
        let applied = retry::stopping_at(shutdown.clone(), migrate(&store, &retry)).await?;
        info!(applied, database = %store::describe_url(database_url), "migrations applied");
        return Ok(());
    }
    let tasks = TaskTracker::new();
    let servers = shutdown.child_token();
    let chain = std::sync::OnceLock::new();
    let work = serve_and_index(&config, &retry, &tasks, &servers, &shutdown, &chain);
    let mut result = retry::stopping_at(shutdown.clone(), work).await;
    // A signal that came while waiting for the database or the node: a stop, not a
    // failure (nothing was in flight).
    if result.is_err() && shutdown.is_cancelled() && config.to.is_none() {
        info!("stopped by a signal while waiting");
        result = Ok(());
    }
    // A range cut short by a signal is not "indexed": say where it stopped, non-zero.
    if let (Ok(()), Some(to)) = (&result, config.to)
        && shutdown.is_cancelled()
    {
        let store = Store::new(store::pool(database_url, 1)?);
        let mut at = None;
        if let Some(&chain_id) = chain.get() {
            for token in config.flag_tokens() {
                let row = store.token(chain_id, token).await.ok().flatten();
                let indexed = row.map_or(-1, |t| t.indexed_block);
                at = Some(at.map_or(indexed, |a: i64| a.min(indexed)));
            }
        }
        let at = at.filter(|&b| b >= 0);
        if at.is_none_or(|at| at < to as i64) {
            let at = at.map_or("nothing".to_string(), |b| format!("block {b}"));
            result = Err(anyhow::anyhow!(
                "stopped by a signal with {at} indexed, before --to {to}; run the same command again to resume"
            ));
        }
    }
    servers.cancel();
    tasks.close();
    tasks.wait().await;
    result
}

/// Starts the metrics and health servers on `tasks` (stopped by `servers`), then indexes
/// under the writer lock until done or `shutdown`.
async fn serve_and_index(
    config: &Config,
    retry: &RetryPolicy,
    tasks: &TaskTracker,
    servers: &CancellationToken,
    shutdown: &CancellationToken,
    chain: &std::sync::OnceLock<u64>,
) -> anyhow::Result<()> {
    let metrics = metrics::Metrics::new();
    let (registry, stop) = (metrics.registry.clone(), servers.clone());
    // A bad address stops the ingestor now, in one line; one in use is waited for.
    let addr = config.metrics_listen;
    let bound =
        bootstrap::listen::try_bind("--metrics-listen", addr).await.map_err(anyhow::Error::msg)?;
    tasks.spawn(async move {
        if let Some(listener) =
            bootstrap::listen::when_free(bound, "--metrics-listen", addr, &stop).await
        {
            bootstrap::metrics::serve(listener, registry, stop).await;
        }
    });
    let health = health::Health::serve(config.health_listen, tasks, servers.clone()).await?;
    let (outages, stop) = (metrics.outage_waits.clone(), servers.clone());
    tasks.spawn(async move {
        loop {
            outages.set(crate::retry::waiting() as i64);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            }
        }
    });

    let rpc = connect(config).await?.with_metrics(metrics.clone());
    let database_url = config.database_url();
    let store = Store::new(store::pool(database_url, usize::from(config.database_pool_size))?)
        .with_rankings(store::RankingPolicy {
            every: i64::from(config.ranking_every),
            depth: config.ranking_depth as usize,
        });
    let wanted = tokens::watch(config.flag_tokens(), config.tokens_file.clone(), servers.clone())
        .map_err(Misconfigured)?;
    info!(database = %store::describe_url(database_url), tokens = wanted.borrow().len(), "starting");

    let applied = migrate(&store, retry).await?;
    if applied > 0 {
        info!(applied, "schema migrated");
    }
    // A token is its chain and address: the chain is asked before the locks.
    let chain_id = rpc.chain_id().await.context("reading the chain id")?;
    if i64::try_from(chain_id).is_err() {
        return Err(Misconfigured(format!(
            "chain id {chain_id} (from --rpc-url) does not fit the store's bigint chain_id"
        ))
        .into());
    }
    let _ = chain.set(chain_id);
    let (indexed, _) = tokio::sync::watch::channel(Vec::new());
    if let Some(every) = config.verify_every {
        tasks.spawn(verify::every(
            every,
            config.verify_sample,
            rpc.clone(),
            store.clone(),
            indexed.subscribe(),
            metrics.clone(),
            servers.clone(),
        ));
    }
    // One writer per token: the locks are held by a connection of this ingestor's. A
    // connection lost (Postgres restarted, a network cut) loses them all: they are taken
    // again, and the work starts over from the stored checkpoints, which another
    // ingestor may have moved in between.
    loop {
        let mut locks = retrying(retry, "connecting for the writer locks", || {
            store::WriterLocks::connect(database_url, chain_id)
        })
        .await?;
        let work = shutdown.child_token();
        let _end_work = work.clone().drop_guard();
        let (lost, stop_work) = (locks.lost(), work.clone());
        tasks.spawn(async move {
            tokio::select! {
                () = lost.cancelled() => stop_work.cancel(),
                () = stop_work.cancelled() => {}
            }
        });
        health.follow(metrics.clone(), config.ready_max_lag, locks.lost(), tasks);
        let parts = lanes::Parts {
            config,
            rpc: rpc.clone(),
            store: store.clone(),
            chain_id,
            metrics: metrics.clone(),
            policy: sync_policy(config),
            indexed: indexed.clone(),
        };
        let result = lanes::Lanes::new(parts, work.clone()).run(&mut locks, wanted.clone()).await;
        if shutdown.is_cancelled() {
            return result;
        }
        // The database went away under the work: its locks went with it (or are about
        // to, when the work saw it first). Either way they are taken again, waiting out
        // the outage, and the work resumes from the stored checkpoints.
        let outage = result.as_ref().err().is_some_and(|e| {
            e.chain().any(|c| {
                c.downcast_ref::<store::StoreError>().is_some_and(retry::Transient::is_outage)
            })
        });
        if locks.lost().is_cancelled() || outage {
            let why = result.err().map(|e| format!("{e:#}"));
            warn!(
                error = why,
                "lost the database (and with it the writer locks); taking them again"
            );
            drop(locks);
            continue;
        }
        return result;
    }
}

/// How the pipeline batches and polls, from the settings.
fn sync_policy(config: &Config) -> SyncPolicy {
    SyncPolicy {
        spans: SpanPolicy {
            initial: config.initial_span,
            max: config.max_span,
            target_logs: config.target_logs as usize,
            concurrency: usize::from(config.concurrency),
        },
        batch_transfers: config.batch_transfers as usize,
        batch_interval: config.batch_interval,
        balance_cache_bytes: config.balance_cache_mb as usize * 1024 * 1024,
        poll_interval: config.poll_interval,
        finality: FinalityPolicy {
            from_node: config.finality_from == FinalityFrom::Node,
            depth: config.finality_depth,
        },
        confirmations: config.confirmations,
        draw_progress: config.log_format == bootstrap::LogFormat::Text
            && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        beside_head: false,
    }
}
