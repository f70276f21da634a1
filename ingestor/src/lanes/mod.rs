//! The token set at work. An ingestor indexes the tokens it wants ([`crate::tokens`]) whose
//! writer locks it holds, in at most two lanes, each one [`Indexer`] over a token set:
//!
//! - the head lane: every token indexed so far, one request per span for all of them;
//!   at start it sweeps from the lowest checkpoint, each token joining the address list
//!   at its own resume block, and then follows the head;
//! - the catch-up lane: tokens added while running (a new line in the tokens file, or a
//!   lock another ingestor let go), backfilled from their starts while the head lane goes
//!   on. Once it reaches where the head lane stood, the head lane pauses between batches,
//!   the catch-up lane closes the last gap, and the two merge into one head lane.
//!
//! A token removed from the wanted set leaves its lane (which restarts without it), is
//! marked as no longer followed, and its lock is let go; its data stays.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use alloy_primitives::Address;
use anyhow::Context;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Misconfigured;
use crate::config::Config;
use crate::fetch::TokenList;
use crate::metrics::Metrics;
use crate::retry::retrying;
use crate::rpc::Rpc;
use crate::store::{Store, TokenKey, TokenRow, TokenSet, WriterLocks};
use crate::sync::{Indexer, SyncPolicy};
use crate::tokens::Wanted;

mod register;
mod task;

use task::{LaneTask, Running, lane_end};

/// How often locks held elsewhere are tried again.
const RETRY_LOCKS: Duration = Duration::from_millis(500);

/// What every lane is made of.
pub(crate) struct Parts<'a> {
    pub config: &'a Config,
    pub rpc: Rpc,
    pub store: Store,
    pub chain_id: u64,
    pub metrics: Metrics,
    pub policy: SyncPolicy,
    /// The rows of the tokens indexed now, for `--verify-every`.
    pub indexed: watch::Sender<Vec<TokenRow>>,
}

/// The tokens of an ingestor and its lanes.
pub(crate) struct Lanes<'a> {
    parts: Parts<'a>,
    /// Tokens indexed (locked and registered), by address.
    keys: HashMap<Address, TokenKey>,
    head: Option<Running>,
    catch_up: Option<Running>,
    /// Tokens refused while running (no code, a start that would leave a gap): tried
    /// again only once the wanted set changes.
    refused: HashSet<Address>,
    /// Tokens whose lock another ingestor holds (logged once each).
    waiting: HashSet<Address>,
    /// Stops every lane.
    work: CancellationToken,
}

impl<'a> Lanes<'a> {
    pub(crate) fn new(parts: Parts<'a>, work: CancellationToken) -> Self {
        Self {
            parts,
            keys: HashMap::new(),
            head: None,
            catch_up: None,
            refused: HashSet::new(),
            waiting: HashSet::new(),
            work,
        }
    }

    /// Indexes the wanted tokens whose locks are free (taking the others over when they
    /// are freed) until `work` ends, or, with `--to`, until every wanted token is
    /// indexed to it. Every lane has stopped when this returns.
    pub(crate) async fn run(
        mut self,
        locks: &mut WriterLocks,
        mut wanted: watch::Receiver<Vec<Wanted>>,
    ) -> anyhow::Result<()> {
        let result = self.drive(locks, &mut wanted).await;
        for lane in [self.catch_up.take(), self.head.take()].into_iter().flatten() {
            lane.stop.cancel();
            let _ = lane.handle.await;
        }
        result
    }

