//! Failure counting with lockout, shared through Redis: "5 failed sign-ins
//! per 15 minutes per email".
//!
//! A token bucket slows callers down; a lockout stops them. [`AttemptCounter`]
//! counts failures per key in a fixed window that starts at the first failure,
//! locks the key once `max_failures` are reached, and forgets everything when
//! the window ends or the caller succeeds ([`AttemptCounter::reset`]). The
//! counts live in Redis (INCR and its expiry in one script) so every instance
//! sees the same lockout; when Redis is unavailable this instance counts on
//! its own, exactly as [`super::RateLimiter`] falls back (see
//! [`SharedLimitOptions`]). Lockouts are not progressive: a key locked out
//! again after its window gets the same window again.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::rate_limit::RetryAfter;
use super::redis_fallback::{hash_key, non_negative, LuaScript, SharedLimitOptions, SharedRedis};
use crate::redis::RedisAccessor;

/// Counts a failure in `KEYS[1]`; the first one starts a window of `ARGV[1]`
/// milliseconds (the expiry is also repaired if it is ever missing). Answers
/// `{count, ms_until_the_window_resets}`.
const RECORD: &str = r"
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
";

/// Reads `KEYS[1]`: `{count, ms_until_the_window_resets}`, `{0, -2}` when
/// there is no window.
const PEEK: &str = r"
local count = tonumber(redis.call('GET', KEYS[1]) or 0) or 0
return {count, redis.call('PTTL', KEYS[1])}
";

/// Ends `KEYS[1]`'s window; answers how many keys were removed.
const RESET: &str = r"
return redis.call('DEL', KEYS[1])
";

static RECORD_SCRIPT: LuaScript = LuaScript::new(RECORD);
static PEEK_SCRIPT: LuaScript = LuaScript::new(PEEK);
static RESET_SCRIPT: LuaScript = LuaScript::new(RESET);

/// The state of a key's window right after a failure was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempts {
    /// Failures in the current window, this one included (at least 1).
    pub count: u32,
    /// When the window ends and the count starts again from zero.
    pub window_resets_in: Duration,
}

/// Failures per key in a fixed window, locking a key once it reaches
/// `max_failures`. Cheap to clone; clones share state.
///
/// In Redis a key lives at `{prefix}attempts:{name}:{sha256(key)}` and
/// expires with its window. While Redis is healthy it is the only truth:
/// failures counted locally during an outage are not merged into Redis
/// afterwards, and a [`reset`](Self::reset) clears only this instance's
/// local count.
#[derive(Clone)]
pub struct AttemptCounter {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    max_failures: u32,
    window: Duration,
    local: LocalWindows,
    redis: Option<SharedRedis>,
}

impl fmt::Debug for AttemptCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttemptCounter")
            .field("name", &self.inner.name)
            .field("max_failures", &self.inner.max_failures)
            .field("window", &self.inner.window)
            .field("redis", &self.inner.redis)
            .finish()
    }
}

impl AttemptCounter {
    /// A counter named `name` (a short constant such as `login`) locking a
    /// key after `max_failures` (at least 1) failures within `window` (at
    /// least 1 ms) of its first failure. With `redis: None` it is purely
    /// in-process.
    pub fn new(
        name: impl Into<String>,
        max_failures: u32,
        window: Duration,
        redis: Option<RedisAccessor>,
    ) -> Self {
        Self::with_options(
            name,
            max_failures,
            window,
            redis,
            SharedLimitOptions::default(),
        )
    }

    /// [`Self::new`] with explicit timeouts, fallback bounds and metrics.
    pub fn with_options(
        name: impl Into<String>,
        max_failures: u32,
        window: Duration,
        redis: Option<RedisAccessor>,
        options: SharedLimitOptions,
    ) -> Self {
        let name = name.into();
        let local = LocalWindows::new(options.max_local_keys);
        let redis = redis.map(|accessor| SharedRedis::new(accessor, "attempts", &name, options));
        Self {
            inner: Arc::new(Inner {
                name,
                max_failures: max_failures.max(1),
                window: window.max(Duration::from_millis(1)),
                local,
                redis,
            }),
        }
    }

    /// The name given at construction, as used in keys, logs and metrics.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Counts one failure for `key`, starting a window if none is running.
    /// Never fails because of Redis (see the module docs).
    pub async fn record_failure(&self, key: &str) -> Attempts {
        let hashed = hash_key(key);
        let inner = &self.inner;
        if let Some(redis) = &inner.redis {
            let window_ms = i64::try_from(inner.window.as_millis()).unwrap_or(i64::MAX);
            let answer: Option<(i64, i64)> =
                redis.eval(&RECORD_SCRIPT, &hashed, &[window_ms]).await;
            if let Some((count, ttl_ms)) = answer {
                return Attempts {
                    count: saturate(count),
                    window_resets_in: Duration::from_millis(non_negative(ttl_ms)),
                };
            }
        }
        inner.local.record(&hashed, inner.window, Instant::now())
    }

