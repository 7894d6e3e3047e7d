//! Rate limits shared by every instance of a service, kept in Redis.
//!
//! A [`KeyedRateLimiter`] counts per process: with four gateway instances
//! behind a load balancer a client gets four budgets, and a restart hands out
//! a fresh one. [`RateLimiter`] keeps the same GCRA state (the "theoretical
//! arrival time" of the next call per key) in Redis instead, updated by one
//! atomic Lua script per check that reads Redis's own clock (`TIME`), so
//! instances with skewed clocks still agree.
//!
//! Redis is a helper here, not a dependency: when it errors or is slow, a
//! check is answered by an in-process [`KeyedRateLimiter`] with the same
//! parameters, so limits still hold per instance. Redis is then skipped for
//! [`SharedLimitOptions::retry_redis_after`] before one check probes it
//! again; fallbacks are counted in [`RateLimitMetrics`] and logged at most
//! every [`SharedLimitOptions::warn_interval`]. A check never fails because
//! of Redis.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::rate_limit::{KeyedRateLimiter, RetryAfter};
use super::redis_fallback::{hash_key, non_negative, LuaScript, SharedLimitOptions, SharedRedis};
use crate::redis::RedisAccessor;

/// One GCRA step on `KEYS[1]`, which holds the theoretical arrival time
/// (TAT) of the key's next call in microseconds of Redis server time.
/// `ARGV[1]` is the emission interval and `ARGV[2]` the burst tolerance,
/// both in microseconds. Answers `{1, 0}` when the call may go ahead and
/// `{0, retry_after_us}` when it may not. A refused call changes nothing; an
/// allowed one stores the new TAT with a lifetime that ends when the bucket
/// is full again (a missing key is a full bucket).
const GCRA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0) or 0
if tat < now then tat = now end
local ahead = tat - now
if ahead > tolerance then
  return {0, ahead - tolerance}
end
local next_tat = tat + interval
local ttl_ms = math.ceil((next_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', string.format('%.0f', ttl_ms))
return {1, 0}
";

static GCRA_SCRIPT: LuaScript = LuaScript::new(GCRA);

/// Microseconds handed to Lua stay below 2^52 so its doubles hold them
/// exactly (about 142 years: longer spans are not meaningful limits).
const MAX_SPAN_MICROS: u64 = 1 << 52;

/// A per-key token bucket shared through Redis: `capacity` calls at once,
/// then `refill_per_second` on average, for each key across all instances
/// using the same Redis and prefix. Same semantics and clamping as
/// [`KeyedRateLimiter`], which also serves as the fallback when Redis is
/// unavailable (see the module docs).
///
/// Cheap to clone; clones share state. In Redis a key lives at
/// `{prefix}ratelimit:{name}:{sha256(key)}` and vanishes once its bucket is
/// full again. The Redis side works in microseconds, so refill rates above
/// 1,000,000 per second behave as 1,000,000.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    capacity: u32,
    refill_per_second: f64,
    interval_micros: u64,
    tolerance_micros: u64,
    local: KeyedRateLimiter,
    redis: Option<SharedRedis>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("name", &self.inner.name)
            .field("capacity", &self.inner.capacity)
            .field("refill_per_second", &self.inner.refill_per_second)
            .field("redis", &self.inner.redis)
            .finish()
    }
}

impl RateLimiter {
    /// A limiter named `name` (a short constant such as `login` or
    /// `gateway-client`: limiters with the same name and Redis prefix share
    /// buckets). With `redis: None` it is purely in-process. `capacity` is at
    /// least 1; `refill_per_second` is clamped like [`KeyedRateLimiter`]'s.
    pub fn new(
        name: impl Into<String>,
        capacity: u32,
        refill_per_second: f64,
        redis: Option<RedisAccessor>,
    ) -> Self {
        Self::with_options(
            name,
            capacity,
            refill_per_second,
            redis,
            SharedLimitOptions::default(),
        )
    }

