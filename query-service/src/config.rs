//! The query-service's settings: each a flag with an environment variable, parsed and
//! checked once at start.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// Where the query-service serves gRPC unless told.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:50051";

/// Where the query-service serves Prometheus metrics unless told: a port of its own,
/// apart from the ingestor's (9090), so that both run side by side on one host.
pub const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:9091";

/// Serves the indexed holders of ERC-20 tokens over gRPC (holders.v1.HolderService), with
/// grpc.health.v1 and server reflection.
#[derive(Debug, Clone, Parser)]
#[command(name = "query-service", version, about, long_about = None)]
pub struct Config {
    /// PostgreSQL URL of the ingestor's database (read-only access is enough).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

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

    /// Events the live feed keeps for subscribers that fall behind; one further behind
    /// catches up from the database.
    #[arg(long, env = "QUERY_STREAM_BUFFER", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(16..))]
    pub stream_buffer: u32,

    /// Ranked answers (top holders, ranking pages) kept per store state, so repeated
    /// questions between two commits are answered from memory; 0 turns it off.
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

    /// Log format: text (for people) or json (for log collectors). Level from RUST_LOG.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = bootstrap::LogFormat::Text)]
    pub log_format: bootstrap::LogFormat,
}

impl Config {
    /// The TLS identity of --tls-cert and --tls-key, read from their files.
    pub fn tls(&self) -> anyhow::Result<Option<crate::Tls>> {
        use anyhow::Context;
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else { return Ok(None) };
        Ok(Some(crate::Tls {
            cert_pem: std::fs::read(cert)
                .with_context(|| format!("reading --tls-cert {}", cert.display()))?,
            key_pem: std::fs::read(key)
                .with_context(|| format!("reading --tls-key {}", key.display()))?,
        }))
    }

    /// Checks what clap cannot. The error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        for (flag, path) in [
            ("--tls-cert (GRPC_TLS_CERT)", &self.tls_cert),
            ("--tls-key (GRPC_TLS_KEY)", &self.tls_key),
        ] {
            if let Some(path) = path
                && let Err(e) = std::fs::File::open(path)
            {
                return Err(format!("{flag} {}: {e}", path.display()));
            }
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
