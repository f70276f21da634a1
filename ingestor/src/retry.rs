//! One way to repeat a call that failed for a passing reason: exponential backoff with
//! jitter, a bounded number of attempts. The node client and the store both use it; each
//! error type says for itself which failures are worth repeating, and which are the
//! other side being away (an outage: a database restarting or failing over), which are
//! waited out however long they last, unless `--max-outage` bounds them. An outage is
//! logged once when it starts, once a minute while it lasts and once when it ends, and
//! shown by [`waiting`] (the `ingestor_waiting_for_database` metric, and readiness).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tracing::{info, warn};

tokio::task_local! {
    /// Shutdown, for the calls of one run: a retry's wait ends at once when it comes
    /// (nothing is in flight then, so nothing is worth the grace).
    static SHUTDOWN: tokio_util::sync::CancellationToken;
}

/// Runs `work` with its retries' waits ending at `shutdown` (tasks it spawns wait on
/// their own).
pub async fn stopping_at<T>(
    shutdown: tokio_util::sync::CancellationToken,
    work: impl Future<Output = T>,
) -> T {
    SHUTDOWN.scope(shutdown, work).await
}

/// Sleeps `delay`; false when shutdown came first.
async fn pause(delay: Duration) -> bool {
    match SHUTDOWN.try_with(Clone::clone) {
        Ok(stop) => tokio::select! {
            () = stop.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        },
        Err(_) => {
            tokio::time::sleep(delay).await;
            true
        }
    }
}

/// Calls waiting out an outage right now, in this process.
static WAITING: AtomicUsize = AtomicUsize::new(0);

/// How many calls are waiting for the other side to come back.
pub fn waiting() -> usize {
    WAITING.load(Ordering::Relaxed)
}

/// Counts one call as waiting while it lives.
struct Waiting;

impl Waiting {
    fn new() -> Self {
        WAITING.fetch_add(1, Ordering::Relaxed);
        Self
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How hard to retry calls that fail transiently.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts before giving up, the first included.
    pub max_attempts: u32,
    /// The first backoff; each later one doubles, with jitter.
    pub base_delay: Duration,
    /// The longest backoff.
    pub max_delay: Duration,
    /// How long an outage is waited for; `None`: for as long as it lasts.
    pub max_outage: Option<Duration>,
}

impl RetryPolicy {
    /// `max_attempts` attempts, backing off from 250 ms up to `max_delay`; outages waited
    /// out whatever their length.
    pub fn new(max_attempts: u32, max_delay: Duration) -> Self {
        Self { max_attempts, base_delay: Duration::from_millis(250), max_delay, max_outage: None }
    }

    /// The same, giving up on an outage after `max_outage` (None: never).
    pub fn with_max_outage(self, max_outage: Option<Duration>) -> Self {
        Self { max_outage, ..self }
    }

    /// The delay before retry number `attempt` (1-based): exponential, capped, with
    /// "equal jitter" (half fixed, half random) so that many clients do not retry in step.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(self.max_delay);
        let half = capped / 2;
        half + half.mul_f64(jitter())
    }
}

/// A failure that may or may not go away when the same call is repeated.
pub trait Transient: std::error::Error {
    /// Whether repeating the same call may succeed (an unreachable server, a rate limit).
    fn is_transient(&self) -> bool;

    /// How long the other side asked us to wait before the next attempt, if it said.
    fn retry_after(&self) -> Option<Duration> {
        None
    }

    /// Whether the other side is away (unreachable, restarting, not accepting
    /// connections): repeated without counting attempts, for as long as the policy's
    /// `max_outage` allows.
    fn is_outage(&self) -> bool {
        false
    }
}

