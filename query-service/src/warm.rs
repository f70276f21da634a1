//! Answers kept warm at the head: the newest GetTopHolders answer of each question asked
//! lately, recomputed as soon as the feed sees its token move, and served from memory
//! without a database read while it is the token's current state.
//!
//! Without it the first question after each commit computes the ranking, and every
//! question (cached or not) costs a lease, a snapshot and the token's row: under a
//! backfill that saturates the host, those are what a head token's answers wait on.
//!
//! What is served is always one whole state of the store. Between a commit and the end of
//! its recomputation (at most [`STALE_FOR`]) the previous state's answer is served, as a
//! question that reached the store a moment earlier would have got; a request with a
//! `min_block` past that answer's block goes to the store and waits as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use proto::pb::HoldersResponse;

use crate::feed::{Held, State};
use crate::store::tokens::Wanted;

/// How long after its token moved a kept answer is still served while its recomputation
/// runs; past it, questions go to the store.
pub const STALE_FOR: Duration = Duration::from_millis(1000);

/// An answer not asked for this long is no longer kept warm (nor recomputed).
pub const KEPT_FOR: Duration = Duration::from_secs(60);

/// A question as asked (before its token is resolved): the same fields get the same
/// answer while the store does not move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Question {
    /// The `token` and `chain_id` fields.
    pub wanted: Wanted,
    /// Rows asked for.
    pub limit: i64,
    /// `min_balance`, when given.
    pub floor: Option<U256>,
}

/// The token an answer is of, and the state it was read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Of {
    /// Its chain and address: where the feed keeps its state.
    pub at: (i64, Address),
    /// Its id in the store.
    pub id: i32,
    /// The state the answer was read in.
    pub state: State,
}

#[derive(Debug)]
struct Entry {
    of: Of,
    answer: Arc<HoldersResponse>,
    asked: Instant,
    /// When the token was first seen past the state the answer was read in.
    superseded: Option<Instant>,
}

/// The warm answers; capacity 0 turns them off.
#[derive(Debug)]
pub struct Warm {
    entries: Mutex<HashMap<Question, Entry>>,
    capacity: usize,
}

impl Warm {
    /// At most `capacity` questions kept warm.
    pub fn new(capacity: usize) -> Self {
        Self { entries: Mutex::new(HashMap::new()), capacity }
    }

    /// Whether answers are kept at all.
    pub fn on(&self) -> bool {
        self.capacity > 0
    }

    /// The kept answer to `question`, when it is of the state `held` shows for its token
    /// (or of a state before, for up to [`STALE_FOR`] after it was first superseded) and not
    /// older than `min_block`.
    pub fn get(
        &self,
        question: &Question,
        held: &HashMap<(i64, Address), Held>,
        min_block: Option<u64>,
    ) -> Option<Arc<HoldersResponse>> {
        let mut entries = self.entries.lock().expect("warm lock");
        let entry = entries.get_mut(question)?;
        let now = held.get(&entry.of.at).filter(|h| h.id == entry.of.id)?;
        // Any move of the token (a commit, a rollback, a new finalized block) starts a
        // recomputation; the answer kept serves until it ends, for at most STALE_FOR
        // from when it was first seen superseded (however many moves come meanwhile).
        let current = now.state == entry.of.state;
        let superseded =
            if current { None } else { Some(*entry.superseded.get_or_insert_with(Instant::now)) };
        let recomputing = superseded.is_some_and(|t| t.elapsed() < STALE_FOR);
        let new_enough =
            min_block.is_none_or(|m| i64::try_from(m).is_ok_and(|m| m <= entry.of.state.block));
        if !(current || recomputing) || !new_enough {
            return None;
        }
        entry.asked = Instant::now();
        Some(entry.answer.clone())
    }

    /// Keeps `answer` to `question`, read in `of`'s state, unless a newer one is kept.
    pub fn put(&self, question: Question, of: Of, answer: Arc<HoldersResponse>) {
        if !self.on() {
            return;
        }
        let mut entries = self.entries.lock().expect("warm lock");
        if let Some(kept) = entries.get_mut(&question) {
            if kept.of.id == of.id && kept.of.state.seq > of.state.seq {
                return;
            }
            kept.of = of;
            kept.answer = answer;
            kept.asked = Instant::now();
            kept.superseded = None;
            return;
        }
        if entries.len() >= self.capacity {
            // The least recently asked makes room.
            let oldest = entries.iter().min_by_key(|(_, e)| e.asked).map(|(q, _)| *q);
            if let Some(q) = oldest {
                entries.remove(&q);
            }
        }
        entries.insert(question, Entry { of, answer, asked: Instant::now(), superseded: None });
    }

