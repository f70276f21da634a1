//! GetTopHolders and GetHolders: a ranking (first page or after a page token) or a
//! lookup of addresses, at the checkpoint or at a past moment, with ranks, shares,
//! 7-day changes and human-unit balances. Ranked answers are kept in the answer cache
//! per store state.

use std::future::Future;
use std::sync::Arc;

use alloy_primitives::U256;
use proto::pb::{GetHoldersRequest, GetTopHoldersRequest, Holder, HoldersResponse};

use super::{Call, Holders, timestamp};
use crate::cache::Key;
use crate::error::QueryError;
use crate::feed::State;
use crate::input::{self, At, PageToken, Seal};
use crate::lane::Cost;
use crate::store::tokens::Wanted;
use crate::store::{self, HolderRow, Moment, TokenView};
use crate::warm::{Of, Question};
use tokio_util::sync::CancellationToken;
use tracing::debug;

impl Holders {
    /// The ranked answer for `key`'s state from the cache, or read by `read` and kept.
    async fn ranked_answer<F>(&self, key: Key, read: F) -> Result<HoldersResponse, QueryError>
    where
        F: Future<Output = Result<HoldersResponse, QueryError>>,
    {
        if let Some(hit) = self.answers.get(&key) {
            return Ok((*hit).clone());
        }
        let answer = read.await?;
        self.answers.put(key, Arc::new(answer.clone()));
        Ok(answer)
    }

    /// Holders at `moment` holding at least `min` (None: every holder). Without a filter
    /// the moment says (the token row at the checkpoint, the ingestor's count kept per
    /// block in the past); a filter is counted once per store state and kept with the
    /// ranked answers: a range of the rank index at the checkpoint, a pass over the
    /// history in the past.
    async fn holder_count(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        token: &TokenView,
        moment: &Moment,
        min: Option<&str>,
    ) -> Result<u64, QueryError> {
        let Some(min) = min else {
            return Ok(moment.holders.max(0) as u64);
        };
        let key = key(token, moment, -1, "count", min);
        let counted = self
            .ranked_answer(key, async {
                let n = if moment.latest {
                    store::holders::holder_count(tx, token, min).await?
                } else {
                    store::history::holder_count_at(tx, token, moment, min).await?
                };
                Ok(HoldersResponse { holder_count: n.max(0) as u64, ..Default::default() })
            })
            .await?;
        Ok(counted.holder_count)
    }

    pub(super) async fn top(
        &self,
        call: &Call,
        req: GetTopHoldersRequest,
    ) -> Result<HoldersResponse, QueryError> {
        let limit = input::count("limit", req.limit, input::DEFAULT_TOP)?;
        let wanted = input::wanted(&req.token, req.chain_id)?;
        let at = input::at(req.finality, req.at_block, req.at_time.as_ref())?;
        let floor = input::min_balance(&req.min_balance)?;
        // At the head, a question asked lately is answered from memory while its answer
        // is the store's current state (see crate::warm).
        let question = (matches!(at, At::Latest) && self.warm.on()).then_some(Question {
            wanted,
            limit,
            floor,
        });
        if let Some(q) = &question
            && self.feed.listening()
        {
            let held = self.feed.held();
            if let Some(kept) = self.warm.get(q, &held.borrow(), req.min_block) {
                self.metrics.warm.with_label_values(&["served"]).inc();
                return Ok((*kept).clone());
            }
        }
        self.reach(wanted, req.min_block).await?;
        let (answer, of) = self.read_top(call.budget, wanted, at, limit, floor).await?;
        if let Some(q) = question {
            self.warm.put(q, of, Arc::new(answer.clone()));
        }
        Ok(answer)
    }

