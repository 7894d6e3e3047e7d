//! Getting notifications out: providers per channel behind their
//! resilience policy ([`Guarded`]), the queue that feeds them with a bounded
//! number of concurrent sends per channel ([`DeliveryQueue`]), and the
//! [`Deliverer`] that runs one job and records every attempt.

mod email;
mod guard;
mod metrics;
mod provider;
mod queue;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use serde_json::json;
use service_core::db::{Filter, StoreResult, Update};
use service_core::resilience::{BreakerState, Retryable};
use tokio::sync::Mutex;

pub use email::{email_provider, EmailSetupError};
pub use guard::{AttemptError, Guarded};
pub use metrics::DeliveryMetrics;
pub use provider::{HttpProvider, OutboundMessage, Provider, ProviderError};
pub use queue::{DeliveryQueue, Job, QueueError};

use crate::config::NotificationConfig;
use crate::store::{Attempt, Channel, NotificationStatus, Store};

/// The guarded providers of the enabled external channels.
#[derive(Clone, Default)]
pub struct Providers {
    by_channel: Arc<BTreeMap<Channel, Arc<Guarded>>>,
}

impl Providers {
    /// EMAIL always (SMTP or the log transport); SMS, PUSH and WEBHOOK when
    /// their URL is configured.
    pub fn from_config(
        config: &NotificationConfig,
        client: reqwest::Client,
    ) -> Result<Self, EmailSetupError> {
        let mut by_channel = BTreeMap::new();
        let email_policy = config.policy(Channel::Email);
        let email = email_provider(config, email_policy.timeout)?;
        by_channel.insert(
            Channel::Email,
            Arc::new(Guarded::new(Channel::Email, email, &email_policy)),
        );
        for channel in [Channel::Sms, Channel::Push, Channel::Webhook] {
            match config.http_url(channel) {
                Some(url) => {
                    let provider = Box::new(HttpProvider::new(client.clone(), url));
                    by_channel.insert(
                        channel,
                        Arc::new(Guarded::new(channel, provider, &config.policy(channel))),
                    );
                }
                None => tracing::info!(%channel, "no provider configured: channel disabled"),
            }
        }
        Ok(Self {
            by_channel: Arc::new(by_channel),
        })
    }

    /// Providers given directly (tests and embedders).
    pub fn from_guarded(providers: impl IntoIterator<Item = Guarded>) -> Self {
        Self {
            by_channel: Arc::new(
                providers
                    .into_iter()
                    .map(|g| (g.channel(), Arc::new(g)))
                    .collect(),
            ),
        }
    }

    /// The provider of `channel`, when the channel is enabled.
    pub fn get(&self, channel: Channel) -> Option<&Arc<Guarded>> {
        self.by_channel.get(&channel)
    }

    /// Whether `channel` can deliver (`IN_APP` always can).
    pub fn is_enabled(&self, channel: Channel) -> bool {
        channel == Channel::InApp || self.by_channel.contains_key(&channel)
    }

    /// The enabled external channels.
    pub fn channels(&self) -> Vec<Channel> {
        self.by_channel.keys().copied().collect()
    }

    /// The breaker state of `channel`'s provider.
    pub fn breaker_state(&self, channel: Channel) -> Option<BreakerState> {
        self.get(channel).map(|g| g.breaker_state())
    }
}

/// Runs delivery jobs: one notification, up to its channel's attempts,
/// each recorded as it ends, then `SENT` or `FAILED` with the reason (the
/// dead letter).
#[derive(Clone)]
pub struct Deliverer {
    store: Store,
    providers: Providers,
    metrics: Option<DeliveryMetrics>,
}

impl Deliverer {
    /// A deliverer over `store` and `providers`.
    pub fn new(store: Store, providers: Providers) -> Self {
        Self {
            store,
            providers,
            metrics: None,
        }
    }

