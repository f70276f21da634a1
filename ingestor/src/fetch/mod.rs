//! Fetches the Transfer logs of a block range as a stream of contiguous chunks, in block
//! order, with several `eth_getLogs` requests in flight. Spans start narrow, shrink when the
//! node refuses them (to the span it suggests, the maximum it names, or by half) and grow
//! again while answers stay small. Each chunk comes decoded, with every block time filled.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};

use alloy_primitives::Address;
use futures::{Stream, StreamExt};
use tracing::{debug, warn};

use crate::decode::{self, Transfer};
use crate::rpc::{Rpc, RpcError};

mod width;

pub use width::{SpanPolicy, Width};

/// Addresses in one `eth_getLogs` filter at most: a larger set is asked in several lists
/// per span (providers cap the list, and a long one makes the request heavy).
pub const ADDRESSES_PER_REQUEST: usize = 1000;

/// A probe (a span wider than any answered) of at least this many blocks is sampled first
/// (see [`fetch_span`]).
const SAMPLED_FROM: u64 = 8;

/// The tokens a range is fetched for, each from the block its index resumes at: a span
/// asks for every token whose start it reaches, in one address list (or a few, past
/// [`ADDRESSES_PER_REQUEST`]), whatever their number.
#[derive(Debug, Clone)]
pub struct TokenList(Arc<Vec<(u64, Address)>>);

impl TokenList {
    /// `tokens` as (first block to fetch, address).
    pub fn new(tokens: impl IntoIterator<Item = (u64, Address)>) -> Self {
        let mut v: Vec<(u64, Address)> = tokens.into_iter().collect();
        v.sort();
        Self(Arc::new(v))
    }

    /// The same tokens, none fetched from later than `block`.
    pub fn lowered_to(&self, block: u64) -> Self {
        Self::new(self.0.iter().map(|(from, a)| ((*from).min(block), *a)))
    }

    /// The address lists of the tokens a span ending at `end` reaches.
    fn lists(&self, end: u64) -> Vec<Vec<Address>> {
        let reached = self.0.partition_point(|(from, _)| *from <= end);
        self.0[..reached]
            .chunks(ADDRESSES_PER_REQUEST)
            .map(|c| c.iter().map(|(_, a)| *a).collect())
            .collect()
    }
}

/// The contiguous blocks of one or more requests, decoded.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The blocks covered.
    pub span: RangeInclusive<u64>,
    /// Their transfers, in log order, with block times.
    pub transfers: Vec<Transfer>,
    /// Logs with the Transfer topic but another shape: (token, block, log index).
    pub rejected: Vec<(Address, u64, u64)>,
    /// `eth_getLogs` requests it took (refusals included).
    pub requests: u32,
}

/// Fetches `range` as an ordered stream of chunks. A chunk is one planned span; up to
/// `policy.concurrency` spans are fetched at once, each in its own task, so fetching goes
/// on while the consumer writes.
pub fn chunks(
    rpc: Rpc,
    tokens: TokenList,
    range: RangeInclusive<u64>,
    policy: SpanPolicy,
) -> impl Stream<Item = anyhow::Result<Chunk>> {
    let width = Arc::new(Mutex::new(Width::new(&policy)));
    // Spans ended so far: a planner waiting for a probe wakes when one ends.
    let (ended, _) = tokio::sync::watch::channel(0u64);
    let ended = Arc::new(ended);
    let end = *range.end();
    let first = *range.start();
    let planner = futures::stream::unfold(Some(first), move |next| {
        let width = width.clone();
        let ended = ended.clone();
        async move {
            let start = next.filter(|&s| s <= end)?;
            let mut seen = ended.subscribe();
            let (w, probe) = loop {
                if let Some(planned) = width.lock().expect("width lock").plan() {
                    break planned;
                }
                // Errs only when no span is left to answer; plan on regardless.
                if seen.changed().await.is_err() {
                    break (width.lock().expect("width lock").current(), false);
                }
            };
            let stop = start.saturating_add(w - 1).min(end);
            let following = if stop >= end { None } else { Some(stop + 1) };
            Some(((start..=stop, width, ended, probe), following))
        }
    });
    planner
        .map(move |(span, width, ended, probe)| {
            let rpc = rpc.clone();
            let lists = tokens.lists(*span.end());
            // Aborted when the stream is dropped (a failed or finished range).
            tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
                let chunk = fetch_span(&rpc, &lists, span, &width, probe).await;
                if probe {
                    width.lock().expect("width lock").probed();
                }
                ended.send_modify(|n| *n += 1);
                chunk
            }))
        })
        .buffered(policy.concurrency.max(1))
        .map(|joined| {
            joined.map_err(|e| anyhow::anyhow!("a fetch task failed: {e}")).and_then(|r| r)
        })
}