    /// [`Self::new`] with explicit timeouts, fallback bounds and metrics.
    pub fn with_options(
        name: impl Into<String>,
        capacity: u32,
        refill_per_second: f64,
        redis: Option<RedisAccessor>,
        options: SharedLimitOptions,
    ) -> Self {
        let name = name.into();
        let capacity = capacity.max(1);
        let interval_micros = interval_micros(refill_per_second);
        let tolerance_micros = interval_micros
            .saturating_mul(u64::from(capacity - 1))
            .min(MAX_SPAN_MICROS);
        let local = KeyedRateLimiter::new(capacity, refill_per_second)
            .with_max_keys(options.max_local_keys);
        let redis = redis.map(|accessor| SharedRedis::new(accessor, "ratelimit", &name, options));
        Self {
            inner: Arc::new(Inner {
                name,
                capacity,
                refill_per_second,
                interval_micros,
                tolerance_micros,
                local,
                redis,
            }),
        }
    }

    /// The name given at construction, as used in keys, logs and metrics.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether this limiter was given Redis (it may still be falling back).
    pub fn is_shared(&self) -> bool {
        self.inner.redis.is_some()
    }

    /// Takes a token from `key`'s bucket, or says how long until one is
    /// available. Never fails because of Redis: without it the answer comes
    /// from this instance's fallback bucket. Keys are independent and may be
    /// any string (they are hashed before use).
    pub async fn check(&self, key: &str) -> Result<(), RetryAfter> {
        let hashed = hash_key(key);
        let inner = &self.inner;
        if let Some(redis) = &inner.redis {
            let args = [
                to_i64(inner.interval_micros),
                to_i64(inner.tolerance_micros),
            ];
            let answer: Option<(i64, i64)> = redis.eval(&GCRA_SCRIPT, &hashed, &args).await;
            if let Some((allowed, retry_micros)) = answer {
                return if allowed == 1 {
                    Ok(())
                } else {
                    Err(RetryAfter(Duration::from_micros(non_negative(
                        retry_micros,
                    ))))
                };
            }
        }
        inner.local.check(&hashed)
    }
}

/// The emission interval in microseconds for `refill_per_second`, clamped as
/// [`KeyedRateLimiter`] clamps it and kept within `[1, MAX_SPAN_MICROS]`.
fn interval_micros(refill_per_second: f64) -> u64 {
    let rate = if refill_per_second.is_nan() {
        1e-6
    } else {
        refill_per_second.clamp(1e-6, 1e9)
    };
    let micros = (1e6 / rate).round();
    // Float-to-int `as` saturates; the clamp bounds it anyway.
    (micros as u64).clamp(1, MAX_SPAN_MICROS)
}

fn to_i64(micros: u64) -> i64 {
    i64::try_from(micros).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_match_the_rate_and_stay_exact_for_lua() {
        assert_eq!(interval_micros(20.0), 50_000);
        assert_eq!(interval_micros(3.0), 333_333);
        assert_eq!(interval_micros(1e9), 1, "sub-microsecond rounds to 1 µs");
        assert_eq!(interval_micros(f64::NAN), 1_000_000_000_000);
        assert_eq!(interval_micros(0.0), 1_000_000_000_000);
        assert!(interval_micros(f64::INFINITY) >= 1);
    }

    #[test]
    fn tolerance_is_capped_where_lua_numbers_stay_exact() {
        let limiter = RateLimiter::new("t", u32::MAX, 1e-6, None);
        assert_eq!(limiter.inner.tolerance_micros, MAX_SPAN_MICROS);
    }

    #[tokio::test]
    async fn without_redis_it_is_a_local_keyed_limiter() {
        let limiter = RateLimiter::new("local", 2, 1.0, None);
        assert!(!limiter.is_shared());
        assert!(limiter.check("alice").await.is_ok());
        assert!(limiter.check("alice").await.is_ok());
        let RetryAfter(wait) = limiter.check("alice").await.unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limiter.check("bob").await.is_ok(), "keys are independent");
        let clone = limiter.clone();
        assert!(clone.check("alice").await.is_err(), "clones share buckets");
    }
}
