//! The query-service's settings: each a flag with an environment variable, parsed and
//! checked once at start.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;

/// Where the query-service serves gRPC unless told.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:50051";

/// Where the query-service serves Prometheus metrics unless told: a port of its own,
/// apart from the ingestor's (9090), so that both run side by side on one host.
pub const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:9091";

/// The settings that may come from a file (`<VAR>_FILE`).
pub const SECRETS: [bootstrap::Secret; 3] = [
    ("--database-url", "DATABASE_URL"),
    ("--feed-database-url", "FEED_DATABASE_URL"),
    ("--token-secret", "QUERY_TOKEN_SECRET"),
];

/// Serves the indexed holders of ERC-20 tokens over gRPC (holders.v1.HolderService), with
/// grpc.health.v1 and server reflection.
#[derive(Debug, Clone, Parser)]
#[command(name = "query-service", version, about, long_about = None)]
pub struct Config {
    /// PostgreSQL URL of the ingestor's database (read-only access is enough).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Where to LISTEN for the ingestor's commits: the primary, when --database-url is a
    /// streaming replica (NOTIFY is not replicated). Default: --database-url.
    #[arg(long, env = "FEED_DATABASE_URL", hide_env_values = true)]
    pub feed_database_url: Option<String>,

    /// Readiness turns NOT_SERVING while the read side (--database-url) lacks commits the
    /// feed heard of longer ago than this (a lagging replica leaves the rotation), and
    /// SERVING once it has them.
    #[arg(long, env = "QUERY_MAX_REPLICA_LAG", default_value = "30s", value_parser = bootstrap::parse_duration)]
    pub max_replica_lag: Duration,

    /// How long a request with min_block waits for the read side to reach that block
    /// before UNAVAILABLE.
    #[arg(long, env = "QUERY_MIN_BLOCK_WAIT", default_value = "5s", value_parser = bootstrap::parse_duration)]
    pub min_block_wait: Duration,

    /// Most requests waiting for their min_block at once; more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "QUERY_MIN_BLOCK_WAITERS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub min_block_waiters: u32,

    /// Address and port to serve gRPC on.
    #[arg(long, env = "LISTEN_ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Database connections in the pool.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=512))]
    pub database_pool_size: u16,

    /// Cancel any query that runs longer than this (it answers DEADLINE_EXCEEDED).
    #[arg(long, env = "QUERY_STATEMENT_TIMEOUT", default_value = "5s", value_parser = bootstrap::parse_duration)]
    pub statement_timeout: Duration,

    /// How often the health check asks the database whether it answers.
    #[arg(long, env = "QUERY_HEALTH_INTERVAL", default_value = "2s", value_parser = bootstrap::parse_duration)]
    pub health_interval: Duration,

    /// Most StreamTransfers streams open at once; more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "QUERY_MAX_STREAMS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams: u32,

    /// Most of those streams one caller (an API key's name) may hold; more get
    /// RESOURCE_EXHAUSTED. Without keys every caller is one ("anonymous").
    #[arg(long, env = "QUERY_MAX_STREAMS_PER_CALLER", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_caller: u32,

    /// Events the live feed keeps for subscribers that fall behind; one further behind
    /// catches up from the database.
    #[arg(long, env = "QUERY_STREAM_BUFFER", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(16..))]
    pub stream_buffer: u32,

    /// Ranked answers (top holders, ranking pages) kept per store state, so repeated
    /// questions between two commits are answered from memory, and GetTopHolders at the
    /// head recomputed at each commit for the questions asked lately; 0 turns both off.
    #[arg(long, env = "QUERY_ANSWER_CACHE", default_value_t = 256)]
    pub answer_cache: u32,

    /// Where to serve Prometheus metrics (GET /metrics).
    #[arg(long, env = "METRICS_ADDR", default_value = DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: SocketAddr,

    /// After SIGTERM or SIGINT, how long to finish open requests (streams end at once
    /// with UNAVAILABLE) before exiting anyway. Keep it below the pod's
    /// terminationGracePeriodSeconds.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "20s", value_parser = bootstrap::parse_duration)]
    pub shutdown_grace: Duration,

    /// Serve gRPC over TLS with this certificate chain (PEM file); needs --tls-key.
    #[arg(long, env = "GRPC_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The private key (PEM file) of --tls-cert.
    #[arg(long, env = "GRPC_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Clients must present a certificate signed by this CA (PEM file): mutual TLS. Needs
    /// --tls-cert and --tls-key; clients without such a certificate fail the handshake.
    #[arg(long, env = "GRPC_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<std::path::PathBuf>,

