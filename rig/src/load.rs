//! A mixed load on a query-service, for the overload benchmark and the soak: cheap calls
//! (a cached GetTopHolders(10)) at a steady rate, expensive calls (GetTopHolders(100) at a
//! random past block) offered open-loop at a set rate whatever the answers, long-lived
//! StreamTransfers streams that resume from their last cursor, and a health probe every
//! 100 ms. Everything is timed from the load's start, so faults can be lined up with it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::pb::holder_service_client::HolderServiceClient;
use proto::pb::{GetTopHoldersRequest, StreamTransfersRequest};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

/// What to offer.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The query-service, `http://host:port`.
    pub endpoint: String,
    /// An API key to send as a bearer token.
    pub key: Option<String>,
    /// Cheap calls a second.
    pub cheap_per_sec: f64,
    /// Expensive calls a second, offered open-loop.
    pub expensive_per_sec: f64,
    /// The blocks expensive calls ask at, drawn evenly.
    pub past_blocks: (u64, u64),
    /// A `min_balance` for the expensive calls: the holder count above it at a past block
    /// is read from the history, which makes each call cost what a fresh statistic does.
    pub expensive_min_balance: String,
    /// Streams held open.
    pub streams: usize,
    /// Streams start after this block.
    pub streams_from: u64,
    /// How long.
    pub duration: Duration,
}

/// One answered (or refused) call.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it was sent, since the load began.
    pub at: Duration,
    /// How long it took.
    pub latency: Duration,
    /// Its outcome.
    pub code: Code,
}

/// What one stream received, across its resumes: each transfer's (block, log index,
/// removed).
pub type Received = Vec<(u64, u32, bool)>;

/// What the load saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Cheap calls.
    pub cheap: Vec<Sample>,
    /// Expensive calls.
    pub expensive: Vec<Sample>,
    /// Health probes: when, and the status (1 SERVING, 2 NOT_SERVING, -1 no answer).
    pub health: Vec<(Duration, i32)>,
    /// What each stream received.
    pub streams: Vec<Received>,
    /// Times a stream had to resume.
    pub resumes: u64,
}

/// The share of `samples` with `code`.
pub fn count(samples: &[Sample], code: Code) -> usize {
    samples.iter().filter(|s| s.code == code).count()
}

/// The `q` quantile (0..=1) of the latencies of the samples that succeeded in
/// `from..to`.
pub fn quantile(samples: &[Sample], from: Duration, to: Duration, q: f64) -> Option<Duration> {
    let mut l: Vec<Duration> = samples
        .iter()
        .filter(|s| s.code == Code::Ok && s.at >= from && s.at < to)
        .map(|s| s.latency)
        .collect();
    if l.is_empty() {
        return None;
    }
    l.sort();
    Some(l[((l.len() - 1) as f64 * q).round() as usize])
}

/// A client of `endpoint` whose calls carry `key`.
fn request<T>(message: T, key: Option<&str>) -> Request<T> {
    let mut r = Request::new(message);
    if let Some(key) = key {
        r.metadata_mut().insert("authorization", format!("Bearer {key}").parse().expect("ascii"));
    }
    r
}

/// A connection to `endpoint`, made at its first call (and again after it breaks).
fn channel(endpoint: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(endpoint.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy())
}

