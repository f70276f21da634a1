//! The node's own speed: plain `eth_getLogs` over the benchmark's range, one request after
//! the other as a simple client makes them, each answer parsed, nothing stored. The
//! backfill is measured against it.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::chain::BenchChain;

/// Fetches every Transfer log of `built`'s token with spans of about 5,000 logs; the time
/// and how many logs came back.
pub(crate) async fn raw(
    url: &str,
    built: &BenchChain,
    per_block: usize,
) -> anyhow::Result<(Duration, u64)> {
    let http = reqwest::Client::new();
    let span = (5_000 / per_block.max(1)).max(1) as u64;
    let spans: Vec<(u64, u64)> = (built.start_block..=built.end_block)
        .step_by(span as usize)
        .map(|from| (from, (from + span - 1).min(built.end_block)))
        .collect();
    let topic = format!("{:#x}", ingestor::abi::TRANSFER_TOPIC);
    let token = format!("{:#x}", built.token);
    let started = Instant::now();
    let counts = futures::stream::iter(spans)
        .map(|(from, to)| {
            let body = json!({
                "jsonrpc": "2.0", "id": 1, "method": "eth_getLogs",
                "params": [{ "address": token, "topics": [topic],
                             "fromBlock": format!("{from:#x}"), "toBlock": format!("{to:#x}") }],
            });
            let http = http.clone();
            async move {
                let answer: Value = http.post(url).json(&body).send().await?.json().await?;
                let logs = answer["result"]
                    .as_array()
                    .ok_or_else(|| anyhow::anyhow!("eth_getLogs {from}..={to}: {answer}"))?;
                Ok::<u64, anyhow::Error>(logs.len() as u64)
            }
        })
        .buffered(1)
        .collect::<Vec<_>>()
        .await;
    let took = started.elapsed();
    let mut total = 0;
    for c in counts {
        total += c?;
    }
    Ok((took, total))
}
