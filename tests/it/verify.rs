//! `ingestor verify` on a real chain and store: a correct store passes (all holders, a
//! sample, JSON); a balance corrupted on purpose makes it exit 1 naming that holder; a node
//! it cannot reach or a token not in the store exits 2.

use std::process::Output;

use tokio::process::Command;

use crate::{small, world};

async fn verify(rpc: &str, db: &str, token: &str, extra: &[&str]) -> (Option<i32>, String) {
    let Output { status, stdout, stderr } = Command::new(rig::pair::ingestor_binary().unwrap())
        .args(["--rpc-url", rpc, "--database-url", db, "--token", token])
        .args(["--max-attempts", "2", "--max-backoff", "50ms", "--max-outage", "1s", "verify"])
        .args(extra)
        .env_remove("DATABASE_URL")
        .env_remove("RPC_URL")
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&stdout).into_owned();
    assert!(
        !out.is_empty(),
        "verify printed nothing; stderr:\n{}",
        String::from_utf8_lossy(&stderr)
    );
    (status.code(), out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_on_a_correct_store_and_names_a_corrupted_holder() {
    let w = world(small(81)).await;
    w.ingest_all().await;
    let (rpc, db, token) = (w.chain.url.as_str(), w.db.url.as_str(), w.history.token.to_string());
    let c = w.db.client().await.unwrap();
    let rows: i64 = c.query_one("SELECT count(*) FROM balances", &[]).await.unwrap().get(0);

    let (code, out) = verify(rpc, db, &token, &[]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(": OK;")
            && out.contains(&format!(
                "{rows} of {rows} holders checked (via json-rpc batches), 0 mismatched"
            )),
        "{out}"
    );

    let (code, out) = verify(rpc, db, &token, &["--sample", "3", "--json"]).await;
    assert_eq!(code, Some(0), "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (report["ok"].as_bool(), report["checked"].as_u64()),
        (Some(true), Some(3)),
        "{out}"
    );
    assert_eq!(report["supply"]["ok"], true, "{out}");

    // One balance corrupted on purpose.
    let victim = w.history.addresses[3];
    let stored: String = c
        .query_one(
            "UPDATE balances SET balance = balance + 7 WHERE address = $1 RETURNING balance::text",
            &[&victim],
        )
        .await
        .unwrap()
        .get(0);
    let (code, out) = verify(rpc, db, &token, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("MISMATCH") && out.contains("1 mismatched") && out.contains("supply differs"),
        "{out}"
    );
    let line = out.lines().find(|l| l.starts_with("mismatch ")).expect("a mismatch line");
    assert!(
        line.contains(&victim.to_string()) && line.contains(&format!("stored {stored}")),
        "{line}"
    );
    let (code, out) = verify(rpc, db, &token, &["--json"]).await;
    assert_eq!(code, Some(1), "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let named = report["mismatches"][0]["address"].as_str().unwrap_or_default();
    assert!(named.eq_ignore_ascii_case(&victim.to_string()), "{out}");
    assert_eq!(report["mismatches"].as_array().map(Vec::len), Some(1), "{out}");

    // It could not check: no node, or a token the store does not hold.
    let (code, out) = verify("http://127.0.0.1:9", db, &token, &[]).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("could not check"), "{out}");
    let other = "0x000000000000000000000000000000000000dEaD";
    let (code, out) = verify(rpc, db, other, &[]).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("not in the store"), "{out}");
}

