//! The Redis level of the cache and its health: every Redis call of the
//! cache goes through [`L2::call`], which is where "Redis down is degraded,
//! never an error" is enforced.

use std::{
    future::Future,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use super::{invalidation::Invalidation, stats::Counters, CacheConfig};
use crate::redis::{RedisAccessor, RedisError};

/// The Redis level and its health.
pub(super) struct L2 {
    pub(super) redis: RedisAccessor,
    /// `{name}:invalidate`, prefixed by the accessor.
    pub(super) channel: String,
    /// `{name}:`, placed between the accessor prefix and the cache key.
    namespace: String,
    /// The cache's name, for the log.
    pub(super) cache: String,
    timeout: Duration,
    retry_after: Duration,
    pub(super) health: Health,
}

impl L2 {
    pub(super) fn new(redis: RedisAccessor, config: &CacheConfig) -> Self {
        Self {
            redis,
            channel: format!("{}:invalidate", config.name),
            namespace: format!("{}:", config.name),
            cache: config.name.clone(),
            timeout: config.l2_timeout,
            retry_after: config.l2_retry_after,
            health: Health::new(),
        }
    }

    /// The key relative to the accessor prefix.
    pub(super) fn key(&self, key: &str) -> String {
        format!("{}{key}", self.namespace)
    }

    /// The full Redis key, for hand-built pipelines.
    pub(super) fn full_key(&self, key: &str) -> String {
        self.redis.key(&self.key(key))
    }

    pub(super) fn publish_cmd(&self, message: &Invalidation) -> Option<::redis::Cmd> {
        let payload = serde_json::to_vec(message).ok()?;
        let mut cmd = ::redis::cmd("PUBLISH");
        cmd.arg(self.redis.key(&self.channel)).arg(payload);
        Some(cmd)
    }

    /// Runs one Redis call within the cache's time limit. Any failure is
    /// counted, logged (rate-limited) and turned into `None`; while Redis is
    /// considered down, calls are skipped outright.
    pub(super) async fn call<T>(
        &self,
        counters: &Counters,
        operation: &'static str,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> Option<T> {
        if self.health.is_down() {
            Counters::add(&counters.l2_unavailable, 1);
            return None;
        }
        let error = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => {
                self.health.mark_up(&self.cache);
                return Some(value);
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        Counters::add(&counters.l2_unavailable, 1);
        self.health.mark_down(self.retry_after);
        self.health.warn(&self.cache, operation, &error);
        None
    }
}

/// Whether Redis is usable, and a limit on how often its failures are logged.
pub(super) struct Health {
    epoch: Instant,
    /// Milliseconds since `epoch` before which Redis is not tried.
    down_until: AtomicU64,
    degraded: AtomicBool,
    /// Milliseconds since `epoch` of the last warning, `u64::MAX` for never.
    last_warning: AtomicU64,
    suppressed: AtomicU64,
}

const WARN_EVERY: Duration = Duration::from_secs(10);

impl Health {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            down_until: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
            last_warning: AtomicU64::new(u64::MAX),
            suppressed: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn is_down(&self) -> bool {
        self.now() < self.down_until.load(Ordering::Relaxed)
    }

    fn mark_down(&self, retry_after: Duration) {
        let retry_after = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX);
        self.down_until
            .store(self.now().saturating_add(retry_after), Ordering::Relaxed);
        self.degraded.store(true, Ordering::Relaxed);
    }

    fn mark_up(&self, cache: &str) {
        if self.degraded.load(Ordering::Relaxed) && self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!(cache, "Redis (cache L2) reachable again");
        }
    }

    /// Logs at most one warning per [`WARN_EVERY`], with the number of
    /// failures left unlogged since the previous one.
    pub(super) fn warn(&self, cache: &str, operation: &str, error: &str) {
        let now = self.now();
        let last = self.last_warning.load(Ordering::Relaxed);
        let every = u64::try_from(WARN_EVERY.as_millis()).unwrap_or(u64::MAX);
        let due = last == u64::MAX || now.saturating_sub(last) >= every;
        if !due
            || self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(
            cache,
            operation,
            error,
            suppressed,
            "Redis (cache L2) unavailable: serving from L1 and the source"
        );
    }
}
