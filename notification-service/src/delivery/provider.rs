//! What a channel provider is: something that takes one message and says
//! whether it went out, and whether a failure is worth retrying.

use std::fmt;

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use service_core::resilience::Retryable;

use crate::store::{Channel, Notification};

/// The message handed to a provider.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboundMessage {
    /// The notification (providers may use it as an idempotency key).
    pub notification_id: String,
    /// The recipient.
    pub user_id: String,
    /// The channel.
    pub channel: Channel,
    /// What it is about.
    pub kind: String,
    /// Headline.
    pub title: String,
    /// Text; may hold a one-time code, so it is never logged.
    pub body: String,
    /// Structured details.
    pub data: Option<Value>,
    /// The address, for email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

impl From<&Notification> for OutboundMessage {
    fn from(n: &Notification) -> Self {
        Self {
            notification_id: n.id.clone(),
            user_id: n.user_id.clone(),
            channel: n.channel,
            kind: n.kind.clone(),
            title: n.title.clone(),
            body: n.body.clone(),
            data: n.data.clone(),
            email: n.email.clone(),
        }
    }
}

/// Why a provider did not take a message. The text describes the failure
/// (status, connection error) and never contains the message itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderError {
    /// Whether the same message may go through on a later attempt.
    pub retryable: bool,
    /// What went wrong.
    pub message: String,
}

impl ProviderError {
    /// A transient failure (unreachable, 5xx, 429, timeout).
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            message: message.into(),
        }
    }

    /// A failure that will not go away by retrying (4xx, a bad address).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            message: message.into(),
        }
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProviderError {}

impl Retryable for ProviderError {
    fn is_retryable(&self) -> bool {
        self.retryable
    }
}

/// One channel's way out of the process. Implementations make a single
/// attempt: time limits, breakers and retries are added around them by
/// [`super::Guarded`].
pub trait Provider: Send + Sync {
    /// A short name for logs (`smtp`, `http`, `log`).
    fn name(&self) -> &'static str;

    /// Hands `message` over once.
    fn send<'a>(&'a self, message: &'a OutboundMessage)
        -> BoxFuture<'a, Result<(), ProviderError>>;
}

/// A provider reached by a JSON POST (SMS, push, webhook).
pub struct HttpProvider {
    client: reqwest::Client,
    url: String,
}

impl HttpProvider {
    /// Posts to `url` with `client` (whose own timeouts are a backstop; the
    /// channel policy's deadline applies on top).
    pub fn new(client: reqwest::Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }
}

impl Provider for HttpProvider {
    fn name(&self) -> &'static str {
        "http"
    }

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let response = self
                .client
                .post(&self.url)
                .header("idempotency-key", &message.notification_id)
                .json(message)
                .send()
                .await
                .map_err(|err| {
                    // reqwest's text names the URL, never the body.
                    ProviderError::transient(format!("request failed: {}", err.without_url()))
                })?;
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
                Err(ProviderError::transient(format!(
                    "provider answered {status}"
                )))
            } else {
                Err(ProviderError::permanent(format!(
                    "provider refused: {status}"
                )))
            }
        })
    }
}
