//! The ingestor's settings: each a flag with an environment variable, parsed and checked
//! once at start.

use std::time::Duration;

use alloy_primitives::Address;
use clap::Parser;

/// The DOG token (The Doge NFT) on Ethereum mainnet, the first user's token.
pub const DOG_TOKEN: &str = "0xBAac2B4491727D78D2b78815144570b9f2Fe8899";

/// Where the ingestor serves Prometheus metrics unless told: a port of its own, apart
/// from the query-service's, so that both run side by side on one host.
pub const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:9090";

/// Where the ingestor serves grpc.health.v1 unless told.
pub const DEFAULT_HEALTH_LISTEN: &str = "0.0.0.0:50052";

/// The settings that may come from a file (`<VAR>_FILE`).
pub const SECRETS: [bootstrap::Secret; 2] =
    [("--database-url", "DATABASE_URL"), ("--rpc-url", "RPC_URL")];

/// Where a token's index starts (`--from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// This block.
    Block(u64),
    /// The chain's newest block when the ingestor starts.
    Head,
}

fn parse_from(s: &str) -> Result<From, String> {
    if s.eq_ignore_ascii_case("head") {
        return Ok(From::Head);
    }
    s.parse().map(From::Block).map_err(|_| {
        format!("'{s}' is neither a block number nor `head` (follow from the newest block)")
    })
}

/// Where finality comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FinalityFrom {
    /// The node's `finalized` and `safe` block tags (--finality-depth where it has none).
    Node,
    /// Always --finality-depth below the head.
    Depth,
}

/// Indexes an ERC-20 token's Transfer events into PostgreSQL.
///
/// `--from A --to B` indexes that range and exits; `--from A` indexes to the head, then
/// follows new blocks; with neither, it follows from the latest block (or resumes after
/// the stored checkpoint).
#[derive(Debug, Clone, Parser)]
#[command(name = "ingestor", version, about, long_about = None)]
pub struct Config {
    /// Ethereum JSON-RPC endpoint: http(s)://, or ws(s):// to hear of new blocks by an
    /// eth_subscribe newHeads subscription (polling stays as the fallback). Several
    /// (repeated, or comma-separated) fail over in order: a 5xx, reset, timeout or rate
    /// limit moves the ingestor to the next.
    #[arg(long, global = true, env = "RPC_URL", hide_env_values = true, value_delimiter = ',')]
    pub rpc_url: Vec<String>,

    /// Send at most this many JSON-RPC calls within any one second, all tasks together (a
    /// call in a batch counts as one); 0 for no limit. Keeps a free provider plan inside
    /// its quota.
    #[arg(long, global = true, env = "RPC_MAX_REQUESTS_PER_SECOND", default_value_t = 0)]
    pub max_requests_per_second: u32,

    /// PostgreSQL URL, e.g. postgres://user:password@host:5432/db (required).
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// ERC-20 token contract to index (mixed-case addresses must carry a valid EIP-55
    /// checksum); repeat it (or give a comma-separated list) for a token set. With none
    /// here, in TOKEN_ADDRESS or in --tokens-file: DOG. `verify` checks these only.
    #[arg(long = "token", global = true, env = "TOKEN_ADDRESSES", value_delimiter = ',', value_parser = parse_address)]
    pub tokens: Vec<Address>,

    /// One token (the setting of earlier versions; adds to TOKEN_ADDRESSES).
    #[arg(long = "token-address", global = true, env = "TOKEN_ADDRESS", hide = true, value_parser = parse_address)]
    pub token_address: Option<Address>,

    /// A file of tokens, one a line: `<address> [start block]`, `#` starts a comment.
    /// Read again when it changes (also when replaced by a rename, as a Kubernetes
    /// ConfigMap is): a token added is backfilled and joins the others at the head, a
    /// token removed stops being indexed (its data stays).
    #[arg(long, global = true, env = "TOKENS_FILE")]
    pub tokens_file: Option<std::path::PathBuf>,

