//! Retries with exponential backoff, for transient failures only.
//!
//! A dependency that blips (a restart, a dropped connection, a full pool)
//! usually answers a moment later; retrying hides the blip from the client.
//! Retrying a failure that will not go away (bad input, a denied permission)
//! only adds load and latency, so an error must say it is worth retrying
//! through [`Retryable`] before [`RetryPolicy::run`] tries again.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use rand::Rng;

use crate::error::{codes, ApiError};

/// Whether a failed operation may succeed if tried again unchanged.
///
/// Implementations answer `true` only for transient failures of a
/// dependency (unavailable, timed out, overloaded). Client errors —
/// validation, authentication, permission, not-found — are never retryable.
pub trait Retryable {
    /// `true` when the same request may succeed on a later attempt.
    fn is_retryable(&self) -> bool;
}

impl Retryable for ApiError {
    /// Only [`codes::UNAVAILABLE`] is retryable: every other code is either
    /// the client's fault or a bug, and neither goes away on its own.
    fn is_retryable(&self) -> bool {
        self.code() == codes::UNAVAILABLE
    }
}

/// How often and how patiently to retry.
///
/// The pause before retry `n` is `initial_delay * multiplier^(n-1)`, capped
/// at `max_delay`; with `jitter` on, *equal jitter* is applied: the pause is
/// drawn uniformly from `[d/2, d]`. Equal jitter (rather than full jitter,
/// `[0, d]`) keeps a guaranteed minimum pause so a struggling dependency
/// always gets some rest, while still spreading callers that failed together.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts including the first one; `3` means one call and at
    /// most two retries. `0` is treated as `1`.
    pub max_attempts: u32,
    /// Pause before the first retry (before jitter).
    pub initial_delay: Duration,
    /// Upper bound of any pause (before jitter, which only shortens it).
    pub max_delay: Duration,
    /// Growth factor between consecutive pauses; expected to be `>= 1.0`.
    pub multiplier: f64,
    /// Whether to apply equal jitter to each pause.
    pub jitter: bool,
}

impl RetryPolicy {
    /// For calls on a request's critical path: 3 attempts, 50 ms growing to
    /// at most 500 ms, doubling, with jitter.
    pub fn fast() -> Self {
        Self {
            max_attempts: 3,
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
            multiplier: 2.0,
            jitter: true,
        }
    }

    /// The default for service-to-service calls: 5 attempts, 200 ms growing
    /// to at most 5 s, doubling, with jitter.
    pub fn standard() -> Self {
        Self {
            max_attempts: 5,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: true,
        }
    }

    /// For background work that can wait: 8 attempts, 1 s growing to at
    /// most 60 s, doubling, with jitter.
    pub fn slow() -> Self {
        Self {
            max_attempts: 8,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: true,
        }
    }

    /// The same policy with jitter switched on or off.
    pub fn with_jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// The pause before retry number `retry` (the first retry is `1`);
    /// `Duration::ZERO` for `0`.
    ///
    /// Deterministic when `jitter` is off; with jitter on the result lies in
    /// `[d/2, d]` where `d` is the deterministic value.
    pub fn delay_for(&self, retry: u32) -> Duration {
        let base = self.base_delay(retry);
        if !self.jitter || base.is_zero() {
            return base;
        }
        let half = base / 2;
        half + half.mul_f64(rand::thread_rng().gen::<f64>())
    }

    fn base_delay(&self, retry: u32) -> Duration {
        if retry == 0 {
            return Duration::ZERO;
        }
        let exponent = i32::try_from(retry - 1).unwrap_or(i32::MAX);
        let secs = self.initial_delay.as_secs_f64() * self.multiplier.powi(exponent);
        // An overflowing or nonsensical product (inf, NaN, negative) means
        // "a very long time", which the cap turns into max_delay.
        Duration::try_from_secs_f64(secs)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// Runs `op` until it succeeds, fails with an error that is not
    /// [`Retryable`], or `max_attempts` is used up; returns the last result.
    ///
    /// `op` receives the attempt number, starting at `1`. It must be safe to
    /// repeat: only retry idempotent operations (or ones carrying an
    /// idempotency key).
    pub async fn run<T, E, F, Fut>(&self, op: F) -> Result<T, E>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Retryable + fmt::Display,
    {
        self.run_classified(op, E::is_retryable).await
    }

    /// Like [`run`](Self::run), with the caller deciding which errors are
    /// worth retrying; for error types that do not implement [`Retryable`].
    pub async fn run_classified<T, E, F, Fut, C>(&self, op: F, is_retryable: C) -> Result<T, E>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&E) -> bool,
        E: fmt::Display,
    {
        self.run_with_sleep(op, is_retryable, tokio::time::sleep)
            .await
    }

