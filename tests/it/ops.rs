//! What operators and Kubernetes see, on the real binaries: grpc.health.v1 readiness and
//! liveness, Prometheus metrics, and the single-writer lock (a second ingestor waits, not
//! ready, and takes over when the first dies).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use proto::pb::{GetTopHoldersRequest, StreamTransfersRequest};
use tokio::process::{Child, Command};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::{small, world};

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn binary(name: &str) -> std::path::PathBuf {
    rig::pair::ingestor_binary().unwrap().with_file_name(name)
}

/// grpc.health.v1 status of `service` at `addr` (1 SERVING, 2 NOT_SERVING, -1 no answer).
async fn health(addr: SocketAddr, service: &str) -> i32 {
    let Ok(channel) =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await
    else {
        return -1;
    };
    match HealthClient::new(channel).check(HealthCheckRequest { service: service.into() }).await {
        Ok(r) => r.into_inner().status,
        Err(_) => -1,
    }
}

pub(crate) async fn wait_health(addr: SocketAddr, service: &str, want: i32, within: Duration) {
    let started = Instant::now();
    let mut last = -1;
    while started.elapsed() < within {
        last = health(addr, service).await;
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("health '{service}' at {addr} is {last}, not {want}, after {within:?}");
}

async fn metrics(addr: SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap()
}

/// The value of the first sample line starting with `prefix`.
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix} in:\n{text}"))
}

