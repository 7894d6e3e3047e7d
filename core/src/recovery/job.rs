//! The periodic job that hands stale operations to their handlers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use tokio_util::sync::CancellationToken;

use super::lease::Lease;
use super::tracker::{OperationState, OperationTracker, TrackedOperation};
use super::RecoveryError;

/// What a handler concluded about a stale operation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoveryOutcome {
    /// The operation was finished or repaired: it is marked `COMPLETED`
    /// with `recovered: true`.
    Recovered,
    /// The operation cannot be finished and was abandoned (its business
    /// record says why): it is marked `FAILED` with `recovered: true`.
    Failed(String),
    /// The business record shows the operation is legitimately still going:
    /// look again after another heartbeat TTL.
    StillRunning,
}

/// A failure inside a handler; the operation is tried again later.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Repairs the stale operations of one type.
///
/// The tracker only says an operation went silent. Before acting, a handler
/// must read the operation's business record and leave alone whatever a saga
/// already compensated or a transaction rolled back, and must be idempotent:
/// a job that loses its lease mid-run may leave an operation to be handled
/// again.
pub trait RecoveryHandler: Send + Sync {
    /// The operation type this handler repairs.
    fn op_type(&self) -> &str;

    /// Repairs one stale operation.
    fn recover<'a>(
        &'a self,
        op: &'a TrackedOperation,
    ) -> BoxFuture<'a, Result<RecoveryOutcome, HandlerError>>;

    /// Operations stuck without ever being tracked (started before tracking
    /// existed, say), found from the business records; each is passed to
    /// [`recover`](Self::recover) on every run, so it must return only those
    /// still stuck. None by default.
    fn find_stuck(&self) -> BoxFuture<'_, Result<Vec<TrackedOperation>, HandlerError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// How often and how much the job works.
#[derive(Clone, Debug)]
pub struct RecoveryConfig {
    /// Pause between runs.
    pub interval: Duration,
    /// Most due operations handled per run.
    pub batch_size: usize,
    /// Lifetime of the lease; renewed every third of it while a run lasts.
    pub lease_ttl: Duration,
}

impl Default for RecoveryConfig {
    /// Every 30 s, 100 operations per run, a 60 s lease.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            batch_size: 100,
            lease_ttl: Duration::from_secs(60),
        }
    }
}

/// What the job has done since it was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Runs attempted.
    pub runs: u64,
    /// Runs that got the lease and did the work.
    pub runs_with_lease: u64,
    /// Schedule entries read: the cost of finding due operations.
    pub fetched: u64,
    /// Operations marked recovered (`COMPLETED`).
    pub recovered: u64,
    /// Operations marked failed by recovery.
    pub failed: u64,
    /// Handler errors (the operation is tried again later).
    pub errors: u64,
    /// Due operations left alone: finished meanwhile, heartbeat arrived,
    /// still running, or no handler.
    pub skipped: u64,
}

#[derive(Clone)]
struct RecoveryMetrics {
    operations: IntCounterVec,
    fetched: IntCounter,
}

/// Finds operations whose heartbeat went stale and hands each to the
/// handler of its type, one instance at a time (through a lease).
pub struct RecoveryJob {
    tracker: Arc<OperationTracker>,
    handlers: HashMap<String, Arc<dyn RecoveryHandler>>,
    config: RecoveryConfig,
    lease: Lease,
    stats: Mutex<RecoveryStats>,
    metrics: RecoveryMetrics,
}

impl RecoveryJob {
    /// A job over `tracker`'s operations, taking its lease from the same
    /// backend; counters go into `registry`.
    pub fn new(
        tracker: Arc<OperationTracker>,
        config: RecoveryConfig,
        registry: &Registry,
    ) -> Result<Self, RecoveryError> {
        let lease = tracker.lease(config.lease_ttl);
        let operations = IntCounterVec::new(
            Opts::new(
                "recovery_operations_total",
                "Stale operations handled by the recovery job, by outcome",
            ),
            &["op_type", "outcome"],
        )?;
        let fetched = IntCounter::new(
            "recovery_due_fetched_total",
            "Schedule entries read by the recovery job",
        )?;
        registry.register(Box::new(operations.clone()))?;
        registry.register(Box::new(fetched.clone()))?;
        Ok(Self {
            tracker,
            handlers: HashMap::new(),
            config,
            lease,
            stats: Mutex::new(RecoveryStats::default()),
            metrics: RecoveryMetrics {
                operations,
                fetched,
            },
        })
    }

    /// Adds the handler for its operation type (replacing an earlier one).
    pub fn register(&mut self, handler: Arc<dyn RecoveryHandler>) {
        self.handlers.insert(handler.op_type().to_owned(), handler);
    }

    /// What the job has done so far.
    pub fn stats(&self) -> RecoveryStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// Runs every `interval` until `cancel` fires; a failed run is logged
    /// and the next one tries again.
    pub async fn run(&self, cancel: CancellationToken) {
        loop {
            if let Err(err) = self.run_once().await {
                tracing::warn!(error = %err, "recovery run failed");
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(self.config.interval) => {}
            }
        }
    }

