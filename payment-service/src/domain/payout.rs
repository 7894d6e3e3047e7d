//! Paying money out: a [`PayoutProvider`] behind retry, breaker and timeout.
//!
//! Two providers exist. [`HttpPayoutProvider`] posts the payout to
//! `PAYMENT_PAYOUT_URL`; [`ManualSettlement`] (when no URL is configured)
//! settles at once in-process, for development and for deployments where
//! an operator pays out by hand from the completed withdrawals.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use service_core::resilience::{
    is_dependency_failure, with_timeout, BreakerConfig, CircuitBreaker, RetryPolicy,
};
use service_core::{codes, ApiError};

/// One payout, as sent to the provider. `withdrawal_id` is the provider's
/// idempotency key: the same payout may be asked for again (a retry, a
/// recovery) and must be paid once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayoutRequest {
    /// The withdrawal.
    pub withdrawal_id: String,
    /// Whose money.
    pub user_id: String,
    /// From which wallet.
    pub wallet_id: String,
    /// Minor units.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
}

/// The provider's answer to a payout it made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayoutReceipt {
    /// The provider's reference.
    pub reference: String,
}

/// Why a payout did not happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayoutError {
    /// The provider refused it for good (4xx): retrying will not help.
    #[error("payout rejected: {0}")]
    Rejected(String),
    /// The provider could not be reached or failed (5xx, network).
    #[error("payout provider unavailable: {0}")]
    Unavailable(String),
}

impl From<PayoutError> for ApiError {
    fn from(err: PayoutError) -> Self {
        match &err {
            PayoutError::Rejected(_) => {
                ApiError::unavailable("the payout provider").with_cause(err)
            }
            PayoutError::Unavailable(_) => {
                ApiError::unavailable("the payout provider").with_cause(err)
            }
        }
    }
}

/// Something that pays money out.
pub trait PayoutProvider: Send + Sync {
    /// A name for logs.
    fn name(&self) -> &str;
    /// Pays `request` out (idempotently by `withdrawal_id`).
    fn payout<'a>(
        &'a self,
        request: &'a PayoutRequest,
    ) -> BoxFuture<'a, Result<PayoutReceipt, PayoutError>>;
}

/// Settles every payout at once, in-process: used when no provider URL is
/// configured. The completed withdrawal is the instruction for whoever pays
/// out by hand.
#[derive(Clone, Copy, Debug, Default)]
pub struct ManualSettlement;

impl PayoutProvider for ManualSettlement {
    fn name(&self) -> &str {
        "manual"
    }

    fn payout<'a>(
        &'a self,
        request: &'a PayoutRequest,
    ) -> BoxFuture<'a, Result<PayoutReceipt, PayoutError>> {
        Box::pin(async move {
            Ok(PayoutReceipt {
                reference: format!("manual-{}", request.withdrawal_id),
            })
        })
    }
}

/// Posts payouts as JSON to a URL: 2xx with `{"reference": ...}` is paid
/// (an empty body gets the withdrawal id as reference), 4xx refused, the
/// rest unavailable.
#[derive(Clone, Debug)]
pub struct HttpPayoutProvider {
    client: reqwest::Client,
    url: String,
}

impl HttpPayoutProvider {
    /// A provider at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            client: reqwest::Client::new(),
            url: url.into(),
        }
    }
}

impl PayoutProvider for HttpPayoutProvider {
    fn name(&self) -> &str {
        "http"
    }

    fn payout<'a>(
        &'a self,
        request: &'a PayoutRequest,
    ) -> BoxFuture<'a, Result<PayoutReceipt, PayoutError>> {
        Box::pin(async move {
            let response = self
                .client
                .post(&self.url)
                .header("Idempotency-Key", &request.withdrawal_id)
                .json(request)
                .send()
                .await
                .map_err(|err| PayoutError::Unavailable(err.without_url().to_string()))?;
            let status = response.status();
            if status.is_success() {
                let body = response.bytes().await.unwrap_or_default();
                let reference = serde_json::from_slice::<PayoutReceipt>(&body)
                    .map(|r| r.reference)
                    .unwrap_or_else(|_| request.withdrawal_id.clone());
                Ok(PayoutReceipt { reference })
            } else if status.is_client_error() {
                Err(PayoutError::Rejected(format!("HTTP {status}")))
            } else {
                Err(PayoutError::Unavailable(format!("HTTP {status}")))
            }
        })
    }
}

/// A provider with the resilience policies around it: per attempt a
/// timeout inside the breaker, attempts retried while the failure is
/// transient.
#[derive(Clone)]
pub struct PayoutGateway {
    provider: Arc<dyn PayoutProvider>,
    breaker: Arc<CircuitBreaker>,
    retry: RetryPolicy,
    timeout: Duration,
}

impl PayoutGateway {
    /// Wraps `provider`.
    pub fn new(provider: Arc<dyn PayoutProvider>, retry: RetryPolicy, timeout: Duration) -> Self {
        Self {
            provider,
            breaker: Arc::new(CircuitBreaker::new(
                "payout-provider",
                BreakerConfig::default(),
            )),
            retry,
            timeout,
        }
    }

    /// The in-process manual settlement, with default policies.
    pub fn manual() -> Self {
        Self::new(
            Arc::new(ManualSettlement),
            RetryPolicy::fast(),
            Duration::from_secs(5),
        )
    }

    /// The provider's name.
    pub fn provider_name(&self) -> &str {
        self.provider.name()
    }

    /// Pays `request` out; `Err` carries whether the refusal is final.
    pub async fn pay(&self, request: &PayoutRequest) -> Result<PayoutReceipt, PayoutError> {
        let result = self
            .retry
            .run(|_attempt| async {
                let call = async {
                    match with_timeout(self.timeout, self.provider.payout(request)).await {
                        Ok(Ok(receipt)) => Ok(receipt),
                        Ok(Err(PayoutError::Rejected(reason))) => {
                            Err(ApiError::validation("payout", "refused by the provider")
                                .with_cause(reason))
                        }
                        Ok(Err(PayoutError::Unavailable(reason))) => {
                            Err(ApiError::unavailable("the payout provider").with_cause(reason))
                        }
                        Err(timeout) => Err(ApiError::from(timeout)),
                    }
                };
                let guarded = self.breaker.call_classified(call, is_dependency_failure);
                guarded.await.map_err(ApiError::from)
            })
            .await;
        result.map_err(|err| {
            let reason = err
                .cause()
                .map_or_else(|| err.message().to_owned(), ToString::to_string);
            if err.code() == codes::VALIDATION {
                PayoutError::Rejected(reason)
            } else {
                PayoutError::Unavailable(reason)
            }
        })
    }
}
