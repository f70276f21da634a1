//! One way to repeat a call that failed for a passing reason: exponential backoff with
//! jitter, a bounded number of attempts. The node client and the store both use it; each
//! error type says for itself which failures are worth repeating.

use std::time::Duration;

use tracing::warn;

/// How hard to retry calls that fail transiently.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts before giving up, the first included.
    pub max_attempts: u32,
    /// The first backoff; each later one doubles, with jitter.
    pub base_delay: Duration,
    /// The longest backoff.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// `max_attempts` attempts, backing off from 250 ms up to `max_delay`.
    pub fn new(max_attempts: u32, max_delay: Duration) -> Self {
        Self { max_attempts, base_delay: Duration::from_millis(250), max_delay }
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
}

/// Runs `op` until it succeeds, fails with an error that is not transient, or has used
/// `policy.max_attempts` attempts. `what` names the call in the log line of each retry.
pub async fn retrying<T, E, F, Fut>(policy: &RetryPolicy, what: &str, mut op: F) -> Result<T, E>
where
    E: Transient + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if attempt < policy.max_attempts && e.is_transient() => {
                let delay = policy.backoff(attempt).max(e.retry_after().unwrap_or_default());
                warn!(call = what, attempt, error = %bootstrap::ErrorChain(&e), delay_ms = delay.as_millis() as u64, "retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            other => return other,
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
}
