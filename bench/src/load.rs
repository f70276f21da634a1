//! The query side of the benchmark: fills a store with N holders (and a tenth as many
//! transfers over 30 days, so the 7-day figures have work to do) by COPY, starts the real
//! query-service on it, and measures GetTopHolders(100), 1000-row GetHolders pages and
//! address lookups: latency with one client, throughput with several.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, keccak256};
use anyhow::Context;
use futures::SinkExt;
use proto::pb::holder_service_client::HolderServiceClient;
use proto::pb::{GetHoldersRequest, GetTopHoldersRequest};
use rig::history::holder;
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use crate::chain::{BLOCK_SECONDS, Rng, initial_balance};

/// The token of the filled store.
pub(crate) const TOKEN: Address =
    alloy_primitives::address!("0x00000000000000000000000000000000000b3c4e");
/// Blocks in the filled history: 30 days.
pub(crate) const HISTORY_BLOCKS: u64 = 30 * 86_400 / BLOCK_SECONDS;
/// Addresses per lookup request.
pub(crate) const LOOKUP_SIZE: usize = 10;

/// A filled store.
#[derive(Debug)]
pub(crate) struct Filled {
    /// Holders stored.
    pub(crate) holders: u64,
    /// Transfers stored.
    pub(crate) transfers: u64,
    /// Time the fill took.
    pub(crate) elapsed: Duration,
}

/// Fills the migrated, empty database at `url` with `holders` holders.
pub(crate) async fn fill(url: &str, holders: u64) -> anyhow::Result<Filled> {
    let started = Instant::now();
    let db = rig::db::connect(url).await?;
    let transfers = holders / 10;
    let genesis = now() - HISTORY_BLOCKS * BLOCK_SECONDS;
    db.execute(
        "INSERT INTO tokens (address, chain_id, name, symbol, decimals, start_block, indexed_block)
         VALUES ($1, 31337, 'Bench Token', 'BENCH', 18, 1, 0)",
        &[&TOKEN.as_slice()],
    )
    .await?;
    // Index builds after the load are much faster than index upkeep during it.
    db.batch_execute("SET maintenance_work_mem = '1GB'; SET max_parallel_maintenance_workers = 2")
        .await?;
    // Partitions without their sender and receiver indexes, built after the load.
    db.execute(
        "SELECT ensure_transfer_partitions(0, $1, false)",
        &[&((HISTORY_BLOCKS + 10) as i64)],
    )
    .await?;
    let rebuild = drop_indexes(&db, &["balances", "transfers"]).await?;

    let token = hex(TOKEN.as_slice());
    let mut rng = Rng(0x5eed);
    copy(
        &db,
        "COPY balances (token, address, balance, last_transfer_block) FROM STDIN",
        holders,
        |i, out| {
            let address = hex(holder(7, i as usize).as_slice());
            let block = 1 + rng.next() % HISTORY_BLOCKS;
            out.push_str(&format!(
                "\\\\x{token}\t\\\\x{address}\t{}\t{block}\n",
                initial_balance(i as usize)
            ));
        },
    )
    .await
    .context("loading balances")?;
    let n = holders as usize;
    // In block order, as the ingestor writes them: a range of blocks is then a range of
    // the heap, not pages all over it.
    let mut blocks: Vec<u64> = (0..transfers).map(|_| 1 + rng.next() % HISTORY_BLOCKS).collect();
    blocks.sort_unstable();
    copy(
        &db,
        "COPY transfers (token, block_number, log_index, block_hash, block_time, tx_hash, from_address, to_address, value, seq, from_balance, to_balance) FROM STDIN",
        transfers,
        |i, out| {
            let block = blocks[i as usize];
            let (from, to) = (rng.counterparty(n), rng.counterparty(n));
            let value = initial_balance(to) / alloy_primitives::U256::from(1 + rng.next() % 100);
            out.push_str(&format!(
                "\\\\x{token}\t{block}\t{i}\t\\\\x{}\t{}\t\\\\x{}\t\\\\x{}\t\\\\x{}\t{value}\t{}\t{}\t{}\n",
                hex(keccak256(block.to_be_bytes()).as_slice()),
                genesis + block * BLOCK_SECONDS,
                hex(keccak256(i.to_be_bytes()).as_slice()),
                hex(holder(7, from).as_slice()),
                hex(holder(7, to).as_slice()),
                i + 1,
                // Balances after the transfer: the point-in-time lookups read them; their
                // values do not change what a lookup costs.
                initial_balance(from),
                initial_balance(to),
            ));
        },
    )
    .await
    .context("loading transfers")?;
    for sql in rebuild {
        db.batch_execute(&sql).await.with_context(|| format!("rebuilding: {sql}"))?;
    }
    db.execute(
        "SELECT index_transfer_partitions(0, $1, true, 'from') + index_transfer_partitions(0, $1, true, 'to')",
        &[&((HISTORY_BLOCKS + 10) as i64)],
    )
        .await?;
    db.execute(
        // The filled transfers' balances are not a history (see above), so every block
        // keeps the final holder count: past counts cost what they cost, whatever it is.
        "INSERT INTO blocks (token, number, hash, time, holders)
         SELECT DISTINCT ON (block_number) token, block_number, block_hash, block_time, $2
         FROM transfers WHERE token = $1 ORDER BY block_number",
        &[&TOKEN.as_slice(), &(holders as i64)],
    )
    .await?;
    db.execute(
        "UPDATE tokens SET
             total_supply = (SELECT sum(balance) FROM balances WHERE token = $1),
             holder_count = $2, transfer_count = $3, last_seq = $3,
             (indexed_block, indexed_hash, indexed_time) =
                 (SELECT number, hash, time FROM blocks WHERE token = $1 ORDER BY number DESC LIMIT 1)
         WHERE address = $1",
        &[&TOKEN.as_slice(), &(holders as i64), &(transfers as i64)],
    )
    .await?;
    keep_rankings(&db).await?;
    // Index-only scans (the 7-day sums) need the visibility map that VACUUM writes.
    db.batch_execute("VACUUM ANALYZE balances, transfers, blocks, tokens, rankings, ranking_rows")
        .await?;
    Ok(Filled { holders, transfers, elapsed: started.elapsed() })
}

