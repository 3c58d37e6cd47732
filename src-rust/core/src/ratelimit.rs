//! Rate limiting: Celery-style rate strings and a non-blocking token bucket.
//!
//! The bucket starts full and refills continuously at `rate` tokens per second up to `burst`.
//! The default burst is one second's worth of tokens rounded up, and at least 1: `"100/s"`
//! allows a burst of 100, while `"10/m"` holds at most one token so tasks are spaced 6 s apart.
//! Time comes from a [`Clock`] so tests can drive it by hand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

const ACCEPTED: &str =
    "accepted forms: \"10/s\", \"100/m\", \"1000/h\" or a bare number of tasks per second";

/// Tokens per second of `"10/s"`, `"100/m"`, `"1000/h"` or a bare number (per second).
///
/// Whitespace around the number and the unit is ignored. Zero, negative, non-finite or
/// unparsable rates are [`Error::Config`].
pub fn parse_rate(rate: &str) -> Result<f64> {
    let bad = || Error::Config(format!("invalid rate limit {rate:?}; {ACCEPTED}"));
    let text = rate.trim();
    let (number, per_s) = match text.split_once('/') {
        Some((n, unit)) => {
            let divisor = match unit.trim() {
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
            (n.trim(), divisor)
        }
        None => (text, 1.0),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let per_second = value / per_s;
    check_rate(per_second).map_err(|_| bad())
}

/// Like [`parse_rate`], but a zero rate (`"0"`, `"0/m"`) means "no limit" and gives `None`.
pub fn parse_rate_or_off(rate: &str) -> Result<Option<f64>> {
    let text = rate.trim();
    let number = text.split_once('/').map_or(text, |(n, _)| n).trim();
    if number.parse::<f64>().is_ok_and(|v| v == 0.0) {
        // still refuse a bad unit: "0/d" is a mistake, not "no limit"
        parse_rate(&text.replacen(number, "1", 1))
            .map_err(|_| Error::Config(format!("invalid rate limit {rate:?}; {ACCEPTED}")))?;
        return Ok(None);
    }
    parse_rate(rate).map(Some)
}

/// Validates a numeric rate (tokens per second): finite and strictly positive.
pub fn check_rate(per_second: f64) -> Result<f64> {
    if per_second.is_finite() && per_second > 0.0 {
        Ok(per_second)
    } else {
        Err(Error::Config(format!(
            "invalid rate limit {per_second}; {ACCEPTED}"
        )))
    }
}

/// A source of monotonic time: the elapsed time since an arbitrary fixed origin.
pub trait Clock: Send + Sync {
    fn now(&self) -> Duration;
}

/// The real monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    pub fn new() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to; clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

const TOKEN_EPSILON: f64 = 1e-9;

#[derive(Debug)]
struct State {
    rate_per_s: f64,
    burst: u32,
    explicit_burst: bool,
    tokens: f64,
    last: Duration,
}

impl State {
    fn refill(&mut self, now: Duration) {
        let elapsed = now.saturating_sub(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.rate_per_s).min(f64::from(self.burst));
    }
}

/// The default burst of a rate: one second's worth of tokens, rounded up, at least 1.
pub fn default_burst(rate_per_s: f64) -> u32 {
    let b = rate_per_s.ceil();
    if b >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        (b as u32).max(1)
    }
}

/// A thread-safe token bucket; [`TokenBucket::try_acquire`] never blocks.
#[derive(Debug)]
pub struct TokenBucket<C: Clock = MonotonicClock> {
    clock: C,
    state: Mutex<State>,
}

impl TokenBucket<MonotonicClock> {
    /// A bucket on the real clock; `burst` defaults to [`default_burst`].
    pub fn new(rate_per_s: f64, burst: Option<u32>) -> Result<Self> {
        Self::with_clock(rate_per_s, burst, MonotonicClock::new())
    }
}

impl<C: Clock> TokenBucket<C> {
    /// A bucket driven by `clock`. It starts full.
    pub fn with_clock(rate_per_s: f64, burst: Option<u32>, clock: C) -> Result<Self> {
        let rate_per_s = check_rate(rate_per_s)?;
        if burst == Some(0) {
            return Err(Error::Config(
                "token bucket burst must be at least 1".into(),
            ));
        }
        let burst_value = burst.unwrap_or_else(|| default_burst(rate_per_s));
        let now = clock.now();
        Ok(TokenBucket {
            clock,
            state: Mutex::new(State {
                rate_per_s,
                burst: burst_value,
                explicit_burst: burst.is_some(),
                tokens: f64::from(burst_value),
                last: now,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is always consistent between statements, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn rate_per_s(&self) -> f64 {
        self.lock().rate_per_s
    }

    pub fn burst(&self) -> u32 {
        self.lock().burst
    }

    /// Takes `tokens` if available and returns zero; otherwise takes nothing and returns how
    /// long until they will be. Asking for more than the burst is [`Error::Config`].
    pub fn try_acquire(&self, tokens: u32) -> Result<Duration> {
        let now = self.clock.now();
        let mut s = self.lock();
        if tokens > s.burst {
            return Err(Error::Config(format!(
                "cannot acquire {tokens} tokens at once from a bucket whose burst is {}",
                s.burst
            )));
        }
        s.refill(now);
        let want = f64::from(tokens);
        // The tolerance absorbs float rounding, so waiting exactly the returned time suffices.
        if s.tokens + TOKEN_EPSILON >= want {
            s.tokens = (s.tokens - want).max(0.0);
            return Ok(Duration::ZERO);
        }
        let wait_s = (want - s.tokens) / s.rate_per_s;
        let wait = Duration::try_from_secs_f64(wait_s).unwrap_or(Duration::MAX);
        // Never report "zero" for a refusal, however small the deficit.
        Ok(wait.max(Duration::from_nanos(1)))
    }

    /// Changes the rate from now on. A default burst follows the new rate; an explicit one stays.
    pub fn set_rate(&self, rate_per_s: f64) -> Result<()> {
        let rate_per_s = check_rate(rate_per_s)?;
        let now = self.clock.now();
        let mut s = self.lock();
        s.refill(now);
        s.rate_per_s = rate_per_s;
        if !s.explicit_burst {
            s.burst = default_burst(rate_per_s);
        }
        s.tokens = s.tokens.min(f64::from(s.burst));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn test_parse_rate_forms() {
        assert_eq!(parse_rate("10/s").unwrap(), 10.0);
        assert_eq!(parse_rate(" 120 / m ").unwrap(), 2.0);
        assert_eq!(parse_rate("3600/h").unwrap(), 1.0);
        assert_eq!(parse_rate("5").unwrap(), 5.0);
        assert_eq!(parse_rate("0.5").unwrap(), 0.5);
    }

    #[test]
    fn test_parse_rate_rejects_bad_input() {
        for bad in [
            "0", "-1", "0/s", "abc", "10/d", "10/", "/s", "", "nan", "inf/s", "10/sec",
        ] {
            let err = parse_rate(bad).unwrap_err();
            assert!(
                matches!(&err, Error::Config(m) if m.contains(&format!("{bad:?}")) && m.contains("10/s")),
                "{err}"
            );
        }
    }

    #[test]
    fn test_parse_rate_or_off() {
        assert_eq!(parse_rate_or_off("0").unwrap(), None);
        assert_eq!(parse_rate_or_off(" 0/m ").unwrap(), None);
        assert_eq!(parse_rate_or_off("0.0/s").unwrap(), None);
        assert_eq!(parse_rate_or_off("10/m").unwrap(), Some(10.0 / 60.0));
        for bad in ["0/d", "-1", "x", ""] {
            let err = parse_rate_or_off(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn test_bucket_default_burst() {
        let c = ManualClock::new();
        assert_eq!(
            TokenBucket::with_clock(100.0, None, c.clone())
                .unwrap()
                .burst(),
            100
        );
        assert_eq!(
            TokenBucket::with_clock(2.5, None, c.clone())
                .unwrap()
                .burst(),
            3
        );
        assert_eq!(
            TokenBucket::with_clock(10.0 / 60.0, None, c)
                .unwrap()
                .burst(),
            1
        );
    }

    #[test]
    fn test_bucket_spaces_slow_rates() {
        let c = ManualClock::new();
        let b = TokenBucket::with_clock(parse_rate("10/m").unwrap(), None, c.clone()).unwrap();
        assert_eq!(b.try_acquire(1).unwrap(), Duration::ZERO);
        let wait = b.try_acquire(1).unwrap();
        assert!((wait.as_secs_f64() - 6.0).abs() < 1e-6, "{wait:?}");
        c.advance(Duration::from_secs(5));
        assert!(b.try_acquire(1).unwrap() > Duration::ZERO);
        c.advance(Duration::from_secs(1));
        assert_eq!(b.try_acquire(1).unwrap(), Duration::ZERO);
    }

    #[test]
    fn test_bucket_burst_then_refill() {
        let c = ManualClock::new();
        let b = TokenBucket::with_clock(10.0, Some(3), c.clone()).unwrap();
        for _ in 0..3 {
            assert_eq!(b.try_acquire(1).unwrap(), Duration::ZERO);
        }
        assert!(b.try_acquire(1).unwrap() > Duration::ZERO);
        c.advance(Duration::from_millis(100));
        assert_eq!(b.try_acquire(1).unwrap(), Duration::ZERO);
        assert!(b.try_acquire(4).is_err());
    }

    #[test]
    fn test_bucket_set_rate() {
        let c = ManualClock::new();
        let b = TokenBucket::with_clock(100.0, None, c.clone()).unwrap();
        b.set_rate(1.0).unwrap();
        assert_eq!(b.burst(), 1);
        assert_eq!(b.try_acquire(1).unwrap(), Duration::ZERO);
        assert!(b.try_acquire(1).unwrap() > Duration::from_millis(900));
        assert!(b.set_rate(0.0).is_err());
        let fixed = TokenBucket::with_clock(100.0, Some(7), c).unwrap();
        fixed.set_rate(1.0).unwrap();
        assert_eq!(fixed.burst(), 7);
    }

    proptest! {
        #[test]
        fn prop_bucket_never_exceeds_rate(
            rate in 0.1f64..200.0,
            burst in proptest::option::of(1u32..20),
            ops in proptest::collection::vec((0u64..500, 1u32..4), 1..200),
        ) {
            let c = ManualClock::new();
            let b = TokenBucket::with_clock(rate, burst, c.clone()).unwrap();
            let cap = f64::from(b.burst());
            let mut grants: Vec<(f64, f64)> = Vec::new();
            for (advance_ms, n) in ops {
                c.advance(Duration::from_millis(advance_ms));
                if n > b.burst() { continue; }
                if b.try_acquire(n).unwrap().is_zero() {
                    grants.push((c.now().as_secs_f64(), f64::from(n)));
                }
            }
            for i in 0..grants.len() {
                let mut total = 0.0;
                for g in &grants[i..] {
                    total += g.1;
                    let window = g.0 - grants[i].0;
                    prop_assert!(total <= rate * window + cap + 1e-6,
                        "granted {total} in {window}s at rate {rate} burst {cap}");
                }
            }
        }
    }
}