fn ingestor(w: &crate::World, metrics: SocketAddr, health: SocketAddr) -> Child {
    Command::new(binary("ingestor"))
        .args([
            "--rpc-url",
            &w.chain.url,
            "--database-url",
            &w.db.url,
            "--token",
            &w.history.token.to_string(),
        ])
        .args(["--from", &w.history.start_block.to_string(), "--poll-interval", "100ms"])
        .args(["--metrics-listen", &metrics.to_string(), "--health-listen", &health.to_string()])
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_the_writer_lock() {
    let w = world(small(21)).await;
    let (m1, h1) = (free_port(), free_port());
    let mut first = ingestor(&w, m1, h1);
    wait_health(h1, "liveness", 1, Duration::from_secs(10)).await;
    wait_health(h1, "", 1, Duration::from_secs(20)).await;

    let text = metrics(m1).await;
    assert_eq!(sample(&text, "ingestor_indexed_block ") as u64, w.history.end_block);
    assert_eq!(sample(&text, "ingestor_transfers_total ") as u64, w.history.transfers);
    assert_eq!(sample(&text, "ingestor_lag_blocks "), 0.0);
    assert!(
        sample(
            &text,
            "ingestor_rpc_requests_total{method=\"eth_getBlockByNumber\",outcome=\"ok\"}"
        ) > 0.0
    );
    assert!(sample(&text, "ingestor_commit_seconds_count ") > 0.0);

    // A second ingestor on the same token waits for the lock: alive, not ready.
    let (m2, h2) = (free_port(), free_port());
    let mut second = ingestor(&w, m2, h2);
    wait_health(h2, "liveness", 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(health(h2, "").await, 2, "a waiting ingestor is not ready");
    // The first dies without a word: the second takes over within seconds.
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    wait_health(h2, "", 1, Duration::from_secs(15)).await;
    second.start_kill().unwrap();

    // The query-service: requests by method and code, open streams.
    let (listen, qm) = (free_port(), free_port());
    let mut qs = Command::new(binary("query-service"))
        .args([
            "--database-url",
            &w.db.url,
            "--listen",
            &listen.to_string(),
            "--metrics-listen",
            &qm.to_string(),
        ])
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_health(listen, "", 1, Duration::from_secs(10)).await;
    assert_eq!(health(listen, "liveness").await, 1);
    let mut client = rig::pair::wait_for_client(&format!("http://{listen}")).await.unwrap();
    client.get_top_holders(GetTopHoldersRequest { limit: 3, ..Default::default() }).await.unwrap();
    client
        .get_top_holders(GetTopHoldersRequest { limit: 20_000, ..Default::default() })
        .await
        .unwrap_err();
    let _stream = client.stream_transfers(StreamTransfersRequest::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = metrics(qm).await;
    assert_eq!(
        sample(
            &text,
            "query_requests_total{caller=\"anonymous\",code=\"Ok\",method=\"GetTopHolders\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "query_requests_total{caller=\"anonymous\",code=\"InvalidArgument\",method=\"GetTopHolders\"}"
        ),
        1.0
    );
    assert_eq!(sample(&text, "query_active_streams "), 1.0);
    assert!(sample(&text, "query_request_seconds_count{method=\"GetTopHolders\"}") >= 2.0);
    qs.start_kill().unwrap();
}

/// A long backfill on a terminal draws its progress in place (bar, blocks/s, transfers,
/// ETA); into a pipe it logs lines instead. `script` gives the binary a pseudo-terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_draws_progress_on_a_terminal() {
    let w = world(small(23)).await;
    w.chain.rpc("anvil_mine", serde_json::json!(["0x3e8"])).await.unwrap();
    let head = w.chain.head().await.unwrap();
    let command = |db: &str| {
        format!(
            "{} --rpc-url {} --database-url {db} --token {} --from {} --to {head} --finality-from depth --finality-depth 8 --initial-span 50 --max-span 50 --metrics-listen 127.0.0.1:0 --health-listen 127.0.0.1:0",
            binary("ingestor").display(),
            w.chain.url,
            w.history.token,
            w.history.start_block,
        )
    };
    let out = Command::new("script")
        .args(["-qfec", &command(&w.db.url), "/dev/null"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("\r\x1b[2K["), "a line redrawn in place: {text:?}");
    assert!(
        text.contains("blocks/s") && text.contains("transfers") && text.contains("ETA"),
        "{text:?}"
    );
    // The wide range ends --finality-depth blocks below the head (the rest is verified steps).
    let deep = head - 8;
    assert!(
        text.contains(&format!("block {deep}/{deep}")),
        "the last draw reaches the range's end: {text:?}"
    );

    let piped = rig::db::TestDb::create().await.unwrap();
    let out = Command::new("sh").args(["-c", &command(&piped.url)]).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains('\r'), "no redrawing into a pipe: {text:?}");
    assert!(text.contains("range indexed"), "{text:?}");
}

/// The port a binary listens on by default (`0.0.0.0:P` in its config), on loopback.
fn default_port(addr: &str) -> SocketAddr {
    let port = addr.parse::<SocketAddr>().unwrap().port();
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A new user runs the query-service and the ingestor on one host with their default
/// ports, and a second ingestor as a standby: nothing collides. The standby waits for the
/// lock and the ports, and takes both over when the first dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_ports_let_the_pair_and_a_standby_share_a_host() {
    let w = world(small(23)).await;
    let ingestor_metrics = default_port(ingestor::config::DEFAULT_METRICS_LISTEN);
    let ingestor_health = default_port(ingestor::config::DEFAULT_HEALTH_LISTEN);
    let grpc = default_port(query_service::config::DEFAULT_LISTEN);
    let query_metrics = default_port(query_service::config::DEFAULT_METRICS_LISTEN);
    let ports = [ingestor_metrics, ingestor_health, grpc, query_metrics];
    for (i, a) in ports.iter().enumerate() {
        assert!(ports[..i].iter().all(|b| b.port() != a.port()), "two defaults share {a}");
    }
    let ingest = |stderr: Stdio| {
        Command::new(binary("ingestor"))
            .args(["--rpc-url", &w.chain.url, "--database-url", &w.db.url])
            .args(["--token", &w.history.token.to_string()])
            .args(["--from", &w.history.start_block.to_string(), "--poll-interval", "100ms"])
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut first = ingest(Stdio::null());
    wait_health(ingestor_health, "", 1, Duration::from_secs(30)).await;
    let mut qs = Command::new(binary("query-service"))
        .args(["--database-url", &w.db.url])
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_health(grpc, "", 1, Duration::from_secs(10)).await;
    assert!(metrics(query_metrics).await.contains("query_"), "query-service metrics");
    assert!(metrics(ingestor_metrics).await.contains("ingestor_indexed_block"));

    // The standby: alive, holding neither the lock nor the ports.
    // Its few lines (waiting, then taking over a small history) fit the pipe unread.
    let mut standby = ingest(Stdio::piped());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(standby.try_wait().unwrap().is_none(), "the standby died");
    assert!(qs.try_wait().unwrap().is_none(), "the query-service died");
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    // It takes over the ports and the lock, and becomes ready.
    wait_health(ingestor_health, "", 1, Duration::from_secs(20)).await;
    let text = metrics(ingestor_metrics).await;
    assert_eq!(sample(&text, "ingestor_indexed_block ") as u64, w.history.end_block);
    standby.start_kill().unwrap();
    let out = standby.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("another ingestor holds this token's writer lock"), "{log}");
    assert!(log.contains("is in use"), "the standby says why it does not serve yet: {log}");
    qs.start_kill().unwrap();
}
