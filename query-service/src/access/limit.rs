//! Per-caller rate limits: a token bucket per API key name (or per peer IP when no keys
//! file is set), from governor's GCRA, so one busy caller cannot take the service from
//! the others. An over-limit call is refused at once with the time until its next token.

use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// A rate and a burst, as `--rate-limit` spells them: `100/s,burst=200`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Calls per `per`.
    pub calls: u32,
    /// The period of `calls`.
    pub per: Duration,
    /// Calls a caller may make at once after a quiet spell.
    pub burst: u32,
}

impl FromStr for RateLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?} is not a rate limit: write <calls>/<s|m|h>[,burst=<calls>], e.g. 100/s,burst=200"
            )
        };
        let mut parts = s.split(',');
        let rate = parts.next().ok_or_else(bad)?.trim();
        let (calls, unit) = rate.split_once('/').ok_or_else(bad)?;
        let calls: u32 = calls.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        let mut burst = calls;
        for part in parts {
            let (k, v) = part.split_once('=').ok_or_else(bad)?;
            match k.trim() {
                "burst" => burst = v.trim().parse().map_err(|_| bad())?,
                _ => return Err(bad()),
            }
        }
        if calls == 0 || burst == 0 {
            return Err(format!("{s:?}: calls and burst must be above 0"));
        }
        Ok(Self { calls, per, burst })
    }
}

/// One token bucket per caller.
#[derive(Debug)]
pub struct Limiter {
    buckets: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl Limiter {
    /// Buckets refilled at `limit`'s rate, holding up to its burst.
    pub fn new(limit: RateLimit) -> Self {
        let period = limit.per / limit.calls;
        let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .expect("a period above 0")
            .allow_burst(burst);
        Self { buckets: DefaultKeyedRateLimiter::keyed(quota), clock: DefaultClock::default() }
    }

    /// Takes a token from `caller`'s bucket, or says how long until one is there.
    pub fn check(&self, caller: &str) -> Result<(), Duration> {
        // The owned key is made only for a caller's first call.
        let key = caller.to_string();
        self.buckets.check_key(&key).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets the buckets that are full again, so callers that came once (peer addresses
    /// above all) do not hold memory for ever.
    pub fn forget_idle(&self) {
        self.buckets.retain_recent();
        self.buckets.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates_and_bursts() {
        let l: RateLimit = "100/s,burst=200".parse().unwrap();
        assert_eq!(l, RateLimit { calls: 100, per: Duration::from_secs(1), burst: 200 });
        let l: RateLimit = "30/m".parse().unwrap();
        assert_eq!(l, RateLimit { calls: 30, per: Duration::from_secs(60), burst: 30 });
        for bad in ["", "100", "100/d", "0/s", "10/s,burst=0", "10/s,bust=3", "x/s"] {
            let e = bad.parse::<RateLimit>().unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }

    #[test]
    fn a_caller_past_its_burst_waits_and_others_do_not() {
        let limiter = Limiter::new("10/s,burst=3".parse().unwrap());
        for _ in 0..3 {
            limiter.check("a").unwrap();
        }
        let wait = limiter.check("a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100), "{wait:?}");
        limiter.check("b").unwrap();
        std::thread::sleep(wait);
        limiter.check("a").unwrap();
    }
}
