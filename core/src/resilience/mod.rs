//! Policies that keep a service standing when its dependencies wobble.
//!
//! Each policy is a small type that wraps a future, so the call site chooses
//! and orders them instead of configuring one do-everything wrapper. A
//! typical outbound call, outermost first: retry, bulkhead, breaker, timeout.
//!
//! ```
//! use std::time::Duration;
//! use service_core::resilience::*;
//! use service_core::ApiError;
//!
//! async fn get_balance(wallet: &str) -> Result<u64, ApiError> {
//!     Ok(wallet.len() as u64) // stands in for a call to another service
//! }
//!
//! async fn balance(
//!     retry: &RetryPolicy,
//!     bulkhead: &Bulkhead,
//!     breaker: &CircuitBreaker,
//!     wallet: &str,
//! ) -> Result<u64, ApiError> {
//!     retry
//!         .run(|_attempt| async {
//!             let call =
//!                 async { with_timeout(Duration::from_secs(2), get_balance(wallet)).await? };
//!             let guarded = breaker.call_classified(call, is_dependency_failure);
//!             Ok(bulkhead.run(guarded).await??)
//!         })
//!         .await
//! }
//!
//! # let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! let retry = RetryPolicy::fast();
//! let bulkhead = Bulkhead::new("ledger", 32, Some(Duration::from_millis(50)));
//! let breaker = CircuitBreaker::new("ledger", BreakerConfig::default());
//! let answer = runtime.block_on(balance(&retry, &bulkhead, &breaker, "w-1"));
//! assert_eq!(answer.unwrap(), 3);
//! ```
//!
//! Every error converts into [`crate::ApiError`] (`MSCoreUnavailable`, or
//! `MSCoreRateLimited` for [`RetryAfter`]), and every error that is worth
//! retrying says so through [`Retryable`]; an open breaker is not.

mod attempts;
mod breaker;
mod bulkhead;
mod rate_limit;
mod redis_fallback;
mod retry;
mod shared_limit;
mod timeout;

#[cfg(test)]
mod paused_tests;

pub use attempts::{AttemptCounter, Attempts};
pub use breaker::{
    is_dependency_failure, state_gauge, BreakerConfig, BreakerError, BreakerState, CircuitBreaker,
};
pub use bulkhead::{Bulkhead, BulkheadError};
pub use rate_limit::{KeyedRateLimiter, RetryAfter, TokenBucket, DEFAULT_MAX_KEYS};
pub use redis_fallback::{RateLimitMetrics, SharedLimitOptions};
pub use retry::{RetryPolicy, Retryable};
pub use shared_limit::RateLimiter;
pub use timeout::{with_timeout, TimeoutError};
