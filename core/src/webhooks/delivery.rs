//! Sending one event to one endpoint, and the log of how that went.
//!
//! The log entry's id is `{event id}:{webhook id}`, so a redelivered event
//! finds its earlier entry: one already delivered is not sent again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use super::{sign, Webhook, WebhookError, Webhooks, DELIVERIES_COLLECTION};
use crate::db::{Document, Filter, StoreError, Update, ID};
use crate::events::Event;
use crate::resilience::{with_timeout, CircuitBreaker};

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Being attempted.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Attempts are exhausted, or the failure was permanent, or the
    /// endpoint's breaker was open.
    Failed,
}

impl DeliveryStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One entry of the delivery log.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookDelivery {
    /// `{event id}:{webhook id}`.
    pub id: String,
    /// The event delivered.
    pub event_id: String,
    /// The endpoint delivered to.
    pub webhook_id: String,
    /// The event's type.
    pub event_type: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made (including ones refused by an open breaker).
    pub attempts: u32,
    /// The last attempt's failure.
    pub last_error: Option<String>,
    /// The last HTTP status received.
    pub last_status_code: Option<u16>,
    /// When the first attempt started.
    pub created_at: DateTime<Utc>,
    /// When the entry last changed.
    pub updated_at: DateTime<Utc>,
}

impl WebhookDelivery {
    pub(super) fn from_document(doc: &Document) -> Option<Self> {
        let time = |field: &str| {
            doc.get(field)
                .and_then(Value::as_i64)
                .and_then(DateTime::from_timestamp_millis)
                .unwrap_or_default()
        };
        Some(Self {
            id: doc.get(ID)?.as_str()?.to_owned(),
            event_id: doc.get("event_id")?.as_str()?.to_owned(),
            webhook_id: doc.get("webhook_id")?.as_str()?.to_owned(),
            event_type: doc.get("event_type")?.as_str()?.to_owned(),
            status: DeliveryStatus::parse(doc.get("status")?.as_str()?)?,
            attempts: doc
                .get("attempts")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            last_error: doc
                .get("last_error")
                .and_then(Value::as_str)
                .map(str::to_owned),
            last_status_code: doc
                .get("last_status_code")
                .and_then(Value::as_u64)
                .and_then(|n| u16::try_from(n).ok()),
            created_at: time("created_at"),
            updated_at: time("updated_at"),
        })
    }
}

pub(super) fn delivery_id(event_id: &str, webhook_id: &str) -> String {
    format!("{event_id}:{webhook_id}")
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("circuit breaker {0} is open")]
    Open(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Transport(String),
    #[error("endpoint answered HTTP {0}")]
    Status(u16),
    #[error(transparent)]
    Store(StoreError),
}

impl AttemptError {
    /// 408, 429, 5xx, timeouts and connection errors may pass; other 4xx,
    /// an open breaker and a failing log will not.
    fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Transport(_) => true,
            Self::Status(code) => is_transient_status(*code),
            Self::Open(_) | Self::Store(_) => false,
        }
    }

    fn status(&self) -> Option<u16> {
        match self {
            Self::Status(code) => Some(*code),
            _ => None,
        }
    }
}

fn is_transient_status(code: u16) -> bool {
    code == 408 || code == 429 || code >= 500
}

fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