    /// Counts attempts and outcomes in `metrics`.
    pub fn with_metrics(mut self, metrics: DeliveryMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The providers.
    pub fn providers(&self) -> &Providers {
        &self.providers
    }

    /// Delivers the notification of `job` unless it is no longer pending
    /// (delivered already: a redelivered job sends nothing twice). Store
    /// failures are returned so a durable queue redelivers the job.
    #[tracing::instrument(skip_all, fields(notification_id = %job.notification_id, channel = %job.channel))]
    pub async fn deliver(&self, job: &Job) -> StoreResult<()> {
        // Claim: only a pending notification whose lease is free, so a job
        // delivered twice (a redelivery, a requeue at start-up) is sent once.
        let now_ms = Utc::now().timestamp_millis();
        let lease = self
            .providers
            .get(job.channel)
            .map(|g| g.worst_case())
            .unwrap_or_default()
            + std::time::Duration::from_secs(60);
        let lease_until =
            now_ms.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let claim = Filter::all()
            .eq("status", NotificationStatus::Pending.as_str())
            .lt("lease_until_ms", now_ms);
        let Some(notification) = self
            .store
            .notifications
            .update(
                &job.notification_id,
                claim,
                &Update::new().set("lease_until_ms", lease_until),
            )
            .await?
        else {
            tracing::debug!("not pending or held by another deliverer, skipping");
            return Ok(());
        };
        let Some(guarded) = self.providers.get(notification.channel).cloned() else {
            return self
                .fail(&notification.id, "channel disabled: no provider configured")
                .await;
        };
        let message = OutboundMessage::from(&notification);
        let attempts: Arc<Mutex<Vec<Attempt>>> =
            Arc::new(Mutex::new(notification.attempts.clone()));
        let first = u32::try_from(notification.attempts.len()).unwrap_or(u32::MAX);
        let outcome = guarded
            .retry()
            .run_classified(
                |n| {
                    let (guarded, message, attempts) =
                        (guarded.clone(), &message, attempts.clone());
                    let store = self.store.clone();
                    let metrics = self.metrics.clone();
                    let id = notification.id.clone();
                    async move {
                        let at = Utc::now();
                        let result = guarded.attempt(message).await;
                        let attempt = Attempt {
                            number: first.saturating_add(n),
                            status: match &result {
                                Ok(()) => crate::store::AttemptStatus::Succeeded,
                                Err(err) => err.status(),
                            },
                            error: result.as_ref().err().map(ToString::to_string),
                            at,
                        };
                        if let Some(metrics) = &metrics {
                            metrics.attempt(&guarded, attempt.status);
                        }
                        let mut all = attempts.lock().await;
                        all.push(attempt);
                        if result.is_err() {
                            // Recorded now, so a crash mid-retry leaves the
                            // history behind; success is recorded with the
                            // final status below.
                            record_attempts(&store, &id, &all).await;
                        }
                        result
                    }
                },
                AttemptError::is_retryable,
            )
            .await;
        let all = attempts.lock().await.clone();
        let update = Update::new().set("attempts", json!(all));
        let filter = Filter::all().eq("status", NotificationStatus::Pending.as_str());
        let update = match &outcome {
            Ok(()) => update
                .set("status", NotificationStatus::Sent.as_str())
                .set("sent_at", json!(Utc::now())),
            Err(err) => {
                tracing::warn!(
                    error = %err,
                    attempts = all.len(),
                    "delivery failed after the last attempt, dead-lettered"
                );
                update
                    .set("status", NotificationStatus::Failed.as_str())
                    .set("failure_reason", err.to_string())
            }
        };
        self.store
            .notifications
            .update(&notification.id, filter, &update)
            .await?;
        if let Some(metrics) = &self.metrics {
            metrics.outcome(notification.channel, outcome.is_ok());
        }
        Ok(())
    }

    /// Dead-letters a pending notification that cannot be attempted.
    async fn fail(&self, id: &str, reason: &str) -> StoreResult<()> {
        let update = Update::new()
            .set("status", NotificationStatus::Failed.as_str())
            .set("failure_reason", reason);
        let filter = Filter::all().eq("status", NotificationStatus::Pending.as_str());
        self.store.notifications.update(id, filter, &update).await?;
        Ok(())
    }
}

/// Best effort: a failure to record an intermediate attempt is logged; the
/// final update records the whole history again.
async fn record_attempts(store: &Store, id: &str, attempts: &[Attempt]) {
    let update = Update::new().set("attempts", json!(attempts));
    let filter = Filter::all().eq("status", NotificationStatus::Pending.as_str());
    if let Err(err) = store.notifications.update(id, filter, &update).await {
        tracing::warn!(notification_id = %id, error = %err, "could not record a delivery attempt");
    }
}
