//! The event itself, what handlers look like, and what can go wrong.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::pattern::validate_event_type;
use crate::db::StoreError;
use crate::redis::RedisError;

/// Something that happened, as told to subscribers.
///
/// The id is a UUID v7, so ids sort roughly by creation time; it is also the
/// idempotency key consumers deduplicate on, so a re-published event keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id (UUID v7); the same across redeliveries.
    pub id: String,
    /// Dotted type name, `[a-z0-9_.]+` (`payment.transfer.completed`).
    pub event_type: String,
    /// The tenant the event belongs to.
    pub tenant_id: String,
    /// The user the event is about, when there is one.
    pub user_id: Option<String>,
    /// Type-specific payload.
    pub data: Value,
    /// When it happened (set by the emitter, not on delivery).
    pub occurred_at: DateTime<Utc>,
    /// Ties the event to the request or saga that caused it.
    pub correlation_id: Option<String>,
}

impl Event {
    /// A new event with a fresh id, happening now; fails on a bad type name.
    pub fn new(
        event_type: &str,
        tenant_id: &str,
        user_id: Option<&str>,
        data: Value,
    ) -> Result<Self, EventError> {
        validate_event_type(event_type)?;
        Ok(Self {
            id: uuid::Uuid::now_v7().to_string(),
            event_type: event_type.to_owned(),
            tenant_id: tenant_id.to_owned(),
            user_id: user_id.map(str::to_owned),
            data,
            occurred_at: Utc::now(),
            correlation_id: None,
        })
    }

    /// The same event carrying `correlation_id`.
    pub fn with_correlation_id(mut self, correlation_id: impl Into<String>) -> Self {
        self.correlation_id = Some(correlation_id.into());
        self
    }
}

/// Why a handler could not process an event; the event is retried and, after
/// the last attempt, dead-lettered with this message.
///
/// Any error converts into it with `?`, keeping its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerError {
    message: String,
}

impl HandlerError {
    /// A failure described by `message`.
    pub fn new(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
        }
    }

    /// The failure's description.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for HandlerError {
    fn from(error: E) -> Self {
        Self::new(error)
    }
}

/// What a subscription calls for each event it receives.
pub type Handler = Arc<dyn Fn(Event) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync>;

/// Builds a [`Handler`] from an async closure:
/// `handler(|event| async move { ...; Ok(()) })`.
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    Arc::new(move |event| Box::pin(f(event)))
}

/// Why emitting, subscribing or relaying failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The event type is not `[a-z0-9_.]+` (≤ 128, no empty segment).
    #[error("invalid event type {0:?}")]
    InvalidType(String),
    /// The subscription pattern cannot be parsed.
    #[error("invalid event pattern {0:?}")]
    InvalidPattern(String),
    /// The consumer group name is not `[A-Za-z0-9_.-]+` (≤ 64).
    #[error("invalid consumer group {0:?}")]
    InvalidGroup(String),
    /// The bus was shut down.
    #[error("the event bus is shut down")]
    Closed,
    /// Redis failed (Redis Streams transport).
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// The store failed (outbox, webhooks).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An event could not be encoded or decoded.
    #[error("event encoding failed: {0}")]
    Encoding(#[from] serde_json::Error),
}

impl EventError {
    /// Wraps a raw Redis command failure.
    pub(crate) fn redis(command: &'static str, source: ::redis::RedisError) -> Self {
        Self::Redis(RedisError::Command { command, source })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn new_events_get_a_v7_id_and_a_checked_type() {
        let event = Event::new("user.registered", "t1", Some("u1"), json!({"a": 1})).unwrap();
        let id = uuid::Uuid::parse_str(&event.id).unwrap();
        assert_eq!(id.get_version_num(), 7);
        assert!(Event::new("User Registered", "t1", None, json!(null)).is_err());
    }

    #[test]
    fn events_round_trip_through_json() {
        let event = Event::new("payment.deposit", "t1", None, json!({"amount": 5}))
            .unwrap()
            .with_correlation_id("req-1");
        let back: Event = serde_json::from_str(&serde_json::to_string(&event).unwrap()).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn any_error_becomes_a_handler_error() {
        fn fails() -> Result<(), HandlerError> {
            let _: i32 = "x".parse()?;
            Ok(())
        }
        assert!(fails().unwrap_err().message().contains("invalid digit"));
    }
}