    /// First block to index, or `head` to follow from the newest block only (balances then
    /// count only transfers from there on). Unset: the token's creation block, found from
    /// the node (balances are sums over the whole history); a store that holds the token
    /// resumes after its checkpoint either way.
    #[arg(long, global = true, env = "FROM_BLOCK", value_parser = parse_from)]
    pub from: Option<From>,

    /// Last block to index; the ingestor exits when it is indexed.
    #[arg(long, global = true, env = "TO_BLOCK")]
    pub to: Option<u64>,

    /// eth_getLogs requests in flight at once.
    #[arg(long, global = true, env = "INGESTOR_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,

    /// Blocks in the first eth_getLogs request, alone in flight; later ones adapt to the
    /// node's answers (small, so one dense first answer cannot flood memory).
    #[arg(long, global = true, env = "INGESTOR_INITIAL_SPAN", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub initial_span: u64,

    /// Never more blocks than this in one eth_getLogs request.
    #[arg(long, global = true, env = "INGESTOR_MAX_SPAN", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_span: u64,

    /// Aim for about this many logs per eth_getLogs answer (spans grow below half of it).
    #[arg(long, global = true, env = "INGESTOR_TARGET_LOGS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub target_logs: u64,

    /// Commit a batch once it holds this many transfers. A backfill batch is written as
    /// its logs arrive, so this bounds the work a crash makes repeat, not memory.
    #[arg(long, global = true, env = "INGESTOR_BATCH_TRANSFERS", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_transfers: u64,

    /// Commit a non-empty batch that has been open this long (e.g. 500ms, 5s): how stale
    /// the checkpoint the query-service answers at may be during a backfill. A backfill
    /// batch also stays open four times as long as the previous commit took, past the
    /// interval when the range's end is nearer than it, and, as the range's last batch,
    /// until the first verified step above it has joined it.
    #[arg(long, global = true, env = "INGESTOR_BATCH_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub batch_interval: Duration,

    /// Memory, in MiB, for the balances a backfill keeps between batches (the ingestor
    /// computes every balance itself); a batch whose changed balances fill it commits.
    /// With the fetch pipeline this is most of the ingestor's memory.
    #[arg(long, global = true, env = "INGESTOR_BALANCE_CACHE_MB", default_value_t = 48, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub balance_cache_mb: u64,

    /// Keep a ranking of the richest holders every this many transfers (0: none), at the
    /// end of a block, in the batch's transaction: a ranking at a past block then reads
    /// the transfers since the nearest one below it, not the history.
    #[arg(long, global = true, env = "INGESTOR_RANKING_EVERY", default_value_t = 10_000)]
    pub ranking_every: u32,

    /// Holders per kept ranking: past answers of up to about this many holders (fewer
    /// when many of them moved since) come from a ranking.
    #[arg(long, global = true, env = "INGESTOR_RANKING_DEPTH", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub ranking_depth: u32,

    /// How often to ask the node for new blocks while following.
    #[arg(long, global = true, env = "INGESTOR_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// Where finality comes from: `node` reads the node's `finalized` and `safe` block
    /// tags and falls back to --finality-depth where the node has none (older nodes,
    /// chains without finality); `depth` always uses --finality-depth. Blocks above the
    /// finalized one are indexed in verified steps and rolled back on a reorg; a reorg
    /// that would change a finalized block stops the ingestor rather than serve wrong data.
    #[arg(long, global = true, env = "INGESTOR_FINALITY_FROM", value_enum, default_value_t = FinalityFrom::Node)]
    pub finality_from: FinalityFrom,

    /// Without finality tags: a block this many blocks below the head is final (and one
    /// half as deep is safe).
    #[arg(long, global = true, alias = "reorg-window", env = "INGESTOR_FINALITY_DEPTH", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..))]
    pub finality_depth: u64,

    /// Index only blocks at least this many blocks below the head.
    #[arg(long, global = true, env = "INGESTOR_CONFIRMATIONS", default_value_t = 0)]
    pub confirmations: u64,

    /// Give up on one RPC request after this long.
    #[arg(long, global = true, env = "RPC_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub rpc_timeout: Duration,