    /// GetTopHolders read from the store (or the answer cache), with the token and state
    /// it was read in.
    async fn read_top(
        &self,
        budget: Option<std::time::Duration>,
        wanted: Wanted,
        at: At,
        limit: i64,
        floor: Option<U256>,
    ) -> Result<(HoldersResponse, Of), QueryError> {
        let min = floor.map(|m| m.to_string());
        let mut lease = self.lease(cost(at, true, floor.is_some())).await?;
        let tx = store::snapshot(&mut lease.client, budget).await?;
        let token = store::tokens::token(&tx, wanted).await?;
        let moment = moment(&tx, &token, at).await?;
        // GetTopHolders' answers carry no next page: keyed apart from first pages.
        let key = key(&token, &moment, limit, "top", min.as_deref().unwrap_or("0"));
        let answer = self
            .ranked_answer(key, async {
                let mut rows = if moment.latest {
                    store::holders::ranked(&tx, &token, None, limit).await?
                } else {
                    store::rankings::ranked_at(&tx, &token, &moment, None, limit).await?
                };
                at_least(&mut rows, floor);
                let count = self.holder_count(&tx, &token, &moment, min.as_deref()).await?;
                Ok(response(&token, &moment, rows, Some(0), None, count))
            })
            .await?;
        store::end_snapshot(tx);
        let state = State {
            block: token.indexed_block,
            seq: token.last_seq,
            finalized: token.finalized_block,
        };
        Ok((answer, Of { at: (token.chain_id, token.address), id: token.id, state }))
    }

    /// Recomputes the warm answers whose token moved, each time the feed sees the store
    /// move, until `shutdown`: the first question after a commit finds its answer ready.
    pub async fn keep_warm(self, shutdown: CancellationToken) {
        if !self.warm.on() {
            return;
        }
        let mut held = self.feed.held();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = held.changed() => if changed.is_err() { return },
            }
            let moved = self.warm.moved(&held.borrow_and_update());
            for q in moved {
                let read = self.read_top(None, q.wanted, At::Latest, q.limit, q.floor).await;
                match read {
                    Ok((answer, of)) => {
                        self.metrics.warm.with_label_values(&["recomputed"]).inc();
                        self.warm.put(q, of, Arc::new(answer));
                    }
                    Err(e) => {
                        self.metrics.warm.with_label_values(&["failed"]).inc();
                        // The next question goes to the store and hears why.
                        debug!(error = %e, "a warm answer could not be recomputed");
                        self.warm.forget(&q);
                    }
                }
            }
        }
    }

    pub(super) async fn page(
        &self,
        call: &Call,
        req: GetHoldersRequest,
    ) -> Result<HoldersResponse, QueryError> {
        let size = input::count("page_size", req.page_size, input::DEFAULT_PAGE)?;
        let wanted = input::wanted(&req.token, req.chain_id)?;
        let addresses = input::addresses(&req.addresses)?;
        let at = input::at(req.finality, req.at_block, req.at_time.as_ref())?;
        let floor = input::min_balance(&req.min_balance)?;
        let min = floor.map(|m| m.to_string());
        if !addresses.is_empty() && !req.page_token.is_empty() {
            return Err(QueryError::invalid(
                "page_token",
                "pages are of the ranking; leave page_token empty when addresses are set",
            ));
        }
        self.reach(wanted, req.min_block).await?;
        let lane = cost(at, addresses.is_empty(), floor.is_some());
        let mut lease = self.lease(lane).await?;
        let tx = store::snapshot(&mut lease.client, call.budget).await?;
        let token = store::tokens::token(&tx, wanted).await?;
        let moment = moment(&tx, &token, at).await?;
        let answer = if !addresses.is_empty() {
            let mut rows = if moment.latest {
                store::holders::lookup(&tx, &token, &addresses).await?
            } else {
                store::history::lookup_at(&tx, &token, &moment, &addresses).await?
            };
            at_least(&mut rows, floor);
            let count = self.holder_count(&tx, &token, &moment, min.as_deref()).await?;
            response(&token, &moment, rows, None, None, count)
        } else {
            let seal = self.sealer.get(&*tx).await?;
            let after = match req.page_token.as_str() {
                "" => None,
                text => Some(PageToken::decode(text, token.address, seal)?),
            };
            let page = format!("page:{}", req.page_token);
            let key = key(&token, &moment, size, &page, min.as_deref().unwrap_or("0"));
            self.ranked_answer(key, async {
                let after_row = after.map(|p| (p.balance.to_string(), p.address));
                let mut rows = if moment.latest {
                    store::holders::ranked(&tx, &token, after_row, size).await?
                } else {
                    store::rankings::ranked_at(&tx, &token, &moment, after_row, size).await?
                };
                // A page cut by the filter is the last one.
                let fetched = rows.len() as i64;
                let full = !at_least(&mut rows, floor) && fetched == size;
                let first_rank = after.map_or(0, |p| p.rank);
                let count = self.holder_count(&tx, &token, &moment, min.as_deref()).await?;
                Ok(response(&token, &moment, rows, Some(first_rank), full.then_some(seal), count))
            })
            .await?
        };
        store::end_snapshot(tx);
        Ok(answer)
    }
}

