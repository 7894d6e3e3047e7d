//! The delivery queue: jobs per external channel, consumed with at most the
//! channel's `concurrency` sends in flight.
//!
//! * **In process** (embedded mode): one bounded channel per provider
//!   channel. A dispatcher takes a job only once it holds one of the
//!   channel's permits, so a slow provider fills its own queue and then
//!   makes producers wait (backpressure) without touching other channels.
//! * **Redis Streams** (Redis configured): the core event bus on its own
//!   stream names (`notification.delivery.<channel>`), acknowledged after
//!   the job ran, claimed by another instance if this one dies. Each channel
//!   gets `concurrency` consumers reading one message at a time, which is
//!   the bound per instance.
//!
//! Either way, a job only carries the notification id: the notification
//! itself, and whether it is still pending, is read from the store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use service_core::events::{handler, BusConfig, EventBus, EventError, HandlerError, StreamsConfig};
use service_core::redis::RedisAccessor;
use service_core::resilience::RetryPolicy;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Deliverer;
use crate::config::NotificationConfig;
use crate::store::Channel;

/// Consumer group of the delivery streams.
const DELIVERY_GROUP: &str = "notification-delivery";

/// One notification to deliver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// The notification.
    pub notification_id: String,
    /// Its channel (which queue it travels on).
    pub channel: Channel,
    /// Its owner's tenant.
    pub tenant_id: String,
}

impl Job {
    fn event_type(channel: Channel) -> String {
        format!("notification.delivery.{}", channel.slug())
    }
}

/// Why a job could not be queued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The channel has no queue (no provider) or the service is stopping.
    #[error("the {0} delivery queue is closed")]
    Closed(Channel),
    /// The durable queue refused the job.
    #[error(transparent)]
    Bus(#[from] EventError),
}

enum Transport {
    InProcess(BTreeMap<Channel, mpsc::Sender<Job>>),
    Redis(EventBus),
}

/// Queues jobs and runs their consumers. Cheap to clone.
#[derive(Clone)]
pub struct DeliveryQueue {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl DeliveryQueue {
    /// An in-process queue of `capacity` jobs per channel, with consumers
    /// started for every channel `deliverer` has a provider for.
    pub fn in_process(deliverer: Deliverer, config: &NotificationConfig, capacity: usize) -> Self {
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let mut senders = BTreeMap::new();
        for channel in deliverer.providers().channels() {
            let (tx, rx) = mpsc::channel(capacity.max(1));
            senders.insert(channel, tx);
            let permits = Arc::new(Semaphore::new(config.policy(channel).concurrency));
            tracker.spawn(dispatch(
                rx,
                permits,
                deliverer.clone(),
                tracker.clone(),
                cancel.clone(),
            ));
        }
        Self {
            inner: Arc::new(Inner {
                transport: Transport::InProcess(senders),
                tracker,
                cancel,
            }),
        }
    }

    /// A durable queue on Redis Streams under `redis`'s prefix, with
    /// `concurrency` consumers per enabled channel.
    pub async fn redis_streams(
        deliverer: Deliverer,
        config: &NotificationConfig,
        redis: RedisAccessor,
    ) -> Result<Self, QueueError> {
        let worst = deliverer
            .providers()
            .channels()
            .iter()
            .filter_map(|c| deliverer.providers().get(*c).map(|g| g.worst_case()))
            .max()
            .unwrap_or(Duration::from_secs(60));
        let bus = EventBus::redis_streams(
            redis,
            BusConfig {
                // The deliverer retries the provider itself; the bus only
                // retries a job whose store access failed.
                retry: RetryPolicy {
                    max_attempts: 3,
                    initial_delay: Duration::from_millis(200),
                    max_delay: Duration::from_secs(2),
                    multiplier: 2.0,
                    jitter: true,
                },
                handler_timeout: worst + Duration::from_secs(30),
                ..BusConfig::default()
            },
            StreamsConfig {
                read_batch: 1,
                claim_timeout: (worst + Duration::from_secs(60)) * 2,
                poll_interval: Duration::from_millis(50),
                ..StreamsConfig::default()
            },
        );
        for channel in deliverer.providers().channels() {
            for _ in 0..config.policy(channel).concurrency {
                let deliverer = deliverer.clone();
                bus.on(
                    &Job::event_type(channel),
                    DELIVERY_GROUP,
                    handler(move |event| {
                        let deliverer = deliverer.clone();
                        async move {
                            let job: Job = serde_json::from_value(event.data)
                                .map_err(|err| HandlerError::new(format!("bad job: {err}")))?;
                            deliverer.deliver(&job).await?;
                            Ok(())
                        }
                    }),
                )
                .await?;
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                transport: Transport::Redis(bus),
                tracker: TaskTracker::new(),
                cancel: CancellationToken::new(),
            }),
        })
    }

    /// Whether jobs survive a restart (Redis Streams).
    pub fn is_durable(&self) -> bool {
        matches!(self.inner.transport, Transport::Redis(_))
    }

    /// Queues `job`; in process, waits while the channel's queue is full.
    pub async fn enqueue(&self, job: Job) -> Result<(), QueueError> {
        match &self.inner.transport {
            Transport::InProcess(senders) => {
                let sender = senders
                    .get(&job.channel)
                    .ok_or(QueueError::Closed(job.channel))?;
                let channel = job.channel;
                sender
                    .send(job)
                    .await
                    .map_err(|_| QueueError::Closed(channel))
            }
            Transport::Redis(bus) => {
                let data = serde_json::to_value(&job).map_err(EventError::from)?;
                bus.emit(&Job::event_type(job.channel), &job.tenant_id, None, data)
                    .await?;
                Ok(())
            }
        }
    }

    /// Stops taking jobs and waits for the sends in flight.
    pub async fn shutdown(&self) {
        match &self.inner.transport {
            Transport::InProcess(_) => {
                self.inner.cancel.cancel();
                self.inner.tracker.close();
                self.inner.tracker.wait().await;
            }
            Transport::Redis(bus) => bus.shutdown().await,
        }
    }
}

/// Takes a job only when a permit is free, then runs it on its own task
/// holding the permit: at most `permits` sends of this channel at once.
async fn dispatch(
    mut jobs: mpsc::Receiver<Job>,
    permits: Arc<Semaphore>,
    deliverer: Deliverer,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    loop {
        let permit = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let job = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            job = jobs.recv() => match job {
                Some(job) => job,
                None => break,
            },
        };
        let deliverer = deliverer.clone();
        tracker.spawn(async move {
            if let Err(err) = deliverer.deliver(&job).await {
                tracing::error!(
                    notification_id = %job.notification_id,
                    error = %err,
                    "delivery could not be recorded; the notification stays pending until the next start"
                );
            }
            drop(permit);
        });
    }
}