    async fn drive(
        &mut self,
        locks: &mut WriterLocks,
        wanted: &mut watch::Receiver<Vec<Wanted>>,
    ) -> anyhow::Result<()> {
        if let Some(to) = self.parts.config.to {
            let all = wanted.borrow().clone();
            return self.range(locks, all, to).await;
        }
        let mut first = true;
        // No tokens file: the set never changes (its sender is gone at once).
        let mut watching = true;
        loop {
            let now = wanted.borrow_and_update().clone();
            self.drop_unwanted(locks, &now).await?;
            let added = self.take_and_register(locks, &now, first).await?;
            let added: Vec<(Address, TokenKey)> =
                added.iter().map(|r| (r.address, r.key)).collect();
            if first {
                // Everything at start is one sweep, in the head lane.
                self.start_head(added);
                first = false;
            } else if !added.is_empty() {
                self.add_to_catch_up(added).await?;
            }
            let retry = !self.waiting.is_empty();
            let event = {
                let (head, catch_up, work) = (&mut self.head, &mut self.catch_up, &self.work);
                tokio::select! {
                    () = work.cancelled() => Event::Stop,
                    changed = wanted.changed(), if watching => Event::Changed(changed.is_ok()),
                    () = tokio::time::sleep(RETRY_LOCKS), if retry => Event::Tick,
                    done = lane_end(head) => Event::HeadEnded(done),
                    done = lane_end(catch_up) => Event::CatchUpEnded(done),
                }
            };
            match event {
                Event::Stop => return Ok(()),
                Event::Changed(true) => self.refused.clear(),
                // No watcher (or it ended): the set stays as it is.
                Event::Changed(false) => watching = false,
                Event::Tick => {}
                Event::HeadEnded(done) => {
                    self.head = None;
                    done?;
                    anyhow::ensure!(self.work.is_cancelled(), "the head lane stopped");
                    return Ok(());
                }
                Event::CatchUpEnded(done) => {
                    let lane = self.catch_up.take().expect("ended");
                    done?;
                    if self.work.is_cancelled() {
                        return Ok(());
                    }
                    self.merge(lane.set).await?;
                }
            }
        }
    }

    /// `--to`: waits for every wanted token's lock, then indexes them all to `to` in one
    /// lane.
    async fn range(
        &mut self,
        locks: &mut WriterLocks,
        wanted: Vec<Wanted>,
        to: u64,
    ) -> anyhow::Result<()> {
        let all: Vec<Address> = wanted.iter().map(|w| w.address).collect();
        loop {
            locks.take(&all).await?;
            if all.iter().all(|a| locks.holds(a)) {
                break;
            }
            self.log_waiting(&all, locks);
            tokio::select! {
                () = self.work.cancelled() => return Ok(()),
                () = tokio::time::sleep(RETRY_LOCKS) => {}
            }
        }
        let rows = self.register_all(&wanted).await?;
        let pending: Vec<&TokenRow> = rows.iter().filter(|r| r.indexed_block < to as i64).collect();
        if pending.is_empty() {
            info!(to, "the range is already indexed; nothing to do");
            return Ok(());
        }
        let set =
            TokenSet::new(self.parts.chain_id as i64, pending.iter().map(|r| (r.address, r.key)));
        let list =
            TokenList::new(pending.iter().map(|r| ((r.indexed_block + 1) as u64, r.address)));
        let start = pending.iter().map(|r| (r.indexed_block + 1) as u64).min().expect("some");
        self.publish_indexed(&rows);
        self.indexer(set, list, self.parts.metrics.clone(), self.work.clone())
            .run(start, Some(to))
            .await
    }

