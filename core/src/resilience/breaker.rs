//! A circuit breaker: stop calling a dependency that keeps failing.
//!
//! Calling a dependency that is down wastes the caller's time (each call
//! waits for its timeout) and keeps the dependency from recovering. After
//! `failure_threshold` failures within `rolling_window` the breaker *opens*
//! and calls fail at once with [`BreakerError::Open`]; after `reset_timeout`
//! it lets a probe through (*half-open*): success closes it, failure opens it
//! again for another `reset_timeout`.
//!
//! Which errors count as failures is the caller's call: a dependency that
//! rejects bad input is healthy, so [`CircuitBreaker::call_classified`] takes
//! a rule, and [`is_dependency_failure`] is that rule for [`ApiError`].

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{codes, ApiError};
use crate::resilience::Retryable;

const MAX_RESET_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// When a breaker opens and how long it stays open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures within `rolling_window` that open the breaker (at least 1).
    pub failure_threshold: u32,
    /// How far back failures are counted; older ones are forgotten.
    pub rolling_window: Duration,
    /// How long the breaker stays open before letting a probe through
    /// (capped at one day).
    pub reset_timeout: Duration,
    /// Calls let through at once while half-open (at least 1; usually 1).
    pub half_open_max_probes: u32,
}

impl Default for BreakerConfig {
    /// 5 failures within 60 s open the breaker for 30 s; one probe.
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            rolling_window: Duration::from_secs(60),
            reset_timeout: Duration::from_secs(30),
            half_open_max_probes: 1,
        }
    }
}

/// The state of a breaker as seen from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through; failures are being counted.
    Closed,
    /// Calls fail fast until the reset timeout has passed.
    Open,
    /// Probes are being let through to test recovery.
    HalfOpen,
}

impl BreakerState {
    /// A stable number for a metrics gauge: 0 closed, 1 open, 2 half-open.
    pub fn code(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        })
    }
}

/// Why a call through a breaker failed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BreakerError<E> {
    /// The breaker is open (or its half-open probe slots are taken): the
    /// call was not made.
    #[error("circuit breaker {breaker} is open")]
    Open {
        /// The breaker's name.
        breaker: String,
    },
    /// The call was made and failed with this error.
    #[error(transparent)]
    Inner(E),
}

impl<E> BreakerError<E> {
    /// The call's own error, if the call was made.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(error) => Some(error),
            Self::Open { .. } => None,
        }
    }
}

impl<E: Retryable> Retryable for BreakerError<E> {
    /// An open breaker is not retried: it opened precisely so that callers
    /// stop hammering the dependency. An inner error decides for itself.
    fn is_retryable(&self) -> bool {
        match self {
            Self::Open { .. } => false,
            Self::Inner(error) => error.is_retryable(),
        }
    }
}

impl From<BreakerError<ApiError>> for ApiError {
    /// An open breaker is `MSCoreUnavailable` naming the breaker (a public
    /// name); an inner error is passed through unchanged.
    fn from(error: BreakerError<ApiError>) -> Self {
        match error {
            BreakerError::Inner(error) => error,
            BreakerError::Open { breaker } => {
                let api = ApiError::unavailable(&breaker);
                api.with_cause(format!("circuit breaker {breaker} is open"))
            }
        }
    }
}

/// The failure rule for calls returning [`ApiError`]: only
/// `MSCoreUnavailable` and `MSCoreInternal` say the dependency is unwell;
/// client errors (validation, auth, not-found, rate limits) do not.
pub fn is_dependency_failure(error: &ApiError) -> bool {
    let code = error.code();
    code == codes::UNAVAILABLE || code == codes::INTERNAL
}

/// A named circuit breaker; clones share state. Thread-safe: the state lock
/// is held only to read or update a few fields, never across the call.
#[derive(Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

struct Shared {
    name: String,
    config: BreakerConfig,
    core: Mutex<Core>,
}