/// Runs `spec` until its duration has passed; then waits up to `drain` for the streams to
/// reach `streams_until` (a block; 0: no wait) and reports.
pub async fn run(
    spec: LoadSpec,
    streams_until: impl Fn() -> u64 + Send + 'static,
) -> anyhow::Result<LoadReport> {
    let started = Instant::now();
    let stop = CancellationToken::new();
    let report = Arc::new(Mutex::new(LoadReport::default()));
    let mut tasks = tokio::task::JoinSet::new();
    // Cheap and expensive calls on a connection each, as two teams' clients would.
    let cheap = HolderServiceClient::new(channel(&spec.endpoint)?);
    let expensive = HolderServiceClient::new(channel(&spec.endpoint)?);
    {
        let (report, stop, key) = (report.clone(), stop.clone(), spec.key.clone());
        let every = Duration::from_secs_f64(1.0 / spec.cheap_per_sec.max(0.001));
        tasks.spawn(paced(every, stop, move || {
            let (mut c, report, key) = (cheap.clone(), report.clone(), key.clone());
            async move {
                let at = started.elapsed();
                let r = request(
                    GetTopHoldersRequest { limit: 10, ..Default::default() },
                    key.as_deref(),
                );
                let code = c.get_top_holders(r).await.map_or_else(|e| e.code(), |_| Code::Ok);
                let s = Sample { at, latency: started.elapsed() - at, code };
                report.lock().unwrap().cheap.push(s);
            }
        }));
    }
    if spec.expensive_per_sec > 0.0 {
        let (report, stop, key) = (report.clone(), stop.clone(), spec.key.clone());
        let every = Duration::from_secs_f64(1.0 / spec.expensive_per_sec);
        let (lo, hi) = spec.past_blocks;
        let min_balance = spec.expensive_min_balance.clone();
        let n = std::sync::atomic::AtomicU64::new(0);
        tasks.spawn(paced(every, stop, move || {
            let (mut c, report, key) = (expensive.clone(), report.clone(), key.clone());
            let min = min_balance.clone();
            // An even spread of past blocks, different each call (no cache hits).
            let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let block = lo + (i.wrapping_mul(7919)) % (hi - lo + 1).max(1);
            async move {
                let at = started.elapsed();
                let r = GetTopHoldersRequest {
                    limit: 100,
                    at_block: Some(block),
                    min_balance: min,
                    ..Default::default()
                };
                let code = c
                    .get_top_holders(request(r, key.as_deref()))
                    .await
                    .map_or_else(|e| e.code(), |_| Code::Ok);
                let s = Sample { at, latency: started.elapsed() - at, code };
                report.lock().unwrap().expensive.push(s);
            }
        }));
    }
    {
        let (report, stop, endpoint) = (report.clone(), stop.clone(), spec.endpoint.clone());
        tasks.spawn(async move {
            while !stop.is_cancelled() {
                let status = readiness(&endpoint).await;
                report.lock().unwrap().health.push((started.elapsed(), status));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    // Streams, 200 to a connection (the server allows 256 calls per connection).
    let received: Vec<Arc<Mutex<Received>>> =
        (0..spec.streams).map(|_| Arc::new(Mutex::new(Vec::new()))).collect();
    let resumes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let streams_stop = CancellationToken::new();
    let mut streams = tokio::task::JoinSet::new();
    let mut client = HolderServiceClient::new(channel(&spec.endpoint)?);
    for (i, got) in received.iter().enumerate() {
        if i > 0 && i % 200 == 0 {
            client = HolderServiceClient::new(channel(&spec.endpoint)?);
        }
        let (got, stop, key, resumes) =
            (got.clone(), streams_stop.clone(), spec.key.clone(), resumes.clone());
        let (client, from) = (client.clone(), spec.streams_from);
        streams.spawn(async move {
            follow(client, key, from, got, resumes, stop).await;
        });
    }
    tokio::time::sleep(spec.duration).await;
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    // The streams catch up with the last commit before they stop.
    let drained = Instant::now();
    let until = streams_until();
    while until > 0
        && drained.elapsed() < Duration::from_secs(30)
        && received.iter().any(|r| r.lock().unwrap().last().is_none_or(|l| l.0 < until))
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    streams_stop.cancel();
    while streams.join_next().await.is_some() {}
    let mut report = Arc::try_unwrap(report).expect("every task ended").into_inner().unwrap();
    report.streams =
        received.into_iter().map(|r| std::mem::take(&mut *r.lock().unwrap())).collect();
    report.resumes = resumes.load(std::sync::atomic::Ordering::Relaxed);
    Ok(report)
}

/// Calls `call` every `every` (open-loop: a slow answer does not delay the next call)
/// until `stop`; then waits for the calls in flight.
async fn paced<F, Fut>(every: Duration, stop: CancellationToken, call: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut inflight = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => { inflight.spawn(call()); }
            Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
        }
    }
    while inflight.join_next().await.is_some() {}
}

/// One stream: opened after block `from`, resumed from its last cursor whenever it ends
/// or fails, until `stop`.
async fn follow(
    mut client: HolderServiceClient<Channel>,
    key: Option<String>,
    from: u64,
    got: Arc<Mutex<Received>>,
    resumes: Arc<std::sync::atomic::AtomicU64>,
    stop: CancellationToken,
) {
    let mut cursor = String::new();
    let mut first = true;
    while !stop.is_cancelled() {
        if !first {
            resumes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
        first = false;
        let r = StreamTransfersRequest {
            cursor: cursor.clone(),
            from_block: cursor.is_empty().then_some(from + 1),
            ..Default::default()
        };
        let mut stream = tokio::select! {
            () = stop.cancelled() => return,
            s = client.stream_transfers(request(r, key.as_deref())) => match s {
                Ok(s) => s.into_inner(),
                Err(_) => continue,
            },
        };
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                n = stream.message() => n,
            };
            match next {
                Ok(Some(event)) => {
                    if let Some(t) = &event.transfer {
                        got.lock().unwrap().push((t.block_number, t.log_index, event.removed));
                    }
                    cursor = event.cursor;
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
}

/// The readiness (grpc.health.v1 `""`) of the query-service at `endpoint`
/// (`http://host:port`): 1 SERVING, 2 NOT_SERVING, -1 no answer within a second.
pub async fn readiness(endpoint: &str) -> i32 {
    let probe = async {
        let channel = Endpoint::from_shared(endpoint.to_string()).ok()?.connect().await.ok()?;
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let r = tonic_health::pb::HealthCheckRequest { service: String::new() };
        Some(client.check(r).await.ok()?.into_inner().status)
    };
    tokio::time::timeout(Duration::from_secs(1), probe).await.ok().flatten().unwrap_or(-1)
}