    /// Takes the locks of wanted tokens not indexed yet and registers those taken.
    /// At `start`, a token that cannot be indexed stops the ingestor (a setting to fix);
    /// later it is reported and skipped until the wanted set changes.
    async fn take_and_register(
        &mut self,
        locks: &mut WriterLocks,
        wanted: &[Wanted],
        start: bool,
    ) -> anyhow::Result<Vec<TokenRow>> {
        let missing: Vec<Address> = wanted
            .iter()
            .map(|w| w.address)
            .filter(|a| !self.keys.contains_key(a) && !self.refused.contains(a))
            .collect();
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        let taken = locks.take(&missing).await?;
        self.log_waiting(&missing, locks);
        let todo: Vec<Wanted> =
            wanted.iter().filter(|w| taken.contains(&w.address)).copied().collect();
        let mut rows = Vec::new();
        if start {
            rows = self.register_all(&todo).await?;
        } else {
            for w in todo {
                match self.register_all(&[w]).await {
                    Ok(mut r) => rows.append(&mut r),
                    Err(e) if e.chain().any(|c| c.is::<Misconfigured>()) => {
                        warn!(token = %w.address, error = %bootstrap::one_line(&format!("{e:#}")), "cannot index this token; fix the tokens file");
                        self.refused.insert(w.address);
                        locks.release(&[w.address]).await?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        for r in &rows {
            self.keys.insert(r.address, r.key);
            self.waiting.remove(&r.address);
        }
        let all: Vec<TokenRow> = self.rows_now().await?;
        self.publish_indexed(&all);
        Ok(rows)
    }

    /// Logs, once per token, that another ingestor holds its lock.
    fn log_waiting(&mut self, tokens: &[Address], locks: &WriterLocks) {
        for t in tokens.iter().filter(|t| !locks.holds(t)) {
            if self.waiting.insert(*t) {
                info!(token = %t, "another ingestor holds this token's writer lock; waiting");
            }
        }
    }

    /// Stops indexing the tokens no longer wanted: their lane restarts without them,
    /// they are marked as not followed, and their locks are let go.
    async fn drop_unwanted(
        &mut self,
        locks: &mut WriterLocks,
        wanted: &[Wanted],
    ) -> anyhow::Result<()> {
        let keep: HashSet<Address> = wanted.iter().map(|w| w.address).collect();
        let gone: Vec<(Address, TokenKey)> =
            self.keys.iter().filter(|(a, _)| !keep.contains(*a)).map(|(a, k)| (*a, *k)).collect();
        self.waiting.retain(|a| keep.contains(a));
        if gone.is_empty() {
            return Ok(());
        }
        let gone_set: HashSet<Address> = gone.iter().map(|g| g.0).collect();
        let touches = |l: &Option<Running>| {
            l.as_ref().is_some_and(|l| l.set.iter().any(|(a, _)| gone_set.contains(&a)))
        };
        if touches(&self.head) {
            self.head.take().expect("checked").halt().await?;
        }
        let mut catching_up = Vec::new();
        if touches(&self.catch_up) {
            let lane = self.catch_up.take().expect("checked");
            catching_up = lane.set.iter().filter(|(a, _)| !gone_set.contains(a)).collect();
            lane.halt().await?;
        }
        for (a, _) in &gone {
            self.keys.remove(a);
        }
        let ids: Vec<i32> = gone.iter().map(|g| g.1.id).collect();
        retrying(&self.parts.rpc.retry_policy(), "marking tokens not followed", || {
            self.parts.store.set_following(&ids, false)
        })
        .await?;
        let addresses: Vec<Address> = gone.iter().map(|g| g.0).collect();
        locks.release(&addresses).await?;
        for a in &addresses {
            info!(token = %a, "no longer wanted: stopped indexing it (its data stays)");
        }
        // The lanes start again with the tokens that are left.
        if self.head.is_none() {
            let apart: HashSet<Address> = catching_up
                .iter()
                .map(|t| t.0)
                .chain(self.catch_up.iter().flat_map(|l| l.set.iter().map(|(a, _)| a)))
                .collect();
            let head: Vec<(Address, TokenKey)> = self
                .keys
                .iter()
                .filter(|(a, _)| !apart.contains(*a))
                .map(|(a, k)| (*a, *k))
                .collect();
            self.start_head(head);
        }
        if !catching_up.is_empty() {
            self.add_to_catch_up(catching_up).await?;
        }
        let all = self.rows_now().await?;
        self.publish_indexed(&all);
        Ok(())
    }

    /// Starts the head lane over `tokens` (none: no lane), from each token's checkpoint.
    fn start_head(&mut self, tokens: impl IntoIterator<Item = (Address, TokenKey)>) {
        let set = TokenSet::new(self.parts.chain_id as i64, tokens);
        if !set.is_empty() {
            self.head = Some(self.spawn(set, None, self.parts.metrics.clone(), false));
        }
    }

    /// Adds `added` to the catch-up lane (restarting it with them), which runs to where
    /// the head lane stands now.
    async fn add_to_catch_up(&mut self, added: Vec<(Address, TokenKey)>) -> anyhow::Result<()> {
        let mut tokens = added;
        if let Some(lane) = self.catch_up.take() {
            tokens.extend(lane.set.iter());
            lane.halt().await?;
        }
        if self.head.is_none() {
            // Nothing at the head to catch up with: one lane.
            tokens.extend(self.keys.iter().map(|(a, k)| (*a, *k)));
            tokens.sort_by_key(|t| t.1.id);
            tokens.dedup();
            self.start_head(tokens);
            return Ok(());
        }
        let set = TokenSet::new(self.parts.chain_id as i64, tokens);
        let target = self.head_checkpoint().await?;
        info!(
            tokens = set.len(),
            to = target,
            "catching up added tokens while the others follow the head"
        );
        // A lane of its own metrics: its checkpoint is not the ingestor's.
        self.catch_up = Some(self.spawn(set, Some(target), Metrics::new(), true));
        Ok(())
    }

    /// The catch-up lane reached its target: the head lane pauses, the gap it opened
    /// meanwhile is closed, and one head lane goes on with every token.
    async fn merge(&mut self, caught_up: TokenSet) -> anyhow::Result<()> {
        let Some(head) = self.head.take() else {
            self.start_head(caught_up.iter().collect::<Vec<_>>());
            return Ok(());
        };
        let head_set = head.set.clone();
        head.halt().await?;
        if self.work.is_cancelled() {
            return Ok(());
        }
        let target = self.lowest(&head_set).await?;
        let behind = self.lowest(&caught_up).await?;
        if behind < target {
            let list = self.list_of(&caught_up).await?;
            self.indexer(caught_up.clone(), list, Metrics::new(), self.work.clone())
                .run((behind + 1) as u64, Some(target as u64))
                .await?;
            if self.work.is_cancelled() {
                return Ok(());
            }
        }
        info!(
            tokens = caught_up.len(),
            at = target,
            "added tokens caught up; they follow the head with the others"
        );
        let all: Vec<(Address, TokenKey)> = head_set.iter().chain(caught_up.iter()).collect();
        self.start_head(all);
        Ok(())
    }

    /// Where the head lane's tokens stand (their lowest checkpoint).
    async fn head_checkpoint(&self) -> anyhow::Result<u64> {
        let set = self.head.as_ref().map(|l| l.set.clone()).context("no head lane")?;
        Ok(self.lowest(&set).await?.max(0) as u64)
    }

    async fn lowest(&self, set: &TokenSet) -> anyhow::Result<i64> {
        retrying(&self.parts.rpc.retry_policy(), "reading the checkpoints", || {
            self.parts.store.lowest_checkpoint(set)
        })
        .await?
        .context("a token row is gone")
    }

    /// Each token of `set` from its resume block.
    async fn list_of(&self, set: &TokenSet) -> anyhow::Result<TokenList> {
        let rows = retrying(&self.parts.rpc.retry_policy(), "reading the checkpoints", || {
            self.parts.store.token_rows(set)
        })
        .await?;
        Ok(TokenList::new(rows.iter().map(|r| ((r.indexed_block + 1) as u64, r.address))))
    }

    /// A lane over `set` in a task of its own: from its lowest resume to `to`, or
    /// following the head; `beside_head` when another lane follows the head meanwhile.
    fn spawn(
        &self,
        set: TokenSet,
        to: Option<u64>,
        metrics: Metrics,
        beside_head: bool,
    ) -> Running {
        let stop = self.work.child_token();
        let lane = LaneTask {
            rpc: self.parts.rpc.clone(),
            store: self.parts.store.clone(),
            policy: SyncPolicy { beside_head, ..self.parts.policy },
            metrics,
        };
        let (s, st) = (set.clone(), stop.clone());
        let handle = tokio::spawn(async move { lane.run(s, to, st).await });
        Running { set, stop, handle }
    }

    fn indexer(
        &self,
        set: TokenSet,
        list: TokenList,
        metrics: Metrics,
        stop: CancellationToken,
    ) -> Indexer {
        Indexer::new(
            set,
            list,
            self.parts.rpc.clone(),
            self.parts.store.clone(),
            self.parts.policy,
            metrics,
            stop,
        )
    }

    /// The rows of the tokens indexed now.
    async fn rows_now(&self) -> anyhow::Result<Vec<TokenRow>> {
        let set =
            TokenSet::new(self.parts.chain_id as i64, self.keys.iter().map(|(a, k)| (*a, *k)));
        if set.is_empty() {
            return Ok(Vec::new());
        }
        Ok(retrying(&self.parts.rpc.retry_policy(), "reading the token rows", || {
            self.parts.store.token_rows(&set)
        })
        .await?)
    }

    fn publish_indexed(&self, rows: &[TokenRow]) {
        self.parts.indexed.send_replace(rows.to_vec());
    }
}

/// What ended the wait of [`Lanes::drive`].
enum Event {
    Stop,
    /// The wanted set changed (false: its watcher ended).
    Changed(bool),
    /// Time to try the locks held elsewhere again.
    Tick,
    HeadEnded(anyhow::Result<()>),
    CatchUpEnded(anyhow::Result<()>),
}
