//! End-to-end tests of the pair on a real Anvil chain, a real compiled ERC-20 and a real
//! Postgres. Each test starts its own chain and database, so they run in parallel.

mod abuse;
mod access;
mod backfill;
mod export;
mod faults;
mod filters;
mod finality;
mod follow;
mod grpc;
mod handover;
mod hostile;
mod kills;
mod limits;
mod ops;
mod outage;
mod past;
mod plans;
mod privilege;
mod ranges;
mod rankings;
mod reorg;
mod replicas;
mod restart;
mod sets;
mod shutdown;
mod soak;
mod start;
mod store;
mod streaming;
mod traces;
mod upgrade;
mod verify;
mod wrong;

use alloy_primitives::{Address, B256, U256};
use proto::pb::{GetHoldersRequest, Holder};
use rig::anvil::Anvil;
use rig::chain::{Chain, TestToken};
use rig::db::TestDb;
use rig::history::{self, History, Spec};
use rig::pair::QueryService;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A chain with a history on it, and an empty database.
pub(crate) struct World {
    _anvil: Anvil,
    chain: Chain,
    history: History,
    db: TestDb,
}

/// Reads a child's stderr while it runs (a debug log outgrows the pipe's buffer, and a
/// child blocked on a full pipe never ends); the whole log once the child has ended.
fn read_stderr(child: &mut tokio::process::Child) -> JoinHandle<String> {
    let mut stderr = child.stderr.take().expect("stderr piped");
    tokio::spawn(async move {
        let mut log = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut log).await;
        log
    })
}

/// Thirty days ago, so that every block time is in the past.
fn genesis_time() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
        - 30 * 86_400
}

async fn world(spec: Spec) -> World {
    world_with(spec, &[]).await
}

/// A world whose Anvil runs with `anvil_args` (e.g. `--slots-in-an-epoch`, which sets
/// how far below the head its `safe` and `finalized` blocks are).
async fn world_with(spec: Spec, anvil_args: &[&str]) -> World {
    rig::init_test_logging();
    let anvil = Anvil::start_with(genesis_time(), anvil_args).await.expect("anvil");
    let mut chain = Chain::connect(&anvil.url).await.expect("chain");
    let history = history::build(&mut chain, spec).await.expect("history");
    let db = TestDb::create().await.expect("database");
    World { _anvil: anvil, chain, history, db }
}

impl World {
    /// Runs the ingestor over `from..=to` of this chain.
    async fn ingest(&self, db: &TestDb, from: u64, to: u64) {
        self.ingest_with(db, from, to, &[]).await;
    }

    /// Runs the ingestor over `from..=to` of this chain with extra flags.
    async fn ingest_with(&self, db: &TestDb, from: u64, to: u64, extra: &[&str]) {
        let (from, to) = (from.to_string(), to.to_string());
        let token = self.history.token.to_string();
        let mut flags = vec!["--token", &token, "--from", &from, "--to", &to];
        flags.extend_from_slice(extra);
        rig::pair::ingest(&self.chain.url, &db.url, &flags).await.expect("ingest");
    }

    /// Runs a following ingestor (no --to) over this world's history, through `rpc_url`,
    /// until `stop`.
    fn follow_via(
        &self,
        rpc_url: &str,
        extra: &[&str],
        stop: CancellationToken,
    ) -> JoinHandle<anyhow::Result<()>> {
        let mut flags: Vec<String> = vec![
            "--token".into(),
            self.history.token.to_string(),
            "--from".into(),
            self.history.start_block.to_string(),
        ];
        flags.extend(extra.iter().map(|f| f.to_string()));
        let (rpc, db) = (rpc_url.to_string(), self.db.url.clone());
        tokio::spawn(async move {
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            rig::pair::ingest_until(&rpc, &db, &flags, stop).await
        })
    }

    /// Runs a following ingestor over this world's chain until `stop`.
    fn follow(&self, extra: &[&str], stop: CancellationToken) -> JoinHandle<anyhow::Result<()>> {
        self.follow_via(&self.chain.url, extra, stop)
    }