    /// `Some` with the time until the window ends when `key` has reached
    /// `max_failures` in its current window; `None` when it may try.
    pub async fn is_locked(&self, key: &str) -> Option<RetryAfter> {
        let hashed = hash_key(key);
        let inner = &self.inner;
        let attempts = match &inner.redis {
            Some(redis) => match redis.eval::<(i64, i64)>(&PEEK_SCRIPT, &hashed, &[]).await {
                Some((count, ttl_ms)) => Some(Attempts {
                    count: saturate(count),
                    window_resets_in: Duration::from_millis(non_negative(ttl_ms)),
                }),
                None => inner.local.peek(&hashed, Instant::now()),
            },
            None => inner.local.peek(&hashed, Instant::now()),
        }?;
        (attempts.count >= inner.max_failures).then_some(RetryAfter(attempts.window_resets_in))
    }

    /// Forgets `key`'s failures (after a success): in Redis, and in this
    /// instance's fallback. Never fails because of Redis; if Redis cannot be
    /// reached the shared count stays until its window ends.
    pub async fn reset(&self, key: &str) {
        let hashed = hash_key(key);
        let inner = &self.inner;
        inner.local.reset(&hashed);
        if let Some(redis) = &inner.redis {
            let _: Option<i64> = redis.eval(&RESET_SCRIPT, &hashed, &[]).await;
        }
    }
}

fn saturate(count: i64) -> u32 {
    u32::try_from(count.max(0)).unwrap_or(u32::MAX)
}

/// The in-process fallback: one fixed window per (hashed) key.
///
/// Memory is bounded by `max_keys`: when full, ended windows are dropped,
/// and if every window is still running the one with the fewest failures is
/// evicted (an O(n) pass, only when the map is full of live windows), so a
/// flood of new keys evicts the least suspicious ones first.
struct LocalWindows {
    max_keys: usize,
    windows: Mutex<HashMap<String, Window>>,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    count: u32,
    resets_at: Instant,
}

impl LocalWindows {
    fn new(max_keys: usize) -> Self {
        Self {
            max_keys: max_keys.max(1),
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn record(&self, key: &str, length: Duration, now: Instant) -> Attempts {
        let mut windows = self.lock();
        if let Some(window) = windows.get_mut(key) {
            if window.resets_at > now {
                window.count = window.count.saturating_add(1);
                return attempts(*window, now);
            }
        } else if windows.len() >= self.max_keys {
            windows.retain(|_, window| window.resets_at > now);
            if windows.len() >= self.max_keys {
                let victim = windows
                    .iter()
                    .min_by_key(|(_, window)| window.count)
                    .map(|(key, _)| key.clone());
                if let Some(victim) = victim {
                    windows.remove(&victim);
                }
            }
        }
        let window = Window {
            count: 1,
            resets_at: now + length,
        };
        windows.insert(key.to_owned(), window);
        attempts(window, now)
    }

    fn peek(&self, key: &str, now: Instant) -> Option<Attempts> {
        let window = *self.lock().get(key)?;
        (window.resets_at > now).then(|| attempts(window, now))
    }

    fn reset(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Window>> {
        // Nothing under this lock can panic halfway.
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn attempts(window: Window, now: Instant) -> Attempts {
    Attempts {
        count: window.count,
        window_resets_in: window.resets_at.saturating_duration_since(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(900);

    #[test]
    fn a_local_window_counts_from_the_first_failure_and_then_restarts() {
        let local = LocalWindows::new(10);
        let t0 = Instant::now();
        assert_eq!(local.record("k", WINDOW, t0).count, 1);
        let second = local.record("k", WINDOW, t0 + Duration::from_secs(60));
        assert_eq!(second.count, 2);
        assert_eq!(second.window_resets_in, Duration::from_secs(840));
        assert_eq!(local.peek("k", t0 + WINDOW), None, "the window has ended");
        assert_eq!(local.record("k", WINDOW, t0 + WINDOW).count, 1);
    }

    #[test]
    fn a_full_local_map_drops_ended_windows_then_the_least_failed_key() {
        let local = LocalWindows::new(2);
        let t0 = Instant::now();
        local.record("old", Duration::from_secs(1), t0);
        local.record("busy", WINDOW, t0);
        local.record("busy", WINDOW, t0);
        let later = t0 + Duration::from_secs(2);
        local.record("new", WINDOW, later);
        assert!(local.peek("old", later).is_none());
        local.record("newer", WINDOW, later);
        assert_eq!(local.peek("busy", later).map(|a| a.count), Some(2));
        assert!(local.peek("newer", later).is_some());
        assert!(
            local.peek("new", later).is_none(),
            "fewest failures evicted"
        );
    }

    #[tokio::test]
    async fn without_redis_failures_lock_until_reset() {
        let counter = AttemptCounter::new("login", 3, WINDOW, None);
        for expected in 1..=3 {
            assert_eq!(counter.is_locked("a@b.c").await, None);
            assert_eq!(counter.record_failure("a@b.c").await.count, expected);
        }
        let RetryAfter(wait) = counter.is_locked("a@b.c").await.unwrap();
        assert!(wait <= WINDOW);
        assert_eq!(
            counter.is_locked("x@y.z").await,
            None,
            "keys are independent"
        );
        counter.reset("a@b.c").await;
        assert_eq!(counter.is_locked("a@b.c").await, None);
    }
}
