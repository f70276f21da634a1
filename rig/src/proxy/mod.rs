//! A JSON-RPC proxy in front of Anvil that behaves like a hosted provider on a bad day: it
//! refuses `eth_getLogs` spans wider than a limit, rotating through the refusal texts (and
//! HTTP statuses) that Infura, Alchemy, QuickNode, Geth, Erigon, Nethermind, Ankr and
//! Cloudflare really send (shared/reference/getlogs-errors.md); can drop `blockTimestamp`
//! from logs like nodes that do not send it; and can fail every n-th request in turn with
//! each fault of [`Fault::ALL`] (rate limits, 5xx, resets, stalls, truncated JSON, error
//! objects, a head that goes back). Anvil can do none of these.

mod refusals;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// How the proxy misbehaves.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Refuse `eth_getLogs` spanning more blocks than this.
    pub max_blocks: u64,
    /// Remove `blockTimestamp` from every log.
    pub strip_block_timestamp: bool,
    /// Every `fault_every`-th request (0: never) gets the next fault of [`Fault::ALL`]
    /// instead of its answer.
    pub fault_every: u64,
    /// How long a [`Fault::Stall`] holds the answer back (longer than the client waits).
    pub stall: Duration,
    /// Added to every answer: a node across the internet, not on this machine.
    pub latency: Duration,
    /// Drop the last log of every non-empty `eth_getLogs` answer: a provider that
    /// truncates silently.
    pub truncate_logs: bool,
    /// Refuse eth_getBlockByNumber with the `safe` and `finalized` tags, as nodes from
    /// before the Merge do.
    pub no_finality_tags: bool,
}

impl Default for Rules {
    /// A faithful proxy.
    fn default() -> Self {
        Self {
            max_blocks: u64::MAX,
            strip_block_timestamp: false,
            fault_every: 0,
            stall: Duration::from_secs(3),
            latency: Duration::ZERO,
            truncate_logs: false,
            no_finality_tags: false,
        }
    }
}

/// A fault the proxy injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 429 with `Retry-After: 1`.
    RateLimitedRetryAfter,
    /// HTTP 429 without Retry-After.
    RateLimited,
    /// HTTP 502.
    BadGateway,
    /// HTTP 503.
    Unavailable,
    /// The connection closed with no answer.
    Reset,
    /// The answer held back for [`Rules::stall`].
    Stall,
    /// The node's answer cut in half.
    TruncatedJson,
    /// A JSON-RPC error object (-32603 internal error) with HTTP 200.
    ErrorObject,
    /// The next `eth_blockNumber` answered with a block lower than before, and the next
    /// few requests for blocks above it answered with null: a lagging backend behind a
    /// load balancer. The request on this turn is answered faithfully.
    LaggingHead,
}

impl Fault {
    /// Every fault, in the order they are injected.
    pub const ALL: [Self; 9] = [
        Self::RateLimitedRetryAfter,
        Self::RateLimited,
        Self::BadGateway,
        Self::Unavailable,
        Self::Reset,
        Self::Stall,
        Self::TruncatedJson,
        Self::ErrorObject,
        Self::LaggingHead,
    ];

    /// Its name in test output and in the reliability figures.
    pub fn name(self) -> &'static str {
        match self {
            Self::RateLimitedRetryAfter => "HTTP 429 with Retry-After",
            Self::RateLimited => "HTTP 429 without Retry-After",
            Self::BadGateway => "HTTP 502",
            Self::Unavailable => "HTTP 503",
            Self::Reset => "connection reset",
            Self::Stall => "timeout (answer held back)",
            Self::TruncatedJson => "truncated JSON",
            Self::ErrorObject => "JSON-RPC error object",
            Self::LaggingHead => "head behind an earlier answer",
        }
    }
}

