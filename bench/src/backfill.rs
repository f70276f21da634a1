//! One backfill run of the benchmark: the release ingestor over the whole chain, timed
//! end to end with its peak memory, CPU per program and the rate over the history's
//! first and last fifths (rows as they reach the heap); then the store checked against
//! the chain, the kept rankings' size, and Postgres alone writing the same rows (the
//! ceiling any pipeline keeping this schema can reach here).

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::process::Command;

use crate::{chain, cpu};

/// What one backfill run measured.
pub(crate) struct Run {
    /// Wall time of the ingestor process.
    pub(crate) elapsed: Duration,
    /// Its peak RSS, KiB.
    pub(crate) peak_kib: u64,
    /// CPU seconds per program.
    pub(crate) cpu: Vec<(String, f64)>,
    /// Transfers/s over the first and the last fifth of the history, by rows written.
    pub(crate) fifths: (f64, f64),
    /// The transfers of the final blocks (written before the verified steps) and their
    /// own fifths, when the backfill split its last partition there.
    pub(crate) deep_fifths: Option<(u64, (f64, f64))>,
    /// Seconds from the start until the last transfer row was written.
    pub(crate) written_at: f64,
}

/// Runs the ingestor binary over the whole chain, watching how much of `transfers` is
/// written. Rows are counted as they reach the table's heap (its size, committed or not:
/// a streamed batch commits its rows seconds after writing them), so the fifths measure
/// the cost of the history's parts, not the commit schedule.
pub(crate) async fn run(
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
                    "SELECT coalesce(sum(pg_relation_size(relid)), 0)::bigint
                     FROM pg_partition_tree(to_regclass('transfers')) WHERE isleaf",
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
            "SELECT coalesce(sum(pg_relation_size(relid)), 0)::bigint
             FROM pg_partition_tree('transfers') WHERE isleaf",
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
    // The final blocks (below the partition the verified steps made after the last
    // final block) are written before any verified step: their own fifths.
    let deep: Option<i64> = db
        .query_one(
            "SELECT (SELECT count(*) FROM transfers WHERE block_number < s.first)
             FROM (SELECT max(first) AS first FROM transfer_partitions_of(31337)) s
             WHERE s.first > 0",
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

/// The rankings kept in the store at `url`: how many, their bytes, and the transfers'
/// bytes (every partition, indexes included).
pub(crate) async fn ranking_sizes(url: &str) -> anyhow::Result<(i64, i64, i64)> {
    let db = rig::db::connect(url).await?;
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM rankings),
                    pg_total_relation_size('rankings') + pg_total_relation_size('ranking_rows'),
                    (SELECT sum(pg_total_relation_size(relid))::bigint
                     FROM pg_partition_tree('transfers') WHERE isleaf)",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1), row.get::<_, Option<i64>>(2).unwrap_or(0)))
}

/// The store holds every transfer once, Σ balances = totalSupply(), and the balances of
/// a sample of holders equal balanceOf at the end block.
pub(crate) async fn check_store(
    rpc: &rig::chain::Chain,
    url: &str,
    built: &chain::BenchChain,
) -> anyhow::Result<()> {
    let db = rig::db::connect(url).await?;
    let row = db
        .query_one(
            "SELECT transfer_count, indexed_block, total_supply::text,
                    (SELECT count(*) FROM transfers t WHERE t.token = k.id)
             FROM tokens k WHERE k.address = $1",
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
                "SELECT balance::text FROM balances
                 WHERE token = (SELECT id FROM tokens WHERE address = $1) AND address = $2",
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
pub(crate) async fn ceiling(url: &str) -> anyhow::Result<Duration> {
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
         CREATE INDEX ON ceiling_transfers (from_address, token, block_number, log_index) INCLUDE (value);
         CREATE INDEX ON ceiling_transfers (to_address, token, block_number, log_index) INCLUDE (value);",
    )
    .await?;
    let took = started.elapsed();
    db.batch_execute("DROP TABLE ceiling_transfers; DROP TABLE ceiling_source;").await?;
    Ok(took)
}

/// The process's peak resident memory so far, from /proc.
pub(crate) fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
