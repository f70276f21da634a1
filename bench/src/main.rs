//! The backfill and query benchmark. On one machine, against one Anvil and one Postgres:
//! makes a chain with many Transfers and a realistic holder distribution; times our
//! `ingestor` backfilling it end to end (and checks the result against the chain); times
//! the seed-equivalent strategy on the same chain (a sample, extrapolated); loads the
//! query-service at 1M and 10M holders. Prints a table and, with `--results FILE`,
//! writes it into that file's results section (`docs/performance.md`). `scripts/bench.sh`
//! builds release and runs it. Nothing else in the project writes that file.

mod backfill;
mod chain;
mod cpu;
mod during;
mod export;
mod fetch;
mod fill;
mod load;
mod overload;
mod perf;
mod report;
mod seed;
mod sets;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rig::anvil::Anvil;
use tokio::process::Command;

/// Benchmark of the ingestor backfill and the query-service.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// Transfers in the chain (mints included).
    #[arg(long, default_value_t = 1_000_000)]
    transfers: u64,
    /// Holders in the chain.
    #[arg(long, default_value_t = 100_000)]
    holders: usize,
    /// Transfers per block (one transaction each). Anvil's cost grows with the number of
    /// blocks, so fewer, fuller blocks make the chain several times faster.
    #[arg(long, default_value_t = 1000)]
    per_block: usize,
    /// How long the seed-equivalent strategy runs before it is extrapolated.
    #[arg(long, default_value = "60s", value_parser = bootstrap::parse_duration)]
    seed_budget: Duration,
    /// Holder counts at which the query-service is loaded.
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    query_holders: Vec<u64>,
    /// Seconds of each load phase.
    #[arg(long, default_value_t = 10)]
    query_seconds: u64,
    /// Clients of the throughput phase.
    #[arg(long, default_value_t = 8)]
    query_clients: usize,
    /// Also time the backfill with these ingestor flags (e.g. "--concurrency 1";
    /// `NAME=value` words set its environment), once per occurrence, on the same chain:
    /// what each technique is worth. The defaults'
    /// run comes first and is the one compared with the Python script's strategy.
    #[arg(long = "also", allow_hyphen_values = true)]
    variants: Vec<String>,
    /// Profile the default backfill with `perf record -a` (cpu-clock) and summarise it.
    #[arg(long)]
    perf: bool,
    /// Only the backfill figures (chain, raw fetch, backfills): no Python-script run, no
    /// query load.
    #[arg(long)]
    only_backfill: bool,
    /// Only the query-service at `--query-holders` (stores filled by COPY): no chain, no
    /// backfill.
    #[arg(long, conflicts_with = "only_backfill")]
    only_queries: bool,
    /// Only the overload benchmark: the query-service on a filled store, cheap calls,
    /// expensive calls at twice what it serves and 1,000 streams (written between the
    /// overload markers with --results).
    #[arg(long, conflicts_with_all = ["only_backfill", "only_queries"])]
    only_overload: bool,
    /// Holders in the overload benchmark's store.
    #[arg(long, default_value_t = 100_000)]
    overload_holders: u64,
    /// Seconds of overload.
    #[arg(long, default_value_t = 60)]
    overload_seconds: u64,
    /// The query-service's --expensive-connections in the overload benchmark: as many as
    /// this machine's cores, which also run Postgres, the load and the service (a wider
    /// lane serves no more here and leaves cheap answers less CPU).
    #[arg(long, default_value_t = 2)]
    overload_lane: usize,
    /// Only the token-set benchmark: a chain of `--set-tokens` tokens sharing
    /// `--transfers` by a power law beside one token with as many alone (written between
    /// the sets markers with --results).
    #[arg(long, conflicts_with_all = ["only_backfill", "only_queries", "only_overload"])]
    only_sets: bool,
    /// Tokens with transfers in the token-set benchmark.
    #[arg(long, default_value_t = 1_000)]
    set_tokens: usize,
    /// Tokens deployed in all (the rest without transfers), for the memory of a large
    /// tokens file.
    #[arg(long, default_value_t = 10_000)]
    set_file_tokens: usize,
    /// Write the results between the bench markers of this file (docs/performance.md).
    #[arg(long, alias = "readme")]
    results: Option<PathBuf>,
}