/// A running proxy; it stops with the test's runtime.
#[derive(Debug)]
pub struct FaultProxy {
    /// Its URL.
    pub url: String,
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    upstream: String,
    rules: Rules,
    http: reqwest::Client,
    get_logs: AtomicU64,
    refused: AtomicU64,
    requests: AtomicU64,
    /// A lagging head is due: the next `eth_blockNumber` gets one.
    lag_due: std::sync::atomic::AtomicBool,
    /// After a lagging head: that head, and how many more requests the lagging backend
    /// answers (it does not know the blocks above its head).
    lagged: Mutex<Option<(u64, u32)>>,
    injected: [AtomicU64; Fault::ALL.len()],
    /// Armed: the next `eth_getLogs` answer with logs at or above this block gets them
    /// from another branch (see [`FaultProxy::other_branch_logs_from`]).
    branch_from: Mutex<Option<u64>>,
    /// Answers served from another branch.
    branched: AtomicU64,
    /// When each JSON-RPC call arrived (a batch adds one per call in it).
    arrivals: Mutex<Vec<Instant>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` on a free port.
    pub async fn start(upstream: &str, rules: Rules) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(State {
            upstream: upstream.to_string(),
            rules,
            http: reqwest::Client::new(),
            get_logs: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            lag_due: Default::default(),
            lagged: Mutex::new(None),
            injected: Default::default(),
            branch_from: Mutex::new(None),
            branched: AtomicU64::new(0),
            arrivals: Mutex::new(Vec::new()),
        });
        let serving = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let _ =
                        http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Ok(Self { url, state })
    }

    /// `eth_getLogs` requests seen.
    pub fn get_logs_requests(&self) -> u64 {
        self.state.get_logs.load(Ordering::Relaxed)
    }

    /// `eth_getLogs` requests refused.
    pub fn refusals(&self) -> u64 {
        self.state.refused.load(Ordering::Relaxed)
    }

    /// Makes the next `eth_blockNumber` answer a lagging backend's head (see
    /// [`Fault::LaggingHead`]), whatever the rules.
    pub fn lag_next_head(&self) {
        self.state.lag_due.store(true, Ordering::Relaxed);
    }

    /// Makes the next `eth_getLogs` answer that holds logs at or above `block` give
    /// those logs another block hash: a backend on another branch than the one the
    /// headers came from (the chain moved between the calls). Once.
    pub fn other_branch_logs_from(&self, block: u64) {
        *self.state.branch_from.lock().unwrap() = Some(block);
    }

    /// `eth_getLogs` answers served from another branch.
    pub fn branched(&self) -> u64 {
        self.state.branched.load(Ordering::Relaxed)
    }

    /// JSON-RPC calls received (a batch counts each call in it).
    pub fn calls(&self) -> u64 {
        self.state.arrivals.lock().unwrap().len() as u64
    }

    /// How many times each fault was injected.
    pub fn injected(&self) -> Vec<(Fault, u64)> {
        Fault::ALL
            .iter()
            .zip(&self.state.injected)
            .map(|(f, n)| (*f, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// The most JSON-RPC calls that arrived within any one second.
    pub fn busiest_second(&self) -> usize {
        let arrivals = self.state.arrivals.lock().unwrap();
        let mut start = 0;
        let mut most = 0;
        for (end, t) in arrivals.iter().enumerate() {
            while *t - arrivals[start] >= Duration::from_secs(1) {
                start += 1;
            }
            most = most.max(end - start + 1);
        }
        most
    }
}

/// The fault for request number `n`, if it gets one.
fn fault_for(rules: &Rules, n: u64) -> Option<Fault> {
    if rules.fault_every == 0 || n % rules.fault_every != rules.fault_every - 1 {
        return None;
    }
    Some(Fault::ALL[(n / rules.fault_every) as usize % Fault::ALL.len()])
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let asked = req.uri().to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, Bytes::new())),
    };
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let calls = request.as_array().map_or(1, Vec::len);
    {
        let now = Instant::now();
        state.arrivals.lock().unwrap().extend(std::iter::repeat_n(now, calls));
    }
    tokio::time::sleep(state.rules.latency).await;
    let n = state.requests.fetch_add(1, Ordering::Relaxed);
    let mut fault = fault_for(&state.rules, n);
    if fault == Some(Fault::LaggingHead) {
        // Its turn marks the next eth_blockNumber, which may be this one.
        state.lag_due.store(true, Ordering::Relaxed);
        fault = None;
    }
    let lagging =
        request["method"] == "eth_blockNumber" && state.lag_due.swap(false, Ordering::Relaxed);
    if lagging {
        fault = Some(Fault::LaggingHead);
    }
    if let Some(f) = fault {
        state.injected[Fault::ALL.iter().position(|x| *x == f).unwrap_or(0)]
            .fetch_add(1, Ordering::Relaxed);
    }
    match fault {
        Some(Fault::RateLimitedRetryAfter) => {
            let mut r =
                reply(StatusCode::TOO_MANY_REQUESTS, Bytes::from_static(b"Too Many Requests"));
            r.headers_mut().insert("retry-after", hyper::header::HeaderValue::from_static("1"));
            return Ok(r);
        }
        Some(Fault::RateLimited) => {
            return Ok(reply(StatusCode::TOO_MANY_REQUESTS, Bytes::from_static(b"rate limited")));
        }
        Some(Fault::BadGateway) => {
            // As a load balancer sends it: a page of HTML over many lines, quoting the
            // URL asked for (a hosted node's URL holds its API key).
            let page = format!(
                "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<p>upstream failed for http://node.internal{asked}</p>\r\n</body>\r\n</html>\r\n"
            );
            return Ok(reply(StatusCode::BAD_GATEWAY, Bytes::from(page)));
        }
        Some(Fault::Unavailable) => {
            return Ok(reply(
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from_static(b"no healthy upstream"),
            ));
        }
        // An error from the service makes hyper drop the connection unanswered.
        Some(Fault::Reset) => return Err(std::io::Error::other("reset by the fault proxy")),
        Some(Fault::Stall) => tokio::time::sleep(state.rules.stall).await,
        Some(Fault::ErrorObject) => {
            let answer = json!({"jsonrpc": "2.0", "id": request["id"],
                "error": {"code": -32603, "message": "internal error"}});
            return Ok(reply(StatusCode::OK, Bytes::from(answer.to_string())));
        }
        _ => {}
    }
    let is_get_logs = request["method"] == "eth_getLogs";
    if is_get_logs {
        let n = state.get_logs.fetch_add(1, Ordering::Relaxed);
        let filter = &request["params"][0];
        let from = quantity(&filter["fromBlock"]);
        let to = quantity(&filter["toBlock"]);
        if let (Some(from), Some(to)) = (from, to)
            && to >= from
            && to - from + 1 > state.rules.max_blocks
        {
            state.refused.fetch_add(1, Ordering::Relaxed);
            let (status, error) = refusals::refusal(n, from, to, state.rules.max_blocks);
            let answer = json!({"jsonrpc": "2.0", "id": request["id"], "error": error});
            return Ok(reply(status, Bytes::from(answer.to_string())));
        }
    }
    let upstream = state
        .http
        .post(&state.upstream)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    let bytes = match upstream {
        Ok(r) => r.bytes().await.unwrap_or_default(),
        Err(_) => {
            return Ok(reply(StatusCode::BAD_GATEWAY, Bytes::from_static(b"upstream unreachable")));
        }
    };
    if fault == Some(Fault::TruncatedJson) {
        return Ok(reply(StatusCode::OK, bytes.slice(..bytes.len() / 2)));
    }
    if lagging
        && let Some(head) =
            serde_json::from_slice::<Value>(&bytes).ok().and_then(|a| quantity(&a["result"]))
    {
        let behind = head.saturating_sub(3);
        *state.lagged.lock().unwrap() = Some((behind, 4));
        let answer =
            json!({"jsonrpc": "2.0", "id": request["id"], "result": format!("{behind:#x}")});
        return Ok(reply(StatusCode::OK, Bytes::from(answer.to_string())));
    }
    let lagged = {
        let mut lagged = state.lagged.lock().unwrap();
        let now = *lagged;
        *lagged = now.and_then(|(h, n)| (n > 1).then_some((h, n - 1)));
        now.map(|(h, _)| h)
    };
    if let Some(head) = lagged
        && let Ok(mut answer) = serde_json::from_slice::<Value>(&bytes)
    {
        // The lagging backend has no block above its head.
        let above = |call: &Value| {
            call["method"] == "eth_getBlockByNumber"
                && quantity(&call["params"][0]).is_some_and(|n| n > head)
        };
        match (&request, &mut answer) {
            (Value::Array(calls), Value::Array(answers)) => {
                for a in answers.iter_mut() {
                    if calls.iter().any(|c| c["id"] == a["id"] && above(c)) {
                        a["result"] = Value::Null;
                    }
                }
            }
            (call, a) if above(call) => a["result"] = Value::Null,
            _ => {}
        }
        return Ok(reply(StatusCode::OK, Bytes::from(answer.to_string())));
    }
    if state.rules.no_finality_tags
        && let Ok(mut answer) = serde_json::from_slice::<Value>(&bytes)
    {
        let tagged = |call: &Value| {
            call["method"] == "eth_getBlockByNumber"
                && matches!(call["params"][0].as_str(), Some("safe" | "finalized"))
        };
        let refuse = |a: &mut Value| {
            if let Some(o) = a.as_object_mut() {
                o.remove("result");
                o.insert(
                    "error".into(),
                    json!({"code": -32602, "message": "invalid argument 0: hex string without 0x prefix"}),
                );
            }
        };
        let mut refused = false;
        match (&request, &mut answer) {
            (Value::Array(calls), Value::Array(answers)) => {
                for a in answers.iter_mut() {
                    if calls.iter().any(|c| c["id"] == a["id"] && tagged(c)) {
                        refuse(a);
                        refused = true;
                    }
                }
            }
            (call, a) if tagged(call) => {
                refuse(a);
                refused = true;
            }
            _ => {}
        }
        if refused {
            return Ok(reply(StatusCode::OK, Bytes::from(answer.to_string())));
        }
    }
    if is_get_logs
        && let Ok(mut answer) = serde_json::from_slice::<Value>(&bytes)
        && let Some(logs) = answer["result"].as_array_mut()
    {
        let mut armed = state.branch_from.lock().unwrap();
        let above =
            |l: &Value| armed.is_some_and(|b| quantity(&l["blockNumber"]).is_some_and(|n| n >= b));
        if logs.iter().any(above) {
            for l in logs.iter_mut().filter(|l| above(l)) {
                // The same number on another branch: another hash.
                l["blockHash"] = json!(format!("0x{}", "ab".repeat(32)));
            }
            *armed = None;
            state.branched.fetch_add(1, Ordering::Relaxed);
            return Ok(reply(StatusCode::OK, Bytes::from(answer.to_string())));
        }
    }
    if is_get_logs
        && state.rules.truncate_logs
        && let Ok(mut answer) = serde_json::from_slice::<Value>(&bytes)
    {
        if let Some(logs) = answer["result"].as_array_mut() {
            logs.pop();
        }
        return Ok(reply(StatusCode::OK, Bytes::from(answer.to_string())));
    }
    if is_get_logs
        && state.rules.strip_block_timestamp
        && let Ok(mut answer) = serde_json::from_slice::<Value>(&bytes)
    {
        for log in answer["result"].as_array_mut().into_iter().flatten() {
            if let Some(obj) = log.as_object_mut() {
                obj.remove("blockTimestamp");
            }
        }
        return Ok(reply(StatusCode::OK, Bytes::from(answer.to_string())));
    }
    Ok(reply(StatusCode::OK, bytes))
}

fn quantity(v: &Value) -> Option<u64> {
    u64::from_str_radix(v.as_str()?.strip_prefix("0x")?, 16).ok()
}

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    r
}
