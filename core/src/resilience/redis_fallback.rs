//! The Redis half of the shared limiters, and what happens when it is gone.
//!
//! A shared limiter asks Redis first and answers from its in-process twin when
//! Redis fails. This module holds what both limiters need for that: the
//! options, the fallback counter, caller keys hashed into Redis keys, Lua
//! scripts run by SHA (with EVAL when the server has forgotten them) and the
//! health state that makes an outage cost one slow call per
//! [`SharedLimitOptions::retry_redis_after`] instead of one per request.

use std::fmt::{self, Write as _};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use prometheus::{IntCounterVec, Opts, Registry};
use redis::{ErrorKind, FromRedisValue, ServerErrorKind};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::rate_limit::DEFAULT_MAX_KEYS;
use crate::redis::RedisAccessor;

/// How a shared limiter ([`super::RateLimiter`], [`super::AttemptCounter`])
/// treats Redis. The defaults suit request paths: a check waits at most
/// 250 ms for Redis, and an outage is retried once a second.
#[derive(Clone, Debug)]
pub struct SharedLimitOptions {
    /// The longest one check waits for Redis (the accessor's own command
    /// timeout still applies); past it the check is answered locally.
    pub redis_timeout: Duration,
    /// After a Redis failure, checks skip Redis for this long and go straight
    /// to the local fallback; then one check probes Redis again.
    pub retry_redis_after: Duration,
    /// Fallback warnings are logged at most this often per limiter.
    pub warn_interval: Duration,
    /// Keys tracked by the local fallback, which bounds its memory.
    pub max_local_keys: usize,
    /// Where checks answered locally because of Redis are counted; `None`
    /// counts nothing.
    pub metrics: Option<RateLimitMetrics>,
}

impl Default for SharedLimitOptions {
    fn default() -> Self {
        Self {
            redis_timeout: Duration::from_millis(250),
            retry_redis_after: Duration::from_secs(1),
            warn_interval: Duration::from_secs(10),
            max_local_keys: DEFAULT_MAX_KEYS,
            metrics: None,
        }
    }
}

/// `rate_limit_fallback_total{limiter}`: operations of a shared limiter that
/// could not use Redis (it failed, timed out, or is being skipped after a
/// failure) and were answered by the in-process fallback. Register once per
/// registry and pass clones to every limiter.
#[derive(Clone, Debug)]
pub struct RateLimitMetrics {
    fallback: IntCounterVec,
}

impl RateLimitMetrics {
    /// Creates the counter and registers it in `registry` (usually
    /// [`crate::telemetry::Metrics::registry`]).
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let fallback = IntCounterVec::new(
            Opts::new(
                "rate_limit_fallback_total",
                "Rate-limit operations answered locally because Redis was unavailable",
            ),
            &["limiter"],
        )?;
        registry.register(Box::new(fallback.clone()))?;
        Ok(Self { fallback })
    }

    /// How many operations of `limiter` fell back so far.
    pub fn fallbacks(&self, limiter: &str) -> u64 {
        self.fallback.with_label_values(&[limiter]).get()
    }

    fn record(&self, limiter: &str) {
        self.fallback.with_label_values(&[limiter]).inc();
    }
}

/// A Lua script run with EVALSHA. Its SHA-1 is learnt from SCRIPT LOAD on
/// first use (the `redis` crate's `Script`, which computes it locally, is not
/// enabled in this workspace); a server that lost its script cache (restart,
/// SCRIPT FLUSH) answers NOSCRIPT and gets the source through EVAL once.
pub(super) struct LuaScript {
    source: &'static str,
    sha: OnceLock<String>,
}

impl LuaScript {
    pub(super) const fn new(source: &'static str) -> Self {
        Self {
            source,
            sha: OnceLock::new(),
        }
    }
}

/// SHA-256 of a caller's key, in hex: what Redis keys and the local fallback
/// are indexed by, so no email or IP is stored and no key can smuggle in a
/// `:` or a glob character.
pub(super) fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Redis for one limiter, with the state that decides whether to use it.
pub(super) struct SharedRedis {
    accessor: RedisAccessor,
    /// `{kind}:{name}:`, the namespace of this limiter inside the accessor's.
    namespace: String,
    name: String,
    options: SharedLimitOptions,
    health: Mutex<Health>,
}

