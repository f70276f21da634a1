//! Serves the holders the ingestor indexed over gRPC: `holders.v1.HolderService`, with
//! `grpc.health.v1` (NOT_SERVING while the database does not answer) and server
//! reflection (v1 and v1alpha) so that grpcurl needs no .proto file.
//!
//! Modules in reading order:
//! - [`config`]: the settings;
//! - [`access`]: who may call (API keys) and how often (rate limits);
//! - [`handshake`]: connections reach the server once they open as gRPC, in time;
//! - [`service`]: the gRPC methods, a file per family; [`input`] checks their fields and
//!   signs page tokens and cursors; [`error`] turns a method's failures into gRPC
//!   statuses, and [`wire`] puts right those tonic gives before a method runs;
//! - [`lane`]: the database's three lanes (cheap answers, expensive work, streams);
//! - [`store`]: the SQL of the read path, a file per query family;
//! - [`cache`]: ranked answers kept per store state; [`warm`]: the newest of them
//!   recomputed at each commit and served without a read;
//! - [`feed`]: the live feed behind StreamTransfers (one LISTEN connection, fanned out);
//! - [`health`], [`metrics`]: what probes and Prometheus read.

pub mod access;
pub mod cache;
pub mod config;
pub mod error;
pub mod feed;
pub mod handshake;
pub mod health;
pub mod input;
pub mod lane;
pub mod metrics;
pub mod service;
pub mod store;
pub mod warm;
pub mod wire;

use std::time::Duration;

use deadpool_postgres::Pool;
use proto::pb::holder_service_server::HolderServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::interceptor::InterceptedService;
use tonic_health::ServingStatus;
use tracing::info;

pub use config::Config;

/// How the server runs, besides where it listens and what it reads.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often the health check asks the database.
    pub health_interval: Duration,
    /// Most StreamTransfers streams open at once.
    pub max_streams: usize,
    /// Most of those one caller (an API key's name; everybody without keys) may hold.
    pub max_streams_per_caller: usize,
    /// Events the live feed buffers for subscribers that fall behind.
    pub stream_buffer: usize,
    /// Where to serve Prometheus metrics; none when `None`.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Ranked answers kept per store state (0: none).
    pub answer_cache: usize,
    /// Serve gRPC over TLS with this certificate chain and key (PEM); plaintext when
    /// `None`.
    pub tls: Option<Tls>,
    /// How long a statement may run (the pool's setting; a caller's nearer deadline
    /// shortens it for that call).
    pub statement_timeout: Duration,
    /// The API keys file; everybody may call when `None`.
    pub api_keys_file: Option<std::path::PathBuf>,
    /// With keys: whether reflection answers callers without one.
    pub reflection_without_key: bool,
    /// Per-caller token buckets; none when `None`.
    pub rate_limit: Option<access::RateLimit>,
    /// Expensive calls at once, each on a connection of the expensive lane.
    pub expensive_connections: usize,
    /// How long an expensive call waits for its turn.
    pub expensive_wait: Duration,
    /// Connections of the streams' own pool.
    pub stream_connections: usize,
    /// Where the feed LISTENs (the primary); `None`: the read side's database.
    pub feed_database_url: Option<String>,
    /// Readiness turns NOT_SERVING past this replica lag.
    pub max_replica_lag: Duration,
    /// How long a request's `min_block` is waited for.
    pub min_block_wait: Duration,
    /// Most requests waiting for their `min_block` at once.
    pub min_block_waiters: usize,
    /// HTTP/2 and message bounds.
    pub http: Http,
    /// The secret page tokens and cursors are signed with; the store's key when `None`.
    pub token_secret: Option<Vec<u8>>,
}

impl Default for Settings {
    /// The binary's defaults, but no metrics port.
    fn default() -> Self {
        Self {
            health_interval: Duration::from_secs(2),
            max_streams: 1000,
            max_streams_per_caller: 500,
            stream_buffer: 4096,
            metrics_listen: None,
            answer_cache: 256,
            tls: None,
            statement_timeout: Duration::from_secs(5),
            api_keys_file: None,
            reflection_without_key: false,
            rate_limit: None,
            expensive_connections: 4,
            expensive_wait: Duration::from_secs(2),
            stream_connections: 4,
            feed_database_url: None,
            max_replica_lag: Duration::from_secs(30),
            min_block_wait: Duration::from_secs(5),
            min_block_waiters: 1000,
            http: Http::default(),
            token_secret: None,
        }
    }
}

/// Bounds on connections and messages.
#[derive(Debug, Clone)]
pub struct Http {
    /// How long a new connection may take to send its HTTP/2 preface (or, with TLS, its
    /// ClientHello) before it is dropped.
    pub handshake_timeout: Duration,
    /// Most concurrent calls per client connection.
    pub max_concurrent_streams: u32,
    /// Keepalive ping interval of an idle connection.
    pub keepalive: Duration,
    /// Largest request message, in bytes.
    pub max_request_bytes: usize,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_concurrent_streams: 256,
            keepalive: Duration::from_secs(30),
            max_request_bytes: 1 << 20,
        }
    }
}

/// Largest answer message, in bytes: an export chunk of 10,000 holders is about 2 MB.
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// A server identity for TLS, in PEM.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The certificate chain, leaf first.
    pub cert_pem: Vec<u8>,
    /// Its private key.
    pub key_pem: Vec<u8>,
    /// Clients must present a certificate signed by this CA (mutual TLS) when set.
    pub client_ca_pem: Option<Vec<u8>>,
}

