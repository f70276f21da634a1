//! The soak as a command: `cargo run --release -p rig --bin soak -- --duration 10m`. The
//! pair under a mixed load while the ingestor follows a moving Anvil chain, with a kill -9
//! of the ingestor and a Postgres restart in the middle; prints what it saw and exits 1
//! when a check failed (see `rig::soak`).

use std::time::Duration;

use clap::Parser;

/// Soaks the ingestor and query-service pair.
#[derive(Debug, Parser)]
struct Args {
    /// How long the load runs (e.g. 10m, 90s).
    #[arg(long, default_value = "10m", value_parser = parse)]
    duration: Duration,
    /// Streams held open.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Cheap calls (cached GetTopHolders(10)) a second.
    #[arg(long, default_value_t = 20.0)]
    cheap_rate: f64,
    /// Expensive calls (GetTopHolders(100) at a past block) a second.
    #[arg(long, default_value_t = 10.0)]
    expensive_rate: f64,
    /// Transfers (a block each) the chain makes a second.
    #[arg(long, default_value_t = 2.0)]
    transfers_rate: f64,
    /// The cheap p99 is recovered at twice its value before the faults, or this if lower.
    #[arg(long, default_value = "10ms", value_parser = parse_ms)]
    p99_floor: Duration,
}

fn parse_ms(s: &str) -> Result<Duration, String> {
    s.strip_suffix("ms")
        .and_then(|n| n.parse().ok())
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is not a duration like 10ms"))
}

fn parse(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("{s:?} is not a duration like 10m or 90s"))?;
    match unit {
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?} is not a duration like 10m or 90s")),
    }
}

#[allow(clippy::print_stdout)]
#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let a = Args::parse();
    let report = rig::soak::run(rig::soak::SoakSpec {
        duration: a.duration,
        streams: a.streams,
        cheap_per_sec: a.cheap_rate,
        expensive_per_sec: a.expensive_rate,
        transfers_per_sec: a.transfers_rate,
        p99_floor: a.p99_floor,
    })
    .await?;
    print!("{}", report.summary());
    Ok(if report.failures.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
