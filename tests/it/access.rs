//! Who may call, through the wire: API keys (none, wrong, revoked while running, valid;
//! health open; reflection behind the key unless told), no key in any log line, and
//! mutual TLS. How often and how much: `limits`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use alloy_primitives::hex;
use proto::pb::holder_service_client::HolderServiceClient;
use proto::pb::{GetTopHoldersRequest, ListTokensRequest};
use rig::pair::QueryService;
use tokio::process::Command;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::{small, world};

pub(crate) const ALPHA_KEY: &str = "alpha-KEY-5d1e0c77f2";
pub(crate) const BETA_KEY: &str = "beta-KEY-0b9a3e61d4";

/// A keys file line for `name` holding `key`, as an operator writes it
/// (`printf %s "$key" | sha256sum`).
pub(crate) fn key_line(name: &str, key: &str) -> String {
    format!("{name} {}\n", hex::encode(query_service::access::keys::digest(key)))
}

/// A fresh folder under the system's temporary one.
pub(crate) fn tempdir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "holders-{what}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A keys file granting alpha and beta, in a fresh folder (removed by the caller).
pub(crate) fn alpha_and_beta(what: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = tempdir(what);
    let keys = dir.join("api-keys");
    std::fs::write(
        &keys,
        format!("{}{}", key_line("alpha", ALPHA_KEY), key_line("beta", BETA_KEY)),
    )
    .unwrap();
    (dir, keys)
}