/// Serves on `listener` until `shutdown`, reading from `pool`; listens for the ingestor's
/// commits on a connection of its own to `database_url`; reports the database's health
/// through grpc.health.v1. Returns once every task it started has ended.
pub async fn serve(
    listener: TcpListener,
    database_url: String,
    pool: Pool,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Every task below ends at `stop`: at shutdown, or when the server fails.
    let tasks = TaskTracker::new();
    let stop = shutdown.child_token();
    let result = run(listener, database_url, pool, settings, &tasks, &stop).await;
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    result
}

/// [`serve`] with its tasks on `tasks`, all ending at `stop`.
async fn run(
    listener: TcpListener,
    database_url: String,
    pool: Pool,
    settings: Settings,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let shutdown = stop.clone();
    let (reporter, health) = tonic_health::server::health_reporter();
    let metrics = metrics::Metrics::new();
    // The service's checks, and reflection's (a key unless told otherwise).
    let (access, reflection_access) = access::from_settings(&settings, &metrics, tasks, stop)?;
    // Both versions of reflection, each listing the other too: grpcurl 1.8 asks for
    // v1alpha, newer clients for v1.
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let sealer = std::sync::Arc::new(input::Sealer::new(settings.token_secret.as_deref()));
    let feed = feed::Feed::new(
        settings.stream_buffer,
        settings.max_streams,
        metrics.clone(),
        tasks.clone(),
        sealer.clone(),
    );
    tasks.spawn(health::watch_database(
        pool.clone(),
        reporter.clone(),
        settings.health_interval,
        feed.lag(),
        settings.max_replica_lag,
        shutdown.clone(),
    ));
    if let Some(addr) = settings.metrics_listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding --metrics-listen {addr}: {e}"))?;
        tasks.spawn(bootstrap::metrics::serve(
            listener,
            metrics.registry.clone(),
            shutdown.clone(),
        ));
    }
    // "liveness" answers SERVING while the process runs; "" and the service follow the
    // database (readiness).
    reporter.set_service_status("liveness", ServingStatus::Serving).await;
    // The feed LISTENs on the primary and reads through the read side's pool.
    let feed_url = settings.feed_database_url.clone().unwrap_or_else(|| database_url.clone());
    tasks.spawn(feed.clone().listen(feed_url, pool.clone(), shutdown.clone()));
    let answers = std::sync::Arc::new(cache::Answers::new(settings.answer_cache));
    // A few questions at the head kept warm: the answer cache's setting turns both off.
    let warm = std::sync::Arc::new(warm::Warm::new(settings.answer_cache.min(64)));
    let expensive = store::expensive_pool(
        &database_url,
        settings.expensive_connections,
        settings.statement_timeout,
    )?;
    let streams =
        store::pool(&database_url, settings.stream_connections, settings.statement_timeout)?;
    let lanes =
        lane::Lanes::new(pool, expensive, streams, settings.expensive_wait, metrics.clone());
    let metrics_for_wire = metrics.clone();
    let holders = service::Holders::new(service::Parts {
        lanes,
        feed,
        answers,
        warm,
        shutdown: shutdown.clone(),
        tasks: tasks.clone(),
        metrics,
        statement_timeout: settings.statement_timeout,
        min_block_wait: settings.min_block_wait,
        min_block_waiters: settings.min_block_waiters,
        max_streams_per_caller: settings.max_streams_per_caller,
        sealer,
        keys: access.keys.clone(),
    });
    tasks.spawn(holders.clone().keep_warm(shutdown.clone()));
    info!(addr = %listener.local_addr()?, "serving holders.v1.HolderService");
    let http = &settings.http;
    let mut server = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(http.max_concurrent_streams))
        .http2_keepalive_interval(Some(http.keepalive))
        .http2_keepalive_timeout(Some(http.keepalive.min(Duration::from_secs(20))))
        .tcp_keepalive(Some(Duration::from_secs(60)));
    if let Some(tls) = &settings.tls {
        let identity = tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem);
        let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &tls.client_ca_pem {
            config = config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        server = server
            .tls_config(config)
            .map_err(|e| anyhow::anyhow!("--tls-cert/--tls-key/--tls-client-ca: {e}"))?;
    }
    let holders = HolderServiceServer::new(holders)
        .max_decoding_message_size(http.max_request_bytes)
        .max_encoding_message_size(MAX_ANSWER_BYTES);
    let result = server
        .layer(wire::FixStatus::new(metrics_for_wire))
        .add_service(health)
        .add_service(InterceptedService::new(reflection_v1, reflection_access.clone()))
        .add_service(InterceptedService::new(reflection_v1alpha, reflection_access))
        .add_service(InterceptedService::new(holders, access))
        .serve_with_incoming_shutdown(incoming(listener, &settings, stop.clone()), async move {
            shutdown.cancelled().await;
            reporter.set_service_status("", ServingStatus::NotServing).await;
            info!("shutting down");
        })
        .await;
    Ok(result?)
}

/// Accepted connections that open as gRPC within the handshake timeout, with Nagle's
/// algorithm off: small gRPC answers must not wait for the client's delayed ACK (about
/// 40 ms a request otherwise).
fn incoming(
    listener: TcpListener,
    settings: &Settings,
    stop: CancellationToken,
) -> impl futures::Stream<Item = Result<tokio::net::TcpStream, std::io::Error>> {
    let opening = if settings.tls.is_some() {
        handshake::Opening::Tls
    } else {
        handshake::Opening::Plaintext
    };
    handshake::incoming(listener, opening, settings.http.handshake_timeout, stop)
}