    /// The retry loop, with the pause injected so tests can observe it.
    async fn run_with_sleep<T, E, F, Fut, C, S, SFut>(
        &self,
        mut op: F,
        is_retryable: C,
        mut sleep: S,
    ) -> Result<T, E>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&E) -> bool,
        E: fmt::Display,
        S: FnMut(Duration) -> SFut,
        SFut: Future<Output = ()>,
    {
        let max_attempts = self.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let error = match op(attempt).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if !is_retryable(&error) {
                return Err(error);
            }
            if attempt >= max_attempts {
                tracing::warn!(
                    attempt,
                    max_attempts,
                    error = %error,
                    "giving up after the last retryable failure"
                );
                return Err(error);
            }
            let delay = self.delay_for(attempt);
            tracing::debug!(
                attempt,
                max_attempts,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                error = %error,
                "retryable failure, retrying"
            );
            sleep(delay).await;
            attempt += 1;
        }
    }
}

impl Default for RetryPolicy {
    /// [`RetryPolicy::standard`].
    fn default() -> Self {
        Self::standard()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[derive(Debug)]
    struct Flaky {
        retryable: bool,
    }

    impl fmt::Display for Flaky {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("flaky")
        }
    }

    impl Retryable for Flaky {
        fn is_retryable(&self) -> bool {
            self.retryable
        }
    }

