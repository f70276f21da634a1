//! Talks JSON-RPC to an Ethereum node: Transfer logs of a block span, block headers in
//! batches, the token's metadata by `eth_call`. Every failure is sorted into what the
//! caller can do about it (shrink the span, wait, retry, give up); calls without a span
//! are retried here with exponential backoff and jitter.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alloy_json_rpc::RpcError as JsonRpcError;
use alloy_primitives::{Address, B256, Bytes, U256};
use alloy_rpc_client::RpcClient;
use alloy_rpc_types_eth::{Block, Log};
use alloy_sol_types::{SolCall, SolEvent, sol};
use alloy_transport::{TransportError, TransportErrorKind};
use anyhow::Context;
use serde_json::json;
use tracing::{debug, warn};

use crate::metrics::Metrics;
use crate::refusal::{self, Refusal};

sol! {
    /// The ERC-20 surface the ingestor reads.
    interface IERC20 {
        event Transfer(address indexed from, address indexed to, uint256 value);
        function name() external view returns (string);
        function symbol() external view returns (string);
        function decimals() external view returns (uint8);
        function totalSupply() external view returns (uint256);
        function balanceOf(address account) external view returns (uint256);
    }
}

sol! {
    /// Multicall3's batch call (github.com/mds1/multicall): many calls in one eth_call.
    interface IMulticall3 {
        struct Call3 { address target; bool allowFailure; bytes callData; }
        struct Result { bool success; bytes returnData; }
        function aggregate3(Call3[] calldata calls) external payable returns (Result[] memory returnData);
    }
}

/// Where Multicall3 lives on every chain that has it (deployed by a keyless transaction).
pub const MULTICALL3: Address =
    alloy_primitives::address!("0xcA11bde05977b3631167028862bE2a173976CA11");

/// balanceOf calls per Multicall3 eth_call: ~3k gas each, far below any node's call cap.
const MULTICALL_CHUNK: usize = 500;

/// How a batch of balanceOf calls reached the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallPath {
    /// Multicall3's aggregate3, many calls per eth_call.
    Multicall3,
    /// JSON-RPC batches of single eth_calls.
    Batches,
}

impl CallPath {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Multicall3 => "multicall3",
            Self::Batches => "json-rpc batches",
        }
    }
}

/// The Transfer event's topic 0.
pub const TRANSFER_TOPIC: B256 = IERC20::Transfer::SIGNATURE_HASH;

/// A failed call, sorted by what the caller can do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// The node refused the span (too many blocks or results, or it timed out on it).
    #[error("the node refused the block span: {message}")]
    TooLarge {
        /// A span the node says will work.
        suggested: Option<RangeInclusive<u64>>,
        /// The most blocks one request may span, as the node said.
        max_blocks: Option<u64>,
        /// The node's words.
        message: String,
    },
    /// The node asks us to slow down.
    #[error("rate limited by the node: {message}")]
    RateLimited {
        /// How long the node asked us to wait (HTTP Retry-After).
        retry_after: Option<Duration>,
        /// The node's words.
        message: String,
    },
    /// Worth retrying as is: 5xx, a reset connection, a timeout, a truncated answer.
    #[error("transient RPC failure: {0}")]
    Transient(String),
    /// Retrying will not help: a bad URL or key, a method the node lacks.
    #[error("RPC failure: {0}")]
    Fatal(String),
}

/// One block's identity and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    /// Block number.
    pub number: u64,
    /// Block hash.
    pub hash: B256,
    /// Unix seconds.
    pub timestamp: u64,
    /// The parent block's hash.
    pub parent_hash: B256,
}

/// What the token says about itself. Fields a contract lacks are empty.
#[derive(Debug, Clone, Default)]
pub struct TokenMetadata {
    /// `name()`, or empty.
    pub name: String,
    /// `symbol()`, or empty.
    pub symbol: String,
    /// `decimals()`; 0 when the contract has no such function.
    pub decimals: u8,
}

/// How hard to retry calls that fail transiently.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts before giving up, the first included.
    pub max_attempts: u32,
    /// The first backoff; each later one doubles, with jitter.
    pub base_delay: Duration,
    /// The longest backoff.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (1-based): exponential, capped, with
    /// "equal jitter" (half fixed, half random) so that many clients do not retry in step.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(self.max_delay);
        let half = capped / 2;
        half + half.mul_f64(jitter())
    }
}