    /// Asserts that every address of the history holds in the store what balanceOf says
    /// at `block`; returns the chain's balances.
    async fn assert_balances_at(&self, block: u64) -> Vec<U256> {
        self.assert_balances_in(&self.db.url, block).await
    }

    /// [`World::assert_balances_at`] for the store at `db_url`.
    async fn assert_balances_in(&self, db_url: &str, block: u64) -> Vec<U256> {
        let on_chain = self
            .chain
            .balances_at(self.history.token, &self.history.addresses, block)
            .await
            .unwrap();
        let c = rig::db::connect(db_url).await.unwrap();
        for (a, expected) in self.history.addresses.iter().zip(&on_chain) {
            let row =
                c.query_opt("SELECT balance FROM balances WHERE address = $1", &[a]).await.unwrap();
            assert_eq!(
                row.map_or(U256::ZERO, |r| r.get(0)),
                *expected,
                "balance of {a} at block {block}"
            );
        }
        // The holder count kept with each stored block (V9) is the count of addresses
        // whose newest transfer at or below it left them something, and the checkpoint's
        // is the token row's and the chain's.
        let rows = c
            .query(
                "SELECT b.number, b.holders, (
                    SELECT count(*) FROM (
                        SELECT DISTINCT ON (l.a) l.a, l.balance FROM (
                            SELECT from_address AS a, block_number AS n, log_index AS i, from_balance AS balance
                            FROM transfers WHERE block_number <= b.number
                            UNION ALL
                            SELECT to_address, block_number, log_index, to_balance
                            FROM transfers WHERE block_number <= b.number
                        ) l ORDER BY l.a, l.n DESC, l.i DESC
                    ) x WHERE x.balance > 0 AND x.a <> $1)
                 FROM blocks b ORDER BY b.number",
                &[&Address::ZERO],
            )
            .await
            .unwrap();
        for r in &rows {
            let (number, kept, counted): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
            assert_eq!(kept, counted, "holders kept with block {number}");
        }
        let row = c
            .query_one(
                "SELECT k.holder_count, (SELECT holders FROM blocks b WHERE b.token = k.id
                                         AND b.number <= k.indexed_block ORDER BY number DESC LIMIT 1)
                 FROM tokens k",
                &[],
            )
            .await
            .unwrap();
        let held = on_chain.iter().filter(|b| !b.is_zero()).count() as i64;
        assert_eq!((row.get::<_, i64>(0), row.get::<_, Option<i64>>(1)), (held, Some(held)));
        assert_rankings_kept_right(&c).await;
        on_chain
    }

    /// Asserts that the store holds `expected` transfers, each once, and that the token's
    /// count agrees.
    async fn assert_transfer_count(&self, expected: u64) {
        let c = self.db.client().await.unwrap();
        let row = c
            .query_one(
                "SELECT (SELECT count(*) FROM transfers),
                        (SELECT count(DISTINCT (block_number, log_index)) FROM transfers),
                        (SELECT transfer_count FROM tokens)",
                &[],
            )
            .await
            .unwrap();
        let (rows, distinct, counted): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        assert_eq!((rows, distinct, counted), (expected as i64, expected as i64, expected as i64));
    }

    /// Arguments of the ingestor binary for a backfill of the whole history through
    /// `rpc_url` in tiny batches ([`TINY_BATCHES`]), with metrics and health on free ports.
    fn tiny_backfill_args(&self, rpc_url: &str) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--rpc-url".into(),
            rpc_url.into(),
            "--database-url".into(),
            self.db.url.clone(),
            "--token".into(),
            self.history.token.to_string(),
            "--from".into(),
            self.history.start_block.to_string(),
            "--to".into(),
            self.history.end_block.to_string(),
        ];
        args.extend(
            TINY_BATCHES
                .iter()
                .chain(&rig::pair::LOCAL_PORTS)
                .chain(&rig::pair::TEST_RANKINGS)
                .map(|a| a.to_string()),
        );
        args
    }

    /// How many stored transfers the transaction `tx` has.
    async fn stored_from_tx(&self, tx: alloy_primitives::B256) -> i64 {
        let c = self.db.client().await.unwrap();
        c.query_one("SELECT count(*) FROM transfers WHERE tx_hash = $1", &[&tx])
            .await
            .unwrap()
            .get(0)
    }

    /// Asserts that sequence numbers grow with the chain: one sequence, in block order.
    async fn assert_seq_in_chain_order(&self) {
        let c = self.db.client().await.unwrap();
        let rows = c
            .query("SELECT seq FROM transfers ORDER BY block_number, log_index", &[])
            .await
            .unwrap();
        let seqs: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        assert!(
            seqs.windows(2).all(|p| p[0] < p[1]),
            "sequence numbers grow with the chain: {seqs:?}"
        );
    }

    /// Indexes the whole history into this world's database.
    async fn ingest_all(&self) {
        self.ingest(&self.db, self.history.start_block, self.history.end_block).await;
    }
}

