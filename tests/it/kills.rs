//! kill -9 of the ingestor binary at twenty moments of one backfill: at random times
//! (starting, fetching, inside a commit, while a filled partition's indexes are built)
//! and right after a COMMIT, before the batch's log line is out; and once while a
//! partition's index build waits, between its load and its indexes. Each restart resumes
//! from the checkpoint; in the end every transfer is stored once, every balance equals
//! balanceOf, and every partition has its indexes.

use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use rig::proxy::{FaultProxy, Rules};

use crate::world;

const KILLS: usize = 20;

/// The checkpoint, or None before the token's row exists.
async fn checkpoint(c: &tokio_postgres::Client) -> Option<i64> {
    c.query_opt("SELECT indexed_block FROM tokens", &[]).await.ok().flatten().map(|r| r.get(0))
}

/// Waits until the checkpoint has not moved for 300 ms (the ingestor is blocked).
async fn wait_still(c: &tokio_postgres::Client) {
    let started = Instant::now();
    let (mut last, mut since) = (checkpoint(c).await, Instant::now());
    while since.elapsed() < Duration::from_millis(300)
        && started.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let now = checkpoint(c).await;
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

/// Waits until no other connection to this test's database is left.
async fn gone(c: &tokio_postgres::Client) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let others: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if others == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the killed ingestor's connections are still open after 10 s");
}

/// The JSON log lines whose message is `message`.
fn logged<'a>(log: &'a [Value], message: &'a str) -> impl Iterator<Item = &'a Value> {
    log.iter().filter(move |l| l["fields"]["message"] == message)
}

