//! Connection-pool settings and statistics.
//!
//! The figures come from the driver's published CMAP events (connection
//! created/closed, checked out/in, checkout started/failed), counted with
//! atomics: the driver's pool internals are private and change between
//! releases, the events are part of its stable API.
//!
//! The driver has no wait-queue timeout (the MongoDB specification dropped
//! `waitQueueTimeoutMS`), so a saturated pool would make callers wait
//! forever. [`Gate`] restores the bound: at most `max_size` round trips are
//! in flight, and one that cannot start within `wait_queue_timeout_ms` fails
//! as unavailable instead of queueing without end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mongodb::event::cmap::CmapEvent;
use mongodb::event::EventHandler;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::db::{StoreError, StoreResult};

/// Connection-pool settings for MongoDB (per server of the deployment).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolSettings {
    /// Most connections open at once; also the most round trips in flight.
    pub max_size: u32,
    /// Connections kept open even when idle, so a burst after a quiet spell
    /// does not pay for connection set-up (TLS, authentication).
    pub min_size: u32,
    /// An idle connection is closed after this many milliseconds.
    pub max_idle_ms: u64,
    /// A round trip that cannot get a connection within this many
    /// milliseconds fails as unavailable rather than piling up.
    pub wait_queue_timeout_ms: u64,
    /// How long to look for a usable server before failing, so a missing
    /// or unreachable deployment is reported quickly.
    pub server_selection_timeout_ms: u64,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_size: 100,
            min_size: 10,
            max_idle_ms: 30_000,
            wait_queue_timeout_ms: 10_000,
            server_selection_timeout_ms: 5_000,
        }
    }
}

impl PoolSettings {
    /// [`Self::max_idle_ms`] as a duration.
    pub fn max_idle(&self) -> Duration {
        Duration::from_millis(self.max_idle_ms)
    }

    /// [`Self::wait_queue_timeout_ms`] as a duration.
    pub fn wait_queue_timeout(&self) -> Duration {
        Duration::from_millis(self.wait_queue_timeout_ms)
    }

    /// [`Self::server_selection_timeout_ms`] as a duration.
    pub fn server_selection_timeout(&self) -> Duration {
        Duration::from_millis(self.server_selection_timeout_ms)
    }
}

/// How close the pool is to running out of connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolStatus {
    /// At most 80 % of the connections in use.
    #[default]
    Healthy,
    /// More than 80 % in use: the pool is nearly saturated.
    Warning,
    /// More than 95 % in use: requests are about to queue.
    Critical,
}

impl PoolStatus {
    /// Above this share of connections in use the pool is [`Self::Warning`].
    pub const WARNING_ABOVE: f64 = 0.80;
    /// Above this share it is [`Self::Critical`].
    pub const CRITICAL_ABOVE: f64 = 0.95;

    /// The status for `utilisation` (in use / maximum, 0..=1).
    pub fn from_utilisation(utilisation: f64) -> Self {
        if utilisation > Self::CRITICAL_ABOVE {
            Self::Critical
        } else if utilisation > Self::WARNING_ABOVE {
            Self::Warning
        } else {
            Self::Healthy
        }
    }
}

/// A snapshot of the connection pool.
///
/// Counts are summed over the deployment's servers; with the default read
/// preference (primary) the application's traffic all goes to one of them,
/// so `in_use` against `max` is the primary's saturation.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PoolStats {
    /// Open connections (in use or idle).
    pub total: u64,
    /// Connections checked out by an operation right now.
    pub in_use: u64,
    /// Open connections idle in the pool.
    pub available: u64,
    /// Operations waiting for a connection.
    pub waiting: u64,
    /// The pool's maximum size.
    pub max: u64,
    /// `in_use / max`, between 0 and 1.
    pub utilisation: f64,
    /// `utilisation` judged against the warning and critical thresholds.
    pub status: PoolStatus,
}

impl PoolStats {
    fn new(total: u64, in_use: u64, waiting: u64, max: u64) -> Self {
        let utilisation = if max == 0 {
            0.0
        } else {
            (in_use as f64 / max as f64).clamp(0.0, 1.0)
        };
        Self {
            total,
            in_use,
            available: total.saturating_sub(in_use),
            waiting,
            max,
            utilisation,
            status: PoolStatus::from_utilisation(utilisation),
        }
    }
}

/// Event counters, fed by the driver's CMAP events.
///
/// Only monotonic counts are kept; the gauges are their differences, so an
/// event that arrives late can never leave a gauge stuck below zero.
#[derive(Debug, Default)]
pub(super) struct PoolCounters {
    created: AtomicU64,
    closed: AtomicU64,
    checked_out: AtomicU64,
    checked_in: AtomicU64,
    checkout_started: AtomicU64,
    checkout_failed: AtomicU64,
    /// Round trips waiting at the [`Gate`].
    gate_waiting: AtomicU64,
}

impl PoolCounters {
    /// A handler to install as the client's `cmap_event_handler`.
    pub(super) fn handler(self: &Arc<Self>) -> EventHandler<CmapEvent> {
        let counters = Arc::clone(self);
        EventHandler::callback(move |event| counters.record(&event))
    }

