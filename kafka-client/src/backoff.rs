//! Jittered exponential backoff, sans-IO.
//!
//! [`BackoffPolicy`] computes a delay from an attempt number; [`Backoff`] tracks the attempts of
//! one thing (a request, a broker connection) against `now`. Broker throttling (KIP-219) is
//! kept per connection in `net.rs`.

use std::time::{Duration, Instant};

use crate::config::ClientConfig;
use crate::rng::RandomSource;

/// Exponential backoff: `initial * multiplier^(attempt)`, capped at `max`, then multiplied by a
/// random factor in `[1 - jitter, 1 + jitter]` and capped at `max` again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Growth per attempt (2 doubles).
    pub multiplier: f64,
    /// Relative jitter, 0 to 1 (0.2: plus or minus 20 %).
    pub jitter: f64,
}

impl Default for BackoffPolicy {
    /// Retries of non-produce requests: 250 ms doubling to 5 s, 20 % jitter (SEMANTICS.md).
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl BackoffPolicy {
    /// `retry.backoff.ms` growing to `retry.backoff.max.ms`, as Java's clients do.
    pub fn retry(config: &ClientConfig) -> BackoffPolicy {
        BackoffPolicy {
            initial: config.retry_backoff,
            max: config.retry_backoff_max.max(config.retry_backoff),
            ..BackoffPolicy::default()
        }
    }

    /// `reconnect.backoff.ms` growing to `reconnect.backoff.max.ms`.
    pub fn reconnect(config: &ClientConfig) -> BackoffPolicy {
        BackoffPolicy {
            initial: config.reconnect_backoff,
            max: config.reconnect_backoff_max.max(config.reconnect_backoff),
            ..BackoffPolicy::default()
        }
    }

    /// `CONCURRENT_TRANSACTIONS` retries: a short, growing backoff from 20 ms (SEMANTICS.md).
    pub fn concurrent_transactions() -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_secs(1),
            ..BackoffPolicy::default()
        }
    }

    /// The delay before retry number `attempt` (0 for the retry after the first failure).
    pub fn delay(&self, attempt: u32, rng: &mut dyn RandomSource) -> Duration {
        let max = self.max.as_secs_f64();
        let multiplier = if self.multiplier.is_finite() && self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        };
        // powi on a large exponent gives inf, which min() turns into max.
        let exp = i32::try_from(attempt).unwrap_or(i32::MAX);
        let term = (self.initial.as_secs_f64() * multiplier.powi(exp)).min(max);
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let factor = if jitter > 0.0 {
            1.0 - jitter + 2.0 * jitter * rng.unit_f64()
        } else {
            1.0
        };
        let secs = (term * factor).clamp(0.0, max);
        Duration::try_from_secs_f64(secs).unwrap_or(self.max)
    }
}

/// The backoff state of one retried thing: how many consecutive failures, and when it may be
/// tried again.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    failures: u32,
    ready_at: Option<Instant>,
}

impl Backoff {
    /// No failures yet: ready now.
    pub fn new(policy: BackoffPolicy) -> Backoff {
        Backoff {
            policy,
            failures: 0,
            ready_at: None,
        }
    }

    /// Records a failure at `now`; returns when the next try may start.
    pub fn fail(&mut self, now: Instant, rng: &mut dyn RandomSource) -> Instant {
        let delay = self.policy.delay(self.failures, rng);
        self.failures = self.failures.saturating_add(1);
        let at = now.checked_add(delay).unwrap_or(now);
        self.ready_at = Some(at);
        at
    }

    /// Records a success: the next failure starts from the initial delay again.
    pub fn succeed(&mut self) {
        self.failures = 0;
        self.ready_at = None;
    }

    /// Consecutive failures so far.
    #[cfg(test)]
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// When the next try may start (`now` or earlier means at once).
    pub fn ready_at(&self, now: Instant) -> Instant {
        self.ready_at.map_or(now, |at| at.max(now))
    }

    /// Whether a try may start at `now`.
    #[cfg(test)]
    pub fn is_ready(&self, now: Instant) -> bool {
        self.ready_at.is_none_or(|at| at <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRng;
    use proptest::prelude::*;

    fn no_jitter() -> BackoffPolicy {
        BackoffPolicy {
            jitter: 0.0,
            ..BackoffPolicy::default()
        }
    }

    #[test]
    fn doubles_to_the_cap() {
        let mut rng = SeededRng::new(1);
        let p = no_jitter();
        let got: Vec<u128> = (0..8).map(|a| p.delay(a, &mut rng).as_millis()).collect();
        assert_eq!(got, vec![250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
        assert_eq!(p.delay(u32::MAX, &mut rng), Duration::from_secs(5));
    }

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let mut rng = SeededRng::new(2);
        let p = BackoffPolicy::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let d = p.delay(1, &mut rng).as_secs_f64();
            assert!((0.4..=0.6).contains(&d), "{d}");
            seen.insert(d.to_bits());
        }
        assert!(seen.len() > 100);
        for _ in 0..100 {
            assert!(p.delay(10, &mut rng) <= p.max);
        }
    }

    #[test]
    fn from_config() {
        let c = ClientConfig::default();
        let r = BackoffPolicy::retry(&c);
        assert_eq!(
            (r.initial, r.max),
            (Duration::from_millis(100), Duration::from_secs(1))
        );
        let r = BackoffPolicy::reconnect(&c);
        assert_eq!(
            (r.initial, r.max),
            (Duration::from_millis(50), Duration::from_secs(1))
        );
        let r = BackoffPolicy::concurrent_transactions();
        assert_eq!(r.initial, Duration::from_millis(20));
    }

    #[test]
    fn backoff_state_machine() {
        let mut rng = SeededRng::new(3);
        let t0 = Instant::now();
        let mut b = Backoff::new(no_jitter());
        assert!(b.is_ready(t0));
        assert_eq!(b.ready_at(t0), t0);
        let at = b.fail(t0, &mut rng);
        assert_eq!(at, t0 + Duration::from_millis(250));
        assert!(!b.is_ready(t0 + Duration::from_millis(249)));
        assert!(b.is_ready(at));
        let at2 = b.fail(at, &mut rng);
        assert_eq!(at2, at + Duration::from_millis(500));
        assert_eq!(b.failures(), 2);
        b.succeed();
        assert!(b.is_ready(at));
        assert_eq!(b.fail(at, &mut rng), at + Duration::from_millis(250));
    }

    proptest! {
        #[test]
        fn delay_never_exceeds_max_or_panics(
            initial_ms in 0u64..100_000,
            max_ms in 0u64..100_000,
            multiplier in proptest::num::f64::ANY,
            jitter in proptest::num::f64::ANY,
            attempt in any::<u32>(),
            seed in any::<u64>(),
        ) {
            let p = BackoffPolicy {
                initial: Duration::from_millis(initial_ms),
                max: Duration::from_millis(max_ms),
                multiplier,
                jitter,
            };
            let d = p.delay(attempt, &mut SeededRng::new(seed));
            prop_assert!(d <= p.max);
        }
    }
}