/// Asserts that every ranking the ingestor kept (V10) is the head of the ranking the
/// transfers' balances give at its block (address, balance, newest transfer), as deep
/// as it says; that a complete one holds every holder; that none is above the
/// checkpoint; and that each counts the transfers up to its block.
async fn assert_rankings_kept_right(c: &tokio_postgres::Client) {
    let kept = c
        .query(
            "SELECT r.block, r.depth, r.complete, r.transfer_count,
                    (SELECT count(*) FROM transfers t WHERE t.block_number <= r.block),
                    (SELECT indexed_block FROM tokens)
             FROM rankings r ORDER BY r.block",
            &[],
        )
        .await
        .unwrap();
    for k in &kept {
        let (block, depth, complete): (i64, i32, bool) = (k.get(0), k.get(1), k.get(2));
        assert!(block <= k.get::<_, i64>(5), "ranking at {block} above the checkpoint");
        assert_eq!(k.get::<_, i64>(3), k.get::<_, i64>(4), "ranking at {block}: transfers");
        let truth = c
            .query(
                "SELECT x.address, x.balance::text, x.n FROM (
                    SELECT DISTINCT ON (l.a) l.a AS address, l.balance, l.n FROM (
                        SELECT from_address AS a, block_number AS n, log_index AS i, from_balance AS balance
                        FROM transfers WHERE block_number <= $1
                        UNION ALL
                        SELECT to_address, block_number, log_index, to_balance
                        FROM transfers WHERE block_number <= $1
                    ) l ORDER BY l.a, l.n DESC, l.i DESC
                 ) x WHERE x.balance > 0 AND x.address <> $2 ORDER BY x.balance DESC, x.address",
                &[&block, &Address::ZERO],
            )
            .await
            .unwrap();
        let rows = c
            .query(
                "SELECT address, balance::text, last_transfer_block FROM ranking_rows
                 WHERE block = $1 ORDER BY rank",
                &[&block],
            )
            .await
            .unwrap();
        let text = |rows: &[tokio_postgres::Row]| -> Vec<(Vec<u8>, String, i64)> {
            rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
        };
        assert_eq!(rows.len(), depth as usize, "ranking at {block}: its depth");
        assert_eq!(
            text(&rows),
            text(&truth[..rows.len().min(truth.len())]),
            "ranking at {block}: the head of the ranking"
        );
        if complete {
            assert_eq!(truth.len(), rows.len(), "ranking at {block}: complete");
        }
    }
}

/// Ingestor flags for a backfill of many tiny commits (one block per request, one request
/// in flight, three transfers per batch, verified steps only for the last four blocks):
/// behind a node with some latency it lasts seconds, so a test can act in its middle.
const TINY_BATCHES: [&str; 12] = [
    "--batch-transfers",
    "3",
    "--initial-span",
    "1",
    "--max-span",
    "1",
    "--concurrency",
    "1",
    "--finality-from",
    "depth",
    "--finality-depth",
    "4",
];

