//! The connection side of [`Rpc`]: the nodes of `--rpc-url` over HTTP or WebSockets, used
//! one at a time with failover in order, the `--max-requests-per-second` window shared
//! by every task, the request timeout, and the metrics of each call.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alloy_json_rpc::{RpcRecv, RpcSend};
use alloy_primitives::B256;
use alloy_rpc_client::RpcClient;
use alloy_transport::TransportError;
use tracing::warn;

use super::capped::CappedHttp;
use super::error::{RpcError, classify};
use crate::metrics::Metrics;
use crate::retry::{self, RetryPolicy, Transient};

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
    /// The same nodes through [`CappedHttp`] (WebSocket ones as they are): for
    /// `eth_getLogs` spans of several blocks.
    capped: Vec<RpcClient>,
    /// Bytes a capped answer may have.
    cap: Arc<std::sync::atomic::AtomicUsize>,
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
    pub fn new(url: &str, timeout: Duration, retry: RetryPolicy) -> Result<Self, RpcError> {
        Ok(Self::over(vec![http_node(url, timeout)?], timeout, retry))
    }

    /// A client for the nodes at `urls`, in failover order: http(s):// ones as in
    /// [`Rpc::new`]; ws(s):// ones connect now (retried) and can also announce new heads
    /// ([`Rpc::watch_heads`]). Errors name a node by its place in the list, never by its
    /// URL, which may carry an API key.
    pub async fn connect(
        urls: &[String],
        timeout: Duration,
        retry: RetryPolicy,
    ) -> Result<Self, RpcError> {
        if urls.is_empty() {
            return Err(RpcError::fatal("--rpc-url (RPC_URL) is required"));
        }
        let mut clients = Vec::with_capacity(urls.len());
        for (i, url) in urls.iter().enumerate() {
            let client = if url.starts_with("ws://") || url.starts_with("wss://") {
                ws_client(url, timeout, retry).await.map(Node::Ws)
            } else {
                http_node(url, timeout)
            };
            clients.push(client.map_err(|e| {
                RpcError::fatal(format!("--rpc-url #{}: {}", i + 1, bootstrap::ErrorChain(&e)))
            })?);
        }
        Ok(Self::over(clients, timeout, retry))
    }

    fn over(nodes: Vec<Node>, timeout: Duration, retry: RetryPolicy) -> Self {
        let cap = Arc::new(std::sync::atomic::AtomicUsize::new(DEFAULT_ANSWER_CAP));
        let (mut clients, mut capped) = (Vec::new(), Vec::new());
        for node in nodes {
            match node {
                Node::Ws(c) => {
                    clients.push(c.clone());
                    capped.push(c);
                }
                Node::Http { client, url } => {
                    clients.push(RpcClient::new_http_with_client(client.clone(), url.clone()));
                    let is_local = alloy_transport::utils::guess_local_url(url.as_str());
                    let http = CappedHttp { client, url, cap: cap.clone() };
                    capped.push(RpcClient::new(http, is_local));
                }
            }
        }
        let nodes = Arc::new(Nodes { clients, capped, cap, active: AtomicUsize::new(0) });
        Self { nodes, limit: None, retry, timeout, metrics: Metrics::new() }
    }

    /// Reads at most `bytes` of an `eth_getLogs` answer over several blocks (HTTP
    /// nodes); a larger one is refused as too large, and the span narrowed.
    pub fn with_answer_cap(self, bytes: usize) -> Self {
        self.nodes.cap.store(bytes.max(1), Ordering::Relaxed);
        self
    }

    /// Sends at most `per_second` calls within any second from now on (all clones
    /// together); 0 for no limit.
    pub fn with_rate_limit(mut self, per_second: u32) -> Self {
        self.limit =
            (per_second > 0).then(|| Arc::new(RateLimit { per_second, sent: Default::default() }));
        self
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

    /// How many nodes `--rpc-url` lists.
    pub fn node_count(&self) -> usize {
        self.nodes.clients.len()
    }

    /// Calls in one JSON-RPC batch: 100, or fewer to fit the rate limit.
    pub(super) fn batch_size(&self) -> usize {
        self.limit.as_ref().map_or(100, |l| (l.per_second as usize).clamp(1, 100))
    }

    /// The node in use and its index.
    pub(super) fn node(&self) -> (usize, &RpcClient) {
        let i = self.nodes.active.load(Ordering::Relaxed) % self.nodes.clients.len();
        (i, &self.nodes.clients[i])
    }

    /// The node in use, through its capped transport, and its index.
    pub(super) fn capped_node(&self) -> (usize, &RpcClient) {
        let i = self.nodes.active.load(Ordering::Relaxed) % self.nodes.clients.len();
        (i, &self.nodes.capped[i])
    }

    /// Node number `i` (its place in `--rpc-url`, from 0).
    pub(super) fn node_at(&self, i: usize) -> &RpcClient {
        &self.nodes.clients[i]
    }

    /// After a transient failure or rate limit of node `failed`, moves to the next node,
    /// unless another call already did.
    pub(super) fn fail_over(&self, failed: usize, error: &RpcError) {
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
            warn!(from = failed + 1, to = next + 1, error = %bootstrap::ErrorChain(error), "switching to the next --rpc-url");
        }
    }

    /// Sends one request of `calls` calls (0 for a local one) in its turn under the rate
    /// limit; `None` when no answer came within the request timeout (HTTP has its own; a
    /// WebSocket does not).
    pub(super) async fn send<T>(
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
    pub(super) async fn timed<T>(
        &self,
        method: &'static str,
        node: usize,
        calls: u32,
        call: impl IntoFuture<Output = Result<T, TransportError>>,
    ) -> Result<T, RpcError> {
        let result = self.observed(method, calls, call).await;
        if let Err(e) = &result
            && e.is_transient()
        {
            self.fail_over(node, e);
        }
        result
    }

    /// [`Rpc::send`], its failure sorted, its latency and outcome recorded.
    pub(super) async fn observed<T>(
        &self,
        method: &'static str,
        calls: u32,
        call: impl IntoFuture<Output = Result<T, TransportError>>,
    ) -> Result<T, RpcError> {
        use tracing::Instrument;
        // A span per call: with --otlp-endpoint each node call shows in its batch's trace.
        let span = tracing::info_span!(
            "rpc",
            rpc.method = method,
            calls,
            outcome = tracing::field::Empty,
            otel.kind = "client"
        );
        let started = std::time::Instant::now();
        let result = match self.send(calls, call).instrument(span.clone()).await {
            Some(result) => result.map_err(classify),
            None => Err(RpcError::transient(format!("no answer within {:?}", self.timeout))),
        };
        let outcome = result.as_ref().map_or_else(RpcError::outcome, |_| "ok");
        span.record("outcome", outcome);
        self.record(method, started, outcome);
        result
    }

    /// Records one call's latency and outcome.
    pub(super) fn record(&self, method: &'static str, started: std::time::Instant, outcome: &str) {
        self.metrics
            .rpc_seconds
            .with_label_values(&[method])
            .observe(started.elapsed().as_secs_f64());
        self.metrics.rpc_requests.with_label_values(&[method, outcome]).inc();
    }

    /// One JSON-RPC batch of `method`, once for each of `params`, on the node in use and
    /// counted as that many calls; the answers in order, each still to be sorted (a call
    /// in a batch can fail alone).
    pub(super) async fn batch<P: RpcSend, R: RpcRecv>(
        &self,
        method: &'static str,
        params: &[P],
    ) -> Result<Vec<Result<R, TransportError>>, RpcError> {
        let (node, client) = self.node();
        let mut batch = client.new_batch();
        let mut waiters = Vec::with_capacity(params.len());
        for p in params {
            let waiter = batch
                .add_call::<P, R>(method, p)
                .map_err(|e| RpcError::fatal(format!("cannot encode a batch: {e}")))?;
            waiters.push(waiter);
        }
        self.timed(method, node, params.len() as u32, batch.send()).await?;
        let mut answers = Vec::with_capacity(waiters.len());
        for waiter in waiters {
            answers.push(waiter.await);
        }
        Ok(answers)
    }

    /// Runs `op` with this client's retry policy (see [`retry::retrying`]).
    pub async fn retrying<T, F, Fut>(&self, what: &str, op: F) -> Result<T, RpcError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RpcError>>,
    {
        retry::retrying(&self.retry, what, op).await
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
        // Ends with the subscription or when the receiver is dropped: owned by `rx`.
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
}

/// Bytes of an `eth_getLogs` answer over several blocks read at most, unless set
/// ([`Rpc::with_answer_cap`]).
pub const DEFAULT_ANSWER_CAP: usize = 16 << 20;

/// A node of `--rpc-url`, before its clients are made.
enum Node {
    Ws(RpcClient),
    Http { client: reqwest::Client, url: reqwest::Url },
}

fn http_node(url: &str, timeout: Duration) -> Result<Node, RpcError> {
    let parsed = url.parse().map_err(|e| RpcError::fatal(format!("not a URL: {e}")))?;
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| RpcError::fatal(format!("cannot build the HTTP client: {e}")))?;
    Ok(Node::Http { client: http, url: parsed })
}

