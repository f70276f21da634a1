//! The test rig: real parts for the end-to-end tests of the pair (`tests/`), the demo
//! (`demo/`) and the benchmarks (`bench/`).
//!
//! - [`anvil`]: an Anvil node on a free port;
//! - [`chain`]: JSON-RPC to it, the compiled TestToken contract and its calls;
//! - [`history`]: a deterministic token history (mints, transfers, burns, batches,
//!   self-transfers, zero values, amounts past 2^128, days apart);
//! - [`many`]: many tokens on one chain, deployed at different blocks, with activity;
//! - [`db`]: a throwaway database per test on the Postgres at `DATABASE_URL`;
//! - [`pair`]: the ingestor and the query-service run in-process, and a gRPC client;
//! - [`proxy`]: a JSON-RPC proxy that refuses wide `eth_getLogs` spans in providers' words
//!   and injects every other fault a provider shows;
//! - [`silent_heads`]: a WebSocket proxy whose subscription goes silent;
//! - [`cluster`]: a private Postgres server to stop and restart;
//! - [`load`]: a mixed load on a query-service (cheap, expensive, streams, health);
//! - [`soak`]: that load on the whole pair while the chain moves, through a kill -9 of
//!   the ingestor and a Postgres restart, then every answer checked.

pub mod anvil;
pub mod chain;
pub mod cluster;
pub mod db;
pub mod history;
pub mod load;
pub mod many;
pub mod pair;
pub mod proxy;
pub mod silent_heads;
pub mod soak;

/// Logs of the code under test, shown for failing tests (RUST_LOG picks the level).
pub fn init_test_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// `n` with a comma every three digits (1,000,000), as providers and our reports write it.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