/// The lane of a question at `at`: a count above a floor (`min_balance`) is a statistic
/// computed afresh (a range of the rank index at the checkpoint, millions of entries at
/// millions of holders; a pass over the history in the past); in the past a ranking reads
/// the history; the rest (checkpoint rankings, lookups) come off indexes.
fn cost(at: At, ranked: bool, filtered: bool) -> Cost {
    match at {
        _ if filtered => Cost::Expensive,
        At::Latest => Cost::Cheap,
        _ if ranked => Cost::Expensive,
        _ => Cost::Cheap,
    }
}

/// The moment `at` names, checked against what the store holds.
pub(super) async fn moment(
    tx: &deadpool_postgres::Transaction<'_>,
    token: &TokenView,
    at: At,
) -> Result<Moment, QueryError> {
    if token.indexed_block < token.start_block {
        return Err(QueryError::NotReady(format!(
            "token {} has nothing indexed yet: its index starts at block {}, which the ingestor has not committed; retry once it has",
            token.address, token.start_block
        )));
    }
    let block = match at {
        At::Latest => return Ok(token.latest()),
        At::Safe | At::Finalized => {
            let (name, block) = match at {
                At::Safe => ("safe", token.safe_block),
                _ => ("finalized", token.finalized_block),
            };
            if block < 0 {
                return Err(QueryError::NotReady(format!(
                    "the ingestor has not recorded the chain's {name} block yet; ask for LATEST or retry shortly"
                )));
            }
            if block < token.start_block {
                return Err(QueryError::NotReady(format!(
                    "no indexed block is {name} yet: the chain's {name} block is {block}, the index starts at block {}",
                    token.start_block
                )));
            }
            block
        }
        At::Block(b) => {
            if b > token.indexed_block {
                return Err(QueryError::invalid(
                    "at_block",
                    format!(
                        "{b} is above the newest indexed block {}; ask for that one or an earlier one",
                        token.indexed_block
                    ),
                ));
            }
            if b < token.start_block {
                return Err(QueryError::invalid(
                    "at_block",
                    format!(
                        "{b} is before block {}, where this token's index starts",
                        token.start_block
                    ),
                ));
            }
            b
        }
        At::Time(t) => {
            if t > token.indexed_time {
                return Err(QueryError::invalid(
                    "at_time",
                    format!(
                        "{} is after the newest indexed block's time {} (block {}): which block was last at that time is not known yet; ask for an earlier time, or leave at_time unset",
                        rfc3339(t),
                        rfc3339(token.indexed_time),
                        token.indexed_block
                    ),
                ));
            }
            store::history::block_at_time(tx, token.id, t).await?.ok_or_else(|| {
                QueryError::invalid(
                    "at_time",
                    format!("{} is before the first indexed block's time", rfc3339(t)),
                )
            })?
        }
    };
    if block >= token.indexed_block {
        return Ok(token.latest());
    }
    store::history::moment_at(tx, token, block).await
}

/// Unix seconds as RFC 3339 (`2026-11-15T00:00:00Z`), as the contract's times read.
fn rfc3339(unix: i64) -> String {
    prost_types::Timestamp { seconds: unix, nanos: 0 }.to_string()
}

