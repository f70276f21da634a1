//! The benchmark's results as a Markdown section, with the machine and the date, written
//! between two markers of docs/performance.md so that a run replaces the previous run's
//! figures.

use std::path::Path;

use crate::Args;
use crate::export::ExportFigures;
use crate::fill::Filled;
use crate::load::{Figures, LOOKUP_SIZE, PastFigures};
use crate::seed::SeedRun;

const BEGIN: &str =
    "<!-- bench:begin (written by scripts/bench.sh --results docs/performance.md) -->";
const END: &str = "<!-- bench:end -->";

/// The backfill's figures.
#[derive(Debug, Clone)]
pub(crate) struct Backfill {
    /// Ingestor flags beyond the defaults ("" for none).
    pub(crate) flags: String,
    /// Transfers indexed.
    pub(crate) transfers: u64,
    /// Wall time of the ingestor process.
    pub(crate) seconds: f64,
    /// Its peak resident memory.
    pub(crate) peak_rss_mib: f64,
    /// CPU seconds per program meanwhile.
    pub(crate) cpu: Vec<(String, f64)>,
    /// Transfers/s over the first and the last fifth of the history, by rows written.
    pub(crate) fifths: (f64, f64),
    /// The final blocks' transfers and their own fifths (before the verified steps).
    pub(crate) deep_fifths: Option<(u64, (f64, f64))>,
    /// Seconds until the last transfer row was written (the rest: index builds, exit).
    pub(crate) written_at: f64,
    /// Rankings kept, their bytes and the transfers' bytes (tables with their indexes).
    pub(crate) rankings: (i64, i64, i64),
}

/// Everything a run measured.
#[derive(Debug)]
pub(crate) struct Report {
    command: String,
    /// Time to make the chain.
    pub(crate) chain_seconds: f64,
    /// Our backfills: the defaults first, then each `--also` variant.
    pub(crate) backfills: Vec<Backfill>,
    /// The seed-equivalent strategy.
    pub(crate) seed: Option<SeedRun>,
    /// Seconds a plain eth_getLogs client took to fetch and parse every log.
    pub(crate) raw_fetch: Option<f64>,
    /// Seconds Postgres alone took to write the default backfill's rows again.
    pub(crate) ceiling: Option<f64>,
    /// `perf` summary lines of the default backfill (with --perf).
    pub(crate) profile: Vec<String>,
    /// The query side during a backfill and after it.
    pub(crate) during: Option<crate::during::DuringFigures>,
    /// Query figures per holder count.
    pub(crate) queries: Vec<(Filled, Vec<Figures>)>,
    /// Answers at past blocks per holder count.
    pub(crate) past: Vec<(u64, Vec<PastFigures>)>,
    /// Exports of every holder per holder count.
    pub(crate) exports: Vec<(u64, Vec<ExportFigures>)>,
    clients: usize,
    holders: usize,
}

impl Report {
    /// An empty report of a run with `args`.
    pub(crate) fn new(args: &Args) -> Self {
        Self {
            command: format!(
                "bash scripts/bench.sh --transfers {} --holders {} --per-block {}",
                args.transfers, args.holders, args.per_block
            ),
            chain_seconds: 0.0,
            backfills: Vec::new(),
            profile: Vec::new(),
            during: None,
            ceiling: None,
            raw_fetch: None,
            seed: None,
            queries: Vec::new(),
            past: Vec::new(),
            exports: Vec::new(),
            clients: args.query_clients,
            holders: args.holders,
        }
    }

