//! How the query-service answers while a backfill writes. One client asks, in turn,
//! GetTopHolders(100) and a lookup of 10 holders of the chain (answer cache off: every
//! answer computed) from the backfill's first commit to its end, then for as long again
//! on the finished store; every answer's `as_of_block` must be a checkpoint the store
//! had reached (never behind an earlier answer's, never past the chain's end).

use std::time::{Duration, Instant};

use alloy_primitives::Address;
use proto::pb::{GetHoldersRequest, GetTopHoldersRequest};
use tokio::sync::watch;

use crate::chain::Rng;
use crate::load::{LOOKUP_SIZE, Served};

/// Latencies of one request kind, sorted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Latencies {
    pub(crate) top: Vec<Duration>,
    pub(crate) lookup: Vec<Duration>,
    /// Answers refused with DEADLINE_EXCEEDED (the query-service's statement timeout).
    pub(crate) top_timed_out: usize,
    pub(crate) lookup_timed_out: usize,
}

/// What the query side saw during and after a backfill.
#[derive(Debug, Clone)]
pub(crate) struct DuringFigures {
    pub(crate) during: Latencies,
    pub(crate) after: Latencies,
    /// The backfill's wall time with this load on.
    pub(crate) backfill_seconds: f64,
}

/// Asks until `stop` turns true; checks each answer's block against `end_block` and the
/// previous answers'.
pub(crate) async fn ask_until(
    served: &Served,
    token: Address,
    holders: &[Address],
    end_block: u64,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Latencies> {
    let mut client = served.client.clone();
    let mut rng = Rng(0x5eed);
    let mut out = Latencies::default();
    let mut newest = 0u64;
    let token = token.to_string();
    let mut i = 0u64;
    while !*stop.borrow_and_update() {
        let started = Instant::now();
        let as_of = if i.is_multiple_of(2) {
            let r = client
                .get_top_holders(GetTopHoldersRequest {
                    limit: 100,
                    token: token.clone(),
                    ..Default::default()
                })
                .await;
            match timed_out(r)? {
                Some(r) => {
                    out.top.push(started.elapsed());
                    r.into_inner().as_of_block
                }
                None => {
                    out.top_timed_out += 1;
                    newest
                }
            }
        } else {
            let addresses = (0..LOOKUP_SIZE)
                .map(|_| holders[(rng.next() % holders.len() as u64) as usize].to_string())
                .collect();
            let r = client
                .get_holders(GetHoldersRequest {
                    addresses,
                    token: token.clone(),
                    ..Default::default()
                })
                .await;
            match timed_out(r)? {
                Some(r) => {
                    out.lookup.push(started.elapsed());
                    r.into_inner().as_of_block
                }
                None => {
                    out.lookup_timed_out += 1;
                    newest
                }
            }
        };
        anyhow::ensure!(
            as_of >= newest && as_of <= end_block,
            "an answer as of block {as_of} after one as of {newest} (the chain ends at {end_block})"
        );
        newest = as_of;
        i += 1;
    }
    out.top.sort();
    out.lookup.sort();
    Ok(out)
}

/// The answer, or `None` if the query-service gave up on it (DEADLINE_EXCEEDED: its
/// statement timeout); any other failure is an error.
fn timed_out<T>(r: Result<T, tonic::Status>) -> anyhow::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(s) if s.code() == tonic::Code::DeadlineExceeded => Ok(None),
        Err(s) => Err(s.into()),
    }
}

/// Asks for `seconds` on a store that no longer changes.
pub(crate) async fn ask_for(
    served: &Served,
    token: Address,
    holders: &[Address],
    end_block: u64,
    seconds: f64,
) -> anyhow::Result<Latencies> {
    let (tx, rx) = watch::channel(false);
    let timer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs_f64(seconds.max(1.0))).await;
        let _ = tx.send(true);
    });
    let out = ask_until(served, token, holders, end_block, rx).await;
    timer.abort();
    out
}

/// The `q` quantile of sorted latencies.
pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Duration {
    crate::load::percentile(sorted, q)
}