impl Webhooks {
    /// Sends `event` to `webhook` (unless already delivered) with retries,
    /// logging every attempt.
    #[tracing::instrument(
        skip_all,
        fields(webhook_id = %webhook.id, event_id = %event.id, event_type = %event.event_type)
    )]
    pub(super) async fn deliver_to(
        &self,
        webhook: &Webhook,
        event: &Event,
    ) -> Result<WebhookDelivery, WebhookError> {
        let db = &self.inner.db;
        let id = delivery_id(&event.id, &webhook.id);
        if let Some(existing) = db.get(DELIVERIES_COLLECTION, &id).await? {
            if let Some(done) = WebhookDelivery::from_document(&existing)
                .filter(|d| d.status == DeliveryStatus::Delivered)
            {
                return Ok(done);
            }
        } else if let Value::Object(doc) = json!({
            ID: id,
            "event_id": event.id,
            "webhook_id": webhook.id,
            "event_type": event.event_type,
            "status": DeliveryStatus::Pending.as_str(),
            "attempts": 0,
            "last_error": Value::Null,
            "last_status_code": Value::Null,
            "created_at": now_millis(),
            "updated_at": now_millis(),
        }) {
            match db.insert(DELIVERIES_COLLECTION, doc).await {
                Ok(()) | Err(StoreError::Duplicate { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        }

        let body =
            serde_json::to_vec(event).map_err(|err| WebhookError::Invalid(err.to_string()))?;
        let breaker = self.breaker(&webhook.id);
        let outcome = self
            .inner
            .config
            .retry
            .run_classified(
                |_attempt| async {
                    let result = self.attempt(webhook, event, &body, &breaker).await;
                    let mut update = Update::new()
                        .inc("attempts", 1)
                        .set("updated_at", now_millis());
                    update = match &result {
                        Ok(code) => update
                            .set("last_status_code", *code)
                            .set("last_error", Value::Null),
                        Err(err) => update
                            .set(
                                "last_status_code",
                                err.status().map_or(Value::Null, Value::from),
                            )
                            .set("last_error", err.to_string()),
                    };
                    db.update_one(DELIVERIES_COLLECTION, &Filter::id(&id), &update)
                        .await
                        .map_err(AttemptError::Store)?;
                    result
                },
                AttemptError::is_retryable,
            )
            .await;
        let status = match outcome {
            Ok(_) => DeliveryStatus::Delivered,
            Err(AttemptError::Store(err)) => return Err(err.into()),
            Err(err) => {
                tracing::warn!(error = %err, "webhook delivery failed");
                DeliveryStatus::Failed
            }
        };
        let update = Update::new()
            .set("status", status.as_str())
            .set("updated_at", now_millis());
        let doc = db
            .update_one(DELIVERIES_COLLECTION, &Filter::id(&id), &update)
            .await?
            .ok_or_else(|| StoreError::Backend(format!("delivery {id} vanished")))?;
        WebhookDelivery::from_document(&doc)
            .ok_or_else(|| StoreError::Backend(format!("delivery {id} is malformed")).into())
    }

    /// One signed POST through the endpoint's breaker, within the timeout;
    /// the HTTP status on a 2xx.
    async fn attempt(
        &self,
        webhook: &Webhook,
        event: &Event,
        body: &[u8],
        breaker: &CircuitBreaker,
    ) -> Result<u16, AttemptError> {
        let timeout = self.inner.config.timeout;
        let timestamp = Utc::now().timestamp();
        let signature = sign(webhook.secret.expose_secret().as_bytes(), timestamp, body);
        let request = self
            .inner
            .client
            .post(&webhook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Webhook-Id", &event.id)
            .header("X-Webhook-Event", &event.event_type)
            .header("X-Webhook-Timestamp", timestamp.to_string())
            .header("X-Webhook-Signature", signature)
            .body(body.to_vec());
        let call = async {
            let response = with_timeout(timeout, request.send())
                .await
                .map_err(|_| AttemptError::Timeout(timeout))?
                .map_err(|err| {
                    if err.is_timeout() {
                        AttemptError::Timeout(timeout)
                    } else {
                        AttemptError::Transport(err.to_string())
                    }
                })?;
            let status = response.status().as_u16();
            if response.status().is_success() {
                Ok(status)
            } else {
                Err(AttemptError::Status(status))
            }
        };
        let counts_as_failure = |err: &AttemptError| match err {
            AttemptError::Status(code) => is_transient_status(*code),
            _ => true,
        };
        match breaker.call_classified(call, counts_as_failure).await {
            Ok(status) => Ok(status),
            Err(err) => Err(err
                .into_inner()
                .unwrap_or_else(|| AttemptError::Open(breaker.name().to_owned()))),
        }
    }
}