#[allow(clippy::print_stdout)] // figures scripts/reliability.sh prints for docs/reliability.md
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kill_9s_during_a_backfill_lose_and_repeat_nothing() {
    let spec = rig::history::Spec {
        holders: 40,
        days: 16,
        blocks_per_day: 20,
        transfers_per_block: 4,
        spray_width: 4,
        extreme_amounts: false,
        seed: 41,
    };
    let w = world(spec).await;
    // A node 20 ms away, as a hosted one is: the backfill takes seconds, not a blink.
    let rules = Rules { latency: Duration::from_millis(20), ..Rules::default() };
    let node = FaultProxy::start(&w.chain.url, rules).await.unwrap();
    let bin = rig::pair::ingestor_binary().unwrap();
    // Hundreds of commits, so that kills land inside the backfill.
    let mut args = w.tiny_backfill_args(&node.url);
    args.extend(["--log-format".to_string(), "json".to_string()]);
    let mut c = w.db.client().await.unwrap();
    let end = w.history.end_block as i64;
    let (mut mid_backfill, mut after_commit_before_log) = (0, 0);

    // Partitions of 8 blocks: dozens fill and get their indexes built during the backfill.
    ingestor::store::migrate::run(&mut c).await.unwrap();
    c.batch_execute(
        "UPDATE transfer_partitioning SET blocks = 8;
         SELECT ensure_transfer_partitions(31337, 0, 0, false, NULL);",
    )
    .await
    .unwrap();
    killed_while_a_partition_is_indexed(&w, &bin, &args, &c).await;

    for round in 0..KILLS {
        let before = checkpoint(&c).await;
        let mut child = Command::new(&bin)
            .args(&args)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        // One page of pipe: an ingestor whose log is not read blocks at its next line.
        // SAFETY: fcntl on a pipe descriptor this process owns.
        unsafe { libc::fcntl(stderr.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
        let mut lines = BufReader::new(stderr).lines();
        let mut log: Vec<Value> = Vec::new();
        if round % 2 == 1 {
            // Read until a few commits are logged, then stop reading: once the pipe is full
            // the ingestor blocks writing a batch's "committed" line, after its COMMIT.
            let want = 1 + round % 3;
            let mut seen = 0;
            while seen < want {
                let Ok(Ok(Some(line))) =
                    tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await
                else {
                    break;
                };
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                seen += usize::from(v["fields"]["message"] == "committed");
                log.push(v);
            }
            wait_still(&c).await;
        } else {
            // A moment anywhere once it is indexing: fetching, committing, in between.
            let delay = Duration::from_millis((round as u64 * 137) % 300);
            let mut indexing = false;
            while !indexing {
                let Ok(Ok(Some(line))) =
                    tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await
                else {
                    break;
                };
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                indexing = v["fields"]["message"] == "indexing";
                log.push(v);
            }
            let reading = async {
                while let Ok(Some(line)) = lines.next_line().await {
                    log.push(serde_json::from_str(&line).unwrap_or(Value::Null));
                }
            };
            let _ = tokio::time::timeout(delay, reading).await;
        }
        child.start_kill().unwrap(); // SIGKILL
        child.wait().await.unwrap();
        // A COMMIT sent just before the kill still completes in Postgres: wait until the
        // dead process's connections are gone before reading where the next run starts.
        gone(&c).await;
        while let Ok(Some(line)) = lines.next_line().await {
            log.push(serde_json::from_str(&line).unwrap_or(Value::Null));
        }

        // It resumed from the checkpoint.
        if let (Some(before), Some(start)) =
            (before, logged(&log, "indexing").next().and_then(|l| l["fields"]["start"].as_i64()))
        {
            assert_eq!(start, before + 1, "round {round} did not resume after the checkpoint");
        }
        let after = checkpoint(&c).await.unwrap_or(-1);
        mid_backfill += usize::from(after < end);
        let last_logged = logged(&log, "committed")
            .filter_map(|l| l["span"]["to"].as_i64())
            .max()
            .unwrap_or(before.unwrap_or(w.history.start_block as i64 - 1));
        after_commit_before_log += usize::from(after > last_logged);
    }

    let status = tokio::time::timeout(
        Duration::from_secs(180),
        Command::new(&bin).args(&args).stderr(Stdio::null()).status(),
    )
    .await
    .expect("the last run finishes")
    .unwrap();
    assert!(status.success(), "the last run exits 0: {status}");

    assert!(mid_backfill >= KILLS / 2, "only {mid_backfill} of {KILLS} kills landed mid-backfill");
    assert!(after_commit_before_log >= 1, "no kill landed between a COMMIT and its log line");
    let row = c
        .query_one("SELECT (SELECT count(*) FROM transfers), transfer_count FROM tokens", &[])
        .await
        .unwrap();
    let (rows, counted): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(rows as u64, w.history.transfers, "every transfer stored once");
    assert_eq!(counted, rows, "the token's count agrees with its rows");
    w.assert_balances_at(w.history.end_block).await;
    w.assert_seq_in_chain_order().await;
    let unindexed: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_partition_tree('transfers') WHERE isleaf
               AND EXISTS (SELECT 1 FROM unnest(ARRAY['key', 'seq', 'from', 'to']) AS side
                           WHERE to_regclass(replace(relid::text, 'transfers_', 'transfers_' || side || '_')) IS NULL)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unindexed, 0, "every partition has its key, sequence, sender and receiver indexes");
    println!(
        "figures: kill -9 {KILLS} ({mid_backfill} mid-backfill, {after_commit_before_log} between a COMMIT and its log line), transfers {rows}, lost 0, stored twice 0"
    );
}

/// The first run backfills while partition 0's index build is held up by a lock the test
/// holds (CREATE INDEX waits for it), and is killed there: the build leaves a whole index
/// or none, never half of one, and every partition is indexed by the later runs.
async fn killed_while_a_partition_is_indexed(
    w: &crate::World,
    bin: &std::path::Path,
    args: &[String],
    c: &tokio_postgres::Client,
) {
    let holder = w.db.client().await.unwrap();
    holder
        .batch_execute("BEGIN; LOCK TABLE transfers_31337_at_0 IN ROW EXCLUSIVE MODE")
        .await
        .unwrap();
    let mut child =
        Command::new(bin).args(args).stderr(Stdio::null()).kill_on_drop(true).spawn().unwrap();
    let started = Instant::now();
    loop {
        let waiting: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'
                   AND query LIKE '%index_transfer_partitions%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no index build started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().unwrap(); // SIGKILL, the build waiting inside its transaction
    child.wait().await.unwrap();
    holder.batch_execute("ROLLBACK").await.unwrap();
    drop(holder);
    gone(c).await;
    // The killed process's backends notice only once they get the lock: each build then
    // either commits whole (as a COMMIT sent just before a kill does) or leaves nothing.
    let half_built: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_index
             WHERE indrelid = 'transfers_31337_at_0'::regclass AND NOT (indisvalid AND indisready)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(half_built, 0, "a build killed midway leaves no half-built index");
}