struct Core {
    state: State,
    /// Bumped on every transition, so results of calls admitted under an
    /// earlier state (a slow call from before the breaker opened) cannot
    /// move the current one.
    generation: u64,
    /// Failure times inside the rolling window, oldest first; never longer
    /// than the threshold, because reaching it opens the breaker.
    failures: VecDeque<Instant>,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probes_in_flight: u32 },
}

/// The right to make one call, handed out by `admit`. Recording its outcome
/// consumes it; dropping it unrecorded (the caller's future was cancelled)
/// frees the probe slot it may hold.
struct Admission<'a> {
    shared: &'a Shared,
    generation: u64,
    probe: bool,
    recorded: bool,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.shared.name)
            .field("state", &self.state())
            .finish()
    }
}

impl CircuitBreaker {
    /// A closed breaker. `name` is a public name: it reaches clients through
    /// [`ApiError::unavailable`] when the breaker is open.
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Self {
        let config = BreakerConfig {
            failure_threshold: config.failure_threshold.max(1),
            half_open_max_probes: config.half_open_max_probes.max(1),
            // Keeps `now + reset_timeout` far from overflowing an Instant.
            reset_timeout: config.reset_timeout.min(MAX_RESET_TIMEOUT),
            ..config
        };
        Self {
            shared: Arc::new(Shared {
                name: name.into(),
                core: Mutex::new(Core {
                    state: State::Closed,
                    generation: 0,
                    failures: VecDeque::new(),
                }),
                config,
            }),
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The configuration in force (thresholds raised to at least 1, the
    /// reset timeout capped).
    pub fn config(&self) -> &BreakerConfig {
        &self.shared.config
    }

    /// The current state. An open breaker whose reset timeout has passed
    /// reports `HalfOpen`: the next call will be a probe.
    pub fn state(&self) -> BreakerState {
        self.state_at(Instant::now())
    }

    /// [`BreakerState::code`] of the current state, for a gauge.
    pub fn state_code(&self) -> i64 {
        self.state().code()
    }

    /// Sets this breaker's series of `gauge` (labelled by breaker name) to
    /// [`state_code`](Self::state_code); call it from the metrics scrape or
    /// after calls. See [`state_gauge`] for a ready-made gauge.
    pub fn report_state(&self, gauge: &prometheus::IntGaugeVec) {
        gauge
            .with_label_values(&[self.name()])
            .set(self.state_code());
    }

    /// Runs `fut` unless the breaker is open; every `Err` counts as a
    /// failure. Use [`call_classified`](Self::call_classified) when some
    /// errors are the caller's fault.
    pub async fn call<T, E, Fut>(&self, fut: Fut) -> Result<T, BreakerError<E>>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_classified(fut, |_| true).await
    }

    /// Runs `fut` unless the breaker is open; an `Err` counts as a failure
    /// only when `counts_as_failure` says so, and otherwise as a success
    /// (the dependency answered). `fut` is not polled when the breaker
    /// rejects the call.
    pub async fn call_classified<T, E, Fut, C>(
        &self,
        fut: Fut,
        counts_as_failure: C,
    ) -> Result<T, BreakerError<E>>
    where
        Fut: Future<Output = Result<T, E>>,
        C: FnOnce(&E) -> bool,
    {
        let Some(admission) = self.admit(Instant::now()) else {
            return Err(BreakerError::Open {
                breaker: self.shared.name.clone(),
            });
        };
        let result = fut.await;
        let failed = match &result {
            Ok(_) => false,
            Err(error) => counts_as_failure(error),
        };
        admission.record(failed, Instant::now());
        result.map_err(BreakerError::Inner)
    }

    fn state_at(&self, now: Instant) -> BreakerState {
        match self.shared.lock().state {
            State::Closed => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn admit(&self, now: Instant) -> Option<Admission<'_>> {
        let shared = &*self.shared;
        let mut core = shared.lock();
        let probe = match core.state {
            State::Closed => false,
            State::Open { until } if now < until => return None,
            State::Open { .. } => {
                core.transition(
                    &shared.name,
                    State::HalfOpen {
                        probes_in_flight: 1,
                    },
                );
                true
            }
            State::HalfOpen { probes_in_flight } => {
                if probes_in_flight >= shared.config.half_open_max_probes {
                    return None;
                }
                core.state = State::HalfOpen {
                    probes_in_flight: probes_in_flight + 1,
                };
                true
            }
        };
        Some(Admission {
            shared,
            generation: core.generation,
            probe,
            recorded: false,
        })
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Core> {
        // Every update under this lock is a few plain assignments that cannot
        // panic halfway, so a poisoned lock still holds consistent state.
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Core {
    fn transition(&mut self, name: &str, to: State) {
        self.state = to;
        self.generation += 1;
        self.failures.clear();
        match to {
            State::Open { .. } => tracing::warn!(breaker = %name, "circuit breaker opened"),
            State::HalfOpen { .. } => {
                tracing::info!(breaker = %name, "circuit breaker half-open, probing")
            }
            State::Closed => tracing::info!(breaker = %name, "circuit breaker closed"),
        }
    }
}

impl Admission<'_> {
    fn record(mut self, failed: bool, now: Instant) {
        self.recorded = true;
        let config = &self.shared.config;
        let mut core = self.shared.lock();
        if core.generation != self.generation {
            return;
        }
        match (core.state, self.probe, failed) {
            (State::Closed, false, true) => {
                let window_start = now.checked_sub(config.rolling_window);
                while core
                    .failures
                    .front()
                    .is_some_and(|&at| window_start.is_some_and(|start| at <= start))
                {
                    core.failures.pop_front();
                }
                core.failures.push_back(now);
                let threshold = usize::try_from(config.failure_threshold).unwrap_or(usize::MAX);
                if core.failures.len() >= threshold {
                    let until = now + config.reset_timeout;
                    core.transition(&self.shared.name, State::Open { until });
                }
            }
            (State::HalfOpen { .. }, true, false) => {
                core.transition(&self.shared.name, State::Closed);
            }
            (State::HalfOpen { .. }, true, true) => {
                let until = now + config.reset_timeout;
                core.transition(&self.shared.name, State::Open { until });
            }
            // Successes while closed leave the window alone: failures age out
            // of it instead of being forgiven by interleaved successes.
            _ => {}
        }
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.recorded || !self.probe {
            return;
        }
        // A probe cancelled before it finished proves nothing either way:
        // free its slot so that the next caller can probe instead.
        let mut core = self.shared.lock();
        if core.generation != self.generation {
            return;
        }
        if let State::HalfOpen { probes_in_flight } = core.state {
            core.state = State::HalfOpen {
                probes_in_flight: probes_in_flight.saturating_sub(1),
            };
        }
    }
}

/// A gauge `circuit_breaker_state{breaker}` (0 closed, 1 open, 2 half-open)
/// registered in `registry`, to be filled by
/// [`CircuitBreaker::report_state`]. Fails if already registered.
pub fn state_gauge(registry: &prometheus::Registry) -> prometheus::Result<prometheus::IntGaugeVec> {
    let gauge = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
        ),
        &["breaker"],
    )?;
    registry.register(Box::new(gauge.clone()))?;
    Ok(gauge)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn config(threshold: u32) -> BreakerConfig {
        BreakerConfig {
            failure_threshold: threshold,
            rolling_window: 10 * SECOND,
            reset_timeout: 5 * SECOND,
            half_open_max_probes: 1,
        }
    }

    /// Records one call's outcome at `at`, as `call_classified` would.
    fn outcome(breaker: &CircuitBreaker, at: Instant, failed: bool) -> bool {
        match breaker.admit(at) {
            Some(admission) => {
                admission.record(failed, at);
                true
            }
            None => false,
        }
    }

    async fn fail(breaker: &CircuitBreaker) -> Result<(), BreakerError<&'static str>> {
        breaker.call(async { Err::<(), _>("boom") }).await
    }

    #[tokio::test]
    async fn opens_after_threshold_failures_and_then_fails_fast() {
        let breaker = CircuitBreaker::new("ledger", config(3));
        for _ in 0..2 {
            assert_eq!(fail(&breaker).await, Err(BreakerError::Inner("boom")));
            assert_eq!(breaker.state(), BreakerState::Closed);
        }
        assert_eq!(fail(&breaker).await, Err(BreakerError::Inner("boom")));
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.state_code(), 1);

        let polled = AtomicUsize::new(0);
        let result = breaker
            .call(async {
                polled.fetch_add(1, Ordering::SeqCst);
                Ok::<_, &str>(())
            })
            .await;
        assert_eq!(
            result,
            Err(BreakerError::Open {
                breaker: "ledger".into()
            })
        );
        assert_eq!(
            polled.load(Ordering::SeqCst),
            0,
            "an open breaker makes no call"
        );
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let breaker = CircuitBreaker::new("ledger", config(3));
        let t0 = Instant::now();
        assert!(outcome(&breaker, t0, true));
        assert!(outcome(&breaker, t0 + 4 * SECOND, true));
        // The first failure is 10 s old by now: out of the window.
        assert!(outcome(&breaker, t0 + 10 * SECOND, true));
        assert_eq!(breaker.state_at(t0 + 10 * SECOND), BreakerState::Closed);
        // Two failures (4 s, 10 s) are still inside; a third opens it.
        assert!(outcome(&breaker, t0 + 12 * SECOND, true));
        assert_eq!(breaker.state_at(t0 + 12 * SECOND), BreakerState::Open);
    }

    #[test]
    fn successes_do_not_forgive_failures_inside_the_window() {
        let breaker = CircuitBreaker::new("ledger", config(2));
        let t0 = Instant::now();
        assert!(outcome(&breaker, t0, true));
        assert!(outcome(&breaker, t0 + SECOND, false));
        assert!(outcome(&breaker, t0 + 2 * SECOND, true));
        assert_eq!(breaker.state_at(t0 + 2 * SECOND), BreakerState::Open);
    }

    #[test]
    fn stays_open_until_the_reset_timeout_then_lets_one_probe_through() {
        let breaker = CircuitBreaker::new("ledger", config(1));
        let t0 = Instant::now();
        assert!(outcome(&breaker, t0, true));
        assert!(breaker.admit(t0 + 4 * SECOND).is_none(), "still open");
        assert_eq!(breaker.state_at(t0 + 4 * SECOND), BreakerState::Open);
        assert_eq!(breaker.state_at(t0 + 5 * SECOND), BreakerState::HalfOpen);

        let probe = breaker.admit(t0 + 5 * SECOND).expect("the probe");
        assert!(
            breaker.admit(t0 + 5 * SECOND).is_none(),
            "one probe at a time"
        );
        assert!(
            breaker.admit(t0 + 6 * SECOND).is_none(),
            "one probe at a time"
        );
        probe.record(false, t0 + 6 * SECOND);
        assert_eq!(breaker.state_at(t0 + 6 * SECOND), BreakerState::Closed);
        assert!(outcome(&breaker, t0 + 6 * SECOND, false));
    }

    #[test]
    fn a_failed_probe_reopens_for_another_reset_timeout() {
        let breaker = CircuitBreaker::new("ledger", config(1));
        let t0 = Instant::now();
        assert!(outcome(&breaker, t0, true));
        assert!(
            outcome(&breaker, t0 + 5 * SECOND, true),
            "probe admitted, fails"
        );
        assert_eq!(breaker.state_at(t0 + 5 * SECOND), BreakerState::Open);
        assert!(breaker.admit(t0 + 9 * SECOND).is_none());
        assert!(breaker.admit(t0 + 10 * SECOND).is_some(), "next probe");
    }

    #[test]
    fn a_cancelled_probe_frees_its_slot() {
        let breaker = CircuitBreaker::new("ledger", config(1));
        let t0 = Instant::now();
        assert!(outcome(&breaker, t0, true));
        drop(breaker.admit(t0 + 5 * SECOND).expect("the probe"));
        assert!(
            breaker.admit(t0 + 5 * SECOND).is_some(),
            "another caller may probe"
        );
    }

    #[test]
    fn late_results_from_before_a_transition_are_ignored() {
        let breaker = CircuitBreaker::new("ledger", config(1));
        let t0 = Instant::now();
        let slow = breaker.admit(t0).expect("closed");
        assert!(outcome(&breaker, t0, true));
        // The slow call started while closed succeeds while half-open: it is
        // not the probe and must not close the breaker.
        let probe = breaker.admit(t0 + 5 * SECOND).expect("the probe");
        slow.record(false, t0 + 5 * SECOND);
        assert_eq!(breaker.state_at(t0 + 5 * SECOND), BreakerState::HalfOpen);
        probe.record(true, t0 + 5 * SECOND);
        assert_eq!(breaker.state_at(t0 + 5 * SECOND), BreakerState::Open);
    }

    #[test]
    fn several_probes_when_configured() {
        let breaker = CircuitBreaker::new(
            "ledger",
            BreakerConfig {
                half_open_max_probes: 2,
                ..config(1)
            },
        );
        let t0 = Instant::now();
        assert!(outcome(&breaker, t0, true));
        let _first = breaker.admit(t0 + 5 * SECOND).expect("probe 1");
        let _second = breaker.admit(t0 + 5 * SECOND).expect("probe 2");
        assert!(breaker.admit(t0 + 5 * SECOND).is_none());
    }

    #[tokio::test]
    async fn concurrent_callers_during_the_probe_are_rejected() {
        let breaker = CircuitBreaker::new(
            "ledger",
            BreakerConfig {
                reset_timeout: Duration::ZERO,
                ..config(1)
            },
        );
        let _ = fail(&breaker).await;
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let probe = tokio::spawn({
            let breaker = breaker.clone();
            async move {
                breaker
                    .call(async {
                        released.await.ok();
                        Ok::<_, &str>("recovered")
                    })
                    .await
            }
        });
        while !matches!(
            breaker.shared.lock().state,
            State::HalfOpen {
                probes_in_flight: 1
            }
        ) {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            breaker.call(async { Ok::<_, &str>("second") }).await,
            Err(BreakerError::Open { .. })
        ));
        release.send(()).unwrap();
        assert_eq!(probe.await.unwrap(), Ok("recovered"));
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn client_errors_do_not_trip_it() {
        let breaker = CircuitBreaker::new("ledger", config(2));
        for _ in 0..10 {
            let result = breaker
                .call_classified(
                    async { Err::<(), _>(ApiError::validation("input.amount", "negative")) },
                    is_dependency_failure,
                )
                .await;
            assert!(matches!(result, Err(BreakerError::Inner(_))));
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        for _ in 0..2 {
            let _ = breaker
                .call_classified(
                    async { Err::<(), _>(ApiError::unavailable("ledger")) },
                    is_dependency_failure,
                )
                .await;
        }
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[test]
    fn open_converts_to_unavailable_and_inner_passes_through() {
        let open: ApiError = BreakerError::<ApiError>::Open {
            breaker: "ledger".into(),
        }
        .into();
        assert_eq!(open.code(), codes::UNAVAILABLE);
        assert!(open.message().starts_with("ledger"));
        let inner: ApiError = BreakerError::Inner(ApiError::not_found("wallet")).into();
        assert_eq!(inner.code(), codes::NOT_FOUND);
        assert!(!BreakerError::<ApiError>::Open {
            breaker: "x".into()
        }
        .is_retryable());
        assert!(BreakerError::Inner(ApiError::unavailable("x")).is_retryable());
    }

    #[test]
    fn state_is_exported_to_a_gauge() {
        let registry = prometheus::Registry::new();
        let gauge = state_gauge(&registry).unwrap();
        let breaker = CircuitBreaker::new("ledger", config(1));
        breaker.report_state(&gauge);
        assert_eq!(gauge.with_label_values(&["ledger"]).get(), 0);
        assert!(outcome(&breaker, Instant::now(), true));
        breaker.report_state(&gauge);
        assert_eq!(gauge.with_label_values(&["ledger"]).get(), 1);
        assert_eq!(BreakerState::HalfOpen.code(), 2);
        assert!(state_gauge(&registry).is_err(), "registered once");
    }
}
