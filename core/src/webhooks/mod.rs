//! Webhooks: events pushed to URLs outside the platform, signed.
//!
//! A partner registers a URL, the event patterns it wants and a shared
//! secret. Each matching event is POSTed to it as JSON with these headers:
//!
//! | Header                | Value                                                       |
//! |-----------------------|-------------------------------------------------------------|
//! | `X-Webhook-Id`        | the event id: the same on every retry, for deduplication    |
//! | `X-Webhook-Event`     | the event type (`payment.transfer.completed`)               |
//! | `X-Webhook-Timestamp` | unix seconds when this attempt was signed                   |
//! | `X-Webhook-Signature` | `v1=` + hex HMAC-SHA256 of `"{timestamp}.{body}"` with the secret |
//!
//! To verify, a receiver recomputes the HMAC over the timestamp header, a
//! dot and the raw body bytes, compares it with the signature in constant
//! time ([`verify`] does exactly that), and refuses timestamps far from its
//! clock (say more than 5 minutes) to stop replays. See `docs/webhooks.md`.
//!
//! Each endpoint sits behind its own [`CircuitBreaker`], a per-attempt
//! timeout and a [`RetryPolicy`]: a 2xx is success; 408, 429, 5xx, timeouts
//! and connection errors are retried; any other 4xx fails at once. Every
//! delivery is recorded in the `webhook_deliveries` collection.
//!
//! The HTTP client is built without TLS for now, so only `http://` URLs can
//! be reached; `https://` registrations are accepted but fail to deliver.

mod delivery;
mod signature;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

pub use delivery::{DeliveryStatus, WebhookDelivery};
pub use signature::{sign, verify};

use crate::db::{Database, Document, Filter, FindOptions, IndexSpec, StoreError, Update, ID};
use crate::events::{handler, Event, Handler, HandlerError, TypePattern};
use crate::resilience::{BreakerConfig, CircuitBreaker, RetryPolicy};

/// Where registrations are stored.
pub const WEBHOOKS_COLLECTION: &str = "webhooks";
/// Where deliveries are logged.
pub const DELIVERIES_COLLECTION: &str = "webhook_deliveries";

/// Why a webhook operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The registration is not acceptable (bad URL, pattern or secret).
    #[error("invalid webhook: {0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HTTP client could not be built.
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(String),
}

/// A registered endpoint. `Debug` never shows the secret.
#[derive(Clone)]
pub struct Webhook {
    /// Registration id.
    pub id: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// Event patterns (see [`crate::events`]) this endpoint receives.
    pub events: Vec<String>,
    /// The HMAC key shared with the receiver.
    pub secret: SecretString,
    /// Inactive endpoints receive nothing.
    pub active: bool,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &"[REDACTED]")
            .field("active", &self.active)
            .finish()
    }
}

impl Webhook {
    fn matches(&self, event_type: &str) -> bool {
        self.events.iter().any(|pattern| {
            TypePattern::parse(pattern).is_ok_and(|pattern| pattern.matches(event_type))
        })
    }

    fn from_document(doc: &Document) -> Option<Self> {
        Some(Self {
            id: doc.get(ID)?.as_str()?.to_owned(),
            url: doc.get("url")?.as_str()?.to_owned(),
            events: doc
                .get("events")?
                .as_array()?
                .iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect(),
            secret: SecretString::from(doc.get("secret")?.as_str()?.to_owned()),
            active: doc.get("active")?.as_bool()?,
            created_at: doc
                .get("created_at")
                .and_then(Value::as_i64)
                .and_then(DateTime::from_timestamp_millis)
                .unwrap_or_default(),
        })
    }
}

/// Delivery settings.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Longest one POST may take.
    pub timeout: Duration,
    /// Attempts per delivery and the backoff between them.
    pub retry: RetryPolicy,
    /// When an endpoint's breaker opens.
    pub breaker: BreakerConfig,
}

impl Default for WebhookConfig {
    /// 5 s per attempt, the standard retry policy, the default breaker.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            retry: RetryPolicy::standard(),
            breaker: BreakerConfig::default(),
        }
    }
}

/// Registers endpoints and delivers events to them. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    client: reqwest::Client,
    config: WebhookConfig,
    /// One breaker per endpoint, so one dead receiver does not stop others.
    breakers: Mutex<HashMap<String, CircuitBreaker>>,
}

