//! Ranked answers (top holders, ranking pages) kept per state of the store. Between two
//! commits of the ingestor the same question has the same answer, so it is computed once:
//! the key holds the token's checkpoint block and newest sequence number, which every
//! commit and every rollback moves, so an entry of an older state is never served. A
//! full cache is emptied (old states' entries are most of it by then).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use proto::pb::HoldersResponse;

/// What identifies a ranked answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The token's id in the store: one chain's token (the same address on another
    /// chain is another token, whose state may have the same block and sequence).
    pub token: i32,
    /// Its checkpoint when the answer was read.
    pub indexed_block: i64,
    /// Its newest sequence number then.
    pub last_seq: i64,
    /// Rows asked for.
    pub limit: i64,
    /// The page token (empty for the first page and for top holders).
    pub after: String,
}

/// A bounded map of answers; capacity 0 turns it off.
#[derive(Debug)]
pub struct Answers {
    entries: Mutex<HashMap<Key, Arc<HoldersResponse>>>,
    capacity: usize,
}

impl Answers {
    /// A cache of at most `capacity` answers.
    pub fn new(capacity: usize) -> Self {
        Self { entries: Mutex::new(HashMap::new()), capacity }
    }

    /// The answer stored for `key`.
    pub fn get(&self, key: &Key) -> Option<Arc<HoldersResponse>> {
        self.entries.lock().expect("answers lock").get(key).cloned()
    }

    /// Stores `answer` under `key`.
    pub fn put(&self, key: Key, answer: Arc<HoldersResponse>) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().expect("answers lock");
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(key, answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(last_seq: i64) -> Key {
        Key { token: 1, indexed_block: 10, last_seq, limit: 100, after: String::new() }
    }

    #[test]
    fn another_state_misses() {
        let answers = Answers::new(4);
        answers.put(key(1), Arc::new(HoldersResponse { as_of_block: 10, ..Default::default() }));
        assert_eq!(answers.get(&key(1)).map(|a| a.as_of_block), Some(10));
        assert!(answers.get(&key(2)).is_none(), "a commit moved last_seq");
        let other_chain = Key { token: 2, ..key(1) };
        assert!(answers.get(&other_chain).is_none(), "the same state of another token");
    }

    #[test]
    fn stays_bounded_and_can_be_off() {
        let answers = Answers::new(2);
        for seq in 0..5 {
            answers.put(key(seq), Arc::new(HoldersResponse::default()));
        }
        assert!(answers.entries.lock().unwrap().len() <= 2);
        let off = Answers::new(0);
        off.put(key(1), Arc::new(HoldersResponse::default()));
        assert!(off.get(&key(1)).is_none());
    }
}