async fn ws_client(
    url: &str,
    timeout: Duration,
    retry: RetryPolicy,
) -> Result<RpcClient, RpcError> {
    let mut attempt = 1;
    loop {
        let connect = alloy_rpc_client::WsConnect::new(url);
        match tokio::time::timeout(timeout, RpcClient::builder().ws(connect)).await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(e)) if attempt >= retry.max_attempts => {
                // The error may quote the URL, and with it an API key: the text is kept,
                // without the URL, and the cause dropped.
                let text =
                    bootstrap::ErrorChain(&classify(e)).to_string().replace(url, "<RPC_URL>");
                return Err(RpcError::fatal(format!("cannot open the WebSocket: {text}")));
            }
            Err(_) if attempt >= retry.max_attempts => {
                return Err(RpcError::fatal("cannot open the WebSocket: timed out"));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// https:// works (a TLS backend is compiled in): the call fails at connecting, not
    /// at "scheme is not http"; and the error does not carry the URL's API key.
    #[tokio::test]
    async fn https_urls_are_supported() {
        let policy = RetryPolicy {
            max_attempts: 1,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            max_outage: Some(Duration::ZERO),
        };
        let rpc =
            Rpc::new("https://127.0.0.1:1/v3/SECRETKEY", Duration::from_secs(2), policy).unwrap();
        let err = rpc.head().await.unwrap_err();
        let text = bootstrap::ErrorChain(&err).to_string();
        assert!(!text.contains("scheme"), "{text}");
        assert!(!text.contains("SECRETKEY"), "the URL's key leaks into errors: {text}");
        assert!(matches!(err, RpcError::Transient { .. }));
    }
}
