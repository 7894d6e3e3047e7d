//! One channel's provider behind its resilience policy: every call bounded
//! by a deadline and passed through the channel's circuit breaker; the
//! retry with backoff and jitter is driven by the deliverer, which records
//! each attempt.

use std::time::Duration;

use service_core::resilience::{
    with_timeout, BreakerConfig, BreakerError, BreakerState, CircuitBreaker, RetryPolicy, Retryable,
};

use super::provider::{OutboundMessage, Provider, ProviderError};
use crate::config::ChannelPolicy;
use crate::store::{AttemptStatus, Channel};

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// The provider answered with a failure.
    #[error("{0}")]
    Provider(ProviderError),
    /// The provider did not answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The breaker is open: the provider was not called.
    #[error("circuit breaker {0} is open")]
    Open(String),
}

impl AttemptError {
    /// How the attempt is recorded.
    pub fn status(&self) -> AttemptStatus {
        match self {
            Self::Open(_) => AttemptStatus::Rejected,
            Self::Provider(_) | Self::Timeout(_) => AttemptStatus::Failed,
        }
    }
}

impl Retryable for AttemptError {
    /// Transient provider failures and timeouts are retried; so is an open
    /// breaker, after the backoff, since it may have half-opened by then.
    /// A permanent refusal (a 4xx, a bad address) is not.
    fn is_retryable(&self) -> bool {
        match self {
            Self::Provider(err) => err.retryable,
            Self::Timeout(_) | Self::Open(_) => true,
        }
    }
}

/// A provider with its deadline, breaker and retry policy.
pub struct Guarded {
    channel: Channel,
    provider: Box<dyn Provider>,
    breaker: CircuitBreaker,
    retry: RetryPolicy,
    timeout: Duration,
}

impl Guarded {
    /// Wraps `provider` in `policy`.
    pub fn new(channel: Channel, provider: Box<dyn Provider>, policy: &ChannelPolicy) -> Self {
        Self {
            channel,
            breaker: CircuitBreaker::new(
                format!("notification-{}", channel.slug()),
                BreakerConfig {
                    failure_threshold: policy.breaker_failures,
                    rolling_window: Duration::from_secs(60),
                    reset_timeout: policy.breaker_reset,
                    half_open_max_probes: 1,
                },
            ),
            retry: RetryPolicy {
                max_attempts: policy.max_attempts,
                initial_delay: policy.initial_backoff,
                max_delay: policy.max_backoff,
                multiplier: 2.0,
                jitter: true,
            },
            provider,
            timeout: policy.timeout,
        }
    }

    /// The channel served.
    pub fn channel(&self) -> Channel {
        self.channel
    }

    /// The provider's short name.
    pub fn provider_name(&self) -> &'static str {
        self.provider.name()
    }

    /// The retry policy the deliverer drives.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Sets this channel's series of the breaker-state gauge.
    pub fn report_breaker(&self, gauge: &prometheus::IntGaugeVec) {
        self.breaker.report_state(gauge);
    }

    /// The longest one delivery can take: every attempt timing out plus
    /// every backoff at its cap. Queue consumers must allow at least this.
    pub fn worst_case(&self) -> Duration {
        let attempts = self.retry.max_attempts.max(1);
        self.timeout * attempts + self.retry.max_delay * attempts
    }

    /// One attempt: refused at once while the breaker is open; otherwise the
    /// provider call bounded by the deadline. Timeouts and transient
    /// failures count against the breaker; a permanent refusal does not
    /// (the provider is healthy, the message is not).
    pub async fn attempt(&self, message: &OutboundMessage) -> Result<(), AttemptError> {
        let timeout = self.timeout;
        let call = async {
            match with_timeout(timeout, self.provider.send(message)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => Err(AttemptError::Provider(err)),
                Err(_) => Err(AttemptError::Timeout(timeout)),
            }
        };
        self.breaker
            .call_classified(call, |err| match err {
                AttemptError::Provider(err) => err.retryable,
                AttemptError::Timeout(_) | AttemptError::Open(_) => true,
            })
            .await
            .map_err(|err| match err {
                BreakerError::Inner(err) => err,
                BreakerError::Open { breaker } => AttemptError::Open(breaker),
                _ => AttemptError::Open(self.breaker.name().to_owned()),
            })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use futures::future::BoxFuture;

    use super::*;

    struct Hangs(Arc<AtomicU32>);

    impl Provider for Hangs {
        fn name(&self) -> &'static str {
            "hangs"
        }
        fn send<'a>(&'a self, _: &'a OutboundMessage) -> BoxFuture<'a, Result<(), ProviderError>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(std::future::pending())
        }
    }

    fn message() -> OutboundMessage {
        OutboundMessage {
            notification_id: "n1".into(),
            user_id: "u1".into(),
            channel: Channel::Sms,
            kind: "k".into(),
            title: "t".into(),
            body: "b".into(),
            data: None,
            email: None,
        }
    }

    fn policy() -> ChannelPolicy {
        ChannelPolicy {
            timeout: Duration::from_secs(2),
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            breaker_failures: 2,
            breaker_reset: Duration::from_secs(30),
            concurrency: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_provider_times_out_then_the_breaker_opens_and_later_half_opens() {
        let calls = Arc::new(AtomicU32::new(0));
        let guarded = Guarded::new(Channel::Sms, Box::new(Hangs(calls.clone())), &policy());
        let msg = message();
        for _ in 0..2 {
            let err = guarded.attempt(&msg).await.unwrap_err();
            assert!(matches!(err, AttemptError::Timeout(_)));
        }
        assert_eq!(guarded.breaker_state(), BreakerState::Open);
        let err = guarded.attempt(&msg).await.unwrap_err();
        assert!(matches!(err, AttemptError::Open(_)));
        assert_eq!(err.status(), AttemptStatus::Rejected);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "an open breaker makes no call"
        );
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(guarded.breaker_state(), BreakerState::HalfOpen);
    }

    #[test]
    fn permanent_failures_are_not_retried() {
        assert!(!AttemptError::Provider(ProviderError::permanent("400")).is_retryable());
        assert!(AttemptError::Provider(ProviderError::transient("503")).is_retryable());
        assert!(AttemptError::Timeout(Duration::ZERO).is_retryable());
    }
}