/// [`chunks`] driven by a task of its own, a few chunks ahead of the consumer: the next
/// spans are requested and decoded while the consumer writes one (a stream is otherwise
/// only planned while it is polled). The task ends with the receiver, or after an error.
pub fn prefetched(
    rpc: Rpc,
    tokens: TokenList,
    range: RangeInclusive<u64>,
    policy: SpanPolicy,
) -> Prefetched {
    // Memory: these chunks and the spans in flight.
    let (tx, rx) = tokio::sync::mpsc::channel(policy.concurrency.max(2) + 2);
    let stream = chunks(rpc, tokens, range, policy);
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(chunk) = stream.next().await {
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                break;
            }
        }
    });
    Prefetched { rx, _task: tokio_util::task::AbortOnDropHandle::new(task) }
}

/// The chunks of [`prefetched`], in block order; dropping it stops the fetching.
#[derive(Debug)]
pub struct Prefetched {
    rx: tokio::sync::mpsc::Receiver<anyhow::Result<Chunk>>,
    _task: tokio_util::task::AbortOnDropHandle<()>,
}

impl Prefetched {
    /// The next chunk; `None` once the range is done (or the fetching ended on an error,
    /// which came before).
    pub async fn next(&mut self) -> Option<anyhow::Result<Chunk>> {
        self.rx.recv().await
    }
}

/// Fetches every log of `span` of the tokens in `lists` (one address list, or a few for
/// a large set), in as many requests as the node needs. Each list's logs are decoded as
/// they arrive, so a span holds one list's raw logs at a time.
async fn fetch_span(
    rpc: &Rpc,
    lists: &[Vec<Address>],
    span: RangeInclusive<u64>,
    width: &Mutex<Width>,
    probe: bool,
) -> anyhow::Result<Chunk> {
    let started = std::time::Instant::now();
    let mut transfers = Vec::new();
    let mut rejected = Vec::new();
    let mut requests = 0u32;
    // With several lists the span's size is learned from all of their logs together:
    // each list alone returns a fraction of them, and learning from that would grow the
    // span until every list returned the target (a span of lists times the target).
    let per_request = lists.len() <= 1;
    let mut logs = Vec::new();
    // A probe's last block first, alone: a quiet stretch grows the width fast, and the
    // first span past it into a dense stretch would otherwise ask for an answer many
    // times the target, which the node builds whole before the answer cap can refuse it
    // (a 90 MB answer, about a second of Anvil's time, in the token-set benchmark).
    // When that block says the span is too wide, the rest goes in rounds at the width
    // it fills.
    let mut rest = span.clone();
    let mut in_rounds = false;
    if probe && span.end() - span.start() + 1 >= SAMPLED_FROM {
        let last = *span.end();
        for list in lists {
            requests += fetch_list(rpc, list, &(last..=last), width, false, &mut logs).await?;
        }
        in_rounds = width.lock().expect("width lock").on_sample(logs.len(), last - span.start());
        rest = *span.start()..=last - 1;
    }
    // (The sample's logs, of every list, are decoded with the first list's.)
    for list in lists {
        requests += if in_rounds {
            fetch_rounds(rpc, list, rest.clone(), width, per_request, &mut logs).await?
        } else {
            fetch_list(rpc, list, &rest, width, per_request, &mut logs).await?
        };
        for log in logs.drain(..) {
            match decode::decode(&log) {
                Ok(t) => transfers.push(t),
                Err(why) => {
                    rejected.push((
                        log.inner.address,
                        log.block_number.unwrap_or_default(),
                        log.log_index.unwrap_or_default(),
                    ));
                    debug!(block = ?log.block_number, log_index = ?log.log_index, %why, "skipped a log");
                }
            }
        }
    }
    if !per_request {
        let blocks = span.end() - span.start() + 1;
        width.lock().expect("width lock").on_success(blocks, transfers.len() + rejected.len());
    }
    // Log order is block order then position, whichever token logged.
    transfers.sort_by_key(|t| (t.block_number, t.log_index));
    fill_block_times(rpc, &mut transfers).await?;
    debug!(
        from = span.start(),
        to = span.end(),
        logs = transfers.len() + rejected.len(),
        requests,
        ms = started.elapsed().as_millis() as u64,
        "fetched a span"
    );
    Ok(Chunk { span, transfers, rejected, requests })
}

