//! How long to wait before retrying the same target: exponential backoff with full jitter,
//! capped, or what the upstream's `Retry-After` asked for; and a budget shared by every
//! request through one chain, so that retries never turn into a tight loop.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;

/// The wait before a same-target retry.
///
/// The `n`th retry (from 0) waits a random time between zero and `base × 2ⁿ`, capped by
/// `cap` ("full jitter": retries of many clients spread out instead of arriving together).
/// When the failed response said how long to wait (`Retry-After` in seconds or as an HTTP
/// date, or `retry-after-ms`), that wait is honoured plus a jitter of up to `base`, unless it
/// is longer than `cap`: then the target is not retried and the next one is tried at once.
///
/// Defaults: 500 ms base, 8 s cap (as the official OpenAI and Anthropic SDKs).
#[derive(Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: Arc<dyn Fn() -> f64 + Send + Sync>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(8))
    }
}

impl std::fmt::Debug for Backoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backoff")
            .field("base", &self.base)
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

impl Backoff {
    /// Waits of up to `base × 2ⁿ`, never more than `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        let seed = AtomicU64::new(RandomState::new().hash_one(0x5eed_u64) | 1);
        Backoff {
            base,
            cap,
            jitter: Arc::new(move || xorshift(&seed)),
        }
    }

    /// Where the jitter comes from: a function returning a number in `[0, 1)` (values outside
    /// are clamped). The default is a small generator seeded per process; tests pass a
    /// constant to make every wait exact.
    pub fn jitter(mut self, source: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        self.jitter = Arc::new(source);
        self
    }

    /// The longest wait: a `Retry-After` longer than this moves on to the next target.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The wait before retry number `n` (from 0), given what the upstream asked for; `None`
    /// when it asked for more than the cap.
    pub fn wait(&self, n: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let jitter = (self.jitter)().clamp(0.0, 1.0);
        match retry_after {
            Some(asked) if asked > self.cap => None,
            Some(asked) => Some(asked + self.base.mul_f64(jitter)),
            None => {
                let ceiling = self
                    .base
                    .checked_mul(1u32.checked_shl(n).unwrap_or(u32::MAX))
                    .unwrap_or(self.cap)
                    .min(self.cap);
                Some(ceiling.mul_f64(jitter))
            }
        }
    }
}

/// A number in `[0, 1)` from a xorshift64* generator: plenty for spreading retries, and no
/// dependency.
fn xorshift(state: &AtomicU64) -> f64 {
    let mut x = state.load(Ordering::Relaxed);
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    state.store(x, Ordering::Relaxed);
    (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
}

/// How many same-target retries every request through one chain (and its clones) may make
/// together per window: beyond that, a failure moves on to the next target at once. During an
/// outage this bounds the extra load retries put on an upstream, whatever the traffic.
///
/// Default: 20 retries per second.
#[derive(Debug)]
pub struct RetryBudget {
    limit: u32,
    window: Duration,
    used: Mutex<(Option<Instant>, u32)>,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new(20, Duration::from_secs(1))
    }
}

impl RetryBudget {
    /// At most `limit` retries per `window`.
    pub fn new(limit: u32, window: Duration) -> Self {
        RetryBudget {
            limit,
            window,
            used: Mutex::new((None, 0)),
        }
    }

    /// Takes one retry from the budget, if any is left in the current window.
    pub(crate) fn withdraw(&self) -> bool {
        let now = Instant::now();
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let (started, count) = &mut *used;
        if !started.is_some_and(|at| now < at + self.window) {
            *started = Some(now);
            *count = 0;
        }
        if *count >= self.limit {
            return false;
        }
        *count += 1;
        true
    }
}

/// What a failed response asked about waiting: `retry-after-ms` (milliseconds, a number) or
/// `Retry-After` (seconds, or an HTTP date). Anything unreadable, or a date in the past, is
/// no ask.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if (0.0..1e12).contains(&ms) {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    let value = text("retry-after")?;
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    at.duration_since(std::time::SystemTime::now()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn retry_after_is_read_in_seconds_milliseconds_or_as_a_date() {
        assert_eq!(
            retry_after(&headers(&[("retry-after", "2")])),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(&headers(&[
                ("retry-after", "2"),
                ("retry-after-ms", "1500")
            ])),
            Some(Duration::from_millis(1500)),
            "the finer one wins"
        );
        let later = std::time::SystemTime::now() + Duration::from_secs(30);
        let date = httpdate::fmt_http_date(later);
        let asked = retry_after(&headers(&[("retry-after", &date)])).unwrap();
        assert!(asked <= Duration::from_secs(30) && asked > Duration::from_secs(27));
        for junk in ["-1", "soon", "Wed, 21 Oct 2015 07:28:00 GMT", ""] {
            assert_eq!(
                retry_after(&headers(&[("retry-after", junk)])),
                None,
                "{junk}"
            );
        }
        assert_eq!(retry_after(&headers(&[("retry-after-ms", "NaN")])), None);
    }

    #[test]
    fn backoff_doubles_under_full_jitter_and_stops_at_the_cap() {
        let top = Backoff::new(Duration::from_millis(500), Duration::from_secs(8)).jitter(|| 1.0);
        let waits: Vec<_> = (0..7).map(|n| top.wait(n, None).unwrap()).collect();
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        let none = top.clone().jitter(|| 0.0);
        assert_eq!(none.wait(3, None), Some(Duration::ZERO));
        assert_eq!(top.wait(u32::MAX, None), Some(Duration::from_secs(8)));
    }

    #[test]
    fn a_retry_after_is_honoured_within_the_cap_and_moves_on_beyond_it() {
        let half = Backoff::new(Duration::from_millis(500), Duration::from_secs(8)).jitter(|| 0.5);
        assert_eq!(
            half.wait(0, Some(Duration::from_secs(2))),
            Some(Duration::from_millis(2250))
        );
        assert_eq!(half.wait(0, Some(Duration::from_secs(9))), None);
    }

    #[test]
    fn the_default_jitter_stays_in_its_range() {
        let backoff = Backoff::default();
        for n in 0..1000 {
            let wait = backoff.wait(n % 5, None).unwrap();
            assert!(wait <= Duration::from_secs(8));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_allows_its_limit_per_window() {
        let budget = RetryBudget::new(2, Duration::from_secs(1));
        assert!(budget.withdraw() && budget.withdraw());
        assert!(!budget.withdraw(), "spent for this window");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(budget.withdraw(), "a new window");
    }
}