impl fmt::Debug for SharedRedis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedRedis")
            .field("accessor", &self.accessor)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Health {
    /// Redis failed; skip it until then. `None` means healthy.
    down_until: Option<Instant>,
    /// One check is probing Redis after the skip period; the others keep
    /// answering locally until it returns.
    probing: bool,
    last_warning: Option<Instant>,
    /// Fallbacks since the last warning, reported with the next one.
    unreported: u64,
}

/// Why Redis did not answer; only ever logged.
enum CallError {
    Redis(redis::RedisError),
    Timeout(Duration),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Redis(error) => write!(f, "{error}"),
            CallError::Timeout(limit) => write!(f, "no answer within {limit:?}"),
        }
    }
}

impl SharedRedis {
    /// `kind` names the limiter type (`ratelimit`, `attempts`), `name` the
    /// limiter; together they namespace its keys.
    pub(super) fn new(
        accessor: RedisAccessor,
        kind: &str,
        name: &str,
        options: SharedLimitOptions,
    ) -> Self {
        Self {
            accessor,
            namespace: format!("{kind}:{name}:"),
            name: name.to_owned(),
            options,
            health: Mutex::new(Health::default()),
        }
    }

    /// Runs `script` on the hashed `key` with integer `args`. `None` means
    /// "answer locally": Redis failed, timed out or is being skipped. The
    /// fallback is counted and, at most every `warn_interval`, logged.
    pub(super) async fn eval<T: FromRedisValue>(
        &self,
        script: &LuaScript,
        hashed_key: &str,
        args: &[i64],
    ) -> Option<T> {
        let Some(mut permit) = self.permit() else {
            self.fell_back(None);
            return None;
        };
        let key = self
            .accessor
            .key(&format!("{}{hashed_key}", self.namespace));
        let call = self.eval_unbounded(script, &key, args);
        let limit = self.options.redis_timeout;
        let result = match tokio::time::timeout(limit, call).await {
            Ok(result) => result.map_err(CallError::Redis),
            Err(_) => Err(CallError::Timeout(limit)),
        };
        permit.finish(result.is_ok());
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.fell_back(Some(error));
                None
            }
        }
    }

    async fn eval_unbounded<T: FromRedisValue>(
        &self,
        script: &LuaScript,
        key: &str,
        args: &[i64],
    ) -> redis::RedisResult<T> {
        let mut connection = self.accessor.connection();
        let sha = match script.sha.get() {
            Some(sha) => sha.clone(),
            None => {
                let sha: String = redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(script.source)
                    .query_async(&mut connection)
                    .await?;
                script.sha.get_or_init(|| sha).clone()
            }
        };
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha.arg(&sha).arg(1).arg(key).arg(args);
        match evalsha.query_async(&mut connection).await {
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let mut eval = redis::cmd("EVAL");
                eval.arg(script.source).arg(1).arg(key).arg(args);
                eval.query_async(&mut connection).await
            }
            result => result,
        }
    }

    /// May this call use Redis? While Redis is marked down the answer is no;
    /// once the skip period is over, exactly one caller gets a probe.
    fn permit(&self) -> Option<Permit<'_>> {
        let probe = self.lock().permit(Instant::now())?;
        Some(Permit { redis: self, probe })
    }

    fn fell_back(&self, error: Option<CallError>) {
        if let Some(metrics) = &self.options.metrics {
            metrics.record(&self.name);
        }
        let report =
            self.lock()
                .fell_back(Instant::now(), error.is_some(), self.options.warn_interval);
        if let (Some(fallbacks), Some(error)) = (report, error) {
            tracing::warn!(
                limiter = %self.name,
                %error,
                fallbacks,
                retry_in = ?self.options.retry_redis_after,
                "Redis unavailable for a shared limit; using the per-instance fallback"
            );
        }
    }

    fn lock(&self) -> MutexGuard<'_, Health> {
        // Nothing under this lock can panic halfway.
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Health {
    /// `None`: skip Redis. `Some(probe)`: use it; `probe` says this call is
    /// the one testing whether Redis is back.
    fn permit(&mut self, now: Instant) -> Option<bool> {
        match self.down_until {
            None => Some(false),
            Some(until) if now < until || self.probing => None,
            Some(_) => {
                self.probing = true;
                Some(true)
            }
        }
    }

    /// Records a call's outcome; `true` when it ended an outage.
    fn finish(&mut self, probe: bool, succeeded: bool, now: Instant, skip: Duration) -> bool {
        if probe {
            self.probing = false;
        }
        if succeeded {
            self.down_until.take().is_some()
        } else {
            self.down_until = Some(now + skip);
            false
        }
    }

    /// Counts a fallback; `Some(fallbacks since the last warning)` when a
    /// warning is due. Only failures warn, not calls that merely skipped
    /// Redis: the failure is what an operator needs to read.
    fn fell_back(&mut self, now: Instant, failed: bool, warn_interval: Duration) -> Option<u64> {
        self.unreported += 1;
        let due = self
            .last_warning
            .is_none_or(|at| now.duration_since(at) >= warn_interval);
        if !(due && failed) {
            return None;
        }
        self.last_warning = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

/// A call allowed to use Redis. Its outcome updates the health state; a
/// probe dropped unfinished (the caller gave up) lets the next call probe.
struct Permit<'a> {
    redis: &'a SharedRedis,
    probe: bool,
}

impl Permit<'_> {
    fn finish(&mut self, succeeded: bool) {
        let skip = self.redis.options.retry_redis_after;
        let recovered = self
            .redis
            .lock()
            .finish(self.probe, succeeded, Instant::now(), skip);
        self.probe = false;
        if recovered {
            tracing::info!(limiter = %self.redis.name, "Redis is back for a shared limit");
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.redis.lock().probing = false;
        }
    }
}

