//! A wrong token, a wrong node, a wrong start, a database that holds another tool's
//! tables: the ingestor refuses in one line with exit 2 and writes nothing wrong; never a
//! panic on anything a database contains.

use std::process::Output;
use std::time::Duration;

use proptest::prelude::*;
use proto::pb::GetTopHoldersRequest;
use rig::anvil::Anvil;
use rig::db::TestDb;
use rig::pair::QueryService;
use tokio::process::Command;
use tonic::Code;

use crate::{genesis_time, small, world};

/// Runs the ingestor binary with `args` (and nothing from the environment); its exit code
/// and stderr.
async fn ingestor(args: &[&str]) -> (Option<i32>, String) {
    let Output { status, stderr, .. } = Command::new(rig::pair::ingestor_binary().unwrap())
        .args(args)
        .args(rig::pair::LOCAL_PORTS)
        .env_remove("DATABASE_URL")
        .env_remove("RPC_URL")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    (status.code(), String::from_utf8_lossy(&stderr).into_owned())
}

fn one_line_refusal(code: Option<i32>, log: &str) {
    assert_eq!(code, Some(2), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("ingestor: error:")).collect();
    assert_eq!(lines.len(), 1, "one line: {log}");
}

async fn token_row(db: &TestDb) -> Option<(String, String, i16, i64)> {
    let c = db.client().await.unwrap();
    c.query_opt("SELECT name, symbol, decimals, start_block FROM tokens", &[])
        .await
        .ok()
        .flatten()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_without_code_and_a_node_without_the_token_are_refused() {
    let w = world(small(271)).await;
    let (rpc, db) = (w.chain.url.as_str(), w.db.url.as_str());
    let (from, to) = (w.history.start_block.to_string(), w.history.end_block.to_string());

    // An EOA (a holder of the history) given as the token: refused, nothing registered.
    let eoa = w.history.addresses[0].to_string();
    let range = ["--from", from.as_str(), "--to", to.as_str()];
    let mut args = vec!["--rpc-url", rpc, "--database-url", db, "--token", eoa.as_str()];
    args.extend(range);
    let (code, log) = ingestor(&args).await;
    one_line_refusal(code, &log);
    assert!(log.contains(&eoa) && log.contains("no code on chain 31337 at block"), "{log}");
    let c = w.db.client().await.unwrap();
    let rows: i64 = c.query_one("SELECT count(*) FROM tokens", &[]).await.unwrap().get(0);
    assert_eq!(rows, 0, "nothing registered for an address without code");

    // The real token, indexed: its metadata stored.
    w.ingest_all().await;
    let stored = token_row(&w.db).await.unwrap();
    assert!(!stored.0.is_empty() && stored.2 == 18, "{stored:?}");

    // The wrong node, with the same chain id, where the token does not exist: refused
    // before anything is written; the stored metadata is what it was.
    let other = Anvil::start(genesis_time()).await.unwrap();
    let token = w.history.token.to_string();
    let args = ["--rpc-url", other.url.as_str(), "--database-url", db, "--token", &token];
    let (code, log) = ingestor(&args).await;
    one_line_refusal(code, &log);
    assert_eq!(token_row(&w.db).await.unwrap(), stored, "metadata kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_above_the_head_is_not_fixed_and_nothing_is_served_before_a_commit() {
    let w = world(small(272)).await;
    let head = w.chain.head().await.unwrap();
    let token = w.history.token.to_string();
    let future = (head + 1000).to_string();
    // A following ingestor told to start above the head: it waits for the chain.
    let stop = tokio_util::sync::CancellationToken::new();
    let (rpc, db) = (w.chain.url.clone(), w.db.url.clone());
    let flags = ["--token", token.as_str(), "--from", future.as_str(), "--poll-interval", "100ms"];
    let flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    let waiting = tokio::spawn({
        let stop = stop.clone();
        async move {
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            rig::pair::ingest_until(&rpc, &db, &flags, stop).await
        }
    });
    let started = std::time::Instant::now();
    while token_row(&w.db).await.is_none() {
        assert!(started.elapsed() < Duration::from_secs(20), "no token row");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let qs = QueryService::start(&w.db.url).await.unwrap();
    let mut client = qs.client().await.unwrap();
    let e = client
        .get_top_holders(GetTopHoldersRequest { limit: 3, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("nothing indexed yet"), "{}", e.message());
    stop.cancel();
    waiting.await.unwrap().unwrap();

    // The right start, given next: accepted (nothing was committed), indexed, served.
    w.ingest_all().await;
    assert_eq!(token_row(&w.db).await.unwrap().3, w.history.start_block as i64);
    w.assert_balances_at(w.history.end_block).await;
    let top = client
        .get_top_holders(GetTopHoldersRequest { limit: 3, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(top.as_of_block, w.history.end_block);
}

/// Tables other tools leave in a database, each as SQL.
const FOREIGN: [(&str, &str); 8] = [
    (
        "golang-migrate",
        "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL); INSERT INTO schema_migrations VALUES (20240101120000, false)",
    ),
    (
        "rails",
        "CREATE TABLE schema_migrations (version character varying NOT NULL PRIMARY KEY); INSERT INTO schema_migrations VALUES ('20240101120000')",
    ),
    (
        "ours, from the future",
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now()); INSERT INTO schema_migrations (version, name) VALUES (999, 'later')",
    ),
    (
        "flyway",
        "CREATE TABLE flyway_schema_history (installed_rank int PRIMARY KEY, version varchar(50), script varchar(1000) NOT NULL)",
    ),
    ("a tokens table", "CREATE TABLE tokens (id serial PRIMARY KEY, name text)"),
    ("a balances view", "CREATE VIEW balances AS SELECT 1 AS id"),
    ("a transfers sequence", "CREATE SEQUENCE transfers"),
    (
        "django",
        "CREATE TABLE django_migrations (id serial PRIMARY KEY, app varchar(255), name varchar(255), applied timestamptz)",
    ),
];

/// Runs `ingestor --migrate-only` on a fresh database holding `picked` of [`FOREIGN`]:
/// it migrates (exit 0) or refuses in one line (exit 2), never panics or hangs.
async fn migrate_over(picked: &[usize]) -> Result<(), TestCaseError> {
    let db = TestDb::create().await.unwrap();
    let c = db.client().await.unwrap();
    // Two tools' tables of one name cannot both be there: the first one stays.
    let mut there = Vec::new();
    for &i in picked {
        if c.batch_execute(FOREIGN[i].1).await.is_ok() {
            there.push(i);
        }
    }
    let picked = &there;
    let args = ["--database-url", db.url.as_str(), "--migrate-only", "--max-outage", "5s"];
    let run = tokio::time::timeout(Duration::from_secs(60), ingestor(&args));
    let (code, log) = run.await.map_err(|_| TestCaseError::fail("ingestor hung"))?;
    prop_assert!(!log.contains("panicked"), "{:?}: {}", picked, log);
    let clashes = picked.iter().any(|&i| FOREIGN[i].0 != "flyway" && FOREIGN[i].0 != "django");
    if clashes {
        prop_assert_eq!(code, Some(2), "{:?}: {}", picked, log);
        let lines = log.lines().filter(|l| l.starts_with("ingestor: error:")).count();
        prop_assert_eq!(lines, 1, "{:?}: {}", picked, log);
    } else {
        prop_assert_eq!(code, Some(0), "{:?}: {}", picked, log);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tools_schema_migrations_is_named_not_a_panic() {
    let db = TestDb::create().await.unwrap();
    db.client().await.unwrap().batch_execute(FOREIGN[0].1).await.unwrap();
    let (code, log) = ingestor(&["--database-url", &db.url, "--migrate-only"]).await;
    one_line_refusal(code, &log);
    assert!(
        log.contains("schema_migrations") && log.contains("version bigint, dirty boolean"),
        "{log}"
    );
}

#[test]
fn any_mix_of_foreign_tables_migrates_or_is_refused_in_one_line() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config =
        ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(picked in proptest::sample::subsequence((0..FOREIGN.len()).collect::<Vec<_>>(), 0..=3))| {
        runtime.block_on(migrate_over(&picked))?;
    });
}