    /// API keys: a file of `<name> <sha256 hex of the key>` lines (`#` comments), re-read
    /// when it changes. When set, every call but health needs `authorization: Bearer
    /// <key>`.
    #[arg(long, env = "QUERY_API_KEYS_FILE")]
    pub api_keys_file: Option<std::path::PathBuf>,

    /// With --api-keys-file: let server reflection answer callers without a key (by
    /// default it needs one, like every other method).
    #[arg(long, env = "QUERY_REFLECTION_WITHOUT_KEY")]
    pub reflection_without_key: bool,

    /// Per-caller rate limit, a token bucket per API key name (per client IP without
    /// keys): `<calls>/<s|m|h>[,burst=<calls>]`, e.g. `100/s,burst=200`. Unset: no limit.
    #[arg(long, env = "QUERY_RATE_LIMIT")]
    pub rate_limit: Option<crate::access::RateLimit>,

    /// Expensive calls (rankings and pages at a past moment, calls with min_balance,
    /// exports) run at most this
    /// many at once, on database connections of their own (besides
    /// --database-pool-size), so they never take the connections cheap answers need.
    #[arg(long, env = "QUERY_EXPENSIVE_CONNECTIONS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub expensive_connections: u16,

    /// How long an expensive call waits for its turn before RESOURCE_EXHAUSTED.
    #[arg(long, env = "QUERY_EXPENSIVE_WAIT", default_value = "2s", value_parser = bootstrap::parse_duration)]
    pub expensive_wait: Duration,

    /// Database connections of the streams' own (their start, replays and catch-ups),
    /// besides --database-pool-size: a burst of streams never queues cheap answers.
    #[arg(long, env = "QUERY_STREAM_CONNECTIONS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub stream_connections: u16,

    /// Drop a connection that has not sent its HTTP/2 preface (with TLS: its ClientHello)
    /// this long after connecting.
    #[arg(long, env = "GRPC_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = bootstrap::parse_duration)]
    pub handshake_timeout: Duration,

    /// Most concurrent HTTP/2 streams (calls) per client connection.
    #[arg(long, env = "GRPC_MAX_CONCURRENT_STREAMS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,

    /// HTTP/2 keepalive: ping an idle connection this often and drop it when the ping is
    /// not answered within as long again (capped at 20 s).
    #[arg(long, env = "GRPC_HTTP2_KEEPALIVE", default_value = "30s", value_parser = bootstrap::parse_duration)]
    pub http2_keepalive: Duration,

    /// Largest request message accepted, in bytes; larger ones get RESOURCE_EXHAUSTED.
    #[arg(long, env = "GRPC_MAX_REQUEST_BYTES", default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(1024..))]
    pub max_request_bytes: u32,

    /// The secret page tokens and stream cursors are signed with (HMAC-SHA256), at least 32
    /// bytes; give every replica the same. Unset: the store's own key (made by the
    /// ingestor's migration, shared by every reader of that database).
    #[arg(long, env = "QUERY_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,

    /// Export traces to this OpenTelemetry collector (OTLP/gRPC, e.g.
    /// http://otel-collector:4317). Unset: no traces.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Log format: text (for people) or json (for log collectors). Level from RUST_LOG.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = bootstrap::LogFormat::Text)]
    pub log_format: bootstrap::LogFormat,
}

impl Config {
    /// The TLS identity of --tls-cert and --tls-key (and the client CA of
    /// --tls-client-ca), read from their files.
    pub fn tls(&self) -> anyhow::Result<Option<crate::Tls>> {
        use anyhow::Context;
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else { return Ok(None) };
        let client_ca_pem = match &self.tls_client_ca {
            Some(ca) => Some(
                std::fs::read(ca)
                    .with_context(|| format!("reading --tls-client-ca {}", ca.display()))?,
            ),
            None => None,
        };
        Ok(Some(crate::Tls {
            cert_pem: std::fs::read(cert)
                .with_context(|| format!("reading --tls-cert {}", cert.display()))?,
            key_pem: std::fs::read(key)
                .with_context(|| format!("reading --tls-key {}", key.display()))?,
            client_ca_pem,
        }))
    }

