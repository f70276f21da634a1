//! Serves the holders the ingestor indexed over gRPC: `holders.v1.HolderService`, with
//! `grpc.health.v1` (NOT_SERVING while the database does not answer) and server
//! reflection (v1 and v1alpha) so that grpcurl needs no .proto file.
//!
//! Modules in reading order:
//! - [`config`]: the settings;
//! - [`service`]: the gRPC methods, a file per family; [`input`] checks their fields;
//!   [`error`] is the one place failures become gRPC statuses;
//! - [`store`]: the SQL of the read path, a file per query family;
//! - [`cache`]: ranked answers kept per store state;
//! - [`feed`]: the live feed behind StreamTransfers (one LISTEN connection, fanned out);
//! - [`health`], [`metrics`]: what probes and Prometheus read.

pub mod cache;
pub mod config;
pub mod error;
pub mod feed;
pub mod health;
pub mod input;
pub mod metrics;
pub mod service;
pub mod store;

use std::time::Duration;

use deadpool_postgres::Pool;
use proto::pb::holder_service_server::HolderServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
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
    /// Events the live feed buffers for subscribers that fall behind.
    pub stream_buffer: usize,
    /// Where to serve Prometheus metrics; none when `None`.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Ranked answers kept per store state (0: none).
    pub answer_cache: usize,
    /// Serve gRPC over TLS with this certificate chain and key (PEM); plaintext when
    /// `None`.
    pub tls: Option<Tls>,
}

/// A server identity for TLS, in PEM.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The certificate chain, leaf first.
    pub cert_pem: Vec<u8>,
    /// Its private key.
    pub key_pem: Vec<u8>,
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
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    // grpcurl 1.8 asks for v1alpha.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    tasks.spawn(health::watch_database(
        pool.clone(),
        reporter.clone(),
        settings.health_interval,
        shutdown.clone(),
    ));
    let metrics = metrics::Metrics::new();
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
    let feed = feed::Feed::new(
        settings.stream_buffer,
        settings.max_streams,
        metrics.clone(),
        tasks.clone(),
    );
    tasks.spawn(feed.clone().listen(database_url, pool.clone(), shutdown.clone()));
    let answers = std::sync::Arc::new(cache::Answers::new(settings.answer_cache));
    let holders = service::Holders::new(pool, feed, answers, shutdown.clone(), metrics);
    info!(addr = %listener.local_addr()?, "serving holders.v1.HolderService");
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &settings.tls {
        let identity = tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem);
        server = server
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| anyhow::anyhow!("--tls-cert/--tls-key: {e}"))?;
    }
    let result = server
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(HolderServiceServer::new(holders))
        .serve_with_incoming_shutdown(incoming(listener), async move {
            shutdown.cancelled().await;
            reporter.set_service_status("", ServingStatus::NotServing).await;
            info!("shutting down");
        })
        .await;
    Ok(result?)
}

/// Accepted connections with Nagle's algorithm off: small gRPC answers must not wait for
/// the client's delayed ACK (about 40 ms a request otherwise).
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}
