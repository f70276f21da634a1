//! Three lanes to the database, so expensive work can never take what cheap answers
//! need. Cheap answers (rankings and lookups at the checkpoint, cached answers,
//! ListTokens, ListTransfers) draw from the main pool. Expensive work (rankings and pages
//! at a past moment, counts above a `min_balance`, exports) draws from a pool of its own,
//! behind a limit of as many calls as it has connections; a call that cannot start
//! within the wait is refused with RESOURCE_EXHAUSTED rather than queued without bound.
//! Streams (their start, replays and catch-ups) read through a third pool: a thousand
//! streams opening at once queue there, not in front of cheap answers.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::QueryError;
use crate::metrics::Metrics;

/// Which lane a call runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// Answers from indexes or memory.
    Cheap,
    /// A stream's reads.
    Stream,
    /// Work that reads the history or every holder.
    Expensive,
}

/// The three lanes.
#[derive(Debug, Clone)]
pub struct Lanes {
    cheap: Pool,
    expensive: Pool,
    streams: Pool,
    permits: Arc<Semaphore>,
    wait: Duration,
    metrics: Metrics,
}

/// A connection of a lane; an expensive one holds its lane's permit until dropped.
#[derive(Debug)]
pub struct Lease {
    /// The connection.
    pub client: Object,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Lanes {
    /// Lanes over `cheap`, `expensive` and `streams`: as many expensive calls at once as
    /// `expensive` has connections, each waiting at most `wait` to start.
    pub fn new(
        cheap: Pool,
        expensive: Pool,
        streams: Pool,
        wait: Duration,
        metrics: Metrics,
    ) -> Self {
        let permits = Arc::new(Semaphore::new(expensive.status().max_size.max(1)));
        Self { cheap, expensive, streams, permits, wait, metrics }
    }

    /// The streams' pool, for their replays and catch-ups.
    pub fn stream_pool(&self) -> &Pool {
        &self.streams
    }

    /// A connection in the lane of `cost`.
    pub async fn lease(&self, cost: Cost) -> Result<Lease, QueryError> {
        let lane = match cost {
            Cost::Cheap => "cheap",
            Cost::Stream => "stream",
            Cost::Expensive => "expensive",
        };
        self.metrics.leases.with_label_values(&[lane]).inc();
        match cost {
            Cost::Cheap => Ok(Lease { client: self.cheap.get().await?, _permit: None }),
            Cost::Stream => Ok(Lease { client: self.streams.get().await?, _permit: None }),
            Cost::Expensive => {
                self.metrics.expensive_waiting.inc();
                let permit =
                    tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await;
                self.metrics.expensive_waiting.dec();
                let Ok(Ok(permit)) = permit else {
                    self.metrics.expensive_refused.inc();
                    return Err(QueryError::Busy(
                        format!(
                            "{} expensive calls (past rankings, pages and exports) are running, the most this server runs at once, and none ended within {} ms; retry later",
                            self.expensive.status().max_size,
                            self.wait.as_millis()
                        ),
                        // By then one of those running has likely ended.
                        self.wait,
                    ));
                };
                Ok(Lease { client: self.expensive.get().await?, _permit: Some(permit) })
            }
        }
    }
}