/// A number in [0, 1) that differs between calls and processes; good enough for jitter.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The JSON-RPC nodes of `--rpc-url`, over HTTP or WebSockets, used one at a time: a
/// transient failure or a rate limit moves every later call to the next node in order
/// (after the last, back to the first).
#[derive(Debug, Clone)]
pub struct Rpc {
    nodes: Arc<Nodes>,
    limit: Option<Arc<RateLimit>>,
    retry: RetryPolicy,
    timeout: Duration,
    metrics: Metrics,
}

#[derive(Debug)]
struct Nodes {
    clients: Vec<RpcClient>,
    /// Index of the node in use.
    active: AtomicUsize,
}

/// At most `per_second` calls within any one second, all tasks together: what a provider
/// plan allows. A JSON-RPC batch counts each call in it.
#[derive(Debug)]
struct RateLimit {
    per_second: u32,
    /// When recent requests went out, and how many calls each carried.
    sent: std::sync::Mutex<std::collections::VecDeque<(tokio::time::Instant, u32)>>,
}

impl RateLimit {
    /// Waits until `calls` more fit in the last second, and counts them as sent.
    async fn acquire(&self, calls: u32) {
        // A second and a margin: a provider counts calls as they arrive, and a request
        // held up on its way must not land in the next second's share.
        const WINDOW: Duration = Duration::from_millis(1100);
        loop {
            let wait = {
                let mut sent = self.sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let now = tokio::time::Instant::now();
                while sent.front().is_some_and(|(at, _)| now.duration_since(*at) >= WINDOW) {
                    sent.pop_front();
                }
                let in_window: u32 = sent.iter().map(|(_, n)| n).sum();
                // A batch larger than the quota goes alone.
                if sent.is_empty() || in_window + calls <= self.per_second {
                    sent.push_back((now, calls));
                    return;
                }
                // Wait for the oldest to leave the window, then look again.
                sent.front()
                    .map_or(WINDOW, |(at, _)| WINDOW.saturating_sub(now.duration_since(*at)))
            };
            tokio::time::sleep(wait).await;
        }
    }
}

impl Rpc {
    /// A client for one http:// or https:// `url` whose requests time out after `timeout`.
    pub fn new(url: &str, timeout: Duration, retry: RetryPolicy) -> anyhow::Result<Self> {
        Ok(Self::over(vec![http_client(url, timeout)?], timeout, retry))
    }

