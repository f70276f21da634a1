//! The local demo: two chains on Anvil (chain ids 1 and 8453, as Ethereum and Base), a
//! DOG-like token on both at the same address with a realistic history on the first, a
//! few more tokens beside it; one `ingestor` per chain and one `query-service`, run as a
//! user would run them, asked through grpcurl. `scripts/demo.sh` installs what it needs
//! and runs it.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::Context;
use proto::pb::GetTopHoldersRequest;
use rig::anvil::Anvil;
use rig::chain::Chain;
use rig::history::{self, Spec};
use rig::many::Tokens;
use tokio::process::Command;

const DEMO_DB: &str = "holders_demo";

/// The chain's first block time, 2026-11-01T00:00:00Z: fixed and in the past, so that every
/// run makes the same chain (the history's seed is fixed too) and the output quoted in
/// README and docs/grpc.md stays true, dates included.
const GENESIS: u64 = 1_793_491_200;

/// The local demo: deploys a compiled ERC-20 on two fresh Anvil chains (ids 1 and 8453),
/// makes 14 days of history on the first and more tokens beside it, indexes both chains
/// with an ingestor each (into the database holders_demo, dropped and made anew at the
/// admin DATABASE_URL) and serves them with one query-service.
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

    step(
        "starting two Anvil chains: ids 1 (as Ethereum) and 8453 (as Base), genesis 2026-11-01T00:00:00Z",
    );
    let anvil = Anvil::start_with(GENESIS, &["--chain-id", "1"]).await?;
    let mut chain = Chain::connect(&anvil.url).await?;
    let base_anvil = Anvil::start_with(GENESIS, &["--chain-id", "8453"]).await?;
    let mut base = Chain::connect(&base_anvil.url).await?;

    step("chain 1: deploying TestToken and making 14 days of history");
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
    let names = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter().map(|(n, s)| (n.to_string(), s.to_string())).collect()
    };
    let mut more = Tokens::deploy_named(
        &mut chain,
        &names(&[("Demo Gold", "DGLD"), ("Demo Silver", "DSLV"), ("Demo Bronze", "DBRZ")]),
        200,
        7,
    )
    .await?;
    more.activity(&mut chain, 8, 5).await?;
    println!("    and 3 more tokens: {}", list(&more.addresses));

    step("chain 8453: the same deployer deploys the token first: the same address");
    let mut on_base =
        Tokens::deploy_named(&mut base, &names(&[("Test Doge", "TDOG")]), 300, 8453).await?;
    on_base.activity(&mut base, 20, 6).await?;
    anyhow::ensure!(on_base.addresses[0] == h.token, "the deployer's first contract differs");
    println!("    token {} on chain 8453 too", on_base.addresses[0]);

    step(&format!("creating database {DEMO_DB}"));
    let admin = rig::db::admin_url();
    let client = rig::db::connect(&admin).await?;
    client.execute(&format!("DROP DATABASE IF EXISTS {DEMO_DB} WITH (FORCE)"), &[]).await?;
    client.execute(&format!("CREATE DATABASE {DEMO_DB}"), &[]).await?;
    let database_url = rig::db::url_with_db(&admin, DEMO_DB);

    step("an ingestor per chain, each backfilling its tokens from their creation blocks");
    let mut set = vec![h.token, h.other_token];
    set.extend(&more.addresses);
    for (url, tokens) in [(&anvil.url, set.clone()), (&base_anvil.url, vec![h.token])] {
        let to = Chain::connect(url).await?.head().await?.to_string();
        let mut args: Vec<String> =
            vec!["--rpc-url".into(), url.clone(), "--database-url".into(), database_url.clone()];
        for t in &tokens {
            args.extend(["--token".to_string(), t.to_string()]);
        }
        args.extend(["--to".to_string(), to.clone()]);
        println!(
            "    $ ingestor --rpc-url {url} {}--to {to}",
            tokens.iter().map(|t| format!("--token {t} ")).collect::<String>()
        );
        let status = Command::new(bin_dir.join("ingestor"))
            .args(&args)
            .args(rig::pair::LOCAL_PORTS)
            .status()
            .await?;
        anyhow::ensure!(status.success(), "the ingestor failed: {status}");
    }

    step(&format!("query-service on {listen}"));
    let mut qs = Command::new(bin_dir.join("query-service"))
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(["--database-url", &database_url, "--listen", &listen])
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let endpoint = format!("http://{listen}");
    let mut grpc = rig::pair::wait_for_client(&endpoint).await?;

    step("the tokens, and one address on two chains, through grpcurl (reflection, no .proto file)");
    let token = h.token.to_string();
    match grpcurl() {
        Some(grpcurl) => {
            let list =
                Command::new(&grpcurl).args(["-plaintext", &listen, "list"]).output().await?;
            println!(
                "    $ grpcurl -plaintext {listen} list\n{}",
                indent(&String::from_utf8_lossy(&list.stdout))
            );
            for (data, method) in [
                (r#"{"page_size": 2}"#.to_string(), "ListTokens"),
                (
                    format!(r#"{{"token": "{token}", "chain_id": 8453, "limit": 2}}"#),
                    "GetTopHolders",
                ),
                (format!(r#"{{"token": "{token}", "limit": 2}}"#), "GetTopHolders"),
            ] {
                let method = format!("holders.v1.HolderService/{method}");
                let out = Command::new(&grpcurl)
                    .args(["-plaintext", "-d", &data, &listen, &method])
                    .output()
                    .await?;
                println!(
                    "    $ grpcurl -plaintext -d '{data}' {listen} {method}\n{}{}",
                    indent(&String::from_utf8_lossy(&out.stdout)),
                    indent(&String::from_utf8_lossy(&out.stderr))
                );
            }
        }
        None => println!(
            "    (grpcurl not found: run scripts/tools.sh; showing the answer through the Rust client)"
        ),
    }
    step("top 10 holders of the token on chain 1");
    let top = grpc
        .get_top_holders(GetTopHoldersRequest {
            token: token.clone(),
            chain_id: 1,
            limit: 10,
            ..Default::default()
        })
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
            "    grpcurl -plaintext -d '{{\"token\": \"{token}\", \"chain_id\": 1, \"page_size\": 5}}' {listen} holders.v1.HolderService/GetHolders"
        );
        tokio::signal::ctrl_c().await?;
    }
    let _ = qs.start_kill();
    let _ = qs.wait().await;
    drop((anvil, base_anvil));
    step("done");
    Ok(())
}

#[allow(clippy::print_stdout)]
fn step(what: &str) {
    println!("\n==> {what}");
}

/// Addresses, comma-separated.
fn list(addresses: &[impl std::fmt::Display]) -> String {
    addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
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