    fn no_wait(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            multiplier: 2.0,
            jitter: false,
        }
    }

    #[test]
    fn presets_match_their_documentation() {
        let fast = RetryPolicy::fast();
        assert_eq!(fast.max_attempts, 3);
        assert_eq!(fast.initial_delay, Duration::from_millis(50));
        assert_eq!(fast.max_delay, Duration::from_millis(500));
        let standard = RetryPolicy::standard();
        assert_eq!(standard.max_attempts, 5);
        assert_eq!(standard.initial_delay, Duration::from_millis(200));
        assert_eq!(standard.max_delay, Duration::from_secs(5));
        let slow = RetryPolicy::slow();
        assert_eq!(slow.max_attempts, 8);
        assert_eq!(slow.initial_delay, Duration::from_secs(1));
        assert_eq!(slow.max_delay, Duration::from_secs(60));
        assert_eq!(RetryPolicy::default(), standard);
    }

    #[test]
    fn delays_grow_exponentially_and_are_capped_without_jitter() {
        let policy = RetryPolicy::standard().with_jitter(false);
        let delays: Vec<_> = (0..=7).map(|n| policy.delay_for(n)).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            delays,
            [
                ms(0),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3200),
                ms(5000),
                ms(5000)
            ]
        );
        assert_eq!(policy.delay_for(u32::MAX), ms(5000));
    }

    #[test]
    fn nonsensical_multipliers_fall_back_to_the_cap() {
        let mut policy = RetryPolicy::fast().with_jitter(false);
        policy.multiplier = f64::NAN;
        assert_eq!(policy.delay_for(2), policy.max_delay);
        policy.multiplier = f64::INFINITY;
        assert_eq!(policy.delay_for(2), policy.max_delay);
    }

    #[test]
    fn jittered_delays_stay_within_equal_jitter_bounds() {
        let policy = RetryPolicy::slow();
        let plain = policy.clone().with_jitter(false);
        for retry in 1..=10 {
            let exact = plain.delay_for(retry);
            for _ in 0..50 {
                let delay = policy.delay_for(retry);
                assert!(
                    delay >= exact / 2 && delay <= exact,
                    "{delay:?} vs {exact:?}"
                );
            }
        }
    }

    /// Runs `policy` over `op` with a sleep that only records the pauses.
    async fn run_recording<T>(
        policy: &RetryPolicy,
        op: impl FnMut(u32) -> std::future::Ready<Result<T, Flaky>>,
    ) -> (Result<T, Flaky>, Vec<Duration>) {
        let pauses = std::sync::Mutex::new(Vec::new());
        let result = policy
            .run_with_sleep(op, Flaky::is_retryable, |delay| {
                pauses.lock().unwrap().push(delay);
                std::future::ready(())
            })
            .await;
        (result, pauses.into_inner().unwrap())
    }

    #[tokio::test]
    async fn pauses_between_attempts_follow_delay_for_exactly() {
        let policy = RetryPolicy::standard().with_jitter(false);
        let (result, pauses) = run_recording(&policy, |_| {
            std::future::ready(Err::<(), _>(Flaky { retryable: true }))
        })
        .await;
        assert!(result.is_err());
        let ms = |n| Duration::from_millis(n);
        // 5 attempts, so 4 pauses; none after the last attempt.
        assert_eq!(pauses, [ms(200), ms(400), ms(800), ms(1600)]);
    }

    #[tokio::test]
    async fn jittered_pauses_stay_within_bounds() {
        let policy = RetryPolicy::slow();
        let plain = policy.clone().with_jitter(false);
        let (_, pauses) = run_recording(&policy, |_| {
            std::future::ready(Err::<(), _>(Flaky { retryable: true }))
        })
        .await;
        assert_eq!(pauses.len(), 7);
        for (i, pause) in (1..).zip(&pauses) {
            let exact = plain.delay_for(i);
            assert!(
                *pause >= exact / 2 && *pause <= exact,
                "{pause:?} vs {exact:?}"
            );
        }
    }

    #[tokio::test]
    async fn no_pause_after_success_or_a_permanent_error() {
        let policy = RetryPolicy::fast().with_jitter(false);
        let (result, pauses) = run_recording(&policy, |attempt| {
            std::future::ready(if attempt == 1 {
                Err(Flaky { retryable: true })
            } else {
                Ok(attempt)
            })
        })
        .await;
        assert_eq!(result.unwrap(), 2);
        assert_eq!(pauses, [Duration::from_millis(50)]);
        let (result, pauses) = run_recording(&policy, |_| {
            std::future::ready(Err::<(), _>(Flaky { retryable: false }))
        })
        .await;
        assert!(result.is_err());
        assert!(pauses.is_empty());
    }

    #[tokio::test]
    async fn retries_retryable_errors_until_attempts_are_used_up() {
        let calls = AtomicU32::new(0);
        let seen = std::sync::Mutex::new(Vec::new());
        let result: Result<(), Flaky> = no_wait(4)
            .run(|attempt| {
                calls.fetch_add(1, Ordering::SeqCst);
                seen.lock().unwrap().push(attempt);
                async { Err(Flaky { retryable: true }) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(*seen.lock().unwrap(), [1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn stops_at_the_first_success() {
        let result = no_wait(5)
            .run(|attempt| async move {
                if attempt < 3 {
                    Err(Flaky { retryable: true })
                } else {
                    Ok(attempt)
                }
            })
            .await;
        assert_eq!(result.unwrap(), 3);
    }

    #[tokio::test]
    async fn never_retries_non_retryable_errors() {
        let calls = AtomicU32::new(0);
        let result: Result<(), Flaky> = no_wait(5)
            .run(|_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(Flaky { retryable: false }) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn api_errors_retry_only_when_unavailable() {
        for (error, expected_calls) in [
            (ApiError::unavailable("payment"), 3),
            (ApiError::internal("bug"), 1),
            (ApiError::validation("input.amount", "must be positive"), 1),
            (ApiError::unauthenticated(), 1),
            (ApiError::forbidden("wallet:read"), 1),
            (ApiError::rate_limited(1), 1),
        ] {
            let code = error.code();
            let calls = AtomicU32::new(0);
            let result: Result<(), ApiError> = no_wait(3)
                .run(|_| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let error = ApiError::new(code, "again");
                    async move { Err(error) }
                })
                .await;
            assert_eq!(result.unwrap_err().code(), code);
            assert_eq!(calls.load(Ordering::SeqCst), expected_calls, "{code}");
        }
    }

    #[tokio::test]
    async fn max_attempts_zero_still_calls_once() {
        let calls = AtomicU32::new(0);
        let _: Result<(), Flaky> = no_wait(0)
            .run(|_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(Flaky { retryable: true }) }
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn classified_run_uses_the_callers_rule() {
        let calls = AtomicU32::new(0);
        let result: Result<(), String> = no_wait(3)
            .run_classified(
                |_| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async { Err("connection reset".to_owned()) }
                },
                |e: &String| e.contains("reset"),
            )
            .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