/// Shapes rows into an answer. `first_rank` is the rank before the first row (None for a
/// lookup, which has no ranks); `next` is set when a further page may exist, to sign its
/// token; `holder_count` is the moment's, under the request's filter.
pub(super) fn response(
    token: &TokenView,
    moment: &Moment,
    rows: Vec<HolderRow>,
    first_rank: Option<u64>,
    next: Option<&Seal>,
    holder_count: u64,
) -> HoldersResponse {
    let next_page_token = match (next, rows.last(), first_rank) {
        (Some(seal), Some(last), Some(before)) => PageToken {
            token: token.address,
            // Ranks come from a signed token checked to be below 2^63: no overflow, but
            // saturate rather than trust that.
            rank: before.saturating_add(rows.len() as u64),
            // Rows in a ranked page have balance > 0, so they parse as U256.
            balance: last.balance.parse::<U256>().unwrap_or_default(),
            address: last.address,
        }
        .encode(seal),
        _ => String::new(),
    };
    let holders = rows
        .into_iter()
        .enumerate()
        .map(|(i, r)| Holder {
            address: r.address.to_checksum(None),
            balance_formatted: format_units(&r.balance, token.decimals),
            balance: r.balance,
            share_of_supply_percent: r.share_percent,
            balance_7d_ago: r.balance_7d_ago,
            weekly_change_percent: r.weekly_change_percent,
            last_transfer_block: r.last_transfer_block.max(0) as u64,
            rank: first_rank.map_or(0, |before| before.saturating_add(i as u64 + 1)),
        })
        .collect();
    HoldersResponse {
        holders,
        as_of_block: moment.block.max(0) as u64,
        as_of_time: timestamp(moment.time),
        total_supply: moment.total_supply.clone(),
        token: token.address.to_checksum(None),
        next_page_token,
        decimals: u32::from(token.decimals),
        symbol: token.symbol.clone(),
        as_of_finalized_block: token.finalized_block.min(moment.block).max(0) as u64,
        holder_count,
        chain_id: token.chain_id.max(0) as u64,
    }
}

/// Keeps the rows holding at least `min` (all without it). Returns whether it dropped
/// any: the filter cuts the ranking's tail, so a ranked page it cut is the last one.
pub(super) fn at_least(rows: &mut Vec<HolderRow>, min: Option<U256>) -> bool {
    let Some(min) = min else {
        return false;
    };
    let before = rows.len();
    rows.retain(|r| r.balance.parse::<U256>().is_ok_and(|b| b >= min));
    rows.len() < before
}

/// Writes base units as whole tokens: `decimals` digits after the point, trailing zeros
/// and a bare point dropped ("1500000000000000000", 18 → "1.5").
pub fn format_units(raw: &str, decimals: u8) -> String {
    let (sign, digits) = match raw.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", raw),
    };
    let d = usize::from(decimals);
    if d == 0 {
        return raw.to_string();
    }
    let padded = if digits.len() <= d {
        format!("{}{digits}", "0".repeat(d + 1 - digits.len()))
    } else {
        digits.to_string()
    };
    let (whole, frac) = padded.split_at(padded.len() - d);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() { format!("{sign}{whole}") } else { format!("{sign}{whole}.{frac}") }
}

/// The cache key of a ranked answer of `token` in its current state, as of `moment`,
/// down to the balance `min`.
fn key(token: &TokenView, moment: &Moment, limit: i64, after: &str, min: &str) -> Key {
    Key {
        token: token.id,
        indexed_block: token.indexed_block,
        last_seq: token.last_seq,
        limit,
        after: format!("{after}@{}/{}>={min}", moment.block, token.finalized_block),
    }
}

#[cfg(test)]
mod tests {
    use super::format_units;

    #[test]
    fn formats_base_units() {
        assert_eq!(format_units("1500000000000000000", 18), "1.5");
        assert_eq!(format_units("1000000000000000000", 18), "1");
        assert_eq!(format_units("1", 18), "0.000000000000000001");
        assert_eq!(format_units("0", 18), "0");
        assert_eq!(format_units("123", 0), "123");
        assert_eq!(format_units("-2500", 3), "-2.5");
        let max = "115792089237316195423570985008687907853269984665640564039457584007913129639935";
        assert_eq!(
            format_units(max, 18),
            "115792089237316195423570985008687907853269984665640564039457.584007913129639935"
        );
    }
}