    /// The section, in Markdown.
    pub(crate) fn markdown(&self) -> String {
        let mut s = format!(
            "Run on {} by `{}`: {}; PostgreSQL, Anvil and the benchmark on the same machine; release build.\n\n",
            today(),
            self.command,
            machine(),
        );
        if let Some(ours) = self.backfills.first() {
            let our_rate = ours.transfers as f64 / ours.seconds;
            s += &format!(
                "Backfill of a {}-transfer history among {} holders (the chain took {:.0} s to make):\n\n",
                rig::thousands(ours.transfers),
                rig::thousands(self.holders as u64),
                self.chain_seconds
            );
            s += "| strategy | transfers timed | time | transfers/s | first fifth / last fifth of the history | peak RSS |\n| --- | --- | --- | --- | --- | --- |\n";
            if let Some(fetch) = self.raw_fetch {
                s += &format!(
                    "| the node alone: plain `eth_getLogs` one after the other, about 5,000 logs each, parsed, nothing stored | {} | {fetch:.1} s | {} | | |\n",
                    rig::thousands(ours.transfers),
                    rig::thousands((ours.transfers as f64 / fetch) as u64),
                );
            }
            for b in &self.backfills {
                let rate = (b.transfers as f64 / b.seconds) as u64;
                let (what, rate) = if b.flags.is_empty() {
                    ("ours: `ingestor` end to end, defaults (getLogs → decode → Postgres, balances kept)".to_string(), format!("**{}**", rig::thousands(rate)))
                } else {
                    (format!("ours, with `{}`", b.flags), rig::thousands(rate))
                };
                s += &format!(
                    "| {what} | {} | {:.1} s | {rate} | {} / {} | {:.0} MiB |\n",
                    rig::thousands(b.transfers),
                    b.seconds,
                    rig::thousands(b.fifths.0 as u64),
                    rig::thousands(b.fifths.1 as u64),
                    b.peak_rss_mib
                );
            }
            if let Some(seed) = self.seed {
                let seed_rate = ours.transfers as f64 / seed.whole.as_secs_f64();
                s += &format!(
                    "| the Python script's strategy: 1000-block windows, 2 balanceOf per event, row-by-row checked INSERTs | {} | {:.0} s{} | {:.1} | | |\n\n",
                    rig::thousands(seed.transfers),
                    seed.elapsed.as_secs_f64(),
                    if seed.complete {
                        String::new()
                    } else {
                        format!(
                            " for this sample; the whole history extrapolated (time per getLogs window × windows + time per event × events): {}",
                            human(seed.whole.as_secs_f64())
                        )
                    },
                    seed_rate
                );
                s += &format!(
                    "Ours is **{:.0}×** the Python script's strategy.\n\n",
                    our_rate / seed_rate
                );
            } else {
                s += "\n";
            }
            if let Some(fetch) = self.raw_fetch {
                s += &format!(
                    "The backfill took **{:.2}×** the node's own time for the same logs; its last fifth ran at {:.0}% of its first fifth's rate (fifths by rows written into `transfers`, committed or not). Its last row was written {:.1} s after the start; the {:.1} s after it built the filled partition's sender and receiver indexes.\n\n",
                    ours.seconds / fetch,
                    ours.fifths.1 / ours.fifths.0.max(1.0) * 100.0,
                    ours.written_at,
                    ours.seconds - ours.written_at
                );
                if let Some((deep, (first, last))) = ours.deep_fifths {
                    s += &format!(
                        "Over the {} transfers of the final blocks alone (written before the verified steps above them), the first fifth ran at {} transfers/s and the last at {} ({:.0}%).\n\n",
                        rig::thousands(deep),
                        rig::thousands(first as u64),
                        rig::thousands(last as u64),
                        last / first.max(1.0) * 100.0
                    );
                }
            }
            let (kept, ranking_bytes, transfer_bytes) = ours.rankings;
            s += &format!(
                "The rankings kept for past answers (one every 10,000 transfers, 1,000 holders deep, with its indexes): {} of them, {:.1} MiB, {:.1}% of the transfers' {:.0} MiB ({:.1} bytes per transfer).\n\n",
                kept,
                ranking_bytes as f64 / 1_048_576.0,
                ranking_bytes as f64 / transfer_bytes.max(1) as f64 * 100.0,
                transfer_bytes as f64 / 1_048_576.0,
                ranking_bytes as f64 / ours.transfers.max(1) as f64
            );
            let shares: Vec<String> = ours
                .cpu
                .iter()
                .map(|(p, c)| format!("{p} {c:.1} s ({:.0}%)", c / ours.seconds * 100.0))
                .collect();
            s += &format!(
                "Where the backfill's time went, CPU seconds per program over its {:.1} s (from /proc; 2 cores make 200%): {}.\n\n",
                ours.seconds,
                shares.join(", ")
            );
            if let Some(ceiling) = self.ceiling {
                s += &format!(
                    "Postgres alone, writing the same {} rows again into an empty table shaped like a filling partition (primary key, sequence index) in one INSERT and then building its sender and receiver indexes, with nothing else running, took {:.1} s: **{} rows/s**, the ceiling for any pipeline that keeps this schema on this machine (the ingestor's end-to-end rate is {:.0}% of it; the rest is the balances and the fetch).\n\n",
                    rig::thousands(ours.transfers),
                    ceiling,
                    rig::thousands((ours.transfers as f64 / ceiling) as u64),
                    our_rate / (ours.transfers as f64 / ceiling) * 100.0
                );
            }
            if let Some(d) = &self.during {
                s += &format!(
                    "The query-service during a backfill: the same backfill again, with the real query-service on its store and one client asking, in turn, GetTopHolders(100) and a lookup of {LOOKUP_SIZE} of the chain's holders, answer cache off (every answer computed), from the first commit to the end; then as long again on the finished store. The chain's blocks span 30 days, so its last week (a quarter of its transfers) lies in the partition being filled, which has no address indexes until the end: the 7-day figures of the holders asked for are summed from those transfers. Every answer was as of a checkpoint, never behind an earlier one; \"timed out\" counts answers the query-service gave up on at its statement timeout (DEADLINE_EXCEEDED). The backfill took {:.1} s with the load (against {:.1} s without):\n\n",
                    d.backfill_seconds, ours.seconds
                );
                s += "| request | during: p50 | p99 | answers | timed out | after: p50 | p99 | answers | timed out |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
                for (name, during, during_out, after, after_out) in [
                    (
                        "GetTopHolders(limit 100)",
                        &d.during.top,
                        d.during.top_timed_out,
                        &d.after.top,
                        d.after.top_timed_out,
                    ),
                    (
                        "GetHolders lookup of 10 addresses",
                        &d.during.lookup,
                        d.during.lookup_timed_out,
                        &d.after.lookup,
                        d.after.lookup_timed_out,
                    ),
                ] {
                    use crate::during::quantile;
                    s += &format!(
                        "| {name} | {:.2} ms | {:.2} ms | {} | {during_out} | {:.2} ms | {:.2} ms | {} | {after_out} |\n",
                        ms(quantile(during, 0.5)),
                        ms(quantile(during, 0.99)),
                        during.len(),
                        ms(quantile(after, 0.5)),
                        ms(quantile(after, 0.99)),
                        after.len()
                    );
                }
                s += "\n";
            }
            if !self.profile.is_empty() {
                s += &format!(
                    "`perf record -a -e cpu-clock` over the default backfill:\n\n```\n{}\n```\n\n",
                    self.profile.join("\n")
                );
            }
        }
        if !self.queries.is_empty() {
            s += &format!(
                "Query-service (the real binary; the store filled by COPY with the holders and a tenth as many transfers over 30 days, so the 7-day figures have work; lookups ask for {LOOKUP_SIZE} addresses and are never cached; `--answer-cache 0` shows the cost of computing each ranked answer, the default keeps answers until the next commit):\n\n"
            );
            s += &format!(
                "| holders | request | answer cache | p50 | p99 | req/s, 1 client | req/s, {c} clients | p99, {c} clients |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n",
                c = self.clients
            );
            for (filled, figures) in &self.queries {
                for f in figures {
                    s += &format!(
                        "| {} | {} | {} | {:.2} ms | {:.2} ms | {:.0} | {:.0} | {:.2} ms |\n",
                        rig::thousands(filled.holders),
                        f.name,
                        if f.cached { "on (default)" } else { "off: computed" },
                        ms(f.p50),
                        ms(f.p99),
                        f.rps_one,
                        f.rps_many,
                        ms(f.p99_many)
                    );
                }
            }
        }
        if !self.past.is_empty() {
            s += "\nAt a past block (`at_block`; one client, answer cache off; the same stores, 30 days of transfers): a lookup is one index step per address and side, whatever the history; the head of a ranking comes from the nearest ranking kept at or below that block (the filled store keeps one every 10,000 transfers, 1,000 deep, as the ingestor does) and the transfers since, or, before the first one, from the transfers up to that block; the floor is a p50 of 100 ms for GetTopHolders(100) at 10M holders:\n\n| holders | request | p50 | slowest | requests |\n| --- | --- | --- | --- | --- |\n";
            for (holders, figures) in &self.past {
                for f in figures {
                    s += &format!(
                        "| {} | {} | {:.2} ms | {:.2} ms | {} |\n",
                        rig::thousands(*holders),
                        f.name,
                        ms(f.p50),
                        ms(f.max),
                        f.count
                    );
                }
            }
        }
        if !self.exports.is_empty() {
            s += "\nExportHolders (one client; every holder of the moment, streamed in chunks of 10,000 from one snapshot; timed from the request to the last chunk; the floor is 100,000 holders/s at 10M holders):\n\n| holders | export | holders sent | chunks | time | holders/s |\n| --- | --- | --- | --- | --- | --- |\n";
            for (holders, figures) in &self.exports {
                for e in figures {
                    s += &format!(
                        "| {} | {} | {} | {} | {:.2} s | {} |\n",
                        rig::thousands(*holders),
                        e.name,
                        rig::thousands(e.holders),
                        e.chunks,
                        e.elapsed.as_secs_f64(),
                        rig::thousands(e.rate() as u64)
                    );
                }
            }
        }
        s
    }
}

/// Replaces the section between the markers in `file` (appends it when absent).
pub(crate) fn write_into(file: &Path, section: &str) -> anyhow::Result<()> {
    write_between(file, BEGIN, END, section)
}

/// Replaces the section between `begin` and `end` in `file` (appends it when absent).
pub(crate) fn write_between(
    file: &Path,
    begin: &str,
    end: &str,
    section: &str,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)?;
    let block = format!("{begin}\n{section}{end}");
    let new = match (text.find(begin), text.find(end)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &text[..b], &text[e + end.len()..]),
        _ => format!("{text}\n{block}\n"),
    };
    std::fs::write(file, new)?;
    Ok(())
}

pub(crate) fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem_gib:.0} GiB")
}

fn today() -> String {
    let out = std::process::Command::new("date").arg("-u").arg("+%Y-%m-%d").output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

fn human(seconds: f64) -> String {
    if seconds >= 3600.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else if seconds >= 60.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{seconds:.0} s")
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