    /// Attempts per RPC call or commit before the ingestor gives up (exponential backoff
    /// with jitter between them).
    #[arg(long, global = true, env = "RPC_MAX_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,

    /// Give up when the database or every node has been unreachable this long (e.g. 10m).
    /// Unset: wait for them however long they are away (a failover, a maintenance
    /// window), then resume; `verify` gives up after 30s unless told.
    #[arg(long, global = true, env = "INGESTOR_MAX_OUTAGE", value_parser = parse_duration)]
    pub max_outage: Option<Duration>,

    /// Longest wait between two attempts.
    #[arg(long, global = true, env = "RPC_MAX_BACKOFF", default_value = "30s", value_parser = parse_duration)]
    pub max_backoff: Duration,

    /// Database connections in the pool.
    #[arg(long, global = true, env = "DATABASE_POOL_SIZE", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub database_pool_size: u16,

    /// Where to serve Prometheus metrics (GET /metrics).
    #[arg(long, global = true, env = "METRICS_ADDR", default_value = DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: std::net::SocketAddr,

    /// Where to serve grpc.health.v1: "" is SERVING once this ingestor holds the writer
    /// lock and is within --ready-max-lag blocks of the head; "liveness" while it runs.
    #[arg(long, global = true, env = "HEALTH_ADDR", default_value = DEFAULT_HEALTH_LISTEN)]
    pub health_listen: std::net::SocketAddr,

    /// Ready (health SERVING) only within this many blocks of the head.
    #[arg(long, global = true, env = "INGESTOR_READY_MAX_LAG", default_value_t = 16)]
    pub ready_max_lag: u64,

    /// Apply the database migrations and exit (for a Kubernetes init container or Job:
    /// one owner of the schema). Needs only --database-url.
    #[arg(long, global = true, env = "INGESTOR_MIGRATE_ONLY")]
    pub migrate_only: bool,

    /// After SIGTERM or SIGINT, how long to finish (the batch in flight, open requests;
    /// streams end at once with UNAVAILABLE) before exiting anyway. Keep it below the
    /// pod's terminationGracePeriodSeconds.
    #[arg(long, global = true, env = "SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// While indexing, verify a random sample of holders against the chain this often
    /// (e.g. 10m), as `verify --sample` does, and export the result as metrics
    /// (ingestor_verify_*); off when not set.
    #[arg(long, global = true, env = "INGESTOR_VERIFY_EVERY", value_parser = parse_duration)]
    pub verify_every: Option<Duration>,

    /// Holders each periodic verification checks.
    #[arg(long, global = true, env = "INGESTOR_VERIFY_SAMPLE", default_value_t = 100)]
    pub verify_sample: u64,

    /// What to do instead of indexing.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Export traces (a span per batch and per node call) to this OpenTelemetry
    /// collector (OTLP/gRPC, e.g. http://otel-collector:4317). Unset: no traces.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Log format: text (for people) or json (for log collectors). Level from RUST_LOG.
    #[arg(long, global = true, env = "LOG_FORMAT", value_enum, default_value_t = bootstrap::LogFormat::Text)]
    pub log_format: bootstrap::LogFormat,
}

/// What the ingestor can do besides indexing.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Check the store against the chain at the indexed block: Σ balances =
    /// totalSupply(), and balanceOf of every holder (or a random sample) = the stored
    /// balance. Prints a summary and each mismatch. Exit 0: everything matches; 1: a
    /// mismatch; 2: it could not check. Settings (--rpc-url, --database-url, --token, ...)
    /// may come before or after `verify`, or from the environment.
    Verify {
        /// Check this many holders, drawn at random, instead of all.
        #[arg(long)]
        sample: Option<u64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Also compare, range by range, how many Transfer logs the first two --rpc-url
        /// nodes return (and the store holds): a provider that truncates answers shows.
        #[arg(long)]
        cross_check: bool,
        /// Blocks per range of --cross-check (halved where a node refuses).
        #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..))]
        cross_check_span: u64,
    },
}

