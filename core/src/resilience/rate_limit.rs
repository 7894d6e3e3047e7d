//! Token-bucket rate limiting, per key, inside one process.
//!
//! Some operations must be slowed down per caller (sign-in attempts per
//! account, payment initiations per user) whatever the total load is. A
//! token bucket allows a burst of `capacity` calls and then a steady
//! `refill_per_second`; a refused call learns how long to wait, which
//! becomes `extensions.retryAfterSeconds` through [`ApiError::rate_limited`].
//!
//! Each bucket is kept as GCRA keeps it, a single "next call due at"
//! instant: it refills lazily when it is looked at (no background task),
//! costs one `Instant` per key, and gives exact retry-after values in
//! integer nanoseconds. This limiter is local to one instance; a Redis-backed limiter
//! shared by all instances can offer the same `check(key) -> Result<(),
//! RetryAfter>` shape (as an `async fn`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::ApiError;

/// The default bound on tracked keys of a [`KeyedRateLimiter`].
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// A full sweep of idle buckets costs a pass over every key: when one frees
/// nothing (every key is busy), wait this long before trying another.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The call was refused; it may be tried again after this long.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rate limited, retry after {0:?}")]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// The wait in whole seconds, rounded up and at least 1, as clients get
    /// it in `retryAfterSeconds`.
    pub fn as_secs_ceil(&self) -> u64 {
        let secs = self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0);
        secs.max(1)
    }
}

impl From<RetryAfter> for ApiError {
    /// `MSCoreRateLimited` with `retryAfterSeconds`.
    fn from(retry: RetryAfter) -> Self {
        ApiError::rate_limited(retry.as_secs_ceil())
    }
}

/// The shape of a bucket, in the terms of GCRA (the "virtual scheduling"
/// form of a token bucket): calls are spaced `interval` apart on average,
/// and may run up to `tolerance` ahead of that schedule, which is the burst.
/// Integer nanoseconds keep retry-after values exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rate {
    capacity: u32,
    interval: Duration,
    tolerance: Duration,
}

const MIN_REFILL_PER_SECOND: f64 = 1e-6;
const MAX_REFILL_PER_SECOND: f64 = 1e9;

impl Rate {
    fn new(capacity: u32, refill_per_second: f64) -> Self {
        // A zero, negative or NaN rate would never refill (and never let a
        // bucket be evicted): treat it as the slowest rate we support.
        let refill_per_second = if refill_per_second.is_nan() {
            MIN_REFILL_PER_SECOND
        } else {
            refill_per_second.clamp(MIN_REFILL_PER_SECOND, MAX_REFILL_PER_SECOND)
        };
        let capacity = capacity.max(1);
        let interval = Duration::try_from_secs_f64(1.0 / refill_per_second)
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_nanos(1));
        Self {
            capacity,
            interval,
            tolerance: interval.saturating_mul(capacity - 1),
        }
    }
}

/// One bucket's state: the theoretical arrival time of the next call. At or
/// before `now` means the bucket is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Schedule {
    next: Instant,
}

impl Schedule {
    fn full(now: Instant) -> Self {
        Self { next: now }
    }

    fn is_full_at(&self, now: Instant) -> bool {
        self.next <= now
    }

    fn tokens_at(&self, rate: Rate, now: Instant) -> f64 {
        let ahead = self.next.max(now) - now;
        let room = rate
            .tolerance
            .saturating_add(rate.interval)
            .saturating_sub(ahead);
        (room.as_secs_f64() / rate.interval.as_secs_f64()).min(f64::from(rate.capacity))
    }

    fn take(&mut self, rate: Rate, now: Instant) -> Result<(), RetryAfter> {
        // A clock read behind `next` (another thread raced us to the lock)
        // only makes the check stricter: it can never grant extra calls.
        let next = self.next.max(now);
        let ahead = next - now;
        if ahead > rate.tolerance {
            return Err(RetryAfter(ahead - rate.tolerance));
        }
        self.next = next
            .checked_add(rate.interval)
            .ok_or(RetryAfter(rate.interval))?;
        Ok(())
    }
}

/// A single token bucket: `capacity` calls at once, then
/// `refill_per_second` on average. Starts full.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBucket {
    rate: Rate,
    schedule: Schedule,
}

impl TokenBucket {
    /// A full bucket. `capacity` is at least 1; `refill_per_second` should
    /// be positive and finite (it is clamped to `[1e-6, 1e9]`).
    pub fn new(capacity: u32, refill_per_second: f64) -> Self {
        Self {
            rate: Rate::new(capacity, refill_per_second),
            schedule: Schedule::full(Instant::now()),
        }
    }

