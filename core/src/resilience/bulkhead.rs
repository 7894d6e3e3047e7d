//! A cap on concurrent calls to one dependency.
//!
//! When a dependency slows down, callers pile up waiting on it and take every
//! task, connection and byte of memory of the service with them. A bulkhead
//! bounds how many calls may be in flight at once and turns the excess into
//! a quick [`BulkheadError::Full`], so one slow dependency cannot sink the
//! calls that do not need it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::resilience::Retryable;

/// The bulkhead had no free slot within its wait budget; the call was not
/// made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BulkheadError {
    /// Every slot was taken for the whole wait budget.
    #[error("bulkhead {bulkhead} is full")]
    Full {
        /// The bulkhead's name.
        bulkhead: String,
    },
}

impl Retryable for BulkheadError {
    /// A full bulkhead is a transient overload: a later attempt, after a
    /// backoff, may find a free slot.
    fn is_retryable(&self) -> bool {
        true
    }
}

impl From<BulkheadError> for ApiError {
    /// `MSCoreUnavailable` naming the bulkhead, which must be a public name.
    fn from(error: BulkheadError) -> Self {
        match &error {
            BulkheadError::Full { bulkhead } => ApiError::unavailable(bulkhead),
        }
        .with_cause(error)
    }
}

/// A named limit of concurrent calls; clones share the same slots.
#[derive(Clone, Debug)]
pub struct Bulkhead {
    name: Arc<str>,
    slots: Arc<Semaphore>,
    max_concurrent: usize,
    max_wait: Option<Duration>,
}

impl Bulkhead {
    /// A bulkhead of `max_concurrent` slots (at least one). A call waits at
    /// most `max_wait` for a slot; with `None` it is rejected at once when
    /// all slots are taken. `name` is a public name (it reaches clients
    /// through [`ApiError::unavailable`]).
    pub fn new(name: impl Into<String>, max_concurrent: usize, max_wait: Option<Duration>) -> Self {
        let max_concurrent = max_concurrent.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            name: Arc::from(name.into()),
            slots: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            max_wait,
        }
    }

    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of slots.
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// Free slots right now (for metrics; stale as soon as it is read).
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }

    /// Runs `fut` holding a slot, released when `fut` finishes or is
    /// dropped. `fut` is not polled at all when no slot frees up in time.
    pub async fn run<F: Future>(&self, fut: F) -> Result<F::Output, BulkheadError> {
        let permit = match self.max_wait {
            None => self.slots.try_acquire().ok(),
            Some(wait) => tokio::time::timeout(wait, self.slots.acquire())
                .await
                .ok()
                .and_then(Result::ok),
        };
        let Some(_permit) = permit else {
            tracing::debug!(bulkhead = %self.name, "bulkhead full, rejecting call");
            return Err(BulkheadError::Full {
                bulkhead: self.name.to_string(),
            });
        };
        Ok(fut.await)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::{oneshot, Barrier};

    use super::*;
    use crate::error::codes;

    #[tokio::test]
    async fn never_exceeds_its_limit_under_100_concurrent_tasks() {
        let bulkhead = Bulkhead::new("ledger", 4, Some(Duration::from_secs(3600)));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (bulkhead, in_flight, peak) =
                    (bulkhead.clone(), in_flight.clone(), peak.clone());
                tokio::spawn(async move {
                    bulkhead
                        .run(async {
                            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            // Yield so other tasks get the chance to overlap.
                            for _ in 0..5 {
                                tokio::task::yield_now().await;
                            }
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                        })
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 4);
        assert_eq!(bulkhead.available(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_exceeds_its_limit_on_a_multi_threaded_runtime() {
        let bulkhead = Bulkhead::new("ledger", 3, None);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let rejected = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(Barrier::new(100));
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (bulkhead, in_flight, peak, rejected, start) = (
                    bulkhead.clone(),
                    in_flight.clone(),
                    peak.clone(),
                    rejected.clone(),
                    start.clone(),
                );
                tokio::spawn(async move {
                    start.wait().await;
                    let result = bulkhead
                        .run(async {
                            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                        })
                        .await;
                    if result.is_err() {
                        rejected.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert_eq!(bulkhead.available(), 3);
    }

    #[tokio::test]
    async fn rejects_at_once_when_full_without_a_wait_budget() {
        let bulkhead = Bulkhead::new("ledger", 1, None);
        let (release, released) = oneshot::channel::<()>();
        let holder = tokio::spawn({
            let bulkhead = bulkhead.clone();
            async move { bulkhead.run(released).await }
        });
        while bulkhead.available() > 0 {
            tokio::task::yield_now().await;
        }
        let polled = AtomicUsize::new(0);
        let err = bulkhead
            .run(async { polled.fetch_add(1, Ordering::SeqCst) })
            .await
            .unwrap_err();
        assert_eq!(
            err,
            BulkheadError::Full {
                bulkhead: "ledger".into()
            }
        );
        assert_eq!(
            polled.load(Ordering::SeqCst),
            0,
            "a rejected call is never started"
        );
        release.send(()).unwrap();
        holder.await.unwrap().unwrap().unwrap();
        assert_eq!(bulkhead.run(async { 1 }).await, Ok(1));
    }

    #[tokio::test]
    async fn rejects_when_no_slot_frees_within_the_wait_budget() {
        let bulkhead = Bulkhead::new("ledger", 1, Some(Duration::ZERO));
        let (_release, released) = oneshot::channel::<()>();
        let _holder = tokio::spawn({
            let bulkhead = bulkhead.clone();
            async move { bulkhead.run(released).await }
        });
        while bulkhead.available() > 0 {
            tokio::task::yield_now().await;
        }
        assert!(bulkhead.run(async {}).await.is_err());
    }

    #[tokio::test]
    async fn waits_for_a_slot_within_the_wait_budget() {
        let bulkhead = Bulkhead::new("ledger", 1, Some(Duration::from_secs(3600)));
        let (release, released) = oneshot::channel::<()>();
        let holder = tokio::spawn({
            let bulkhead = bulkhead.clone();
            async move { bulkhead.run(released).await }
        });
        while bulkhead.available() > 0 {
            tokio::task::yield_now().await;
        }
        let waiter = tokio::spawn({
            let bulkhead = bulkhead.clone();
            async move { bulkhead.run(async { "done" }).await }
        });
        tokio::task::yield_now().await;
        release.send(()).unwrap();
        holder.await.unwrap().unwrap().unwrap();
        assert_eq!(waiter.await.unwrap(), Ok("done"));
    }

    #[tokio::test]
    async fn releases_the_slot_when_the_call_is_cancelled() {
        let bulkhead = Bulkhead::new("ledger", 1, None);
        let call = tokio::spawn({
            let bulkhead = bulkhead.clone();
            async move { bulkhead.run(std::future::pending::<()>()).await }
        });
        while bulkhead.available() > 0 {
            tokio::task::yield_now().await;
        }
        call.abort();
        let _ = call.await;
        assert_eq!(bulkhead.available(), 1);
    }

    #[test]
    fn full_converts_to_unavailable_naming_the_bulkhead() {
        let api: ApiError = BulkheadError::Full {
            bulkhead: "ledger".into(),
        }
        .into();
        assert_eq!(api.code(), codes::UNAVAILABLE);
        assert!(api.message().starts_with("ledger"));
    }

    #[test]
    fn zero_slots_means_one() {
        assert_eq!(Bulkhead::new("x", 0, None).max_concurrent(), 1);
    }
}