/// A request carrying `key` as a bearer token.
pub(crate) fn with_key<T>(message: T, key: Option<&str>) -> Request<T> {
    let mut r = Request::new(message);
    if let Some(key) = key {
        r.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    r
}

pub(crate) fn top(limit: u32) -> GetTopHoldersRequest {
    GetTopHoldersRequest { limit, ..Default::default() }
}

/// Runs grpcurl's `list` against `addr` with these extra arguments; whether it listed
/// the holders service.
async fn grpcurl_lists(addr: std::net::SocketAddr, extra: &[&str]) -> bool {
    let out = Command::new("grpcurl")
        .arg("-plaintext")
        .args(extra)
        .arg(addr.to_string())
        .arg("list")
        .output()
        .await
        .expect("grpcurl on PATH (scripts/test.sh installs it into .tools/bin)");
    String::from_utf8_lossy(&out.stdout).contains("holders.v1.HolderService")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_gate_every_call_but_health_and_a_revoked_key_stops_working() {
    let w = world(small(81)).await;
    w.ingest_all().await;
    let dir = std::env::temp_dir().join(format!("holders-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("api-keys");
    std::fs::write(
        &keys,
        format!("# who may call\n{}{}", key_line("alpha", ALPHA_KEY), key_line("beta", BETA_KEY)),
    )
    .unwrap();
    let (listen, metrics) = (crate::free_addr(), crate::free_addr());
    let bin = rig::pair::ingestor_binary().unwrap().with_file_name("query-service");
    let mut child = Command::new(bin)
        .args(["--database-url", &w.db.url, "--listen", &listen.to_string()])
        .args(["--metrics-listen", &metrics.to_string()])
        .arg("--api-keys-file")
        .arg(&keys)
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = crate::read_stderr(&mut child);
    let mut client = rig::pair::wait_for_client(&format!("http://{listen}")).await.unwrap();

    // No key and a wrong key: UNAUTHENTICATED, with the same words (nothing says which
    // part was wrong).
    let none = client.get_top_holders(with_key(top(3), None)).await.unwrap_err();
    let wrong = client.get_top_holders(with_key(top(3), Some("alpha-KEY-guess"))).await;
    let wrong = wrong.unwrap_err();
    let not_bearer = {
        let mut r = Request::new(top(3));
        r.metadata_mut().insert("authorization", ALPHA_KEY.parse().unwrap());
        client.get_top_holders(r).await.unwrap_err()
    };
    for e in [&none, &wrong, &not_bearer] {
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        assert_eq!(e.message(), none.message());
    }
    let e = client.list_tokens(with_key(ListTokensRequest::default(), None)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // Valid keys answer.
    let answer = client.get_top_holders(with_key(top(3), Some(ALPHA_KEY))).await.unwrap();
    assert_eq!(answer.into_inner().holders.len(), 3);
    client.get_top_holders(with_key(top(3), Some(BETA_KEY))).await.unwrap();

    // Health stays open to probes; reflection needs the key.
    let channel = Channel::from_shared(format!("http://{listen}")).unwrap().connect().await;
    let health = HealthClient::new(channel.unwrap())
        .check(HealthCheckRequest { service: String::new() })
        .await
        .expect("health without a key")
        .into_inner();
    assert_eq!(health.status, 1, "SERVING");
    assert!(!grpcurl_lists(listen, &[]).await, "reflection answered without a key");
    let header = format!("authorization: Bearer {ALPHA_KEY}");
    assert!(grpcurl_lists(listen, &["-H", &header]).await, "reflection refused a valid key");

    // beta is revoked while the service runs: its next calls fail, alpha's do not.
    std::fs::write(&keys, key_line("alpha", ALPHA_KEY)).unwrap();
    let started = Instant::now();
    loop {
        match client.get_top_holders(with_key(top(1), Some(BETA_KEY))).await {
            Err(e) if e.code() == Code::Unauthenticated => break,
            other => assert!(other.is_ok(), "{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10), "beta still works after revoking");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.get_top_holders(with_key(top(1), Some(ALPHA_KEY))).await.unwrap();
    // A broken edit keeps the last good keys: alpha still in, beta still out.
    std::fs::write(&keys, "alpha not-a-hash\n").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    client.get_top_holders(with_key(top(1), Some(ALPHA_KEY))).await.unwrap();
    let e = client.get_top_holders(with_key(top(1), Some(BETA_KEY))).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // Metrics name the caller, never the key.
    let text = reqwest::get(format!("http://{metrics}/metrics")).await.unwrap().text().await;
    let text = text.unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("query_requests_total")
            && l.contains("caller=\"alpha\"")
            && l.contains("method=\"GetTopHolders\"")),
        "{text}"
    );
    assert!(text.contains("query_refused_total{caller=\"-\",reason=\"unauthenticated\"}"));
    for key in [ALPHA_KEY, BETA_KEY] {
        assert!(!text.contains(key), "a key in the metrics");
    }

    // The log names callers, never a key, even at debug level.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    let log = log.await.unwrap();
    assert!(log.contains("beta"), "the callers' names are in the log");
    for key in [ALPHA_KEY, BETA_KEY, "alpha-KEY-guess"] {
        assert!(!log.contains(key), "the log holds a key:\n{log}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_without_a_key_is_a_setting_and_a_bad_keys_file_stops_the_binary() {
    let w = world(small(82)).await;
    w.ingest_all().await;
    let dir = std::env::temp_dir().join(format!("holders-keys-open-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("api-keys");
    std::fs::write(&keys, key_line("alpha", ALPHA_KEY)).unwrap();
    let settings = query_service::Settings {
        api_keys_file: Some(keys.clone()),
        reflection_without_key: true,
        ..Default::default()
    };
    let qs = QueryService::start_with(&w.db.url, settings).await.unwrap();
    let mut client = qs.client().await.unwrap();
    assert!(grpcurl_lists(qs.addr, &[]).await, "reflection refused a caller without a key");
    let e = client.get_top_holders(with_key(top(1), None)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "the service itself still needs the key");

    // A keys file with a bad line stops the binary with one line naming the flag and line.
    std::fs::write(&keys, format!("{}beta 1234\n", key_line("alpha", ALPHA_KEY))).unwrap();
    let bin = rig::pair::ingestor_binary().unwrap().with_file_name("query-service");
    let out = Command::new(bin)
        .args(["--database-url", &w.db.url, "--api-keys-file"])
        .arg(&keys)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--api-keys-file") && err.contains("line 2"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_certificate_from_the_ca() {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

    let w = world(small(83)).await;
    w.ingest_all().await;
    let dir = std::env::temp_dir().join(format!("holders-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let [ca, cert, key] = crate::privilege::certificates(&dir).await;
    let [client_cert, client_key] = crate::privilege::client_certificate(&dir, "ca").await;
    // A second CA the server does not trust, with a client certificate of its own.
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    crate::privilege::certificates(&other).await;
    let [stranger_cert, stranger_key] = crate::privilege::client_certificate(&other, "ca").await;
    let listen = crate::free_addr();
    let _child = crate::privilege::tls_query_service(&w.db.url, listen, [&cert, &key], Some(&ca));
    let server_ca = Certificate::from_pem(std::fs::read(&ca).unwrap());
    let ask = |identity: Option<Identity>| {
        let mut tls =
            ClientTlsConfig::new().ca_certificate(server_ca.clone()).domain_name("localhost");
        if let Some(id) = identity {
            tls = tls.identity(id);
        }
        async move {
            let endpoint = Endpoint::from_shared(format!("https://{listen}"))?.tls_config(tls)?;
            let mut client = HolderServiceClient::new(endpoint.connect().await?);
            let top = client.get_top_holders(top(2)).await?;
            anyhow::Ok(top.into_inner().holders.len())
        }
    };
    let identity = |c: &std::path::Path, k: &std::path::Path| {
        Identity::from_pem(std::fs::read(c).unwrap(), std::fs::read(k).unwrap())
    };
    // The certified client gets answers (retrying while the server starts).
    let started = Instant::now();
    loop {
        match ask(Some(identity(&client_cert, &client_key))).await {
            Ok(n) => {
                assert_eq!(n, 2);
                break;
            }
            Err(e) => {
                assert!(started.elapsed() < Duration::from_secs(10), "no mTLS answer: {e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // No certificate, or one from another CA: refused.
    let bare = tokio::time::timeout(Duration::from_secs(10), ask(None)).await.unwrap();
    assert!(bare.is_err(), "a client without a certificate got an answer");
    let stranger = ask(Some(identity(&stranger_cert, &stranger_key)));
    let stranger = tokio::time::timeout(Duration::from_secs(10), stranger).await.unwrap();
    assert!(stranger.is_err(), "a client certified by another CA got an answer");
    std::fs::remove_dir_all(&dir).unwrap();
}