/// With Multicall3 at its canonical address (its runtime code put there with
/// anvil_setCode), verify reads every balance in one eth_call; the result is the same, a
/// corrupted balance is still named, and a node without it gets JSON-RPC batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reads_balances_through_multicall3_where_the_chain_has_it() {
    let mut w = world(small(82)).await;
    let artifact: serde_json::Value = serde_json::from_str(rig::chain::MULTICALL3_JSON).unwrap();
    w.chain
        .rpc(
            "anvil_setCode",
            serde_json::json!([
                "0xcA11bde05977b3631167028862bE2a173976CA11",
                artifact["deployedBytecode"]
            ]),
        )
        .await
        .unwrap();
    let head = w.chain.mine(12).await.unwrap();
    w.ingest(&w.db, w.history.start_block, head).await;
    let proxy = rig::proxy::FaultProxy::start(&w.chain.url, Default::default()).await.unwrap();
    let (db, token) = (w.db.url.as_str(), w.history.token.to_string());
    let c = w.db.client().await.unwrap();
    let rows: i64 = c.query_one("SELECT count(*) FROM balances", &[]).await.unwrap().get(0);
    assert!(rows > 10);

    let before = proxy.calls();
    let (code, out) = verify(&proxy.url, db, &token, &["--json"]).await;
    assert_eq!(code, Some(0), "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (report["via"].as_str(), report["checked"].as_i64()),
        (Some("multicall3"), Some(rows))
    );
    // eth_getCode, totalSupply() and one aggregate3 (besides the chain id and such).
    let calls = proxy.calls() - before;
    assert!(calls < 8 && (calls as i64) < rows, "{calls} calls for {rows} holders");

    let victim = w.history.addresses[5];
    c.execute("UPDATE balances SET balance = balance + 1 WHERE address = $1", &[&victim])
        .await
        .unwrap();
    let (code, out) = verify(&proxy.url, db, &token, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("(via multicall3), 1 mismatched"), "{out}");
    let line = out.lines().find(|l| l.starts_with("mismatch ")).expect("a mismatch line");
    assert!(line.contains(&victim.to_string()), "{line}");

    // The same node without Multicall3: batches, same verdict.
    w.chain
        .rpc(
            "anvil_setCode",
            serde_json::json!(["0xcA11bde05977b3631167028862bE2a173976CA11", "0x"]),
        )
        .await
        .unwrap();
    let head = w.chain.mine(12).await.unwrap();
    w.ingest(&w.db, head, head).await;
    let (code, out) = verify(&w.chain.url, db, &token, &[]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("(via json-rpc batches), 1 mismatched"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_following_ingestor_reverifies_a_sample_and_exports_it() {
    let w = world(small(82)).await;
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut child = Command::new(rig::pair::ingestor_binary().unwrap())
        .args(["--rpc-url", &w.chain.url, "--database-url", &w.db.url])
        .args([
            "--token",
            &w.history.token.to_string(),
            "--from",
            &w.history.start_block.to_string(),
        ])
        .args(["--poll-interval", "100ms", "--verify-every", "300ms", "--verify-sample", "1000"])
        .args(["--metrics-listen", &metrics.to_string(), "--health-listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    crate::wait_indexed(&w.db, w.history.end_block).await;
    let c = w.db.client().await.unwrap();
    let rows: i64 = c.query_one("SELECT count(*) FROM balances", &[]).await.unwrap().get(0);
    crate::wait_metric(metrics, "ingestor_verify_checked", |v| v as i64 == rows).await;
    crate::wait_metric(metrics, "ingestor_verify_last_run_timestamp_seconds", |v| v > 0.0).await;
    assert_eq!(crate::metric(metrics, "ingestor_verify_mismatched").await, Some(0.0));

    let victim = w.history.addresses[2];
    c.execute("UPDATE balances SET balance = balance + 1 WHERE address = $1", &[&victim])
        .await
        .unwrap();
    // The holder and the supply sum: two mismatches.
    crate::wait_metric(metrics, "ingestor_verify_mismatched", |v| v == 2.0).await;
    child.start_kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_check_catches_a_provider_that_truncates() {
    use rig::proxy::{FaultProxy, Rules};

    let w = world(small(83)).await;
    w.ingest_all().await;
    let (db, token) = (w.db.url.as_str(), w.history.token.to_string());
    let honest = FaultProxy::start(&w.chain.url, Rules::default()).await.unwrap();
    let truncating =
        FaultProxy::start(&w.chain.url, Rules { truncate_logs: true, ..Rules::default() })
            .await
            .unwrap();
    let span = ["--cross-check", "--cross-check-span", "2"];

    let both = format!("{},{}", honest.url, w.chain.url);
    let (code, out) = verify(&both, db, &token, &span).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("cross-check") && out.contains("ranges: OK"), "{out}");

    let both = format!("{},{}", honest.url, truncating.url);
    let (code, out) = verify(&both, db, &token, &span).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("ranges: MISMATCH"), "{out}");
    let diff = out.lines().find(|l| l.starts_with("range ")).expect("a differing range");
    let counts: Vec<u64> =
        diff.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
    // range A..=B: #1 n1 logs, #2 n2 logs, store s  ->  [A, B, 1, n1, 2, n2, s]
    assert_eq!(counts.len(), 7, "{diff}");
    assert_eq!((counts[3], counts[5] + 1, counts[6]), (counts[3], counts[3], counts[3]), "{diff}");

    let (code, out) = verify(&w.chain.url, db, &token, &span).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("needs two --rpc-url"), "{out}");
}