    /// Forgets the answer to `question` (its recomputation failed: the next question
    /// goes to the store and gets the store's error or answer).
    pub fn forget(&self, question: &Question) {
        self.entries.lock().expect("warm lock").remove(question);
    }

    /// The questions whose token moved since their answer was read and that were asked
    /// within [`KEPT_FOR`]; those not asked that long are dropped.
    pub fn moved(&self, held: &HashMap<(i64, Address), Held>) -> Vec<Question> {
        let mut entries = self.entries.lock().expect("warm lock");
        entries.retain(|_, e| e.asked.elapsed() < KEPT_FOR);
        let mut moved = Vec::new();
        for (q, e) in entries.iter_mut() {
            if held.get(&e.of.at).is_some_and(|h| h.id != e.of.id || h.state != e.of.state) {
                e.superseded.get_or_insert_with(Instant::now);
                moved.push(*q);
            }
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: (i64, Address) = (1, Address::repeat_byte(7));

    fn state(block: i64, seq: i64) -> State {
        State { block, seq, finalized: -1 }
    }

    fn held(id: i32, s: State) -> HashMap<(i64, Address), Held> {
        HashMap::from([(AT, Held { id, state: s })])
    }

    fn question() -> Question {
        Question { wanted: Wanted { token: Some(AT.1), chain_id: None }, limit: 100, floor: None }
    }

    fn answer(block: u64) -> Arc<HoldersResponse> {
        Arc::new(HoldersResponse { as_of_block: block, ..Default::default() })
    }

    #[test]
    fn served_while_its_state_is_current() {
        let warm = Warm::new(4);
        warm.put(question(), Of { at: AT, id: 3, state: state(10, 5) }, answer(10));
        let now = held(3, state(10, 5));
        assert_eq!(warm.get(&question(), &now, None).map(|a| a.as_of_block), Some(10));
        assert!(warm.get(&question(), &now, Some(11)).is_none(), "min_block past it");
        assert!(warm.get(&question(), &now, Some(10)).is_some());
        assert!(warm.moved(&now).is_empty());
    }

    #[test]
    fn the_previous_state_only_briefly_then_never() {
        let warm = Warm::new(4);
        warm.put(question(), Of { at: AT, id: 3, state: state(10, 5) }, answer(10));
        let just_moved = held(3, state(11, 9));
        assert!(warm.get(&question(), &just_moved, None).is_some(), "while recomputed");
        assert_eq!(warm.moved(&just_moved), vec![question()]);
        // Superseded STALE_FOR ago: never again, however many moves came since (each
        // move does not restart the clock).
        warm.entries.lock().unwrap().get_mut(&question()).unwrap().superseded =
            Some(Instant::now() - STALE_FOR);
        assert!(warm.get(&question(), &just_moved, None).is_none());
        assert!(warm.get(&question(), &held(3, state(12, 11)), None).is_none());
        assert!(warm.moved(&held(3, state(12, 11))).contains(&question()));
        assert!(warm.get(&question(), &held(3, state(12, 11)), None).is_none());
        // A new answer is current again.
        warm.put(question(), Of { at: AT, id: 3, state: state(12, 11) }, answer(12));
        assert!(warm.get(&question(), &held(3, state(12, 11)), None).is_some());
        // A rollback to an older block still moves seq; another token under the same
        // address (a store rebuilt) or no state at all (the feed is away) never serves.
        assert!(warm.get(&question(), &held(4, state(10, 5)), None).is_none());
        assert!(warm.get(&question(), &HashMap::new(), None).is_none());
    }

    #[test]
    fn an_older_read_never_replaces_a_newer_one() {
        let warm = Warm::new(4);
        warm.put(question(), Of { at: AT, id: 3, state: state(11, 9) }, answer(11));
        warm.put(question(), Of { at: AT, id: 3, state: state(10, 5) }, answer(10));
        let now = held(3, state(11, 9));
        assert_eq!(warm.get(&question(), &now, None).map(|a| a.as_of_block), Some(11));
    }

    #[test]
    fn bounded_and_can_be_off() {
        let warm = Warm::new(2);
        for limit in 1..5 {
            let q = Question { limit, ..question() };
            warm.put(q, Of { at: AT, id: 3, state: state(10, 5) }, answer(10));
        }
        assert_eq!(warm.entries.lock().unwrap().len(), 2);
        let off = Warm::new(0);
        off.put(question(), Of { at: AT, id: 3, state: state(10, 5) }, answer(10));
        let now = held(3, state(10, 5));
        assert!(off.get(&question(), &now, None).is_none());
    }
}