/// A nine-day history of 20 holders on an Anvil that keeps every block's state (so
/// balanceOf answers at past blocks), indexed whole.
async fn indexed_past(seed: u64, extreme_amounts: bool) -> World {
    let spec = Spec {
        holders: 20,
        days: 9,
        blocks_per_day: 2,
        transfers_per_block: 3,
        spray_width: 3,
        extreme_amounts,
        seed,
    };
    let w = world_with(spec, &["--preserve-historical-states"]).await;
    w.ingest_all().await;
    w
}

/// The blocks of `w`'s store that hold transfers, in order.
async fn transfer_blocks(w: &World) -> Vec<u64> {
    let c = w.db.client().await.unwrap();
    c.query("SELECT DISTINCT block_number FROM transfers ORDER BY block_number", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i64>(0) as u64)
        .collect()
}

/// A small history: enough for the behaviour under test, quick to build.
fn small(seed: u64) -> Spec {
    Spec {
        holders: 12,
        days: 1,
        blocks_per_day: 2,
        transfers_per_block: 3,
        spray_width: 3,
        extreme_amounts: false,
        seed,
    }
}

/// Every holder, through GetHolders pages of `page_size`.
async fn all_holders(qs: &QueryService, page_size: u32) -> Vec<Holder> {
    let mut client = qs.client().await.unwrap();
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .get_holders(GetHoldersRequest {
                page_size,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.holders.len() <= page_size as usize);
        out.extend(page.holders);
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

/// Sends `value` from holder `from` to holder `to` of the history (indexes wrap around).
async fn send(chain: &mut Chain, h: &History, from: usize, to: usize, value: u64) -> B256 {
    let (from, to) = (h.addresses[from % h.addresses.len()], h.addresses[to % h.addresses.len()]);
    chain
        .call_from(from, h.token, TestToken::transferCall { to, value: U256::from(value) })
        .await
        .unwrap()
}

fn u256(s: &str) -> U256 {
    s.parse().unwrap_or_else(|e| panic!("{s} is not a uint256: {e}"))
}

fn addr(s: &str) -> Address {
    s.parse().unwrap()
}

/// Every table of the store, as text, for comparing two stores.
async fn dump(db: &TestDb) -> Vec<String> {
    let client = db.client().await.unwrap();
    let mut out = Vec::new();
    for sql in [
        "SELECT address, chain_id, name, symbol, decimals, start_block, indexed_block, indexed_hash, indexed_time,
                total_supply, transfer_count, holder_count, rejected_logs FROM tokens ORDER BY address",
        "SELECT * FROM transfers ORDER BY token, block_number, log_index",
        "SELECT * FROM balances ORDER BY token, address",
        "SELECT * FROM blocks ORDER BY token, number",
        "SELECT * FROM rejected_logs ORDER BY token, block_number, log_index",
    ] {
        let rows = client.query(&format!("SELECT row_to_json(x)::text FROM ({sql}) x"), &[]).await.unwrap();
        out.extend(rows.iter().map(|r| r.get::<_, String>(0)));
    }
    out
}

/// Waits until the store's checkpoint reaches `block`.
async fn wait_indexed(db: &TestDb, block: u64) {
    let c = db.client().await.unwrap();
    let started = std::time::Instant::now();
    loop {
        if let Ok(Some(row)) = c.query_opt("SELECT indexed_block FROM tokens", &[]).await
            && row.get::<_, i64>(0) >= block as i64
        {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "block {block} not indexed within 20 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A free local port.
pub(crate) fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// The value of the metric line starting with `name ` at `addr`, if served.
pub(crate) async fn metric(addr: std::net::SocketAddr, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{addr}/metrics")).await.ok()?.text().await.ok()?;
    text.lines().find(|l| l.starts_with(&format!("{name} ")))?.rsplit(' ').next()?.parse().ok()
}

pub(crate) async fn wait_metric(addr: std::net::SocketAddr, name: &str, ok: impl Fn(f64) -> bool) {
    let started = std::time::Instant::now();
    loop {
        if metric(addr, name).await.is_some_and(&ok) {
            return;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "{name} never as wanted");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