impl fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhooks")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Webhooks {
    /// Webhooks stored in `db`.
    pub fn new(db: Arc<Database>, config: WebhookConfig) -> Result<Self, WebhookError> {
        // No client-level timeout: each attempt is bounded by `with_timeout`,
        // which reports it as a timeout rather than a transport error.
        let client = reqwest::Client::builder()
            .build()
            .map_err(|err| WebhookError::Client(err.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                client,
                config,
                breakers: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The indexes of the delivery log; pass to [`Database::ensure_indexes`].
    pub fn indexes() -> Vec<IndexSpec> {
        vec![IndexSpec::new(
            DELIVERIES_COLLECTION,
            "webhook_deliveries_event",
            &["event_id"],
        )]
    }

    /// Registers an active endpoint for events matching any of `events`.
    pub async fn register(
        &self,
        url: &str,
        events: Vec<String>,
        secret: SecretString,
    ) -> Result<Webhook, WebhookError> {
        let parsed =
            reqwest::Url::parse(url).map_err(|err| WebhookError::Invalid(format!("url: {err}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(WebhookError::Invalid("url must be http(s)".to_owned()));
        }
        if events.is_empty() {
            return Err(WebhookError::Invalid("no event patterns".to_owned()));
        }
        for pattern in &events {
            TypePattern::parse(pattern).map_err(|err| WebhookError::Invalid(err.to_string()))?;
        }
        if secret.expose_secret().len() < 16 {
            return Err(WebhookError::Invalid(
                "the secret must have at least 16 characters".to_owned(),
            ));
        }
        let webhook = Webhook {
            id: uuid::Uuid::now_v7().to_string(),
            url: url.to_owned(),
            events,
            secret,
            active: true,
            created_at: Utc::now(),
        };
        let Value::Object(doc) = json!({
            ID: webhook.id,
            "url": webhook.url,
            "events": webhook.events,
            "secret": webhook.secret.expose_secret(),
            "active": true,
            "created_at": webhook.created_at.timestamp_millis(),
        }) else {
            return Err(WebhookError::Invalid("not an object".to_owned()));
        };
        self.inner.db.insert(WEBHOOKS_COLLECTION, doc).await?;
        Ok(webhook)
    }

    /// Every registration, in id (registration) order.
    pub async fn list(&self) -> Result<Vec<Webhook>, WebhookError> {
        let docs = self
            .inner
            .db
            .find(WEBHOOKS_COLLECTION, &Filter::all(), &FindOptions::by_id())
            .await?;
        Ok(docs.iter().filter_map(Webhook::from_document).collect())
    }

    /// Switches an endpoint on or off; whether it exists.
    pub async fn set_active(&self, id: &str, active: bool) -> Result<bool, WebhookError> {
        let update = Update::new().set("active", active);
        let found = self
            .inner
            .db
            .update_one(WEBHOOKS_COLLECTION, &Filter::id(id), &update)
            .await?;
        Ok(found.is_some())
    }

    /// Removes a registration; whether it existed.
    pub async fn delete(&self, id: &str) -> Result<bool, WebhookError> {
        let deleted = self
            .inner
            .db
            .delete_one(WEBHOOKS_COLLECTION, &Filter::id(id))
            .await?;
        self.breakers().remove(id);
        Ok(deleted)
    }

    /// Delivers `event` to every active endpoint whose patterns match it and
    /// returns the logged outcome of each. Endpoint failures are outcomes
    /// (status `failed`), not errors; only the store failing is an error.
    pub async fn deliver(&self, event: &Event) -> Result<Vec<WebhookDelivery>, WebhookError> {
        let active = self
            .inner
            .db
            .find(
                WEBHOOKS_COLLECTION,
                &Filter::all().eq("active", true),
                &FindOptions::by_id(),
            )
            .await?;
        let mut outcomes = Vec::new();
        for webhook in active.iter().filter_map(Webhook::from_document) {
            if webhook.matches(&event.event_type) {
                outcomes.push(self.deliver_to(&webhook, event).await?);
            }
        }
        Ok(outcomes)
    }

    /// An event handler delivering to webhooks, for
    /// `bus.on_pattern("#", "webhooks", webhooks.handler())`. It fails (and
    /// the bus retries it) only when the delivery log cannot be written;
    /// deliveries already logged as delivered are not sent again.
    pub fn handler(&self) -> Handler {
        let webhooks = self.clone();
        handler(move |event| {
            let webhooks = webhooks.clone();
            async move {
                webhooks
                    .deliver(&event)
                    .await
                    .map(drop)
                    .map_err(HandlerError::new)
            }
        })
    }

    /// The logged delivery of `event_id` to `webhook_id`, if any.
    pub async fn delivery(
        &self,
        event_id: &str,
        webhook_id: &str,
    ) -> Result<Option<WebhookDelivery>, WebhookError> {
        let doc = self
            .inner
            .db
            .get(
                DELIVERIES_COLLECTION,
                &delivery::delivery_id(event_id, webhook_id),
            )
            .await?;
        Ok(doc.as_ref().and_then(WebhookDelivery::from_document))
    }

    fn breaker(&self, webhook_id: &str) -> CircuitBreaker {
        self.breakers()
            .entry(webhook_id.to_owned())
            .or_insert_with(|| {
                CircuitBreaker::new(
                    format!("webhook-{webhook_id}"),
                    self.inner.config.breaker.clone(),
                )
            })
            .clone()
    }

    fn breakers(&self) -> std::sync::MutexGuard<'_, HashMap<String, CircuitBreaker>> {
        self.inner
            .breakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