#[allow(clippy::print_stdout)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = std::env::current_exe()?.parent().context("binary folder")?.to_path_buf();
    let admin = rig::db::admin_url();
    let mut report = report::Report::new(&args);
    if args.only_overload {
        let url = fresh_db(&admin, "holders_bench_overload").await?;
        migrate(&bin, &url).await?;
        let o = overload::run(
            &bin,
            &url,
            args.overload_holders,
            args.overload_seconds,
            args.overload_lane,
        )
        .await?;
        if let Some(results) = &args.results {
            o.write_into(results)?;
            println!("written into {}", results.display());
        }
        return Ok(());
    }
    if args.only_sets {
        return only_sets(&args, &bin, &admin).await;
    }
    if args.only_queries {
        queries(&args, &bin, &admin, &mut report).await?;
        println!("\n{}", report.markdown());
        return Ok(());
    }

    println!("== chain: {} transfers among {} holders on Anvil", args.transfers, args.holders);
    let blocks = args.transfers / args.per_block as u64 + 10;
    let history_seconds = blocks * chain::block_seconds(blocks);
    let anvil =
        // Only the newest state is ever read here; without pruning Anvil writes the
        // state of every block to ~/.foundry (tens of GB for this chain) and slows down.
        Anvil::start_with(
            chain::unix_now() - history_seconds - 3600,
            &["--gas-limit", "200000000", "--prune-history", "64"],
        )
        .await?;
    let mut rpc = rig::chain::Chain::connect(&anvil.url).await?;
    let started = Instant::now();
    let built = chain::build(&mut rpc, args.holders, args.transfers, args.per_block).await?;
    report.chain_seconds = started.elapsed().as_secs_f64();
    println!(
        "   {} transfers in blocks {}..={} in {:.0} s",
        built.transfers, built.start_block, built.end_block, report.chain_seconds
    );

    println!("== raw fetch: plain eth_getLogs over the range, logs parsed, nothing stored");
    let (fetch_took, fetched) = fetch::raw(&anvil.url, &built, args.per_block).await?;
    anyhow::ensure!(
        fetched == built.transfers,
        "fetched {fetched} logs, the chain has {}",
        built.transfers
    );
    println!(
        "   {fetched} logs in {:.2} s: {:.0} logs/s",
        fetch_took.as_secs_f64(),
        fetched as f64 / fetch_took.as_secs_f64()
    );
    report.raw_fetch = Some(fetch_took.as_secs_f64());

    for flags in std::iter::once(String::new()).chain(args.variants.iter().cloned()) {
        let label = if flags.is_empty() { "defaults".to_string() } else { flags.clone() };
        println!("== ingestor backfill (release binary, end to end; {label})");
        let url = fresh_db(&admin, "holders_bench").await?;
        let recording = if args.perf && flags.is_empty() {
            perf::start(&bin.join("bench-perf.data")).await
        } else {
            None
        };
        let run = backfill::run(&bin, &anvil.url, &url, &built, &flags).await?;
        let (elapsed, peak_kib, cpu) = (run.elapsed, run.peak_kib, run.cpu);
        if let Some(recording) = recording {
            report.profile = recording.finish().await;
            println!("{}", report.profile.join("\n"));
        }
        backfill::check_store(&rpc, &url, &built).await?;
        let rankings = backfill::ranking_sizes(&url).await?;
        println!(
            "   rankings kept: {}, {:.1} MiB with their indexes; the transfers {:.0} MiB",
            rankings.0,
            rankings.1 as f64 / 1_048_576.0,
            rankings.2 as f64 / 1_048_576.0
        );
        if flags.is_empty() {
            let took = backfill::ceiling(&url).await?;
            println!(
                "   Postgres alone, the same rows into an empty copy of the table: {:.2} s, {:.0} rows/s",
                took.as_secs_f64(),
                built.transfers as f64 / took.as_secs_f64()
            );
            report.ceiling = Some(took.as_secs_f64());
        }
        println!(
            "   {} transfers in {:.2} s: {:.0} transfers/s, peak RSS {:.1} MiB; store checked against the chain",
            built.transfers,
            elapsed.as_secs_f64(),
            built.transfers as f64 / elapsed.as_secs_f64(),
            peak_kib as f64 / 1024.0
        );
        let shares: Vec<String> = cpu
            .iter()
            .map(|(p, s)| format!("{p} {s:.1} s ({:.0}%)", s / elapsed.as_secs_f64() * 100.0))
            .collect();
        println!("   CPU during the backfill: {}", shares.join(", "));
        println!(
            "   first fifth of the history {:.0} transfers/s, last fifth {:.0} (rows written); the last row at {:.2} s; {:.2}× the raw fetch's time",
            run.fifths.0,
            run.fifths.1,
            run.written_at,
            elapsed.as_secs_f64() / fetch_took.as_secs_f64()
        );
        if let Some((deep, (first, last))) = run.deep_fifths {
            println!(
                "   the {deep} transfers of the final blocks: first fifth {first:.0}/s, last fifth {last:.0}/s"
            );
        }
        report.backfills.push(report::Backfill {
            flags,
            transfers: built.transfers,
            seconds: elapsed.as_secs_f64(),
            peak_rss_mib: peak_kib as f64 / 1024.0,
            cpu,
            fifths: run.fifths,
            deep_fifths: run.deep_fifths,
            written_at: run.written_at,
            rankings,
        });
    }
    report.during = Some(backfill_with_queries(&bin, &anvil.url, &admin, &built).await?);
    if args.only_backfill {
        let table = report.markdown();
        println!("\n{table}");
        return Ok(());
    }

    println!("== the Python script's strategy (budget {:?})", args.seed_budget);
    let seed_url = fresh_db(&admin, "holders_bench_seed").await?;
    let s = seed::run(
        &anvil.url,
        &seed_url,
        built.token,
        built.start_block,
        built.end_block,
        built.transfers,
        args.seed_budget,
    )
    .await?;
    println!(
        "   {} of {} transfers in {:.1} s; the whole history {} {:.0} s: {:.1} transfers/s",
        s.transfers,
        built.transfers,
        s.elapsed.as_secs_f64(),
        if s.complete { "took" } else { "extrapolated (getLogs windows + per-event time):" },
        s.whole.as_secs_f64(),
        built.transfers as f64 / s.whole.as_secs_f64(),
    );
    report.seed = Some(s);
    drop(anvil);

    queries(&args, &bin, &admin, &mut report).await?;

    let table = report.markdown();
    println!("\n{table}");
    if let Some(results) = &args.results {
        report::write_into(results, &table)?;
        println!("written into {}", results.display());
    }
    Ok(())
}