/// Settings of indexing that `verify` does not read: hidden from `verify --help`.
const INDEX_ONLY: [&str; 24] = [
    "from",
    "to",
    "concurrency",
    "initial_span",
    "max_span",
    "target_logs",
    "batch_transfers",
    "batch_interval",
    "balance_cache_mb",
    "ranking_every",
    "ranking_depth",
    "poll_interval",
    "finality_from",
    "finality_depth",
    "confirmations",
    "database_pool_size",
    "metrics_listen",
    "health_listen",
    "ready_max_lag",
    "migrate_only",
    "shutdown_grace",
    "verify_every",
    "verify_sample",
    "otlp_endpoint",
];

/// `verify --help`: the settings are global (so that they may follow `verify`), so clap
/// would list every one; this lists only those verify reads.
pub fn verify_help() -> String {
    let mut command = <Config as clap::CommandFactory>::command();
    // Global settings reach the subcommand when the command is built.
    command.build();
    let mut verify = command
        .find_subcommand("verify")
        .cloned()
        .unwrap_or_else(|| clap::Command::new("verify"))
        .bin_name("ingestor verify");
    for id in INDEX_ONLY {
        verify = verify.mut_arg(id, |a| a.hide(true));
    }
    verify.render_long_help().to_string()
}

impl Config {
    /// How calls to the node and the database are repeated.
    pub fn retry_policy(&self) -> crate::retry::RetryPolicy {
        let max_outage = match (&self.command, self.max_outage) {
            (_, Some(most)) => Some(most),
            (Some(Command::Verify { .. }), None) => Some(Duration::from_secs(30)),
            (None, None) => None,
        };
        crate::retry::RetryPolicy::new(self.max_attempts, self.max_backoff)
            .with_max_outage(max_outage)
    }

    /// The tokens of the flags and environment (`--token`, TOKEN_ADDRESSES,
    /// TOKEN_ADDRESS), each once, in order; DOG when neither these nor a tokens file name
    /// one.
    pub fn flag_tokens(&self) -> Vec<Address> {
        let mut out: Vec<Address> = Vec::new();
        for t in self.tokens.iter().chain(self.token_address.as_ref()) {
            if !out.contains(t) {
                out.push(*t);
            }
        }
        if out.is_empty() && self.tokens_file.is_none() {
            out.push(DOG_TOKEN.parse().expect("DOG's address"));
        }
        out
    }

    /// The database URL (checked present by [`Config::validate`]).
    pub fn database_url(&self) -> &str {
        self.database_url.as_deref().unwrap_or_default()
    }

    /// Checks what clap cannot: the rules between settings. The error names the setting.
    /// (Settings are global, so that they may follow `verify`; clap cannot require a
    /// global setting, hence the checks of the required ones here.)
    pub fn validate(&self) -> Result<(), String> {
        if self.database_url.as_deref().is_none_or(str::is_empty) {
            return Err("--database-url (DATABASE_URL) is required".into());
        }
        if self.database_url().parse::<tokio_postgres::Config>().is_err() {
            return Err(
                "--database-url (DATABASE_URL) is not a PostgreSQL URL (postgres://user@host:5432/db)"
                    .into(),
            );
        }
        if let Some(Command::Verify { sample: Some(0), .. }) = self.command {
            return Err("verify --sample 0 checks nothing: give 1 or more, or leave it out to check every holder".into());
        }
        if self.rpc_url.is_empty() && !self.migrate_only {
            return Err("--rpc-url (RPC_URL) is required".into());
        }
        match (self.from, self.to) {
            (Some(From::Head), Some(_)) => {
                return Err(
                    "--to (TO_BLOCK) with --from head: give the range's first block instead".into(),
                );
            }
            (Some(From::Block(from)), Some(to)) if from > to => {
                return Err(format!("--from {from} is after --to {to}"));
            }
            _ => {}
        }
        if self.initial_span > self.max_span {
            return Err(format!(
                "--initial-span {} is above --max-span {}",
                self.initial_span, self.max_span
            ));
        }
        for (i, url) in self.rpc_url.iter().enumerate() {
            if !["http://", "https://", "ws://", "wss://"].iter().any(|s| url.starts_with(s)) {
                return Err(format!(
                    "--rpc-url (RPC_URL) #{} must start with http://, https://, ws:// or wss://",
                    i + 1
                ));
            }
        }
        Ok(())
    }
}

