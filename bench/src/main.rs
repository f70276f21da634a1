//! The backfill and query benchmark. On one machine, against one Anvil and one Postgres:
//! makes a chain with many Transfers and a realistic holder distribution; times our
//! `ingestor` backfilling it end to end (and checks the result against the chain); times
//! the seed-equivalent strategy on the same chain (a sample, extrapolated); loads the
//! query-service at 1M and 10M holders. Prints a table and, with `--results FILE`,
//! writes it into that file's results section (`docs/performance.md`). `scripts/bench.sh`
//! builds release and runs it. Nothing else in the project writes that file.

mod chain;
mod cpu;
mod during;
mod export;
mod fetch;
mod load;
mod overload;
mod perf;
mod report;
mod seed;

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
            now() - history_seconds - 3600,
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
        let run = backfill(&bin, &anvil.url, &url, &built, &flags).await?;
        let (elapsed, peak_kib, cpu) = (run.elapsed, run.peak_kib, run.cpu);
        if let Some(recording) = recording {
            report.profile = recording.finish().await;
            println!("{}", report.profile.join("\n"));
        }
        check_store(&rpc, &url, &built).await?;
        let rankings = ranking_sizes(&url).await?;
        println!(
            "   rankings kept: {}, {:.1} MiB with their indexes; the transfers {:.0} MiB",
            rankings.0,
            rankings.1 as f64 / 1_048_576.0,
            rankings.2 as f64 / 1_048_576.0
        );
        if flags.is_empty() {
            let took = ceiling(&url).await?;
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
        let filled = load::fill(&url, holders).await?;
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

/// What one backfill run measured.
struct Run {
    /// Wall time of the ingestor process.
    elapsed: Duration,
    /// Its peak RSS, KiB.
    peak_kib: u64,
    /// CPU seconds per program.
    cpu: Vec<(String, f64)>,
    /// Transfers/s over the first and the last fifth of the history, by rows written.
    fifths: (f64, f64),
    /// The transfers of the final blocks (written before the verified steps) and their
    /// own fifths, when the backfill split its last partition there.
    deep_fifths: Option<(u64, (f64, f64))>,
    /// Seconds from the start until the last transfer row was written.
    written_at: f64,
}

/// Runs the ingestor binary over the whole chain, watching how much of `transfers` is
/// written. Rows are counted as they reach the table's heap (its size, committed or not:
/// a streamed batch commits its rows seconds after writing them), so the fifths measure
/// the cost of the history's parts, not the commit schedule.
async fn backfill(
    bin: &std::path::Path,
    rpc_url: &str,
    url: &str,
    built: &chain::BenchChain,
    extra: &str,
) -> anyhow::Result<Run> {
    let db = rig::db::connect(url).await?;
    // One log per run, numbered in the order they ran.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
    let log_path = bin.join(format!(
        "bench-ingestor-{}.log",
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let log = std::fs::File::create(&log_path)?;
    let started = Instant::now();
    let mut child = Command::new(bin.join("ingestor"))
        .args(rig::pair::LOCAL_PORTS)
        .args(["--rpc-url", rpc_url, "--database-url", url, "--token", &built.token.to_string()])
        .args(["--from", &built.start_block.to_string(), "--to", &built.end_block.to_string()])
        // `NAME=value` words are the environment, the rest flags.
        .args(extra.split_whitespace().filter(|w| w.starts_with('-') || !w.contains('=')))
        .envs(
            extra
                .split_whitespace()
                .filter(|w| !w.starts_with('-'))
                .filter_map(|w| w.split_once('=')),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("ingestor pid")?;
    let mut peak = 0;
    let mut cpu = cpu::CpuWatch::default();
    let mut polls = 0u64;
    let mut timeline: Vec<(f64, u64)> = Vec::new();
    let status = loop {
        if polls.is_multiple_of(10) {
            cpu.sample();
        }
        if polls.is_multiple_of(5) {
            // The table appears once the ingestor has migrated.
            if let Ok(row) = db
                .query_one(
                    "SELECT coalesce(sum(pg_relation_size(inhrelid)), 0)::bigint
                     FROM pg_inherits WHERE inhparent = to_regclass('transfers')",
                    &[],
                )
                .await
            {
                timeline.push((started.elapsed().as_secs_f64(), row.get::<_, i64>(0) as u64));
            }
        }
        polls += 1;
        if let Some(status) = child.try_wait()? {
            break status;
        }
        peak = peak.max(vm_hwm_kib(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = started.elapsed();
    cpu.sample();
    anyhow::ensure!(status.success(), "the ingestor failed ({status}); see {}", log_path.display());
    // Bytes of heap per row, from the finished table: the timeline in rows.
    let heap: i64 = db
        .query_one(
            "SELECT coalesce(sum(pg_relation_size(inhrelid)), 0)::bigint
             FROM pg_inherits WHERE inhparent = 'transfers'::regclass",
            &[],
        )
        .await?
        .get(0);
    let per_row = heap as f64 / built.transfers.max(1) as f64;
    let mut rows: Vec<(f64, u64)> = timeline
        .iter()
        .map(|(t, bytes)| (*t, ((*bytes as f64 / per_row) as u64).min(built.transfers)))
        .collect();
    let written_at = timeline
        .iter()
        .find(|(_, bytes)| *bytes as i64 >= heap)
        .map_or(elapsed.as_secs_f64(), |(t, _)| *t);
    rows.push((written_at, built.transfers));
    rows.retain(|(t, _)| *t <= written_at);
    // The final blocks (below the split the backfill made after its last final block)
    // are written before any verified step: their own fifths.
    let deep: Option<i64> = db
        .query_one(
            "SELECT (SELECT count(*) FROM transfers WHERE block_number < s.split_at)
             FROM transfer_partition_splits s ORDER BY partition_no DESC LIMIT 1",
            &[],
        )
        .await
        .ok()
        .map(|r| r.get(0));
    let deep_fifths = deep.filter(|d| *d > 0).map(|d| {
        let d = d as u64;
        let mut part: Vec<(f64, u64)> = rows.iter().copied().take_while(|(_, n)| *n < d).collect();
        if let Some(reached) = rows.iter().find(|(_, n)| *n >= d) {
            part.push((reached.0, d));
        }
        (d, fifths(&part, d))
    });
    Ok(Run {
        elapsed,
        peak_kib: peak,
        cpu: cpu.seconds(),
        fifths: fifths(&rows, built.transfers),
        deep_fifths,
        written_at,
    })
}

/// Transfers/s over the first fifth of `total` (from the first look at the table) and
/// over the last fifth, from a timeline of (seconds, transfers written).
fn fifths(timeline: &[(f64, u64)], total: u64) -> (f64, f64) {
    let at = |share: f64| {
        timeline
            .iter()
            .find(|(_, n)| *n as f64 >= share * total as f64)
            .copied()
            .unwrap_or((0.0, 0))
    };
    let first = timeline.first().copied().unwrap_or((0.0, 0));
    let (t20, n20) = at(0.2);
    let (t80, n80) = at(0.8);
    let (t100, n100) = timeline.last().copied().unwrap_or((0.0, 0));
    let rate = |n: u64, m: u64, a: f64, b: f64| if b > a { (m - n) as f64 / (b - a) } else { 0.0 };
    (rate(first.1, n20, first.0, t20), rate(n80, n100, t80, t100))
}

/// The store holds every transfer once, Σ balances = totalSupply(), and the balances of
/// a sample of holders equal balanceOf at the end block.
/// The rankings kept in the store at `url`: how many, their bytes, and the transfers'
/// bytes (every partition, indexes included).
async fn ranking_sizes(url: &str) -> anyhow::Result<(i64, i64, i64)> {
    let db = rig::db::connect(url).await?;
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM rankings),
                    pg_total_relation_size('rankings') + pg_total_relation_size('ranking_rows'),
                    (SELECT sum(pg_total_relation_size(inhrelid))::bigint FROM pg_inherits
                     WHERE inhparent = 'transfers'::regclass)",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1), row.get::<_, Option<i64>>(2).unwrap_or(0)))
}

async fn check_store(
    rpc: &rig::chain::Chain,
    url: &str,
    built: &chain::BenchChain,
) -> anyhow::Result<()> {
    let db = rig::db::connect(url).await?;
    let row = db
        .query_one(
            "SELECT transfer_count, indexed_block, total_supply::text,
                    (SELECT count(*) FROM transfers WHERE token = $1)
             FROM tokens WHERE address = $1",
            &[&built.token.as_slice()],
        )
        .await?;
    let (count, indexed, supply, rows): (i64, i64, String, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    anyhow::ensure!(
        count as u64 == built.transfers && rows as u64 == built.transfers,
        "the store holds {rows} transfers (counted {count}), the chain {}",
        built.transfers
    );
    anyhow::ensure!(
        indexed as u64 == built.end_block,
        "indexed to {indexed}, not {}",
        built.end_block
    );
    let chain_supply = rpc.total_supply_at(built.token, built.end_block).await?;
    anyhow::ensure!(
        supply == chain_supply.to_string(),
        "supply {supply} != totalSupply() {chain_supply}"
    );
    let sample: Vec<_> =
        built.holders.iter().step_by((built.holders.len() / 1000).max(1)).copied().collect();
    let on_chain = rpc.balances_at(built.token, &sample, built.end_block).await?;
    for (address, expected) in sample.iter().zip(on_chain) {
        let stored: Option<String> = db
            .query_opt(
                "SELECT balance::text FROM balances WHERE token = $1 AND address = $2",
                &[&built.token.as_slice(), &address.as_slice()],
            )
            .await?
            .map(|r| r.get(0));
        anyhow::ensure!(
            stored.as_deref().unwrap_or("0") == expected.to_string(),
            "{address}: stored {stored:?}, balanceOf {expected}"
        );
    }
    Ok(())
}

/// Times Postgres alone writing the stored transfers again, in one INSERT, into an empty
/// table with what a backfilled partition has while it fills (primary key and sequence
/// index), then building its sender and receiver indexes, with nothing else running: the
/// most any pipeline keeping this schema can reach on this machine.
async fn ceiling(url: &str) -> anyhow::Result<Duration> {
    let db = rig::db::connect(url).await?;
    db.batch_execute(
        "CREATE TABLE ceiling_transfers (LIKE transfers INCLUDING ALL);
         CREATE UNLOGGED TABLE ceiling_source AS SELECT * FROM transfers ORDER BY seq;
         CHECKPOINT;",
    )
    .await?;
    let started = Instant::now();
    db.batch_execute(
        "INSERT INTO ceiling_transfers SELECT * FROM ceiling_source;
         SET maintenance_work_mem = '256MB';
         CREATE INDEX ON ceiling_transfers (token, from_address, block_number, log_index) INCLUDE (value);
         CREATE INDEX ON ceiling_transfers (token, to_address, block_number, log_index) INCLUDE (value);",
    )
    .await?;
    let took = started.elapsed();
    db.batch_execute("DROP TABLE ceiling_transfers; DROP TABLE ceiling_source;").await?;
    Ok(took)
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
    let run = backfill(bin, rpc_url, &url, built, "").await?;
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

/// The process's peak resident memory so far, from /proc.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