/// Rankings where the ingestor would keep them with its defaults (every 10,000
/// transfers, 1,000 holders deep), so that past rankings cost here what they cost in a
/// store the ingestor wrote. Their rows are the filled head of the ranking: the filled
/// transfers' balances are not a history (see above), so no ranking follows from them;
/// what a past answer costs is the same (a header, a ranking's rows, the transfers since).
async fn keep_rankings(db: &tokio_postgres::Client) -> anyhow::Result<()> {
    let (every, depth) = (10_000i64, 1_000i64);
    db.execute(
        "INSERT INTO rankings (token, block, depth, complete, transfer_count)
         SELECT $1, max(block_number), $3, false, max(n) FROM (
             SELECT block_number, row_number() OVER (ORDER BY block_number, log_index) AS n
             FROM transfers WHERE token = $1) t
         GROUP BY n / $2 HAVING count(*) = $2",
        &[&TOKEN.as_slice(), &every, &(depth as i32)],
    )
    .await?;
    db.execute(
        "INSERT INTO ranking_rows (token, block, rank, address, balance, last_transfer_block)
         SELECT $1, r.block, h.rank, h.address, h.balance, h.last_transfer_block
         FROM rankings r CROSS JOIN (
             SELECT row_number() OVER (ORDER BY -balance, address)::integer AS rank, address, balance,
                    last_transfer_block
             FROM balances WHERE token = $1 AND balance > 0 ORDER BY -balance, address LIMIT $2) h
         WHERE r.token = $1",
        &[&TOKEN.as_slice(), &depth],
    )
    .await?;
    Ok(())
}

/// Drops the indexes and primary keys of `tables`; returns the statements that rebuild them.
async fn drop_indexes(db: &tokio_postgres::Client, tables: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut rebuild = Vec::new();
    for table in tables {
        for row in db
            .query(
                "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint
                 WHERE conrelid = $1::text::regclass AND contype = 'p'",
                &[table],
            )
            .await?
        {
            let (name, def): (String, String) = (row.get(0), row.get(1));
            db.batch_execute(&format!("ALTER TABLE {table} DROP CONSTRAINT {name}")).await?;
            rebuild.push(format!("ALTER TABLE {table} ADD CONSTRAINT {name} {def}"));
        }
        for row in db
            .query(
                "SELECT indexname::text, indexdef FROM pg_indexes WHERE tablename = $1",
                &[table],
            )
            .await?
        {
            let (name, def): (String, String) = (row.get(0), row.get(1));
            db.batch_execute(&format!("DROP INDEX {name}")).await?;
            rebuild.push(def);
        }
    }
    Ok(rebuild)
}