    /// Takes one token, or says how long until one is available.
    pub fn try_take(&mut self) -> Result<(), RetryAfter> {
        self.schedule.take(self.rate, Instant::now())
    }

    /// Tokens available right now (fractional while refilling).
    pub fn available(&self) -> f64 {
        self.schedule.tokens_at(self.rate, Instant::now())
    }
}

/// One token bucket per key (a user id, an account, an IP), created on first
/// use. Thread-safe; share it behind an `Arc`.
///
/// Memory is bounded by `max_keys`: when the map is full, buckets that have
/// refilled completely are dropped (a full bucket is the same as no bucket);
/// if every bucket is still in use, an arbitrary one is evicted, which at
/// worst hands that key a fresh burst.
pub struct KeyedRateLimiter {
    rate: Rate,
    max_keys: usize,
    state: Mutex<Buckets>,
}

struct Buckets {
    schedules: HashMap<String, Schedule>,
    next_sweep: Option<Instant>,
}

impl fmt::Debug for KeyedRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimiter")
            .field("capacity", &self.rate.capacity)
            .field("refill_interval", &self.rate.interval)
            .field("max_keys", &self.max_keys)
            .field("tracked_keys", &self.tracked_keys())
            .finish()
    }
}

impl KeyedRateLimiter {
    /// A limiter giving every key a bucket of `capacity` refilled at
    /// `refill_per_sec` (see [`TokenBucket::new`]), tracking at most
    /// [`DEFAULT_MAX_KEYS`] keys.
    pub fn new(capacity: u32, refill_per_sec: f64) -> Self {
        Self {
            rate: Rate::new(capacity, refill_per_sec),
            max_keys: DEFAULT_MAX_KEYS,
            state: Mutex::new(Buckets {
                schedules: HashMap::new(),
                next_sweep: None,
            }),
        }
    }

