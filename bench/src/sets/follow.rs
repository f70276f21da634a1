//! A token added to the tokens file of an ingestor that follows the set at the head: how
//! far behind the node the head tokens fall while it backfills, and what GetTopHolders of
//! one of them costs meanwhile.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use alloy_sol_types::SolCall;
use proto::pb::GetTopHoldersRequest;
use rig::chain::{Chain, DEPLOYER, TestToken};
use tokio::process::Command;

use super::chain::{SetChain, tokens_file};
use super::{SetFigures, ms, q};
use crate::chain::{BenchChain, Rng};

/// The set (stored at `url`, its file `file`) followed by an ingestor while a block with
/// transfers of its three largest tokens comes every second; the single token appended
/// to the file; measured until it has caught up: the head tokens' lag behind each new
/// block, and GetTopHolders(100) of the largest token, computed and cached.
#[allow(clippy::print_stdout, clippy::too_many_arguments)]
pub(super) async fn added_while_following(
    bin: &Path,
    anvil_url: &str,
    rpc: &mut Chain,
    url: &str,
    file: &Path,
    set: &SetChain,
    single: &BenchChain,
    f: &mut SetFigures,
) -> anyhow::Result<()> {
    let log = std::fs::File::create(bin.join("bench-sets-follow.log"))?;
    let _following = Command::new(bin.join("ingestor"))
        .args(rig::pair::LOCAL_PORTS)
        .args(["--rpc-url", anvil_url, "--database-url", url, "--log-format", "json"])
        .args(["--tokens-file", &file.display().to_string(), "--poll-interval", "100ms"])
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let computed = crate::load::serve(&bin.join("query-service"), url, 0).await?;
    let cached = crate::load::serve(&bin.join("query-service"), url, 256).await?;
    let db = rig::db::connect(url).await?;
    let head_tokens: Vec<Vec<u8>> = set.tokens[..3].iter().map(|(a, _)| a.to_vec()).collect();
    let head_checkpoint = || async {
        db.query_one(
            "SELECT min(indexed_block) FROM tokens WHERE address = ANY($1)",
            &[&head_tokens],
        )
        .await
        .map(|r| r.get::<_, Option<i64>>(0).unwrap_or(-1))
    };
    // Following at the head first: a block of the head tokens, mined once the
    // ingestor runs, is committed by it. (The store is at the head already from the
    // set's backfill, so its checkpoint alone would not say that the ingestor has read
    // its tokens file yet, and a file changed before that is its starting set.)
    let mut rng = Rng(0x000a_dded);
    let block = head_block(rpc, set, &mut rng).await?;
    let started = Instant::now();
    while head_checkpoint().await? < block as i64 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "the ingestor did not follow the set"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut lines: Vec<(Address, u64)> = set.tokens[..set.counts.len()].to_vec();
    lines.push((single.token, single.start_block));
    tokens_file(file, &lines)?;
    let added = Instant::now();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let top = set.tokens[0].0.to_string();
    let ask = |served: &crate::load::Served, mut stop: tokio::sync::watch::Receiver<bool>| {
        let mut client = served.client.clone();
        let token = top.clone();
        async move {
            let mut out = Vec::new();
            while !*stop.borrow_and_update() {
                let started = Instant::now();
                client
                    .get_top_holders(GetTopHoldersRequest {
                        token: token.clone(),
                        limit: 100,
                        ..Default::default()
                    })
                    .await?;
                out.push((started.duration_since(added), started.elapsed()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<_, anyhow::Error>(out)
        }
    };
    let asking =
        (tokio::spawn(ask(&computed, stop.clone())), tokio::spawn(ask(&cached, stop.clone())));
    let single_done = || async {
        db.query_one(
            "SELECT indexed_block FROM tokens WHERE address = $1",
            &[&single.token.as_slice()],
        )
        .await
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(-1)
    };
    loop {
        let block = head_block(rpc, set, &mut rng).await?;
        let mined = Instant::now();
        while head_checkpoint().await? < block as i64 {
            anyhow::ensure!(
                mined.elapsed() < Duration::from_secs(60),
                "the head tokens stopped following"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        f.head_lag.push(mined.elapsed());
        let head = rpc.head().await?;
        if single_done().await >= head as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1000).saturating_sub(mined.elapsed())).await;
    }
    f.added_seconds = added.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let computed = asking.0.await??;
    // When the slowest computed answers were asked, to set beside the ingestor's log.
    let slow: Vec<String> = computed
        .iter()
        .filter(|(_, took)| *took > Duration::from_millis(50))
        .map(|(at, took)| format!("{:.1} s: {:.0} ms", at.as_secs_f64(), ms(*took)))
        .collect();
    if !slow.is_empty() {
        println!("   computed answers over 50 ms, by when they were asked: {}", slow.join(", "));
    }
    f.top_computed = computed.into_iter().map(|(_, took)| took).collect();
    f.top_cached = asking.1.await??.into_iter().map(|(_, took)| took).collect();
    for v in [&mut f.head_lag, &mut f.top_computed, &mut f.top_cached] {
        v.sort();
    }
    println!(
        "   caught up in {:.1} s; the head tokens' lag behind each block: p50 {:.0} ms, max {:.0} ms ({} blocks); GetTopHolders(100) p99 computed {:.1} ms ({} calls), cached {:.1} ms ({} calls)",
        f.added_seconds,
        ms(q(&f.head_lag, 0.5)),
        ms(q(&f.head_lag, 1.0)),
        f.head_lag.len(),
        ms(q(&f.top_computed, 0.99)),
        f.top_computed.len(),
        ms(q(&f.top_cached, 0.99)),
        f.top_cached.len(),
    );
    Ok(())
}

/// Mines a block with a transfer of each of the set's three largest tokens (mints: always
/// valid); returns its number.
async fn head_block(rpc: &mut Chain, set: &SetChain, rng: &mut Rng) -> anyhow::Result<u64> {
    for (token, _) in &set.tokens[..3] {
        let to = vec![set.holders[0][(rng.next() % set.holders[0].len() as u64) as usize]];
        let call = TestToken::mintBatchCall { to, values: vec![U256::from(1_000u64)] };
        rpc.send(DEPLOYER, Some(*token), call.abi_encode(), 200_000).await?;
    }
    rpc.mine(1).await
}
