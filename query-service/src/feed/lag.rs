//! How far a streaming replica's read side is behind the commits the feed heard of.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the read side has lacked a commit the feed heard of (zero while it has them
/// all): a streaming replica's lag, as readiness and the metric see it.
#[derive(Debug, Clone, Default)]
pub struct ReplicaLag {
    behind_since: Arc<Mutex<Option<Instant>>>,
}

impl ReplicaLag {
    /// The lag now.
    pub fn now(&self) -> Duration {
        self.behind_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Whether the read side lacks a commit the feed heard of; the lag runs from the
    /// first look that found it behind.
    pub(super) fn set(&self, behind: bool) {
        let mut since = self.behind_since.lock().unwrap_or_else(|e| e.into_inner());
        match (behind, *since) {
            (true, None) => *since = Some(Instant::now()),
            (false, Some(_)) => *since = None,
            _ => {}
        }
    }
}