/// The token-set benchmark ([`sets`]): the single token's chain and backfill first, then
/// the set's chain beside it on the same node.
#[allow(clippy::print_stdout)]
async fn only_sets(args: &Args, bin: &std::path::Path, admin: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.set_file_tokens >= args.set_tokens && args.set_tokens >= 8,
        "--set-file-tokens must be at least --set-tokens, and that at least 8"
    );
    let blocks = 2 * args.transfers / args.per_block as u64 + 400;
    let history_seconds = blocks * chain::block_seconds(blocks);
    let anvil = Anvil::start_with(
        chain::unix_now() - history_seconds - 3600,
        &["--gas-limit", "200000000", "--prune-history", "64"],
    )
    .await?;
    let mut rpc = rig::chain::Chain::connect(&anvil.url).await?;
    println!("== chain: one token, {} transfers among {} holders", args.transfers, args.holders);
    let single = chain::build(&mut rpc, args.holders, args.transfers, args.per_block).await?;
    let (fetch_took, fetched) = fetch::raw(&anvil.url, &single, args.per_block).await?;
    anyhow::ensure!(fetched == single.transfers, "fetched {fetched} logs of {}", single.transfers);
    println!("== backfill of the single token");
    let url = fresh_db(admin, "holders_bench").await?;
    let flags: Vec<String> = vec![
        "--token".into(),
        single.token.to_string(),
        "--from".into(),
        single.start_block.to_string(),
        "--to".into(),
        single.end_block.to_string(),
    ];
    let single_log = bin.join("bench-sets-single.log");
    let (took, peak) = sets::ingest(bin, &anvil.url, &url, &flags, &single_log).await?;
    backfill::check_store(&rpc, &url, &single).await?;
    println!(
        "   {} transfers in {:.2} s: {:.0}/s, {:.2}× the raw fetch ({:.2} s), peak RSS {:.1} MiB",
        single.transfers,
        took.as_secs_f64(),
        single.transfers as f64 / took.as_secs_f64(),
        took.as_secs_f64() / fetch_took.as_secs_f64(),
        fetch_took.as_secs_f64(),
        peak as f64 / 1024.0
    );
    println!(
        "== chain: {} tokens ({} with transfers), {} transfers by a power law",
        args.set_file_tokens, args.set_tokens, args.transfers
    );
    let set = sets::build(
        &mut rpc,
        args.set_file_tokens,
        args.set_tokens,
        args.transfers,
        args.holders,
        args.per_block,
    )
    .await?;
    let figures = sets::run(
        bin,
        &anvil.url,
        &mut rpc,
        admin,
        &single,
        took.as_secs_f64(),
        fetch_took.as_secs_f64(),
        &single_log,
        &set,
        args.per_block,
    )
    .await?;
    let section = figures.markdown(&report::machine());
    println!("\n{section}");
    if let Some(results) = &args.results {
        report::write_between(results, sets::BEGIN, sets::END, &section)?;
        println!("written into {}", results.display());
    }
    Ok(())
}

