//! Cross-instance invalidation: every write or delete is announced on the
//! cache's Redis channel, and every instance drops the named L1 entries.
//!
//! Pub/sub is fire-and-forget, so a message can be lost while the
//! subscription is down. After resubscribing, an instance therefore clears
//! its whole L1; [`super::CacheConfig::l1_max_ttl`] bounds staleness for
//! anything the clear cannot catch (an instance that never notices the outage).

use std::{sync::Weak, time::Duration};

use futures::{stream::BoxStream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::layered::Inner;
use crate::redis::PubSubMessage;

/// The message on the channel.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Invalidation {
    /// The instance that made the change; it skips its own messages.
    pub(super) origin: Uuid,
    /// Exact keys to drop.
    #[serde(default)]
    pub(super) keys: Vec<String>,
    /// Redis glob patterns to drop.
    #[serde(default)]
    pub(super) patterns: Vec<String>,
}

const FIRST_RETRY: Duration = Duration::from_millis(250);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// Applies other instances' invalidations until `stop` is cancelled or the
/// cache is dropped. Holds the cache only weakly, and only while applying a
/// message, so dropping the last handle ends the task.
pub(super) async fn listen(
    cache: Weak<Inner>,
    mut subscription: Option<BoxStream<'static, PubSubMessage>>,
    stop: CancellationToken,
) {
    let mut retry = FIRST_RETRY;
    loop {
        let mut messages = match subscription.take() {
            Some(messages) => messages,
            None => match resubscribe(&cache, &stop).await {
                Resubscribed::Yes(messages) => {
                    retry = FIRST_RETRY;
                    messages
                }
                Resubscribed::No => {
                    if !pause(&stop, retry).await {
                        return;
                    }
                    retry = (retry * 2).min(LAST_RETRY);
                    continue;
                }
                Resubscribed::Stop => return,
            },
        };
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => return,
                message = messages.next() => message,
            };
            let Some(message) = message else { break };
            let Some(inner) = cache.upgrade() else { return };
            apply(&inner, &message).await;
        }
        if let Some(inner) = cache.upgrade() {
            tracing::warn!(cache = %inner.name, "cache invalidation subscription lost; resubscribing");
        }
        if !pause(&stop, retry).await {
            return;
        }
    }
}

enum Resubscribed {
    Yes(BoxStream<'static, PubSubMessage>),
    No,
    Stop,
}

async fn resubscribe(cache: &Weak<Inner>, stop: &CancellationToken) -> Resubscribed {
    let Some((redis, channel)) = cache.upgrade().and_then(|inner| {
        let l2 = inner.l2.as_ref()?;
        Some((l2.redis.clone(), l2.channel.clone()))
    }) else {
        return Resubscribed::Stop;
    };
    let attempt = tokio::select! {
        () = stop.cancelled() => return Resubscribed::Stop,
        attempt = redis.subscribe(&channel) => attempt,
    };
    let Some(inner) = cache.upgrade() else {
        return Resubscribed::Stop;
    };
    match attempt {
        Ok(messages) => {
            // Whatever was published while we were away is lost.
            inner.generations.bump_all();
            inner.l1.invalidate_all();
            tracing::info!(cache = %inner.name, "cache invalidation subscription restored; L1 cleared");
            Resubscribed::Yes(messages)
        }
        Err(error) => {
            if let Some(l2) = &inner.l2 {
                l2.health.warn(&inner.name, "subscribe", &error.to_string());
            }
            Resubscribed::No
        }
    }
}

/// Sleeps unless stopped; `false` means stop.
async fn pause(stop: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

async fn apply(inner: &Inner, message: &PubSubMessage) {
    let invalidation: Invalidation = match message.json() {
        Ok(invalidation) => invalidation,
        Err(error) => {
            tracing::debug!(cache = %inner.name, %error, "ignoring a malformed invalidation message");
            return;
        }
    };
    if invalidation.origin == inner.instance {
        return;
    }
    for key in &invalidation.keys {
        inner.generations.bump(key);
        inner.l1.invalidate(key.as_str()).await;
    }
    for pattern in &invalidation.patterns {
        inner.invalidate_l1_matching(pattern).await;
    }
}
