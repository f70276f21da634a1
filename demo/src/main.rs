//! The local demo: a chain on Anvil with a realistic token history, the `ingestor` and
//! `query-service` binaries run as a user would run them, and the top holders asked for
//! through grpcurl. `scripts/demo.sh` installs what it needs and runs it.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::Context;
use proto::pb::GetTopHoldersRequest;
use rig::anvil::Anvil;
use rig::chain::Chain;
use rig::history::{self, Spec};
use tokio::process::Command;

const DEMO_DB: &str = "holders_demo";

/// The chain's first block time, 2026-11-01T00:00:00Z: fixed and in the past, so that every
/// run makes the same chain (the history's seed is fixed too) and the output quoted in
/// README and docs/grpc.md stays true, dates included.
const GENESIS: u64 = 1_793_491_200;

/// The local demo: deploys a compiled ERC-20 on a fresh Anvil, makes 14 days of history,
/// indexes it with the ingestor (into the database holders_demo, dropped and made anew
/// at the admin DATABASE_URL) and serves it with the query-service.
#[derive(Debug, clap::Parser)]
#[command(name = "demo", about, long_about = None)]
struct Args {
    /// Leave the chain, the ingestor and the query-service running for the tour, until
    /// Ctrl-C.
    #[arg(long)]
    keep_running: bool,

    /// Where the query-service serves gRPC.
    #[arg(long, env = "DEMO_LISTEN", default_value = "127.0.0.1:50051")]
    listen: String,
}

#[allow(clippy::print_stdout)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // --help and unknown arguments end here, before anything is dropped or started.
    let Args { keep_running, listen } = clap::Parser::parse();
    let bin_dir = std::env::current_exe()?.parent().context("binary folder")?.to_path_buf();

    step("starting Anvil (genesis 2026-11-01T00:00:00Z)");
    let anvil = Anvil::start(GENESIS).await?;
    let mut chain = Chain::connect(&anvil.url).await?;

    step("deploying TestToken and making 14 days of history");
    let spec = Spec {
        holders: 2_000,
        days: 14,
        blocks_per_day: 4,
        transfers_per_block: 40,
        spray_width: 100,
        extreme_amounts: false,
        seed: 2026,
    };
    let started = std::time::Instant::now();
    let h = history::build(&mut chain, spec).await?;
    println!(
        "    token {} · {} transfers in blocks {}..={} · {:.1} s",
        h.token,
        h.transfers,
        h.start_block,
        h.end_block,
        started.elapsed().as_secs_f64()
    );

    step(&format!("creating database {DEMO_DB}"));
    let admin = rig::db::admin_url();
    let client = rig::db::connect(&admin).await?;
    client.execute(&format!("DROP DATABASE IF EXISTS {DEMO_DB} WITH (FORCE)"), &[]).await?;
    client.execute(&format!("CREATE DATABASE {DEMO_DB}"), &[]).await?;
    let database_url = rig::db::url_with_db(&admin, DEMO_DB);

    step("ingestor: backfilling the token's whole history");
    let from = h.start_block.to_string();
    let to = h.end_block.to_string();
    let token = h.token.to_string();
    let ingest = [
        "--rpc-url",
        &anvil.url,
        "--database-url",
        &database_url,
        "--token",
        &token,
        "--from",
        &from,
        "--to",
        &to,
    ];
    println!("    $ ingestor --rpc-url {} --token {token} --from {from} --to {to}", anvil.url);
    let status = Command::new(bin_dir.join("ingestor"))
        .args(ingest)
        .args(rig::pair::LOCAL_PORTS)
        .status()
        .await?;
    anyhow::ensure!(status.success(), "the ingestor failed: {status}");

    step(&format!("query-service on {listen}"));
    let mut qs = Command::new(bin_dir.join("query-service"))
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(["--database-url", &database_url, "--listen", &listen])
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let endpoint = format!("http://{listen}");
    let mut grpc = rig::pair::wait_for_client(&endpoint).await?;

    step("top 10 holders, through grpcurl (reflection, no .proto file)");
    match grpcurl() {
        Some(grpcurl) => {
            let list =
                Command::new(&grpcurl).args(["-plaintext", &listen, "list"]).output().await?;
            println!(
                "    $ grpcurl -plaintext {listen} list\n{}",
                indent(&String::from_utf8_lossy(&list.stdout))
            );
            let args = [
                "-plaintext",
                "-d",
                r#"{"limit": 3}"#,
                &listen,
                "holders.v1.HolderService/GetTopHolders",
            ];
            let out = Command::new(&grpcurl).args(args).output().await?;
            anyhow::ensure!(
                out.status.success(),
                "grpcurl failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            println!(
                "    $ grpcurl -plaintext -d '{{\"limit\": 3}}' {listen} holders.v1.HolderService/GetTopHolders\n{}",
                indent(&String::from_utf8_lossy(&out.stdout))
            );
        }
        None => println!(
            "    (grpcurl not found: run scripts/tools.sh; showing the answer through the Rust client)"
        ),
    }
    let top = grpc
        .get_top_holders(GetTopHoldersRequest { limit: 10, ..Default::default() })
        .await?
        .into_inner();
    println!(
        "    as of block {} · total supply {} {}",
        top.as_of_block, top.total_supply, top.symbol
    );
    println!(
        "    {:>4}  {:<42}  {:>24}  {:>8}  {:>9}",
        "rank", "address", "balance", "share %", "7d %"
    );
    for holder in &top.holders {
        println!(
            "    {:>4}  {:<42}  {:>24}  {:>8.3}  {:>9}",
            holder.rank,
            holder.address,
            holder.balance_formatted,
            holder.share_of_supply_percent,
            holder.weekly_change_percent.map_or("-".into(), |p| format!("{p:+.2}"))
        );
    }

    if keep_running {
        step("serving until Ctrl-C; try:");
        println!("    grpcurl -plaintext {listen} describe holders.v1.HolderService");
        println!(
            "    grpcurl -plaintext -d '{{\"page_size\": 5}}' {listen} holders.v1.HolderService/GetHolders"
        );
        tokio::signal::ctrl_c().await?;
    }
    let _ = qs.start_kill();
    let _ = qs.wait().await;
    drop(anvil);
    step("done");
    Ok(())
}

#[allow(clippy::print_stdout)]
fn step(what: &str) {
    println!("\n==> {what}");
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

fn grpcurl() -> Option<PathBuf> {
    let local = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.tools/bin/grpcurl"));
    if local.exists() {
        return Some(local);
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join("grpcurl"))
        .find(|p| p.exists())
}
