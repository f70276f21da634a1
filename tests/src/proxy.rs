//! A JSON-RPC proxy in front of Anvil that behaves like a hosted provider: it refuses
//! `eth_getLogs` spans wider than a limit, rotating through the refusal texts (and HTTP
//! statuses) that Infura, Alchemy, QuickNode, Geth, Erigon, Nethermind, Ankr and
//! Cloudflare really send (shared/reference/getlogs-errors.md), and can drop
//! `blockTimestamp` from logs like nodes that do not send it. Anvil cannot do either.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, Bytes::new())),
    };
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
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
            let (status, error) = refusal(n, from, to, state.rules.max_blocks);
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

/// The `n`th refusal: a provider's status, code and words for a span `from..=to` over the
/// `max` blocks allowed.
fn refusal(n: u64, from: u64, to: u64, max: u64) -> (StatusCode, Value) {
    let hint_to = from + max - 1;
    let span = to - from + 1;
    match n % 10 {
        0 => (
            StatusCode::OK,
            json!({"code": -32005,
            "message": format!("query returned more than 10000 results. Try with this block range [{from:#x}, {hint_to:#x}]."),
            "data": {"from": format!("{from:#x}"), "limit": 10000, "to": format!("{hint_to:#x}")}}),
        ),
        1 => (
            StatusCode::BAD_REQUEST,
            json!({"code": -32600,
            "message": format!("You can make eth_getLogs requests with up to a {max} block range. Based on your parameters, this block range should work: [{from:#x}, {hint_to:#x}]")}),
        ),
        2 => (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"code": -32614,
            "message": format!("eth_getLogs is limited to a {} range", crate::thousands(max))}),
        ),
        3 => (
            StatusCode::OK,
            json!({"code": -32602, "message": format!("exceed maximum block range {max}")}),
        ),
        4 => (
            StatusCode::OK,
            json!({"code": -32602,
            "message": format!("query block range exceeds server limit, narrow your filter: {max}")}),
        ),
        5 => (
            StatusCode::OK,
            json!({"code": -32602,
            "message": format!("Block range {span} exceeds the maximum of {max} blocks per logs request. Use a narrower fromBlock/toBlock range or increase Receipt.MaxBlockDepth.")}),
        ),
        6 => (StatusCode::OK, json!({"code": -32600, "message": "block range is too wide"})),
        7 => (StatusCode::OK, json!({"code": -32005, "message": "query timeout exceeded"})),
        8 => (
            StatusCode::OK,
            json!({"code": -32047,
            "message": format!("Invalid eth_getLogs request. 'fromBlock'-'toBlock' range too large. Max range: {max}")}),
        ),
        _ => (
            StatusCode::OK,
            json!({"code": -32602,
            "message": format!("Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range and no limit on the response size, or you can request any block range with a cap of 10K logs in the response. Based on your parameters and the response size limit, this block range should work: [{from:#x}, {hint_to:#x}]")}),
        ),
    }
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

/// A WebSocket proxy in front of Anvil that forwards every frame but, when asked, drops
/// the node's `eth_subscription` notifications: a subscription that went silent.
#[derive(Debug)]
pub struct SilentHeadsProxy {
    /// Its ws:// URL.
    pub url: String,
}

impl SilentHeadsProxy {
    /// Starts a proxy to the ws:// `upstream` that swallows subscription notifications.
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("ws://{}", listener.local_addr()?);
        let upstream = upstream.to_string();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(client) = tokio_tungstenite::accept_async(stream).await else { return };
                    let Ok((node, _)) = tokio_tungstenite::connect_async(upstream.as_str()).await
                    else {
                        return;
                    };
                    let (mut to_client, mut from_client) = client.split();
                    let (mut to_node, mut from_node) = node.split();
                    let up = async move {
                        while let Some(Ok(m)) = from_client.next().await {
                            if to_node.send(m).await.is_err() {
                                break;
                            }
                        }
                    };
                    let down = async move {
                        while let Some(Ok(m)) = from_node.next().await {
                            if let Message::Text(text) = &m
                                && text.contains("\"eth_subscription\"")
                            {
                                continue;
                            }
                            if to_client.send(m).await.is_err() {
                                break;
                            }
                        }
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Ok(Self { url })
    }
}