    /// The same limiter tracking at most `max_keys` keys (at least 1).
    pub fn with_max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys.max(1);
        self
    }

    /// Takes a token from `key`'s bucket, or says how long until one is
    /// available. Keys are independent.
    pub fn check(&self, key: &str) -> Result<(), RetryAfter> {
        self.check_at(key, Instant::now())
    }

    /// How many keys currently have a bucket (for metrics).
    pub fn tracked_keys(&self) -> usize {
        self.lock().schedules.len()
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), RetryAfter> {
        let rate = self.rate;
        let mut buckets = self.lock();
        if let Some(schedule) = buckets.schedules.get_mut(key) {
            return schedule.take(rate, now);
        }
        if buckets.schedules.len() >= self.max_keys {
            buckets.make_room(self.max_keys, now);
        }
        let mut schedule = Schedule::full(now);
        let result = schedule.take(rate, now);
        buckets.schedules.insert(key.to_owned(), schedule);
        result
    }

    fn lock(&self) -> MutexGuard<'_, Buckets> {
        // Updates under this lock cannot panic halfway; a poisoned lock still
        // holds consistent buckets.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Buckets {
    fn make_room(&mut self, max_keys: usize, now: Instant) {
        if self.next_sweep.is_none_or(|at| now >= at) {
            self.schedules
                .retain(|_, schedule| !schedule.is_full_at(now));
            self.next_sweep = Some(now + SWEEP_INTERVAL);
        }
        while self.schedules.len() >= max_keys {
            let Some(victim) = self.schedules.keys().next().cloned() else {
                break;
            };
            self.schedules.remove(&victim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::codes;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn allows_the_capacity_then_refuses_with_the_time_to_the_next_token() {
        let limiter = KeyedRateLimiter::new(3, 1.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check_at("user-1", t0), Ok(()));
        }
        assert_eq!(limiter.check_at("user-1", t0), Err(RetryAfter(1000 * MS)));
        assert_eq!(
            limiter.check_at("user-1", t0 + 400 * MS),
            Err(RetryAfter(600 * MS))
        );
        assert_eq!(
            limiter.check_at("user-1", t0 + 999 * MS),
            Err(RetryAfter(MS))
        );
        assert_eq!(limiter.check_at("user-1", t0 + 1000 * MS), Ok(()));
        assert_eq!(
            limiter.check_at("user-1", t0 + 1000 * MS),
            Err(RetryAfter(1000 * MS))
        );
    }

    #[test]
    fn refills_over_time_up_to_the_capacity() {
        let limiter = KeyedRateLimiter::new(2, 4.0);
        let t0 = Instant::now();
        assert!(limiter.check_at("k", t0).is_ok());
        assert!(limiter.check_at("k", t0).is_ok());
        assert!(limiter.check_at("k", t0).is_err());
        assert!(
            limiter.check_at("k", t0 + 250 * MS).is_ok(),
            "one token per 250 ms"
        );
        assert!(limiter.check_at("k", t0 + 250 * MS).is_err());
        // A long idle period refills to capacity, never beyond.
        let later = t0 + 3600 * 1000 * MS;
        assert!(limiter.check_at("k", later).is_ok());
        assert!(limiter.check_at("k", later).is_ok());
        assert_eq!(limiter.check_at("k", later), Err(RetryAfter(250 * MS)));
    }

    #[test]
    fn waiting_exactly_the_retry_after_is_enough() {
        let limiter = KeyedRateLimiter::new(1, 3.0);
        let mut now = Instant::now();
        for _ in 0..20 {
            match limiter.check_at("k", now) {
                Ok(()) => {}
                Err(RetryAfter(wait)) => {
                    now += wait;
                    assert_eq!(limiter.check_at("k", now), Ok(()));
                }
            }
        }
    }

    #[test]
    fn keys_are_independent() {
        let limiter = KeyedRateLimiter::new(1, 1.0);
        let t0 = Instant::now();
        assert!(limiter.check_at("alice", t0).is_ok());
        assert!(limiter.check_at("alice", t0).is_err());
        assert!(limiter.check_at("bob", t0).is_ok());
    }

    #[test]
    fn idle_full_buckets_are_evicted_when_the_map_is_full() {
        let limiter = KeyedRateLimiter::new(2, 1.0).with_max_keys(3);
        let t0 = Instant::now();
        for key in ["a", "b", "c"] {
            assert!(limiter.check_at(key, t0).is_ok());
        }
        // One second later every bucket is full again, i.e. idle.
        assert!(limiter.check_at("d", t0 + 1000 * MS).is_ok());
        assert_eq!(limiter.tracked_keys(), 1);
    }

    #[test]
    fn memory_stays_bounded_when_every_key_is_busy() {
        let limiter = KeyedRateLimiter::new(5, 0.001).with_max_keys(100);
        let t0 = Instant::now();
        for i in 0..10_000 {
            let _ = limiter.check_at(&format!("key-{i}"), t0 + i * MS);
            assert!(limiter.tracked_keys() <= 100);
        }
        // The newest key is tracked: its limit applies.
        for _ in 0..4 {
            assert!(limiter.check_at("key-9999", t0 + 10_000 * MS).is_ok());
        }
        assert!(limiter.check_at("key-9999", t0 + 10_000 * MS).is_err());
    }

    #[test]
    fn a_clock_read_behind_the_bucket_does_not_grant_extra_tokens() {
        let limiter = KeyedRateLimiter::new(1, 1.0);
        let t0 = Instant::now();
        assert!(limiter.check_at("k", t0 + 1000 * MS).is_ok());
        assert!(limiter.check_at("k", t0).is_err());
        assert!(limiter.check_at("k", t0 + 1000 * MS).is_err());
    }

    #[test]
    fn single_bucket_works_alone() {
        let mut bucket = TokenBucket::new(2, 0.5);
        assert!(bucket.try_take().is_ok());
        assert!(bucket.try_take().is_ok());
        let RetryAfter(wait) = bucket.try_take().unwrap_err();
        assert!(wait > 1900 * MS && wait <= 2000 * MS, "{wait:?}");
        assert!(bucket.available() < 1.0);
    }

    #[test]
    fn nonsensical_rates_are_clamped() {
        let limiter = KeyedRateLimiter::new(0, f64::NAN);
        let t0 = Instant::now();
        assert!(limiter.check_at("k", t0).is_ok(), "capacity is at least 1");
        let RetryAfter(wait) = limiter.check_at("k", t0).unwrap_err();
        assert!(wait > Duration::from_secs(86_400));
    }

    #[test]
    fn retry_after_converts_to_rate_limited_in_whole_seconds() {
        assert_eq!(RetryAfter(Duration::ZERO).as_secs_ceil(), 1);
        assert_eq!(RetryAfter(1500 * MS).as_secs_ceil(), 2);
        assert_eq!(RetryAfter(Duration::from_secs(3)).as_secs_ceil(), 3);
        let api: ApiError = RetryAfter(2500 * MS).into();
        assert_eq!(api.code(), codes::RATE_LIMITED);
        assert_eq!(api.extensions()["retryAfterSeconds"], 3);
    }
}
