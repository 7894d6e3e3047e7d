//! The in-process transport, for the one-process mode.
//!
//! Each subscription owns a bounded channel and a task draining it, so a slow
//! subscriber slows its emitters (backpressure) instead of growing memory
//! without bound. Retry, dead letters and idempotency follow the same rules
//! as on Redis; what is queued is lost when the process stops.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use chrono::Utc;
use moka::future::Cache;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::bus::BusConfig;
use super::delivery::{attempt_delivery, DeadLetter, Outcome, Subscriber};
use super::{Event, EventError, TypePattern};

/// One subscription: where to send the events it matches.
struct Route {
    pattern: TypePattern,
    group: String,
    sender: mpsc::Sender<Event>,
}

pub(crate) struct InProcess {
    shared: Arc<Shared>,
}

struct Shared {
    routes: RwLock<Vec<Route>>,
    dead: Mutex<VecDeque<DeadLetter>>,
    dead_capacity: usize,
    /// `(group, event id)` pairs already handled, bounded and expiring.
    handled: Cache<(String, String), ()>,
}

impl InProcess {
    pub(crate) fn new(config: &BusConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                routes: RwLock::new(Vec::new()),
                dead: Mutex::new(VecDeque::new()),
                dead_capacity: config.dead_letter_capacity.max(1),
                handled: Cache::builder()
                    .max_capacity(config.idempotency_capacity)
                    .time_to_live(config.idempotency_ttl)
                    .build(),
            }),
        }
    }

    /// Queues `event` for one subscription per matching group; waits while a
    /// queue is full.
    pub(crate) async fn publish(&self, event: &Event) -> Result<(), EventError> {
        let senders: Vec<mpsc::Sender<Event>> = {
            let routes = self
                .shared
                .routes
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let mut groups: Vec<&str> = Vec::new();
            let mut senders = Vec::new();
            for route in routes.iter() {
                // A closed route is a subscription that stopped: its group
                // is served by the group's other subscriptions, if any.
                if route.pattern.matches(&event.event_type)
                    && !route.sender.is_closed()
                    && !groups.contains(&&*route.group)
                {
                    groups.push(&route.group);
                    senders.push(route.sender.clone());
                }
            }
            senders
        };
        for sender in senders {
            sender
                .send(event.clone())
                .await
                .map_err(|_| EventError::Closed)?;
        }
        Ok(())
    }

    pub(crate) fn subscribe(
        &self,
        pattern: TypePattern,
        subscriber: Arc<Subscriber>,
        config: BusConfig,
        cancel: CancellationToken,
    ) -> JoinHandle<()> {
        let (sender, mut receiver) = mpsc::channel(config.channel_capacity.max(1));
        {
            let mut routes = self
                .shared
                .routes
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            routes.retain(|route| !route.sender.is_closed());
            routes.push(Route {
                pattern,
                group: subscriber.group.clone(),
                sender,
            });
        }
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    event = receiver.recv() => match event {
                        Some(event) => event,
                        None => return,
                    },
                };
                shared.consume(&subscriber, event, &config, &cancel).await;
            }
            // Stopping: the route takes nothing more (emitters move on to
            // the group's other subscriptions) and what it had accepted
            // gets one attempt each, within the bus's drain timeout.
            receiver.close();
            while let Some(event) = receiver.recv().await {
                shared.consume(&subscriber, event, &config, &cancel).await;
            }
        })
    }

    pub(crate) fn dead_letters(&self, event_type: &str, limit: usize) -> Vec<DeadLetter> {
        let dead = self
            .shared
            .dead
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let matching: Vec<&DeadLetter> = dead
            .iter()
            .filter(|d| d.event.as_ref().is_some_and(|e| e.event_type == event_type))
            .collect();
        let skip = matching.len().saturating_sub(limit);
        matching.into_iter().skip(skip).cloned().collect()
    }
}

impl Shared {
    async fn consume(
        &self,
        subscriber: &Arc<Subscriber>,
        event: Event,
        config: &BusConfig,
        cancel: &CancellationToken,
    ) {
        let key = (subscriber.group.clone(), event.id.clone());
        if self.handled.contains_key(&key) {
            tracing::debug!(event_id = %event.id, group = %subscriber.group, "already handled, skipping");
            return;
        }
        match attempt_delivery(subscriber, &event, config, cancel).await {
            Outcome::Handled => self.handled.insert(key, ()).await,
            Outcome::Failed { error, attempts } => {
                if let Some(metrics) = &config.metrics {
                    metrics.dead_lettered(&event.event_type, &subscriber.group);
                }
                let mut dead = self.dead.lock().unwrap_or_else(PoisonError::into_inner);
                if dead.len() >= self.dead_capacity {
                    dead.pop_front();
                }
                dead.push_back(DeadLetter {
                    event: Some(event),
                    group: subscriber.group.clone(),
                    error,
                    attempts,
                    failed_at: Utc::now(),
                });
            }
            Outcome::Abandoned => {
                tracing::warn!(event_id = %event.id, group = %subscriber.group, "shutting down, in-process event dropped before it was handled");
            }
        }
    }
}