    fn record(&self, event: &CmapEvent) {
        let counter = match event {
            CmapEvent::ConnectionCreated(_) => &self.created,
            CmapEvent::ConnectionClosed(_) => &self.closed,
            CmapEvent::ConnectionCheckedOut(_) => &self.checked_out,
            CmapEvent::ConnectionCheckedIn(_) => &self.checked_in,
            CmapEvent::ConnectionCheckoutStarted(_) => &self.checkout_started,
            CmapEvent::ConnectionCheckoutFailed(_) => &self.checkout_failed,
            _ => return,
        };
        // Counts only; nothing else is ordered against them.
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The pool as the events describe it now.
    pub(super) fn snapshot(&self, max: u32) -> PoolStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let checked_out = load(&self.checked_out);
        let total = load(&self.created).saturating_sub(load(&self.closed));
        let in_use = checked_out.saturating_sub(load(&self.checked_in));
        let driver_waiting = load(&self.checkout_started)
            .saturating_sub(checked_out)
            .saturating_sub(load(&self.checkout_failed));
        PoolStats::new(
            total,
            in_use,
            driver_waiting + load(&self.gate_waiting),
            u64::from(max),
        )
    }
}

/// Bounds the round trips in flight and how long one waits to start.
#[derive(Debug)]
pub(super) struct Gate {
    permits: Semaphore,
    timeout: Duration,
    counters: Arc<PoolCounters>,
}

impl Gate {
    pub(super) fn new(settings: &PoolSettings, counters: Arc<PoolCounters>) -> Self {
        Self {
            permits: Semaphore::new(settings.max_size.max(1) as usize),
            timeout: settings.wait_queue_timeout(),
            counters,
        }
    }

    /// Waits for a free connection slot; hold the permit for the round trip.
    pub(super) async fn enter(&self) -> StoreResult<SemaphorePermit<'_>> {
        if let Ok(permit) = self.permits.try_acquire() {
            return Ok(permit);
        }
        self.counters.gate_waiting.fetch_add(1, Ordering::Relaxed);
        let outcome = tokio::time::timeout(self.timeout, self.permits.acquire()).await;
        self.counters.gate_waiting.fetch_sub(1, Ordering::Relaxed);
        match outcome {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(StoreError::Unavailable(
                "the MongoDB client is shut down".to_owned(),
            )),
            Err(_elapsed) => Err(StoreError::Unavailable(format!(
                "no MongoDB connection became free within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_thresholds_are_strictly_above_80_and_95_percent() {
        for (utilisation, status) in [
            (0.0, PoolStatus::Healthy),
            (0.5, PoolStatus::Healthy),
            (0.80, PoolStatus::Healthy),
            (0.81, PoolStatus::Warning),
            (0.95, PoolStatus::Warning),
            (0.96, PoolStatus::Critical),
            (1.0, PoolStatus::Critical),
        ] {
            assert_eq!(
                PoolStatus::from_utilisation(utilisation),
                status,
                "{utilisation}"
            );
        }
        assert_eq!(PoolStats::new(100, 81, 0, 100).status, PoolStatus::Warning);
        assert_eq!(PoolStats::new(100, 96, 3, 100).status, PoolStatus::Critical);
        assert_eq!(PoolStats::new(10, 8, 0, 10).status, PoolStatus::Healthy);
    }

    #[test]
    fn stats_are_derived_from_counts_and_never_negative() {
        let stats = PoolStats::new(12, 3, 0, 100);
        assert_eq!(stats.available, 9);
        assert!((stats.utilisation - 0.03).abs() < 1e-9);
        // A check-in seen before its check-out must not underflow.
        let counters = PoolCounters::default();
        counters.checked_in.fetch_add(1, Ordering::Relaxed);
        let stats = counters.snapshot(100);
        assert_eq!((stats.total, stats.in_use, stats.waiting), (0, 0, 0));
        assert_eq!(PoolStats::new(0, 0, 0, 0).utilisation, 0.0);
    }

    #[test]
    fn settings_default_to_the_documented_values_and_reject_unknown_keys() {
        let settings: PoolSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(settings, PoolSettings::default());
        assert_eq!(settings.max_size, 100);
        assert_eq!(settings.min_size, 10);
        assert_eq!(settings.max_idle(), Duration::from_secs(30));
        assert_eq!(settings.wait_queue_timeout(), Duration::from_secs(10));
        let partial: PoolSettings = serde_json::from_str(r#"{"max_size": 5}"#).unwrap();
        assert_eq!((partial.max_size, partial.min_size), (5, 10));
        assert!(serde_json::from_str::<PoolSettings>(r#"{"maxSize": 5}"#).is_err());
    }

    #[test]
    fn status_serialises_in_lower_case() {
        assert_eq!(
            serde_json::to_value(PoolStatus::Critical).unwrap(),
            serde_json::json!("critical")
        );
    }

    #[tokio::test]
    async fn a_full_gate_times_out_as_unavailable() {
        let settings = PoolSettings {
            max_size: 1,
            wait_queue_timeout_ms: 20,
            ..PoolSettings::default()
        };
        let counters = Arc::new(PoolCounters::default());
        let gate = Gate::new(&settings, counters.clone());
        let held = gate.enter().await.unwrap();
        let err = gate.enter().await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert_eq!(counters.snapshot(1).waiting, 0);
        drop(held);
        assert!(gate.enter().await.is_ok());
    }
}