/// A duration in whole units from a script's integer answer; negative
/// (PTTL's "no expiry" or "missing") counts as zero.
pub(super) fn non_negative(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKIP: Duration = Duration::from_secs(1);
    const WARN: Duration = Duration::from_secs(10);

    #[test]
    fn after_a_failure_redis_is_skipped_then_probed_by_one_call() {
        let mut health = Health::default();
        let t0 = Instant::now();
        assert_eq!(health.permit(t0), Some(false), "healthy: every call");
        assert!(!health.finish(false, false, t0, SKIP));

        assert_eq!(health.permit(t0 + SKIP / 2), None, "skipped");
        assert_eq!(health.permit(t0 + SKIP), Some(true), "one probe");
        assert_eq!(health.permit(t0 + SKIP), None, "others wait for it");
        assert!(!health.finish(true, false, t0 + SKIP, SKIP), "still down");
        assert_eq!(health.permit(t0 + SKIP * 3 / 2), None);

        assert_eq!(health.permit(t0 + SKIP * 2), Some(true));
        assert!(health.finish(true, true, t0 + SKIP * 2, SKIP), "back");
        assert_eq!(health.permit(t0 + SKIP * 2), Some(false));
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        let mut health = Health::default();
        let t0 = Instant::now();
        health.finish(false, false, t0, SKIP);
        assert_eq!(health.permit(t0 + SKIP), Some(true));
        health.probing = false; // what dropping the permit does
        assert_eq!(health.permit(t0 + SKIP), Some(true));
    }

    #[test]
    fn failures_warn_at_most_once_per_interval_with_the_count_since() {
        let mut health = Health::default();
        let t0 = Instant::now();
        assert_eq!(health.fell_back(t0, true, WARN), Some(1));
        assert_eq!(health.fell_back(t0 + SKIP, false, WARN), None);
        assert_eq!(health.fell_back(t0 + SKIP * 2, true, WARN), None);
        assert_eq!(health.fell_back(t0 + WARN, false, WARN), None, "skips only");
        assert_eq!(health.fell_back(t0 + WARN, true, WARN), Some(4));
    }

    #[test]
    fn keys_are_hashed_to_hex_sha256() {
        let hashed = hash_key("alice@example.com");
        assert_eq!(hashed.len(), 64);
        assert!(hashed.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(hashed, hash_key("alice@example.com"));
        assert_ne!(hashed, hash_key("bob@example.com"));
        assert_eq!(
            hash_key(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn fallbacks_are_counted_per_limiter() {
        let registry = Registry::new();
        let metrics = RateLimitMetrics::register(&registry).unwrap();
        metrics.record("login");
        metrics.record("login");
        assert_eq!(metrics.fallbacks("login"), 2);
        assert_eq!(metrics.fallbacks("gateway"), 0);
        assert!(
            RateLimitMetrics::register(&registry).is_err(),
            "one registration per registry"
        );
    }
}