/// Streams `rows` rows made by `row` into `statement` (COPY ... FROM STDIN, text format).
async fn copy(
    db: &tokio_postgres::Client,
    statement: &str,
    rows: u64,
    mut row: impl FnMut(u64, &mut String),
) -> anyhow::Result<()> {
    let sink = db.copy_in::<_, bytes::Bytes>(statement).await?;
    futures::pin_mut!(sink);
    let mut buf = String::with_capacity(1 << 20);
    for i in 0..rows {
        row(i, &mut buf);
        if buf.len() >= 1 << 20 {
            sink.send(bytes::Bytes::from(std::mem::take(&mut buf))).await?;
        }
    }
    sink.send(bytes::Bytes::from(buf)).await?;
    sink.finish().await?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// One request kind's figures.
#[derive(Debug, Clone)]
pub(crate) struct Figures {
    /// What was asked.
    pub(crate) name: &'static str,
    /// Whether the query-service kept ranked answers (`--answer-cache`).
    pub(crate) cached: bool,
    /// Latency with one client.
    pub(crate) p50: Duration,
    /// 99th percentile with one client.
    pub(crate) p99: Duration,
    /// Requests per second with one client.
    pub(crate) rps_one: f64,
    /// Requests per second with `concurrency` clients.
    pub(crate) rps_many: f64,
    /// 99th percentile with `concurrency` clients.
    pub(crate) p99_many: Duration,
}

/// The query-service binary serving `url`, and a client of it.
pub(crate) struct Served {
    _child: Child,
    pub(crate) client: HolderServiceClient<Channel>,
}

/// Starts `bin` (the query-service) on `url`, with `answer_cache` ranked answers kept.
pub(crate) async fn serve(bin: &Path, url: &str, answer_cache: u32) -> anyhow::Result<Served> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    let child = Command::new(bin)
        .args([
            "--database-url",
            url,
            "--listen",
            &addr.to_string(),
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args(["--answer-cache", &answer_cache.to_string()])
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let client = rig::pair::wait_for_client(&format!("http://{addr}")).await?;
    Ok(Served { _child: child, client })
}

/// A request the load generator sends, `i` picking its variant.
#[derive(Clone, Copy)]
enum Kind {
    Top100,
    Page1000,
    Lookup,
}

/// Measures the three request kinds against `served`.
pub(crate) async fn measure(
    served: &Served,
    cached: bool,
    holders: u64,
    seconds: u64,
    concurrency: usize,
) -> anyhow::Result<Vec<Figures>> {
    let token = TOKEN.to_string();
    // Page tokens of the first pages: keyset pages cost the same at any depth.
    let mut client = served.client.clone();
    let mut pages = vec![String::new()];
    let wanted = (holders / 1000).clamp(1, 50) as usize;
    while pages.len() < wanted {
        let r = client
            .get_holders(GetHoldersRequest {
                page_size: 1000,
                page_token: pages.last().cloned().unwrap_or_default(),
                token: token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        anyhow::ensure!(
            r.holders.len() == 1000,
            "page {} has {} rows, not 1000",
            pages.len(),
            r.holders.len()
        );
        pages.push(r.next_page_token);
    }
    let setup = Setup { token, pages, holders };
    let mut out = Vec::new();
    let mut kinds = vec![
        ("GetTopHolders(limit 100)", Kind::Top100),
        ("GetHolders 1000-row page", Kind::Page1000),
    ];
    if !cached {
        // Lookups are never cached: one run measures them.
        kinds.push(("GetHolders lookup of 10 addresses", Kind::Lookup));
    }
    for (name, kind) in kinds {
        let (one, one_elapsed) = run(served, &setup, kind, 1, seconds).await?;
        let (many, many_elapsed) = run(served, &setup, kind, concurrency, seconds).await?;
        out.push(Figures {
            name,
            cached,
            p50: percentile(&one, 0.50),
            p99: percentile(&one, 0.99),
            rps_one: one.len() as f64 / one_elapsed.as_secs_f64(),
            rps_many: many.len() as f64 / many_elapsed.as_secs_f64(),
            p99_many: percentile(&many, 0.99),
        });
    }
    Ok(out)
}

struct Setup {
    token: String,
    pages: Vec<String>,
    holders: u64,
}

/// `clients` loops of `kind` for `seconds` (after a one-second warm-up); every latency.
async fn run(
    served: &Served,
    setup: &Setup,
    kind: Kind,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let warm_up = Instant::now() + Duration::from_secs(1);
    let deadline = warm_up + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = served.client.clone();
        let token = setup.token.clone();
        let pages = setup.pages.clone();
        let holders = setup.holders;
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0xabcd + c as u64);
            let mut latencies = Vec::new();
            loop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                let rows = match kind {
                    Kind::Top100 => client
                        .get_top_holders(GetTopHoldersRequest {
                            limit: 100,
                            token: token.clone(),
                            ..Default::default()
                        })
                        .await?
                        .into_inner()
                        .holders
                        .len(),
                    Kind::Page1000 => {
                        let page = pages[(rng.next() % pages.len() as u64) as usize].clone();
                        let r = GetHoldersRequest {
                            page_size: 1000,
                            page_token: page,
                            token: token.clone(),
                            ..Default::default()
                        };
                        client.get_holders(r).await?.into_inner().holders.len()
                    }
                    Kind::Lookup => {
                        let addresses = (0..LOOKUP_SIZE)
                            .map(|_| holder(7, (rng.next() % holders) as usize).to_string())
                            .collect();
                        let r = GetHoldersRequest {
                            addresses,
                            token: token.clone(),
                            ..Default::default()
                        };
                        client.get_holders(r).await?.into_inner().holders.len()
                    }
                };
                anyhow::ensure!(rows > 0, "an empty answer");
                if now >= warm_up {
                    latencies.push(now.elapsed());
                }
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort();
    Ok((all, Duration::from_secs(seconds)))
}

/// The `q` quantile of sorted latencies.
pub(crate) fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// What answering at a past block costs.
#[derive(Debug, Clone)]
pub(crate) struct PastFigures {
    /// The request.
    pub(crate) name: String,
    /// Median latency.
    pub(crate) p50: Duration,
    /// Slowest.
    pub(crate) max: Duration,
    /// Requests timed.
    pub(crate) count: usize,
}

/// Times answers at past blocks of the filled store, one client, no cache: the ranking
/// (GetTopHolders(100)) at 3, 15 and 27 days back, and 10-address lookups 15 days back.
pub(crate) async fn measure_past(
    served: &Served,
    holders: u64,
) -> anyhow::Result<Vec<PastFigures>> {
    let mut client = served.client.clone();
    let token = TOKEN.to_string();
    let day = 86_400 / BLOCK_SECONDS;
    let mut out = Vec::new();
    for (days, runs) in [(3u64, 5usize), (15, 5), (27, 5)] {
        let at = HISTORY_BLOCKS - days * day;
        let mut times = Vec::new();
        let mut timeouts = 0;
        for _ in 0..runs {
            let started = Instant::now();
            let answer = client
                .get_top_holders(GetTopHoldersRequest {
                    limit: 100,
                    token: token.clone(),
                    at_block: Some(at),
                    ..Default::default()
                })
                .await;
            times.push(started.elapsed());
            match answer {
                Ok(r) => {
                    let r = r.into_inner();
                    anyhow::ensure!(
                        r.holders.len() == 100 && r.as_of_block <= at,
                        "a short answer"
                    );
                }
                // Past the query-service's statement timeout: reported as such.
                Err(s) if s.code() == tonic::Code::DeadlineExceeded => timeouts += 1,
                Err(s) => return Err(anyhow::anyhow!("GetTopHolders at block {at}: {s}")),
            }
        }
        times.sort();
        let timed_out = if timeouts > 0 {
            format!(" ({timeouts} of {runs} past the 5 s statement timeout)")
        } else {
            String::new()
        };
        out.push(PastFigures {
            name: format!("GetTopHolders(limit 100) at a block {days} days back{timed_out}"),
            p50: percentile(&times, 0.5),
            max: *times.last().expect("runs"),
            count: runs,
        });
    }
    let at = HISTORY_BLOCKS - 15 * day;
    let mut rng = Rng(0x9a57);
    let mut times = Vec::new();
    for _ in 0..200 {
        let addresses = (0..LOOKUP_SIZE)
            .map(|_| holder(7, (rng.next() % holders) as usize).to_string())
            .collect();
        let started = Instant::now();
        let r = client
            .get_holders(GetHoldersRequest {
                addresses,
                token: token.clone(),
                at_block: Some(at),
                ..Default::default()
            })
            .await?
            .into_inner();
        times.push(started.elapsed());
        anyhow::ensure!(r.holders.len() == LOOKUP_SIZE, "a short answer");
    }
    times.sort();
    out.push(PastFigures {
        name: format!("GetHolders lookup of {LOOKUP_SIZE} addresses 15 days back"),
        p50: percentile(&times, 0.5),
        max: *times.last().expect("runs"),
        count: times.len(),
    });
    Ok(out)
}