fn parse_address(s: &str) -> Result<Address, String> {
    bootstrap::parse_address(s).map_err(|e| e.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    bootstrap::parse_duration(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut all = vec!["ingestor", "--rpc-url", "http://x", "--database-url", "postgres://x"];
        all.extend_from_slice(args);
        let c = Config::try_parse_from(all).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn defaults_to_the_dog_token() {
        let mut c = parse(&[]).unwrap();
        // Cleared by hand: the environment may name tokens.
        (c.tokens, c.token_address, c.tokens_file) = (vec![], None, None);
        assert_eq!(c.flag_tokens(), vec![DOG_TOKEN.parse::<Address>().unwrap()]);
        c.tokens_file = Some("tokens.txt".into());
        assert!(c.flag_tokens().is_empty(), "a tokens file replaces the default");
    }

    #[test]
    fn tokens_repeat_and_merge_without_duplicates() {
        let a = "0x00000000000000000000000000000000000000aa";
        let b = "0x00000000000000000000000000000000000000bb";
        let mut c = parse(&["--token", a, "--token", &format!("{b},{a}")]).unwrap();
        c.token_address = Some(b.parse().unwrap());
        let got: Vec<String> =
            c.flag_tokens().iter().map(|t| t.to_string().to_lowercase()).collect();
        assert_eq!(got, vec![a.to_string(), b.to_string()]);
    }

    #[test]
    fn from_is_a_block_or_head() {
        assert_eq!(parse(&["--from", "7"]).unwrap().from, Some(From::Block(7)));
        assert_eq!(parse(&["--from", "head"]).unwrap().from, Some(From::Head));
        assert_eq!(parse(&[]).unwrap().from, None, "the creation block, found at start");
        assert!(parse(&["--to", "5"]).is_ok(), "from the creation block to 5");
        assert!(parse(&["--from", "6", "--to", "5"]).unwrap_err().contains("after"));
        assert!(parse(&["--from", "head", "--to", "5"]).unwrap_err().contains("--to"));
        assert!(parse(&["--from", "soon"]).unwrap_err().contains("head"));
    }

    #[test]
    fn settings_may_follow_the_subcommand() {
        let c = Config::try_parse_from([
            "ingestor",
            "verify",
            "--rpc-url",
            "http://x",
            "--database-url",
            "postgres://x",
            "--sample",
            "100",
        ])
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.rpc_url, ["http://x"]);
        assert_eq!(c.database_url(), "postgres://x");
        assert!(matches!(c.command, Some(Command::Verify { sample: Some(100), .. })));
    }

    #[test]
    fn required_settings_are_named() {
        // Cleared by hand: the environment (DATABASE_URL, RPC_URL) may hold either.
        let mut c = parse(&[]).unwrap();
        c.database_url = None;
        assert!(c.validate().unwrap_err().contains("--database-url"));
        let mut c = parse(&[]).unwrap();
        c.rpc_url.clear();
        assert!(c.validate().unwrap_err().contains("--rpc-url"));
        c.migrate_only = true;
        assert!(c.validate().is_ok(), "--migrate-only needs no node");
    }

    #[test]
    fn verify_help_lists_what_verify_reads() {
        let help = verify_help();
        for shown in ["--rpc-url", "--database-url", "--token", "--sample", "--max-outage"] {
            assert!(help.contains(shown), "{shown} missing: {help}");
        }
        for hidden in ["--from", "--batch-transfers", "--health-listen", "--ranking-every"] {
            assert!(!help.contains(hidden), "{hidden} shown: {help}");
        }
    }

    #[test]
    fn mixed_case_token_must_pass_its_checksum() {
        assert!(parse(&["--token", "0xBAAc2B4491727D78D2b78815144570b9f2Fe8899"]).is_err());
        assert!(parse(&["--token", "0xbaac2b4491727d78d2b78815144570b9f2fe8899"]).is_ok());
    }
}