/// Loads the query-service at each of `--query-holders` (a store filled by COPY each).
#[allow(clippy::print_stdout)]
async fn queries(
    args: &Args,
    bin: &std::path::Path,
    admin: &str,
    report: &mut report::Report,
) -> anyhow::Result<()> {
    for &holders in &args.query_holders {
        println!("== query-service at {holders} holders");
        let url = fresh_db(admin, "holders_bench_query").await?;
        migrate(bin, &url).await?;
        let filled = fill::fill(&url, holders).await?;
        println!(
            "   filled {} holders and {} transfers by COPY in {:.0} s",
            filled.holders,
            filled.transfers,
            filled.elapsed.as_secs_f64()
        );
        let mut figures = Vec::new();
        for cache in [0, 256] {
            let served = load::serve(&bin.join("query-service"), &url, cache).await?;
            let cached = cache > 0;
            figures.extend(
                load::measure(&served, cached, holders, args.query_seconds, args.query_clients)
                    .await?,
            );
            if !cached {
                let past = load::measure_past(&served, holders).await?;
                for f in &past {
                    println!(
                        "   {:<52} p50 {:>9.2} ms  max {:>9.2} ms  ({} requests)",
                        f.name,
                        ms(f.p50),
                        ms(f.max),
                        f.count
                    );
                }
                report.past.push((holders, past));
                let exports = export::measure_exports(&served, holders).await?;
                for e in &exports {
                    println!(
                        "   {:<52} {} holders in {:.2} s: {:.0} holders/s ({} chunks)",
                        e.name,
                        e.holders,
                        e.elapsed.as_secs_f64(),
                        e.rate(),
                        e.chunks
                    );
                }
                report.exports.push((holders, exports));
            }
        }
        for f in &figures {
            println!(
                "   {:<36} {:<9} p50 {:>7.2} ms  p99 {:>7.2} ms  {:>6.0} req/s (1 client)  {:>6.0} req/s, p99 {:>7.2} ms ({} clients)",
                f.name,
                if f.cached { "cache on" } else { "cache off" },
                ms(f.p50),
                ms(f.p99),
                f.rps_one,
                f.rps_many,
                ms(f.p99_many),
                args.query_clients
            );
        }
        report.queries.push((filled, figures));
    }

    Ok(())
}

async fn migrate(bin: &std::path::Path, url: &str) -> anyhow::Result<()> {
    let status = Command::new(bin.join("ingestor"))
        .args(["--migrate-only", "--database-url", url])
        .args(rig::pair::LOCAL_PORTS)
        .stderr(Stdio::null())
        .status()
        .await?;
    anyhow::ensure!(status.success(), "ingestor --migrate-only failed: {status}");
    Ok(())
}

async fn fresh_db(admin: &str, name: &str) -> anyhow::Result<String> {
    let client = rig::db::connect(admin).await?;
    client.execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), &[]).await?;
    client.execute(&format!("CREATE DATABASE {name}"), &[]).await?;
    Ok(rig::db::url_with_db(admin, name))
}

/// The default backfill again, with the query-service answering on its store meanwhile
/// (from the first commit on), then as long again after it.
#[allow(clippy::print_stdout)]
async fn backfill_with_queries(
    bin: &std::path::Path,
    rpc_url: &str,
    admin: &str,
    built: &chain::BenchChain,
) -> anyhow::Result<during::DuringFigures> {
    println!("== ingestor backfill with the query-service answering meanwhile");
    let url = fresh_db(admin, "holders_bench").await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let asking = {
        let (url, qs) = (url.clone(), bin.join("query-service"));
        let (token, holders, start, end) =
            (built.token, built.holders.clone(), built.start_block, built.end_block);
        tokio::spawn(async move {
            // From the first commit: before it the token is unknown to the store.
            loop {
                if let Ok(db) = rig::db::connect(&url).await
                    && let Ok(row) = db.query_one("SELECT indexed_block FROM tokens", &[]).await
                    && row.get::<_, i64>(0) >= start as i64
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let served = load::serve(&qs, &url, 0).await?;
            let during = during::ask_until(&served, token, &holders, end, stopped).await?;
            Ok::<_, anyhow::Error>((served, during))
        })
    };
    let run = backfill::run(bin, rpc_url, &url, built, "").await?;
    let _ = stop.send(true);
    let (served, during) = asking.await??;
    let after = during::ask_for(
        &served,
        built.token,
        &built.holders,
        built.end_block,
        run.elapsed.as_secs_f64(),
    )
    .await?;
    println!(
        "   {:.2} s with the load; during: top {:.2} ms p50 ({} answers, {} timed out), lookup {:.2} ms p50; after: top {:.2} ms, lookup {:.2} ms",
        run.elapsed.as_secs_f64(),
        during::quantile(&during.top, 0.5).as_secs_f64() * 1e3,
        during.top.len(),
        during.top_timed_out,
        during::quantile(&during.lookup, 0.5).as_secs_f64() * 1e3,
        during::quantile(&after.top, 0.5).as_secs_f64() * 1e3,
        during::quantile(&after.lookup, 0.5).as_secs_f64() * 1e3,
    );
    Ok(during::DuringFigures { during, after, backfill_seconds: run.elapsed.as_secs_f64() })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