    /// The server's settings, besides where it listens and what it reads.
    pub fn settings(&self) -> anyhow::Result<crate::Settings> {
        Ok(crate::Settings {
            health_interval: self.health_interval,
            max_streams: self.max_streams as usize,
            max_streams_per_caller: self.max_streams_per_caller as usize,
            stream_buffer: self.stream_buffer as usize,
            metrics_listen: Some(self.metrics_listen),
            answer_cache: self.answer_cache as usize,
            tls: self.tls()?,
            statement_timeout: self.statement_timeout,
            api_keys_file: self.api_keys_file.clone(),
            reflection_without_key: self.reflection_without_key,
            rate_limit: self.rate_limit,
            expensive_connections: usize::from(self.expensive_connections),
            expensive_wait: self.expensive_wait,
            stream_connections: usize::from(self.stream_connections),
            feed_database_url: self.feed_database_url.clone(),
            max_replica_lag: self.max_replica_lag,
            min_block_wait: self.min_block_wait,
            min_block_waiters: self.min_block_waiters as usize,
            http: crate::Http {
                handshake_timeout: self.handshake_timeout,
                max_concurrent_streams: self.max_concurrent_streams,
                keepalive: self.http2_keepalive,
                max_request_bytes: self.max_request_bytes as usize,
            },
            token_secret: self.token_secret.as_ref().map(|s| s.as_bytes().to_vec()),
        })
    }

    /// Checks what clap cannot. The error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        for (flag, path) in [
            ("--tls-cert (GRPC_TLS_CERT)", &self.tls_cert),
            ("--tls-key (GRPC_TLS_KEY)", &self.tls_key),
            ("--tls-client-ca (GRPC_TLS_CLIENT_CA)", &self.tls_client_ca),
        ] {
            if let Some(path) = path
                && let Err(e) = std::fs::File::open(path)
            {
                return Err(format!("{flag} {}: {e}", path.display()));
            }
        }
        // The certificate, key and client CA must make a TLS server now, not when the
        // first client connects (after SERVING).
        if let Some(tls) = self.tls().map_err(|e| format!("{e:#}"))? {
            let identity = tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem);
            let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
            if let Some(ca) = &tls.client_ca_pem {
                config = config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
            }
            if let Err(e) = tonic::transport::Server::builder().tls_config(config) {
                let why = std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string());
                return Err(format!(
                    "--tls-cert/--tls-key/--tls-client-ca (GRPC_TLS_CERT, GRPC_TLS_KEY, GRPC_TLS_CLIENT_CA) do not make a TLS server: {why}"
                ));
            }
        }
        if let Some(path) = &self.api_keys_file {
            crate::access::KeysFile::load(path)
                .map_err(|e| format!("--api-keys-file (QUERY_API_KEYS_FILE) {e}"))?;
        }
        if self.reflection_without_key && self.api_keys_file.is_none() {
            return Err(
                "--reflection-without-key (QUERY_REFLECTION_WITHOUT_KEY) needs --api-keys-file"
                    .into(),
            );
        }
        if tokio_postgres::Config::from_str(&self.database_url).is_err() {
            return Err("--database-url (DATABASE_URL) is not a PostgreSQL URL (postgres://user@host:5432/db)".into());
        }
        if let Some(url) = &self.feed_database_url
            && tokio_postgres::Config::from_str(url).is_err()
        {
            return Err("--feed-database-url (FEED_DATABASE_URL) is not a PostgreSQL URL".into());
        }
        if let Some(secret) = &self.token_secret
            && secret.len() < crate::input::MIN_SECRET
        {
            return Err(format!(
                "--token-secret (QUERY_TOKEN_SECRET) is {} bytes; give at least {} (e.g. `openssl rand -hex 32`)",
                secret.len(),
                crate::input::MIN_SECRET
            ));
        }
        if self.max_replica_lag.is_zero() {
            return Err("--max-replica-lag (QUERY_MAX_REPLICA_LAG) must be above 0".into());
        }
        if self.handshake_timeout.is_zero() {
            return Err("--handshake-timeout (GRPC_HANDSHAKE_TIMEOUT) must be above 0".into());
        }
        if self.http2_keepalive.is_zero() {
            return Err("--http2-keepalive (GRPC_HTTP2_KEEPALIVE) must be above 0".into());
        }
        if self.statement_timeout.is_zero() {
            return Err("--statement-timeout (QUERY_STATEMENT_TIMEOUT) must be above 0".into());
        }
        if self.health_interval.is_zero() {
            return Err("--health-interval (QUERY_HEALTH_INTERVAL) must be above 0".into());
        }
        Ok(())
    }
}
