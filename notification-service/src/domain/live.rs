//! The live feed behind `notificationReceived`: every IN_APP notification,
//! fanned out to this instance's subscribers, and with Redis configured
//! published on a Redis channel first so every instance's subscribers see
//! it, whichever instance created it.

use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use service_core::redis::RedisAccessor;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::store::Notification;

/// The Redis channel (under the service prefix) notifications cross on.
const CHANNEL: &str = "notifications:live";

/// Messages kept per slow subscriber before it skips ahead.
const BUFFER: usize = 1024;

/// Fan-out of new notifications. Cheap to clone.
#[derive(Clone)]
pub struct LiveFeed {
    local: broadcast::Sender<Notification>,
    redis: Option<RedisAccessor>,
}

impl LiveFeed {
    /// A feed within this process only.
    pub fn local() -> Self {
        let (local, _) = broadcast::channel(BUFFER);
        Self { local, redis: None }
    }

    /// A feed across instances through Redis pub/sub. Call
    /// [`start_relay`](Self::start_relay) to receive what any instance publishes.
    pub fn with_redis(redis: RedisAccessor) -> Self {
        let (local, _) = broadcast::channel(BUFFER);
        Self {
            local,
            redis: Some(redis),
        }
    }

    /// Announces `notification`. With Redis, it reaches local subscribers
    /// through the relay; if Redis refuses, it is delivered locally only.
    pub async fn publish(&self, notification: &Notification) {
        if let Some(redis) = &self.redis {
            match redis.publish(CHANNEL, notification).await {
                Ok(_) => return,
                Err(err) => tracing::warn!(
                    error = %err,
                    "Redis publish failed, notifying this instance's subscribers only"
                ),
            }
        }
        // No receiver is not an error: nobody is listening right now.
        let _ = self.local.send(notification.clone());
    }

    /// The notifications of `user_id` from now on. A subscriber that falls
    /// more than the buffer behind skips what it missed.
    pub fn subscribe(&self, user_id: String) -> BoxStream<'static, Notification> {
        let receiver = self.local.subscribe();
        stream::unfold(receiver, |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(n) => return Some((n, receiver)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "a live subscriber fell behind");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .filter(move |n| std::future::ready(n.user_id == user_id))
        .boxed()
    }

    /// With Redis: subscribes to the shared channel before returning (so a
    /// publish after this returns is received), then forwards every message
    /// to local subscribers in the background, resubscribing after a lost
    /// connection, until `cancel`. `None` without Redis.
    pub async fn start_relay(
        &self,
        cancel: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let redis = self.redis.clone()?;
        let feed = self.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let handle = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            let mut ready = Some(ready_tx);
            while !cancel.is_cancelled() {
                match redis.subscribe(CHANNEL).await {
                    Ok(mut messages) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                        backoff = Duration::from_millis(100);
                        loop {
                            let message = tokio::select! {
                                () = cancel.cancelled() => return,
                                message = messages.next() => message,
                            };
                            let Some(message) = message else { break };
                            match message.json::<Notification>() {
                                Ok(n) => {
                                    let _ = feed.local.send(n);
                                }
                                Err(err) => {
                                    tracing::warn!(error = %err, "unreadable live message")
                                }
                            }
                        }
                        tracing::warn!("live feed subscription lost, resubscribing");
                    }
                    Err(err) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                        tracing::warn!(error = %err, "cannot subscribe to the live feed")
                    }
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
        let _ = ready_rx.await;
        Some(handle)
    }
}