    /// One run: takes the lease, handles the due operations, releases the
    /// lease. `false` when another instance holds the lease.
    pub async fn run_once(&self) -> Result<bool, RecoveryError> {
        self.count(|s| s.runs += 1);
        if !self.lease.acquire().await? {
            return Ok(false);
        }
        self.count(|s| s.runs_with_lease += 1);
        let renew = async {
            loop {
                tokio::time::sleep(self.lease.ttl() / 3).await;
                match self.lease.renew().await {
                    Ok(true) => {}
                    Ok(false) => return RecoveryError::LeaseLost,
                    Err(err) => return err,
                }
            }
        };
        // Losing the lease stops the run: another instance may take over.
        let result = tokio::select! {
            result = self.sweep() => result,
            err = renew => Err(err),
        };
        if let Err(err) = self.lease.release().await {
            tracing::warn!(error = %err, "could not release the recovery lease; it will expire");
        }
        result.map(|()| true)
    }

    async fn sweep(&self) -> Result<(), RecoveryError> {
        let due = self.tracker.due(self.config.batch_size).await?;
        let fetched = u64::try_from(due.fetched).unwrap_or(u64::MAX);
        self.count(|s| s.fetched += fetched);
        self.metrics.fetched.inc_by(fetched);
        for op in due.operations {
            // The schedule was read a moment ago: the owner may have finished
            // or spoken since, and a finished operation is never touched.
            let Some(current) = self.tracker.get(&op.id).await? else {
                continue;
            };
            let now = Utc::now().timestamp_millis();
            if current.state != OperationState::InProgress
                || current.stale_at.is_some_and(|at| at > now)
            {
                self.count(|s| s.skipped += 1);
                continue;
            }
            self.handle(&current).await?;
        }
        for handler in self.handlers.values() {
            match handler.find_stuck().await {
                Ok(stuck) => {
                    for op in stuck {
                        self.recover_untracked(handler.as_ref(), &op).await;
                    }
                }
                Err(err) => {
                    tracing::warn!(op_type = handler.op_type(), error = %err, "find_stuck failed");
                }
            }
        }
        Ok(())
    }

    async fn handle(&self, op: &TrackedOperation) -> Result<(), RecoveryError> {
        let ttl = Duration::from_millis(op.heartbeat_ttl_ms);
        let Some(handler) = self.handlers.get(&op.op_type) else {
            tracing::warn!(op_type = %op.op_type, op_id = %op.id, "no recovery handler registered");
            self.count(|s| s.skipped += 1);
            self.tracker.postpone(op, ttl).await?;
            return Ok(());
        };
        let outcome = handler.recover(op).await;
        let label = match &outcome {
            Ok(RecoveryOutcome::Recovered) => {
                self.tracker
                    .finish(&op.id, OperationState::Completed, None, true)
                    .await?;
                self.count(|s| s.recovered += 1);
                "recovered"
            }
            Ok(RecoveryOutcome::Failed(reason)) => {
                self.tracker
                    .finish(&op.id, OperationState::Failed, Some(reason), true)
                    .await?;
                self.count(|s| s.failed += 1);
                "failed"
            }
            Ok(RecoveryOutcome::StillRunning) => {
                self.tracker.postpone(op, ttl).await?;
                self.count(|s| s.skipped += 1);
                "still_running"
            }
            Err(err) => {
                tracing::error!(op_type = %op.op_type, op_id = %op.id, error = %err, "recovery handler failed");
                self.tracker.postpone(op, ttl).await?;
                self.count(|s| s.errors += 1);
                "error"
            }
        };
        tracing::info!(op_type = %op.op_type, op_id = %op.id, outcome = label, "stale operation handled");
        self.metrics
            .operations
            .with_label_values(&[op.op_type.as_str(), label])
            .inc();
        Ok(())
    }

    async fn recover_untracked(&self, handler: &dyn RecoveryHandler, op: &TrackedOperation) {
        let label = match handler.recover(op).await {
            Ok(RecoveryOutcome::Recovered) => {
                self.count(|s| s.recovered += 1);
                "recovered"
            }
            Ok(RecoveryOutcome::Failed(_)) => {
                self.count(|s| s.failed += 1);
                "failed"
            }
            Ok(RecoveryOutcome::StillRunning) => {
                self.count(|s| s.skipped += 1);
                "still_running"
            }
            Err(err) => {
                tracing::error!(op_type = %op.op_type, op_id = %op.id, error = %err, "recovery handler failed");
                self.count(|s| s.errors += 1);
                "error"
            }
        };
        self.metrics
            .operations
            .with_label_values(&[op.op_type.as_str(), label])
            .inc();
    }

    fn count(&self, change: impl FnOnce(&mut RecoveryStats)) {
        if let Ok(mut stats) = self.stats.lock() {
            change(&mut stats);
        }
    }
}

impl std::fmt::Debug for RecoveryJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryJob")
            .field("tracker", &self.tracker)
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