/// Fetches every log of `span` for the addresses `list` into `logs`; returns the requests
/// it took. `learn`: each answer's size teaches the span width (refusals always do).
async fn fetch_list(
    rpc: &Rpc,
    list: &[Address],
    span: &RangeInclusive<u64>,
    width: &Mutex<Width>,
    learn: bool,
    logs: &mut Vec<alloy_rpc_types_eth::Log>,
) -> anyhow::Result<u32> {
    let retry = rpc.retry_policy();
    let mut cursor = *span.start();
    let mut blocks = span.end() - span.start() + 1;
    let mut failures = 0u32;
    let mut requests = 0u32;
    while cursor <= *span.end() {
        let stop = cursor.saturating_add(blocks - 1).min(*span.end());
        requests += 1;
        match rpc.transfer_logs(list, cursor..=stop).await {
            Ok(got) => {
                if learn {
                    width.lock().expect("width lock").on_success(stop - cursor + 1, got.len());
                }
                logs.extend(got);
                cursor = stop + 1;
                failures = 0;
            }
            Err(RpcError::TooLarge { suggested, max_blocks, over_cap, message }) => {
                let asked = stop - cursor + 1;
                // Use a suggestion only if it starts where we asked and is narrower; an
                // answer refused for its size narrows in proportion, to half the cap.
                let suggested_blocks = suggested
                    .filter(|r| *r.start() == cursor && *r.end() < stop)
                    .map(|r| r.end() - r.start() + 1)
                    .or_else(|| {
                        over_cap.map(|(bytes, cap)| {
                            (asked as u128 * cap as u128 / (2 * bytes.max(1)) as u128) as u64
                        })
                    })
                    .filter(|&b| b >= 1 && b < asked);
                if asked == 1 {
                    failures += 1;
                    anyhow::ensure!(
                        failures < retry.max_attempts,
                        "the node refuses even the single block {cursor}: {message}"
                    );
                    tokio::time::sleep(retry.backoff(failures)).await;
                    continue;
                }
                blocks = width.lock().expect("width lock").on_refusal(
                    asked,
                    suggested_blocks,
                    max_blocks,
                );
                debug!(from = cursor, to = stop, next_blocks = blocks, %message, "span refused; narrowing");
                if cursor.saturating_add(blocks) <= *span.end() {
                    // A span refused for its size is most often the first one into a
                    // dense stretch: the rest of it is fetched in rounds.
                    let rest = cursor..=*span.end();
                    return Ok(requests + fetch_rounds(rpc, list, rest, width, learn, logs).await?);
                }
            }
            Err(e @ (RpcError::RateLimited { .. } | RpcError::Transient { .. })) => {
                failures += 1;
                if failures >= retry.max_attempts {
                    return Err(anyhow::anyhow!(e)
                        .context(format!("eth_getLogs {cursor}..={stop} kept failing")));
                }
                let mut delay = retry.backoff(failures);
                if let RpcError::RateLimited { retry_after: Some(after), .. } = &e {
                    delay = delay.max(*after);
                }
                warn!(from = cursor, to = stop, attempt = failures, error = %bootstrap::ErrorChain(&e), delay_ms = delay.as_millis() as u64, "eth_getLogs failed; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e @ RpcError::Fatal { .. }) => {
                return Err(anyhow::anyhow!(e).context(format!("eth_getLogs {cursor}..={stop}")));
            }
        }
        // Continue at what the node accepts now: narrower after a refusal, wider after
        // small answers.
        blocks = width.lock().expect("width lock").current().max(1);
    }
    Ok(requests)
}

/// Fetches `span` in rounds of a few pieces at once, as spans are (one after another, the
/// writer would wait for this one span alone), each round at the width the last taught;
/// for a span wider than the node has shown it can answer. Returns the requests it took.
async fn fetch_rounds(
    rpc: &Rpc,
    list: &[Address],
    span: RangeInclusive<u64>,
    width: &Mutex<Width>,
    learn: bool,
    logs: &mut Vec<alloy_rpc_types_eth::Log>,
) -> anyhow::Result<u32> {
    let at_once = width.lock().expect("width lock").at_once();
    let mut requests = 0;
    let mut at = *span.start();
    while at <= *span.end() {
        let w = width.lock().expect("width lock").current().max(1);
        let round = pieces(at..=*span.end(), w, at_once);
        let last = round.last().map_or(*span.end(), |p| *p.end());
        let answers = futures::future::join_all(round.into_iter().map(|piece| async move {
            let mut got = Vec::new();
            let n = Box::pin(fetch_list(rpc, list, &piece, width, learn, &mut got)).await?;
            anyhow::Ok((n, got))
        }))
        .await;
        for answer in answers {
            let (n, got) = answer?;
            requests += n;
            logs.extend(got);
        }
        if last >= *span.end() {
            break;
        }
        at = last + 1;
    }
    Ok(requests)
}

/// The first `most` consecutive pieces of `blocks` blocks of `span` (the last one of the
/// span shorter).
fn pieces(span: RangeInclusive<u64>, blocks: u64, most: usize) -> Vec<RangeInclusive<u64>> {
    let blocks = blocks.max(1);
    let mut out = Vec::new();
    let mut at = *span.start();
    while at <= *span.end() && out.len() < most {
        let stop = at.saturating_add(blocks - 1).min(*span.end());
        out.push(at..=stop);
        match stop.checked_add(1) {
            Some(next) => at = next,
            None => break,
        }
    }
    out
}

/// Fills `block_time` where the node did not send `blockTimestamp` with its logs, with one
/// batched header request for the blocks that hold such transfers (never for every block).
async fn fill_block_times(rpc: &Rpc, transfers: &mut [Transfer]) -> anyhow::Result<()> {
    let missing: BTreeSet<u64> =
        transfers.iter().filter(|t| t.block_time.is_none()).map(|t| t.block_number).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let numbers: Vec<u64> = missing.into_iter().collect();
    let headers = rpc.blocks(&numbers).await.context_blocks(&numbers)?;
    let times: std::collections::HashMap<u64, u64> =
        headers.iter().map(|b| (b.number, b.timestamp)).collect();
    for t in transfers.iter_mut().filter(|t| t.block_time.is_none()) {
        t.block_time = Some(*times.get(&t.block_number).ok_or_else(|| {
            anyhow::anyhow!("the node returned no header for block {}", t.block_number)
        })?);
    }
    Ok(())
}

trait BlocksContext<T> {
    fn context_blocks(self, numbers: &[u64]) -> anyhow::Result<T>;
}

impl<T> BlocksContext<T> for Result<T, RpcError> {
    fn context_blocks(self, numbers: &[u64]) -> anyhow::Result<T> {
        self.map_err(|e| {
            anyhow::anyhow!(e).context(format!(
                "fetching headers of {} blocks ({}..={})",
                numbers.len(),
                numbers.first().unwrap_or(&0),
                numbers.last().unwrap_or(&0)
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::pieces;

    #[test]
    fn a_refused_span_is_cut_into_consecutive_pieces() {
        assert_eq!(pieces(10..=29, 6, 9), vec![10..=15, 16..=21, 22..=27, 28..=29]);
        assert_eq!(pieces(10..=29, 6, 2), vec![10..=15, 16..=21], "at most `most`");
        assert_eq!(pieces(5..=5, 6, 4), vec![5..=5]);
        assert_eq!(pieces(0..=3, 0, 9), vec![0..=0, 1..=1, 2..=2, 3..=3], "no empty pieces");
        assert_eq!(pieces(0..=u64::MAX, 1, 3).len(), 3, "a round of a wide span is cut short");
        assert_eq!(
            pieces(u64::MAX - 1..=u64::MAX, 1, 9),
            vec![u64::MAX - 1..=u64::MAX - 1, u64::MAX..=u64::MAX]
        );
    }
}
