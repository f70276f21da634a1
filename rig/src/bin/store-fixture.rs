//! A real store for tests written in other languages (the Python client's pytest): starts
//! Anvil with the test history, a throwaway database, and the `ingestor` binary following
//! the chain; once the whole history is indexed it prints one JSON line saying where each
//! part is, then keeps them up until its standard input closes (or it is killed, which
//! ends Anvil and the ingestor with it; the database is then left behind).
//!
//! The caller runs its own query-service against `database_url` (so it can restart it)
//! and asks `rpc_url` for `balanceOf` at any block: Anvil keeps every past state, lets any
//! address send (impersonation) and mines only on `evm_mine`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use rig::anvil::Anvil;
use rig::chain::Chain;
use rig::history::{self, Spec};

#[allow(clippy::print_stdout)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let genesis =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() - 30 * 86_400;
    let anvil = Anvil::start(genesis).await?;
    let mut chain = Chain::connect(&anvil.url).await?;
    let h = history::build(&mut chain, Spec::test()).await?;
    let db = rig::db::TestDb::create().await?;

    let mut ingestor =
        rig::pair::follow_binary(&anvil.url, &db.url, h.token, h.start_block, 2, Stdio::inherit())?;

    let client = db.client().await?;
    let started = Instant::now();
    loop {
        // No table yet while the ingestor migrates the new database.
        let indexed: Option<i64> = client
            .query_opt("SELECT indexed_block FROM tokens", &[])
            .await
            .ok()
            .flatten()
            .map(|r| r.get(0));
        if indexed.is_some_and(|b| b >= h.end_block as i64) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "the history was not indexed within 120 s"
        );
        if let Some(status) = ingestor.try_wait()? {
            anyhow::bail!("the ingestor stopped: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let described = serde_json::json!({
        "rpc_url": anvil.url,
        "database_url": db.url,
        "token": h.token,
        "other_token": h.other_token,
        "start_block": h.start_block,
        "end_block": h.end_block,
        "transfers": h.transfers,
        "rejected_logs": h.rejected_logs,
        "addresses": h.addresses,
    });
    println!("{described}");

    // Up until the caller closes our standard input.
    tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
        .await??;
    let _ = ingestor.start_kill();
    let _ = ingestor.wait().await;
    drop(db);
    drop(anvil);
    Ok(())
}
