//! A live feed: values published by any instance reach the subscribers of
//! every instance. Subscriptions (`walletUpdated`, `notificationReceived`)
//! sit on it.
//!
//! Without Redis the feed is one in-process broadcast channel. With Redis,
//! [`LiveFeed::publish`] goes to a pub/sub channel under the accessor's
//! prefix, and the relay started by [`LiveFeed::start_relay`] hands what
//! any instance published to this instance's subscribers. A publish Redis
//! refuses is delivered locally, so a Redis outage degrades the feed to the
//! instance that produced the value instead of losing it everywhere.

use std::marker::PhantomData;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::RedisAccessor;

/// Values kept per slow subscriber before it skips ahead.
const BUFFER: usize = 1024;

/// A fan-out of `T` across instances. Cheap to clone.
pub struct LiveFeed<T> {
    channel: &'static str,
    local: broadcast::Sender<T>,
    redis: Option<RedisAccessor>,
    _values: PhantomData<fn() -> T>,
}

impl<T> Clone for LiveFeed<T> {
    fn clone(&self) -> Self {
        Self {
            channel: self.channel,
            local: self.local.clone(),
            redis: self.redis.clone(),
            _values: PhantomData,
        }
    }
}

impl<T> LiveFeed<T>
where
    T: Serialize + DeserializeOwned + Clone + Send + 'static,
{
    /// A feed named `channel`, across instances when `redis` is given (then
    /// call [`start_relay`](Self::start_relay)), within this process
    /// otherwise.
    pub fn new(channel: &'static str, redis: Option<RedisAccessor>) -> Self {
        let (local, _) = broadcast::channel(BUFFER);
        Self {
            channel,
            local,
            redis,
            _values: PhantomData,
        }
    }

    /// Announces `value` to every instance's subscribers.
    pub async fn publish(&self, value: &T) {
        if let Some(redis) = &self.redis {
            match redis.publish(self.channel, value).await {
                Ok(_) => return,
                Err(err) => tracing::warn!(
                    error = %err,
                    channel = self.channel,
                    "Redis publish failed, notifying this instance's subscribers only"
                ),
            }
        }
        // No receiver is not an error: nobody is listening right now.
        let _ = self.local.send(value.clone());
    }

    /// How many subscriptions of this instance are listening.
    pub fn subscriber_count(&self) -> usize {
        self.local.receiver_count()
    }

    /// The values `keep` accepts, from now on. A subscriber more than the
    /// buffer behind skips what it missed (and the skip is logged).
    pub fn subscribe(&self, keep: impl Fn(&T) -> bool + Send + 'static) -> BoxStream<'static, T> {
        let receiver = self.local.subscribe();
        let channel = self.channel;
        stream::unfold(receiver, move |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(value) => return Some((value, receiver)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, channel, "a live subscriber fell behind");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .filter(move |value| std::future::ready(keep(value)))
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
                match redis.subscribe(feed.channel).await {
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
                            match message.json::<T>() {
                                Ok(value) => {
                                    let _ = feed.local.send(value);
                                }
                                Err(err) => tracing::warn!(
                                    error = %err,
                                    channel = feed.channel,
                                    "unreadable live message"
                                ),
                            }
                        }
                        tracing::warn!(channel = feed.channel, "live feed lost, resubscribing");
                    }
                    Err(err) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                        tracing::warn!(
                            error = %err,
                            channel = feed.channel,
                            "cannot subscribe to the live feed"
                        );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_feed_delivers_what_the_filter_keeps() {
        let feed: LiveFeed<(String, u32)> = LiveFeed::new("test:live", None);
        let mut mine = feed.subscribe(|(user, _)| user == "a");
        feed.publish(&("b".to_owned(), 1)).await;
        feed.publish(&("a".to_owned(), 2)).await;
        assert_eq!(mine.next().await, Some(("a".to_owned(), 2)));
    }
}