/// Runs `op` until it succeeds, fails with an error that is not transient, has used
/// `policy.max_attempts` attempts on transient failures, or (an outage) has waited
/// `policy.max_outage`. `what` names the call in the log lines.
pub async fn retrying<T, E, F, Fut>(policy: &RetryPolicy, what: &str, mut op: F) -> Result<T, E>
where
    E: Transient + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    // When the outage began, the last time it was logged, and the call counted waiting.
    let mut outage: Option<(Instant, Instant, Waiting)> = None;
    let mut tries_in_outage = 0u32;
    loop {
        let result = op().await;
        match result {
            Err(e) if e.is_outage() => {
                let now = Instant::now();
                let (since, logged, _) = outage.get_or_insert_with(|| {
                    warn!(call = what, error = %bootstrap::ErrorChain(&e), "unavailable; waiting for it to come back (logged again each minute)");
                    (now, now, Waiting::new())
                });
                let away = now - *since;
                if policy.max_outage.is_some_and(|most| away >= most) {
                    warn!(
                        call = what,
                        away_s = away.as_secs(),
                        "unavailable for longer than --max-outage; giving up"
                    );
                    return Err(e);
                }
                if now - *logged >= Duration::from_secs(60) {
                    warn!(call = what, away_s = away.as_secs(), error = %bootstrap::ErrorChain(&e), "still unavailable; waiting");
                    *logged = now;
                }
                tries_in_outage = tries_in_outage.saturating_add(1);
                let mut delay = policy.backoff(tries_in_outage);
                if let Some(most) = policy.max_outage {
                    delay = delay.min(most.saturating_sub(away)).max(Duration::from_millis(10));
                }
                if !pause(delay).await {
                    return Err(e);
                }
            }
            Err(e) if attempt < policy.max_attempts && e.is_transient() => {
                let delay = policy.backoff(attempt).max(e.retry_after().unwrap_or_default());
                warn!(call = what, attempt, error = %bootstrap::ErrorChain(&e), delay_ms = delay.as_millis() as u64, "retrying");
                if !pause(delay).await {
                    return Err(e);
                }
                attempt += 1;
            }
            other => {
                if let Some((since, _, _)) = outage.take() {
                    info!(
                        call = what,
                        away_s = since.elapsed().as_secs(),
                        "available again; resuming"
                    );
                }
                return other;
            }
        }
    }
}

/// A number in [0, 1) that differs between calls and processes; good enough for jitter.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_caps() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_outage: None,
        };
        for attempt in 1..20 {
            let d = p.backoff(attempt);
            let full = Duration::from_millis(100)
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(Duration::from_secs(1));
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} not in [{:?}, {full:?}]",
                full / 2
            );
        }
    }

    #[derive(Debug)]
    struct Flaky(bool);
    impl std::error::Error for Flaky {}
    impl std::fmt::Display for Flaky {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "flaky({})", self.0)
        }
    }
    impl Transient for Flaky {
        fn is_transient(&self) -> bool {
            self.0
        }
    }

    #[tokio::test]
    async fn transient_failures_are_repeated_until_the_attempts_run_out() {
        let p = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            max_outage: None,
        };
        let mut calls = 0;
        let r: Result<(), Flaky> = retrying(&p, "t", || {
            calls += 1;
            async { Err(Flaky(true)) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 3);
        let mut calls = 0;
        let r: Result<(), Flaky> = retrying(&p, "t", || {
            calls += 1;
            async { Err(Flaky(false)) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1, "a failure that is not transient is not repeated");
    }

    #[derive(Debug)]
    struct Away;
    impl std::error::Error for Away {}
    impl std::fmt::Display for Away {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("away")
        }
    }
    impl Transient for Away {
        fn is_transient(&self) -> bool {
            true
        }
        fn is_outage(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn an_outage_is_waited_out_past_the_attempts_and_bounded_by_max_outage() {
        let p = RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            max_outage: None,
        };
        let mut calls = 0;
        let r: Result<u32, Away> = retrying(&p, "t", || {
            calls += 1;
            let n = calls;
            async move { if n < 50 { Err(Away) } else { Ok(n) } }
        })
        .await;
        assert_eq!(r.unwrap(), 50, "50 failures of an outage, with 2 attempts allowed");
        assert_eq!(waiting(), 0, "nobody waits once it is back");
        let bounded = p.with_max_outage(Some(Duration::from_millis(50)));
        let started = Instant::now();
        let r: Result<(), Away> = retrying(&bounded, "t", || async { Err(Away) }).await;
        assert!(r.is_err());
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