    /// A client for the nodes at `urls`, in failover order: http(s):// ones as in
    /// [`Rpc::new`]; ws(s):// ones connect now (retried) and can also announce new heads
    /// ([`Rpc::watch_heads`]). Errors name a node by its place in the list, never by its
    /// URL, which may carry an API key.
    pub async fn connect(
        urls: &[String],
        timeout: Duration,
        retry: RetryPolicy,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!urls.is_empty(), "--rpc-url (RPC_URL) is required");
        let mut clients = Vec::with_capacity(urls.len());
        for (i, url) in urls.iter().enumerate() {
            let client = if url.starts_with("ws://") || url.starts_with("wss://") {
                ws_client(url, timeout, retry).await
            } else {
                http_client(url, timeout)
            };
            clients.push(client.with_context(|| format!("--rpc-url #{}", i + 1))?);
        }
        Ok(Self::over(clients, timeout, retry))
    }

    fn over(clients: Vec<RpcClient>, timeout: Duration, retry: RetryPolicy) -> Self {
        let nodes = Arc::new(Nodes { clients, active: AtomicUsize::new(0) });
        Self { nodes, limit: None, retry, timeout, metrics: Metrics::new() }
    }

    /// Sends at most `per_second` calls within any second from now on (all clones
    /// together); 0 for no limit.
    pub fn with_rate_limit(mut self, per_second: u32) -> Self {
        self.limit =
            (per_second > 0).then(|| Arc::new(RateLimit { per_second, sent: Default::default() }));
        self
    }

    /// Calls in one JSON-RPC batch: 100, or fewer to fit the rate limit.
    fn batch_size(&self) -> usize {
        self.limit.as_ref().map_or(100, |l| (l.per_second as usize).clamp(1, 100))
    }

    /// The node in use and its index.
    fn node(&self) -> (usize, &RpcClient) {
        let i = self.nodes.active.load(Ordering::Relaxed) % self.nodes.clients.len();
        (i, &self.nodes.clients[i])
    }

    /// After a transient failure or rate limit of node `failed`, moves to the next node,
    /// unless another call already did.
    fn fail_over(&self, failed: usize, error: &RpcError) {
        let n = self.nodes.clients.len();
        if n < 2 {
            return;
        }
        let next = (failed + 1) % n;
        if self
            .nodes
            .active
            .compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.metrics.rpc_failovers.inc();
            warn!(from = failed + 1, to = next + 1, %error, "switching to the next --rpc-url");
        }
    }

    /// On a WebSocket node, subscribes to newHeads: the receiver gets a tick per new block
    /// and ends when the subscription drops. `None` over HTTP.
    pub async fn watch_heads(&self) -> Result<Option<tokio::sync::mpsc::Receiver<()>>, RpcError> {
        let (node, client) = self.node();
        let Some(pubsub) = client.pubsub_frontend() else { return Ok(None) };
        let id: B256 = self
            .timed("eth_subscribe", node, 1, client.request("eth_subscribe", ("newHeads",)))
            .await?;
        let mut sub = self.timed("eth_subscribe", node, 0, pubsub.get_subscription(id)).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                match sub.recv().await {
                    Ok(_) => {
                        if tx.is_closed() {
                            return;
                        }
                        let _ = tx.try_send(());
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.try_send(());
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Some(rx))
    }

    /// Sends one request of `calls` calls (0 for a local one) in its turn under the rate
    /// limit; `None` when no answer came within the request timeout (HTTP has its own; a
    /// WebSocket does not).
    async fn send<T>(
        &self,
        calls: u32,
        call: impl IntoFuture<Output = Result<T, TransportError>>,
    ) -> Option<Result<T, TransportError>> {
        if let Some(limit) = &self.limit
            && calls > 0
        {
            limit.acquire(calls).await;
        }
        tokio::time::timeout(self.timeout, call.into_future()).await.ok()
    }

    /// [`Rpc::observed`] on `node`; a transient failure or rate limit moves later calls
    /// to the next node.
    async fn timed<T>(
        &self,
        method: &'static str,
        node: usize,
        calls: u32,
        call: impl IntoFuture<Output = Result<T, TransportError>>,
    ) -> Result<T, RpcError> {
        let result = self.observed(method, calls, call).await;
        if let Err(e @ (RpcError::Transient(_) | RpcError::RateLimited { .. })) = &result {
            self.fail_over(node, e);
        }
        result
    }

    /// [`Rpc::send`], its failure sorted, its latency and outcome recorded.
    async fn observed<T>(
        &self,
        method: &'static str,
        calls: u32,
        call: impl IntoFuture<Output = Result<T, TransportError>>,
    ) -> Result<T, RpcError> {
        let started = std::time::Instant::now();
        let result = match self.send(calls, call).await {
            Some(result) => result.map_err(classify),
            None => Err(RpcError::Transient(format!("no answer within {:?}", self.timeout))),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(RpcError::TooLarge { .. }) => "too_large",
            Err(RpcError::RateLimited { .. }) => "rate_limited",
            Err(RpcError::Transient(_)) => "transient",
            Err(RpcError::Fatal(_)) => "fatal",
        };
        self.record(method, started, outcome);
        result
    }

    fn record(&self, method: &'static str, started: std::time::Instant, outcome: &str) {
        self.metrics
            .rpc_seconds
            .with_label_values(&[method])
            .observe(started.elapsed().as_secs_f64());
        self.metrics.rpc_requests.with_label_values(&[method, outcome]).inc();
    }

    /// Counts and times this client's calls into `metrics` from now on.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The retry policy this client uses.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// `eth_chainId`, retried.
    pub async fn chain_id(&self) -> Result<u64, RpcError> {
        self.retrying("eth_chainId", || async {
            let (node, client) = self.node();
            let id: alloy_primitives::U64 =
                self.timed("eth_chainId", node, 1, client.request_noparams("eth_chainId")).await?;
            Ok(id.to())
        })
        .await
    }

    /// `eth_blockNumber`, retried.
    pub async fn head(&self) -> Result<u64, RpcError> {
        self.retrying("eth_blockNumber", || async {
            let (node, client) = self.node();
            let n: alloy_primitives::U64 = self
                .timed("eth_blockNumber", node, 1, client.request_noparams("eth_blockNumber"))
                .await?;
            Ok(n.to())
        })
        .await
    }

    /// One attempt of `eth_getLogs` for the token's Transfer events in `span`. Not retried
    /// here: on refusal the caller changes the span.
    pub async fn transfer_logs(
        &self,
        token: Address,
        span: RangeInclusive<u64>,
    ) -> Result<Vec<Log>, RpcError> {
        let filter = transfer_filter(token, &span);
        let (node, client) = self.node();
        self.timed("eth_getLogs", node, 1, client.request("eth_getLogs", (filter,))).await
    }

    /// How many nodes `--rpc-url` lists.
    pub fn node_count(&self) -> usize {
        self.nodes.clients.len()
    }

    /// `eth_getLogs` of the token's Transfer events in `span` on node `node` (its place in
    /// the list) and no other, retried while it fails transiently; for comparing nodes.
    pub async fn transfer_logs_on(
        &self,
        node: usize,
        token: Address,
        span: RangeInclusive<u64>,
    ) -> Result<Vec<Log>, RpcError> {
        let client = &self.nodes.clients[node];
        self.retrying("eth_getLogs", || {
            let filter = transfer_filter(token, &span);
            self.observed("eth_getLogs", 1, client.request("eth_getLogs", (filter,)))
        })
        .await
    }

    /// Headers of the given blocks, in JSON-RPC batches of up to 100, retried; a block
    /// the node does not have (yet, or any more) is an error.
    pub async fn blocks(&self, numbers: &[u64]) -> Result<Vec<BlockRef>, RpcError> {
        let found = self.blocks_if_known(numbers).await?;
        numbers
            .iter()
            .zip(found)
            .map(|(n, b)| {
                b.ok_or_else(|| RpcError::Transient(format!("the node does not know block {n}")))
            })
            .collect()
    }

    /// Headers of the given blocks, `None` for a block the node does not have (a chain that
    /// just got shorter), in JSON-RPC batches of up to 100, retried.
    pub async fn blocks_if_known(
        &self,
        numbers: &[u64],
    ) -> Result<Vec<Option<BlockRef>>, RpcError> {
        let mut out = Vec::with_capacity(numbers.len());
        for chunk in numbers.chunks(self.batch_size()) {
            let refs = self
                .retrying("eth_getBlockByNumber", || async {
                    let (node, client) = self.node();
                    let mut batch = client.new_batch();
                    let mut waiters = Vec::with_capacity(chunk.len());
                    for n in chunk {
                        let call = batch
                            .add_call::<_, Option<Block>>(
                                "eth_getBlockByNumber",
                                &(format!("{n:#x}"), false),
                            )
                            .map_err(|e| RpcError::Fatal(format!("cannot encode a batch: {e}")))?;
                        waiters.push((*n, call));
                    }
                    self.timed("eth_getBlockByNumber", node, chunk.len() as u32, batch.send())
                        .await?;
                    let mut refs = Vec::with_capacity(chunk.len());
                    for (_, waiter) in waiters {
                        let block = waiter.await.map_err(classify)?;
                        refs.push(block.map(|b| BlockRef {
                            number: b.header.number,
                            hash: b.header.hash,
                            timestamp: b.header.timestamp,
                            parent_hash: b.header.parent_hash,
                        }));
                    }
                    Ok(refs)
                })
                .await?;
            out.extend(refs);
        }
        Ok(out)
    }

    /// The node's `safe` and `finalized` block numbers (eth_getBlockByNumber with those
    /// tags, one batch), retried; `None` when the node does not know the tags (an error
    /// answer or no block: older nodes, chains without finality).
    pub async fn finality_tags(&self) -> Result<Option<(u64, u64)>, RpcError> {
        self.retrying("eth_getBlockByNumber", || async {
            let (node, client) = self.node();
            let mut batch = client.new_batch();
            let mut waiters = Vec::with_capacity(2);
            for tag in ["safe", "finalized"] {
                let call = batch
                    .add_call::<_, Option<Block>>("eth_getBlockByNumber", &(tag, false))
                    .map_err(|e| RpcError::Fatal(format!("cannot encode a batch: {e}")))?;
                waiters.push(call);
            }
            self.timed("eth_getBlockByNumber", node, 2, batch.send()).await?;
            let mut numbers = Vec::with_capacity(2);
            for waiter in waiters {
                match waiter.await {
                    Ok(Some(b)) => numbers.push(b.header.number),
                    Ok(None) => return Ok(None),
                    Err(e) => {
                        // An error answer that is not a rate limit: the node does not
                        // know the tag (geth before the Merge: "invalid argument 0").
                        let answered = e.as_error_resp().is_some();
                        match classify(e) {
                            e @ RpcError::RateLimited { .. } => return Err(e),
                            _ if answered => return Ok(None),
                            e => return Err(e),
                        }
                    }
                }
            }
            Ok(Some((numbers[0], numbers[1])))
        })
        .await
    }

    /// One block's header, retried.
    pub async fn block(&self, number: u64) -> Result<BlockRef, RpcError> {
        Ok(self.blocks(&[number]).await?.remove(0))
    }

    /// `name()`, `symbol()` and `decimals()` at the latest block. A function the contract
    /// lacks (or answers in another shape, like MKR's bytes32 name) is left empty.
    pub async fn token_metadata(&self, token: Address) -> Result<TokenMetadata, RpcError> {
        let name = self.call_decoded(token, "latest", IERC20::nameCall {}).await;
        let symbol = self.call_decoded(token, "latest", IERC20::symbolCall {}).await;
        let decimals = self.call_decoded(token, "latest", IERC20::decimalsCall {}).await;
        let mut meta = TokenMetadata::default();
        match name {
            Ok(v) => meta.name = v,
            Err(e @ RpcError::Fatal(_)) => {
                warn!(%token, error = %e, "name() unreadable; leaving it empty")
            }
            Err(e) => return Err(e),
        }
        match symbol {
            Ok(v) => meta.symbol = v,
            Err(e @ RpcError::Fatal(_)) => {
                warn!(%token, error = %e, "symbol() unreadable; leaving it empty")
            }
            Err(e) => return Err(e),
        }
        match decimals {
            Ok(v) => meta.decimals = v,
            Err(e @ RpcError::Fatal(_)) => {
                warn!(%token, error = %e, "decimals() unreadable; formatting balances with 0 decimals")
            }
            Err(e) => return Err(e),
        }
        Ok(meta)
    }

    /// `totalSupply()` at `block`, retried; `None` when the node cannot answer for that
    /// block (state pruned) or the contract has no such function.
    pub async fn total_supply(&self, token: Address, block: u64) -> Result<Option<U256>, RpcError> {
        match self.call_decoded(token, &format!("{block:#x}"), IERC20::totalSupplyCall {}).await {
            Ok(v) => Ok(Some(v)),
            Err(RpcError::Fatal(e)) => {
                debug!(%token, block, error = %e, "totalSupply() unavailable at this block");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// `balanceOf(holder)` of `token` at `block` for each holder, retried: through
    /// Multicall3 where the chain has it at its canonical address at that block, else (or
    /// if it fails) in JSON-RPC batches sized to the rate limit. Returns the path taken.
    pub async fn balances_at(
        &self,
        token: Address,
        holders: &[Address],
        block: u64,
    ) -> Result<(Vec<U256>, CallPath), RpcError> {
        if self.has_multicall3(block).await? {
            match self.balances_via_multicall(token, holders, block).await {
                Ok(values) => return Ok((values, CallPath::Multicall3)),
                Err(RpcError::Fatal(e)) => {
                    warn!(error = %e, "Multicall3 failed; falling back to JSON-RPC batches");
                }
                Err(e) => return Err(e),
            }
        }
        Ok((self.balances_in_batches(token, holders, block).await?, CallPath::Batches))
    }

    /// Whether Multicall3 has code at its canonical address at `block`.
    pub async fn has_multicall3(&self, block: u64) -> Result<bool, RpcError> {
        let tag = format!("{block:#x}");
        let code: Bytes = self
            .retrying("eth_getCode", || async {
                let (node, client) = self.node();
                self.timed(
                    "eth_getCode",
                    node,
                    1,
                    client.request("eth_getCode", (MULTICALL3, &tag)),
                )
                .await
            })
            .await?;
        Ok(!code.is_empty())
    }

    /// balanceOf through Multicall3's aggregate3, [`MULTICALL_CHUNK`] holders per eth_call.
    async fn balances_via_multicall(
        &self,
        token: Address,
        holders: &[Address],
        block: u64,
    ) -> Result<Vec<U256>, RpcError> {
        let tag = format!("{block:#x}");
        let mut out = Vec::with_capacity(holders.len());
        for chunk in holders.chunks(MULTICALL_CHUNK) {
            let calls = chunk
                .iter()
                .map(|h| IMulticall3::Call3 {
                    target: token,
                    allowFailure: true,
                    callData: IERC20::balanceOfCall { account: *h }.abi_encode().into(),
                })
                .collect();
            let results =
                self.call_decoded(MULTICALL3, &tag, IMulticall3::aggregate3Call { calls }).await?;
            if results.len() != chunk.len() {
                return Err(RpcError::Fatal(format!(
                    "Multicall3 answered {} results for {} calls",
                    results.len(),
                    chunk.len()
                )));
            }
            for (holder, r) in chunk.iter().zip(results) {
                let value = r
                    .success
                    .then(|| IERC20::balanceOfCall::abi_decode_returns(&r.returnData).ok())
                    .flatten()
                    .ok_or_else(|| {
                        RpcError::Fatal(format!("balanceOf({holder}) failed inside Multicall3"))
                    })?;
                out.push(value);
            }
        }
        Ok(out)
    }

    /// balanceOf in JSON-RPC batches (sized to the rate limit), retried.
    async fn balances_in_batches(
        &self,
        token: Address,
        holders: &[Address],
        block: u64,
    ) -> Result<Vec<U256>, RpcError> {
        let tag = format!("{block:#x}");
        let mut out = Vec::with_capacity(holders.len());
        for chunk in holders.chunks(self.batch_size()) {
            let values = self
                .retrying("eth_call", || async {
                    let (node, client) = self.node();
                    let mut batch = client.new_batch();
                    let mut waiters = Vec::with_capacity(chunk.len());
                    for holder in chunk {
                        let data =
                            Bytes::from(IERC20::balanceOfCall { account: *holder }.abi_encode());
                        let call = batch
                            .add_call::<_, Bytes>(
                                "eth_call",
                                &(json!({ "to": token, "data": data }), &tag),
                            )
                            .map_err(|e| RpcError::Fatal(format!("cannot encode a batch: {e}")))?;
                        waiters.push(call);
                    }
                    self.timed("eth_call", node, chunk.len() as u32, batch.send()).await?;
                    let mut values = Vec::with_capacity(chunk.len());
                    for waiter in waiters {
                        let out = waiter.await.map_err(classify)?;
                        values.push(IERC20::balanceOfCall::abi_decode_returns(&out).map_err(
                            |e| {
                                RpcError::Fatal(format!(
                                    "balanceOf returned an undecodable answer: {e}"
                                ))
                            },
                        )?);
                    }
                    Ok(values)
                })
                .await?;
            out.extend(values);
        }
        Ok(out)
    }

    /// `eth_call` of `C` on `token` at `block`, decoded; a revert or an undecodable answer
    /// is `Fatal`.
    async fn call_decoded<C: SolCall>(
        &self,
        token: Address,
        block: &str,
        call: C,
    ) -> Result<C::Return, RpcError> {
        let data = Bytes::from(call.abi_encode());
        let out: Bytes = self
            .retrying("eth_call", || async {
                let tx = json!({ "to": token, "data": data });
                let started = std::time::Instant::now();
                let (node, client) = self.node();
                let call = client.request("eth_call", (tx, block));
                match self.send(1, call).await.unwrap_or_else(|| {
                    Err(TransportErrorKind::custom_str(
                        "eth_call: no answer within the request timeout",
                    ))
                }) {
                    Ok(out) => {
                        self.record("eth_call", started, "ok");
                        Ok(out)
                    }
                    // A revert (or missing state) is the contract's or node's answer, not a fault.
                    Err(JsonRpcError::ErrorResp(p)) if classify_payload(&p).is_none() => {
                        self.record("eth_call", started, "reverted");
                        Err(RpcError::Fatal(format!("eth_call {}: {}", C::SIGNATURE, p.message)))
                    }
                    Err(e) => {
                        self.record("eth_call", started, "transient");
                        let e = classify(e);
                        self.fail_over(node, &e);
                        Err(e)
                    }
                }
            })
            .await?;
        C::abi_decode_returns(&out).map_err(|e| {
            RpcError::Fatal(format!("{} returned an undecodable answer: {e}", C::SIGNATURE))
        })
    }

    /// Runs `op` until it succeeds, fails fatally, or runs out of attempts. A refused span
    /// returns at once: the caller must change the span, repeating it cannot help.
    pub async fn retrying<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, RpcError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RpcError>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e @ (RpcError::Fatal(_) | RpcError::TooLarge { .. })) => return Err(e),
                Err(e) if attempt >= self.retry.max_attempts => return Err(e),
                Err(e) => {
                    let mut delay = self.retry.backoff(attempt);
                    if let RpcError::RateLimited { retry_after: Some(after), .. } = &e {
                        delay = delay.max(*after);
                    }
                    warn!(call = what, attempt, error = %e, delay_ms = delay.as_millis() as u64, "retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// The `eth_getLogs` filter for `token`'s Transfer events in `span`.
fn transfer_filter(token: Address, span: &RangeInclusive<u64>) -> serde_json::Value {
    json!({
        "address": token,
        "topics": [TRANSFER_TOPIC],
        "fromBlock": format!("{:#x}", span.start()),
        "toBlock": format!("{:#x}", span.end()),
    })
}

fn http_client(url: &str, timeout: Duration) -> anyhow::Result<RpcClient> {
    let parsed = url.parse().map_err(|e| anyhow::anyhow!("not a URL: {e}"))?;
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))?;
    Ok(RpcClient::new_http_with_client(http, parsed))
}

async fn ws_client(url: &str, timeout: Duration, retry: RetryPolicy) -> anyhow::Result<RpcClient> {
    let mut attempt = 1;
    loop {
        let connect = alloy_rpc_client::WsConnect::new(url);
        match tokio::time::timeout(timeout, RpcClient::builder().ws(connect)).await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(e)) if attempt >= retry.max_attempts => {
                // The error may quote the URL, and with it an API key.
                anyhow::bail!(
                    "cannot open the WebSocket: {}",
                    classify(e).to_string().replace(url, "<RPC_URL>")
                )
            }
            Err(_) if attempt >= retry.max_attempts => {
                anyhow::bail!("cannot open the WebSocket: timed out")
            }
            _ => {
                let delay = retry.backoff(attempt);
                warn!(
                    attempt,
                    delay_ms = delay.as_millis() as u64,
                    "WebSocket connect failed; retrying"
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

/// Sorts a transport-level failure by what the caller can do about it.
pub fn classify(err: TransportError) -> RpcError {
    match err {
        JsonRpcError::ErrorResp(payload) => classify_payload(&payload).unwrap_or_else(|| {
            let text = payload_text(&payload);
            match payload.code {
                // Method not found: this node will never answer it.
                -32601 => RpcError::Fatal(text),
                _ => RpcError::Transient(text),
            }
        }),
        JsonRpcError::Transport(kind) => classify_transport(kind),
        JsonRpcError::DeserError { err, text } => {
            let head: String = text.chars().take(200).collect();
            RpcError::Transient(format!("unreadable answer ({err}): {head}"))
        }
        JsonRpcError::NullResp => RpcError::Transient("the node answered null".into()),
        other => RpcError::Fatal(other.to_string()),
    }
}

fn classify_payload<E: std::fmt::Display>(
    payload: &alloy_json_rpc::ErrorPayload<E>,
) -> Option<RpcError> {
    let text = payload_text(payload);
    let lower = text.to_ascii_lowercase();
    // A node behind the requested block is lagging, not refusing: retry later.
    if lower.contains("beyond current head")
        || lower.contains("header not found")
        || lower.contains("unknown block")
    {
        return Some(RpcError::Transient(text));
    }
    match refusal::classify(&text)? {
        Refusal::RateLimited => Some(RpcError::RateLimited { retry_after: None, message: text }),
        Refusal::TooLarge { suggested, max_blocks } => {
            Some(RpcError::TooLarge { suggested, max_blocks, message: text })
        }
    }
}

fn payload_text<E: std::fmt::Display>(payload: &alloy_json_rpc::ErrorPayload<E>) -> String {
    match &payload.data {
        Some(data) => format!("{} (code {}) {}", payload.message, payload.code, data),
        None => format!("{} (code {})", payload.message, payload.code),
    }
}

fn classify_transport(kind: TransportErrorKind) -> RpcError {
    let (status, body, retry_after) = match kind {
        TransportErrorKind::HttpError(e) => (e.status, e.body, None),
        TransportErrorKind::HttpErrorWithRetryAfter { error, retry_after } => {
            (error.status, error.body, Some(retry_after))
        }
        TransportErrorKind::Custom(e) => {
            // reqwest puts the URL in its errors, and hosted RPC URLs carry the API key.
            let e: Box<dyn std::error::Error + Send + Sync> = match e.downcast::<reqwest::Error>() {
                Ok(r) => Box::new(r.without_url()),
                Err(other) => other,
            };
            return RpcError::Transient(format!("{e}: {}", source_chain(&*e)));
        }
        other => return RpcError::Transient(other.to_string()),
    };
    let head: String = body.chars().take(300).collect();
    let message = format!("HTTP {status}: {head}");
    match (status, refusal::classify(&body)) {
        (429, _) | (_, Some(Refusal::RateLimited)) => {
            RpcError::RateLimited { retry_after, message }
        }
        (_, Some(Refusal::TooLarge { suggested, max_blocks })) => {
            RpcError::TooLarge { suggested, max_blocks, message }
        }
        // QuickNode refuses wide spans with 413.
        (413, None) => RpcError::TooLarge { suggested: None, max_blocks: None, message },
        (401 | 403 | 404, None) => {
            RpcError::Fatal(format!("{message} (check the RPC URL and its API key)"))
        }
        _ => RpcError::Transient(message),
    }
}

fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_transport::HttpError;

    #[test]
    fn http_statuses_sort_by_remedy() {
        let http = |status, body: &str| {
            classify(JsonRpcError::Transport(TransportErrorKind::HttpError(HttpError {
                status,
                body: body.into(),
            })))
        };
        assert!(matches!(http(429, "slow down"), RpcError::RateLimited { .. }));
        assert!(matches!(http(200, "error code: 1015"), RpcError::RateLimited { .. }));
        assert!(matches!(http(413, "Request Entity Too Large"), RpcError::TooLarge { .. }));
        assert!(matches!(http(502, "Bad Gateway"), RpcError::Transient(_)));
        assert!(matches!(
            http(503, "no backend is currently healthy to serve traffic"),
            RpcError::Transient(_)
        ));
        assert!(matches!(http(401, "invalid project id"), RpcError::Fatal(_)));
    }

    #[test]
    fn json_rpc_errors_sort_by_text_not_code() {
        let resp = |code, message: &'static str| {
            classify(JsonRpcError::ErrorResp(alloy_json_rpc::ErrorPayload {
                code,
                message: message.into(),
                data: None,
            }))
        };
        assert!(matches!(
            resp(-32005, "query returned more than 10000 results"),
            RpcError::TooLarge { .. }
        ));
        assert!(matches!(
            resp(-32005, "daily request count exceeded, request rate limited"),
            RpcError::RateLimited { .. }
        ));
        assert!(matches!(
            resp(-32602, "block range extends beyond current head block"),
            RpcError::Transient(_)
        ));
        assert!(matches!(resp(-32601, "Method not found"), RpcError::Fatal(_)));
        assert!(matches!(resp(-32603, "internal error"), RpcError::Transient(_)));
    }

    /// https:// works (a TLS backend is compiled in): the call fails at connecting, not
    /// at "scheme is not http"; and the error does not carry the URL's API key.
    #[tokio::test]
    async fn https_urls_are_supported() {
        let policy = RetryPolicy {
            max_attempts: 1,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        };
        let rpc =
            Rpc::new("https://127.0.0.1:1/v3/SECRETKEY", Duration::from_secs(2), policy).unwrap();
        let err = rpc.head().await.unwrap_err().to_string();
        assert!(!err.contains("scheme"), "{err}");
        assert!(!err.contains("SECRETKEY"), "the URL's key leaks into errors: {err}");
        assert!(matches!(rpc.head().await, Err(RpcError::Transient(_))));
    }

    #[test]
    fn backoff_grows_then_caps() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        for attempt in 1..20 {
            let d = p.backoff(attempt);
            let full = Duration::from_millis(100)
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(Duration::from_secs(1));
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} not in [{:?}, {full:?}]",
                full / 2
            );
        }
    }
}
