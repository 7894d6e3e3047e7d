//! Calling a handler: attempts, backoff, time limits and dead letters.
//!
//! Both transports hand every received event to [`attempt_delivery`], so
//! retry and failure behave the same whichever carries the event; only
//! acknowledgement and storage of dead letters differ.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::bus::BusConfig;
use super::{Event, Handler, HandlerError};

/// An event a group gave up on, with the last error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The event (`None` when the stored message was not a readable event).
    pub event: Option<Event>,
    /// The consumer group that failed to handle it.
    pub group: String,
    /// The last handler error (or why the message was unreadable).
    pub error: String,
    /// Handler attempts (or deliveries) made.
    pub attempts: u32,
    /// When the group gave up.
    pub failed_at: DateTime<Utc>,
}

/// How handling one received event ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The handler succeeded: acknowledge and remember the id.
    Handled,
    /// Every attempt failed: dead-letter, then acknowledge.
    Failed {
        /// The last error.
        error: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The bus is shutting down between attempts: leave the event
    /// unacknowledged so it is redelivered (Redis) or dropped (in-process).
    Abandoned,
}

/// One subscription's handler with its group, shared by its consumer tasks.
pub(crate) struct Subscriber {
    pub(crate) group: String,
    pub(crate) handler: Handler,
}

/// Runs the handler up to `config.retry.max_attempts` times with backoff,
/// each attempt bounded by `config.handler_timeout`; a panic counts as a
/// failed attempt so a poison event cannot kill the consumer.
pub(crate) async fn attempt_delivery(
    subscriber: &Arc<Subscriber>,
    event: &Event,
    config: &BusConfig,
    cancel: &CancellationToken,
) -> Outcome {
    let max_attempts = config.retry.max_attempts.max(1);
    let mut attempt = 1;
    loop {
        let metrics = config.metrics.as_ref();
        let error = match invoke(subscriber, event, config.handler_timeout).await {
            Ok(()) => {
                if let Some(metrics) = metrics {
                    metrics.handled(&event.event_type, &subscriber.group);
                }
                return Outcome::Handled;
            }
            Err(error) => error,
        };
        if let Some(metrics) = metrics {
            metrics.failed(&event.event_type, &subscriber.group);
        }
        if attempt >= max_attempts {
            tracing::warn!(
                event_type = %event.event_type,
                event_id = %event.id,
                group = %subscriber.group,
                attempts = attempt,
                error = %error,
                "handler kept failing, dead-lettering the event"
            );
            return Outcome::Failed {
                error: error.to_string(),
                attempts: attempt,
            };
        }
        let delay = config.retry.delay_for(attempt);
        tracing::debug!(
            event_type = %event.event_type,
            event_id = %event.id,
            group = %subscriber.group,
            attempt,
            error = %error,
            "handler failed, retrying"
        );
        tokio::select! {
            () = cancel.cancelled() => return Outcome::Abandoned,
            () = tokio::time::sleep(delay) => {}
        }
        attempt += 1;
    }
}

#[tracing::instrument(
    skip_all,
    fields(event_type = %event.event_type, event_id = %event.id, group = %subscriber.group)
)]
async fn invoke(
    subscriber: &Subscriber,
    event: &Event,
    timeout: Duration,
) -> Result<(), HandlerError> {
    let call = AssertUnwindSafe((subscriber.handler)(event.clone())).catch_unwind();
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(result)) => result,
        Ok(Err(_panic)) => Err(HandlerError::new("the handler panicked")),
        Err(_) => Err(HandlerError::new(format!(
            "the handler did not finish within {timeout:?}"
        ))),
    }
}
