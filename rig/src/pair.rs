//! The ingestor and the query-service, run in-process the way their binaries run them,
//! and a gRPC client of the query-service.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use proto::pb::holder_service_client::HolderServiceClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Flags that put the ingestor's metrics and health on free local ports, so that several
/// can run side by side.
pub const LOCAL_PORTS: [&str; 4] =
    ["--metrics-listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"];

/// Rankings kept often and shallow, so that a small test history has many, most of them
/// incomplete: every past ranking a test asks for goes through them, and
/// `World::assert_balances_in` checks each against the transfers.
pub const TEST_RANKINGS: [&str; 4] = ["--ranking-every", "25", "--ranking-depth", "8"];

/// The `ingestor` binary following `rpc_url` into `database_url` from block `from`, as
/// the rig's long-lived stores run it: new blocks seen within a quarter second, final
/// `finality_depth` blocks below the head, rankings as [`TEST_RANKINGS`], local ports;
/// its log goes to `stderr`. Killed when dropped.
pub fn follow_binary(
    rpc_url: &str,
    database_url: &str,
    token: alloy_primitives::Address,
    from: u64,
    finality_depth: u64,
    stderr: std::process::Stdio,
) -> anyhow::Result<tokio::process::Child> {
    use anyhow::Context;
    tokio::process::Command::new(ingestor_binary()?)
        .args(["--rpc-url", rpc_url, "--database-url", database_url])
        .args(["--token", &token.to_string(), "--from", &from.to_string()])
        .args(["--poll-interval", "250ms", "--finality-from", "depth"])
        .args(["--finality-depth", &finality_depth.to_string()])
        .args(LOCAL_PORTS)
        .args(TEST_RANKINGS)
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .context("starting the ingestor")
}

/// Runs the ingestor with these flags (besides --rpc-url and --database-url) until it
/// exits: a bounded range (--from and --to) exits by itself.
pub async fn ingest(rpc_url: &str, database_url: &str, flags: &[&str]) -> anyhow::Result<()> {
    ingest_until(rpc_url, database_url, flags, CancellationToken::new()).await
}

/// Runs the ingestor with these flags until it exits or `shutdown` is cancelled.
pub async fn ingest_until(
    rpc_url: &str,
    database_url: &str,
    flags: &[&str],
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut args = vec!["ingestor", "--rpc-url", rpc_url, "--database-url", database_url];
    args.extend_from_slice(&LOCAL_PORTS);
    if !flags.contains(&"--ranking-every") {
        args.extend_from_slice(&TEST_RANKINGS);
    }
    args.extend_from_slice(flags);
    let config = ingestor::Config::try_parse_from(args)?;
    config.validate().map_err(anyhow::Error::msg)?;
    ingestor::run(config, shutdown).await
}

/// A query-service serving on a free port until dropped.
#[derive(Debug)]
pub struct QueryService {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
}

impl QueryService {
    /// Starts serving `database_url` on 127.0.0.1 at a free port.
    pub async fn start(database_url: &str) -> anyhow::Result<Self> {
        let settings = query_service::Settings {
            health_interval: Duration::from_millis(200),
            max_streams: 300,
            stream_buffer: 4096,
            answer_cache: 64,
            ..Default::default()
        };
        Self::start_with(database_url, settings).await
    }

    /// Starts serving `database_url` with these settings.
    pub async fn start_with(
        database_url: &str,
        settings: query_service::Settings,
    ) -> anyhow::Result<Self> {
        let pool = query_service::store::pool(database_url, 8, Duration::from_secs(5))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        tokio::spawn(query_service::serve(
            listener,
            database_url.to_string(),
            pool,
            settings,
            shutdown.clone(),
        ));
        Ok(Self { addr, shutdown })
    }

    /// A client of it.
    pub async fn client(&self) -> anyhow::Result<HolderServiceClient<Channel>> {
        Ok(HolderServiceClient::connect(format!("http://{}", self.addr)).await?)
    }
}

impl Drop for QueryService {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The `ingestor` binary built next to the test binaries (`cargo test --workspace` builds
/// it for the ingestor's own CLI tests), or next to a binary of this crate.
pub fn ingestor_binary() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().ok_or_else(|| anyhow::anyhow!("no target folder"))?;
    if dir.ends_with("deps") {
        dir = dir.parent().ok_or_else(|| anyhow::anyhow!("no target folder"))?;
    }
    let bin = dir.join("ingestor");
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: run `cargo build --bins` (scripts/test.sh does)",
        bin.display()
    );
    Ok(bin)
}

/// A client of the query-service at `endpoint` (http://host:port), waiting up to 10 s for
/// it to listen.
pub async fn wait_for_client(endpoint: &str) -> anyhow::Result<HolderServiceClient<Channel>> {
    for _ in 0..100 {
        if let Ok(client) = HolderServiceClient::connect(endpoint.to_string()).await {
            return Ok(client);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the query-service did not answer at {endpoint}")
}
