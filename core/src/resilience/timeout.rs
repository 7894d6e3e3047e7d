//! A deadline for one outbound call.
//!
//! Without a deadline a hung dependency holds a request (and its bulkhead
//! permit, and its connection) forever. [`with_timeout`] is a thin wrapper
//! over `tokio::time::timeout` whose error carries the duration, so logs say
//! which budget ran out, and converts into [`ApiError`].

use std::future::Future;
use std::time::Duration;

use crate::error::ApiError;
use crate::resilience::Retryable;

/// The call did not finish within its deadline; the call was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {after:?}")]
pub struct TimeoutError {
    /// The deadline that elapsed.
    pub after: Duration,
}

impl Retryable for TimeoutError {
    /// A timeout is transient by nature. Whether the call is safe to repeat
    /// (it may have taken effect) is the caller's decision when it picks a
    /// retry policy.
    fn is_retryable(&self) -> bool {
        true
    }
}

impl From<TimeoutError> for ApiError {
    /// `MSCoreUnavailable`; the duration goes to the log only.
    fn from(error: TimeoutError) -> Self {
        ApiError::unavailable("a dependency").with_cause(error)
    }
}

/// Runs `fut` for at most `duration`; on expiry the future is dropped (so it
/// is cancelled at its next await point) and [`TimeoutError`] returned.
///
/// A future that is ready on its first poll succeeds even with a zero
/// duration.
pub async fn with_timeout<F: Future>(
    duration: Duration,
    fut: F,
) -> Result<F::Output, TimeoutError> {
    tokio::time::timeout(duration, fut)
        .await
        .map_err(|_| TimeoutError { after: duration })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::codes;

    #[tokio::test]
    async fn returns_the_value_when_in_time() {
        assert_eq!(
            with_timeout(Duration::from_secs(3600), async { 7 }).await,
            Ok(7)
        );
    }

    #[tokio::test]
    async fn fires_on_a_call_that_never_finishes() {
        let err = with_timeout(Duration::ZERO, std::future::pending::<()>())
            .await
            .unwrap_err();
        assert_eq!(err.after, Duration::ZERO);
        assert!(err.is_retryable());
    }

    #[test]
    fn converts_to_unavailable_without_leaking_the_duration() {
        let api: ApiError = TimeoutError {
            after: Duration::from_millis(250),
        }
        .into();
        assert_eq!(api.code(), codes::UNAVAILABLE);
        assert!(!api.message().contains("250"));
        assert!(api.cause().unwrap().to_string().contains("250ms"));
    }
}
