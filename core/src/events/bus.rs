//! The bus services talk to: emit, subscribe, shut down.
//!
//! The transport is chosen once, when the bus is built; the rest of a service
//! never knows whether its events cross Redis or stay in the process.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::delivery::{DeadLetter, Subscriber};
use super::memory::InProcess;
use super::metrics::EventMetrics;
use super::pattern::{validate_group, TypePattern};
use super::streams::RedisStreams;
use super::{Event, EventError, Handler};
use crate::redis::{KeyPrefix, RedisAccessor, RedisError, RedisUrl};
use crate::resilience::RetryPolicy;

/// Delivery settings shared by both transports.
#[derive(Clone, Debug)]
pub struct BusConfig {
    /// Handler attempts per delivery (`max_attempts`, at least 1) and the
    /// backoff between them; after the last failure the event is
    /// dead-lettered.
    pub retry: RetryPolicy,
    /// Longest one handler attempt may run before it counts as failed.
    pub handler_timeout: Duration,
    /// How long a group remembers the ids it handled, so a redelivery within
    /// this window is acknowledged without calling the handler again.
    pub idempotency_ttl: Duration,
    /// In-process only: ids remembered per bus (oldest forgotten first).
    pub idempotency_capacity: u64,
    /// In-process only: events queued per subscription before `emit` waits.
    pub channel_capacity: usize,
    /// In-process only: dead letters kept (oldest dropped first).
    pub dead_letter_capacity: usize,
    /// How long [`EventBus::shutdown`] waits for in-flight handlers before
    /// aborting them (their events stay unacknowledged on Redis).
    pub drain_timeout: Duration,
    /// Where to count emitted, handled, failed and dead-lettered events.
    pub metrics: Option<EventMetrics>,
}

impl Default for BusConfig {
    /// 5 attempts, 100 ms backoff doubling to at most 5 s; 30 s per attempt;
    /// ids remembered for 24 h.
    fn default() -> Self {
        Self {
            retry: RetryPolicy {
                max_attempts: 5,
                initial_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(5),
                multiplier: 2.0,
                jitter: true,
            },
            handler_timeout: Duration::from_secs(30),
            idempotency_ttl: Duration::from_secs(24 * 60 * 60),
            idempotency_capacity: 100_000,
            channel_capacity: 1024,
            dead_letter_capacity: 10_000,
            drain_timeout: Duration::from_secs(10),
            metrics: None,
        }
    }
}

/// Settings of the Redis Streams transport.
#[derive(Clone, Debug)]
pub struct StreamsConfig {
    /// This process's consumer name within its groups; unique per process,
    /// so Redis can tell whose pending messages are whose.
    pub consumer_name: String,
    /// Approximate cap on each stream's length (`XADD MAXLEN ~`).
    pub max_stream_len: u64,
    /// Dead-letter streams are capped at this length.
    pub max_dead_letter_len: u64,
    /// Messages read per `XREADGROUP`.
    pub read_batch: usize,
    /// Pause after a read that found nothing. Reads do not block on the
    /// server: the accessor's connection is shared with other commands.
    pub poll_interval: Duration,
    /// A message pending this long with no acknowledgement is presumed
    /// abandoned by a dead consumer and claimed by another. Must exceed the
    /// longest time a live consumer may spend on one message (all attempts).
    pub claim_timeout: Duration,
    /// How often a pattern subscription looks for new streams.
    pub rescan_interval: Duration,
}

impl Default for StreamsConfig {
    /// A random consumer name; 100 000 entries per stream; 100 ms polls;
    /// claims after 5 min; rescans every 5 s.
    fn default() -> Self {
        Self {
            consumer_name: format!("consumer-{}", uuid::Uuid::new_v4().simple()),
            max_stream_len: 100_000,
            max_dead_letter_len: 100_000,
            read_batch: 32,
            poll_interval: Duration::from_millis(100),
            claim_timeout: Duration::from_secs(300),
            rescan_interval: Duration::from_secs(5),
        }
    }
}

/// The transport behind a bus.
pub(crate) enum Transport {
    InProcess(InProcess),
    Redis(RedisStreams),
}

/// Emits events and runs subscriptions. Cheap to clone; clones share the
/// transport, the subscriptions and the shutdown. [`scope`](Self::scope)
/// makes a bus on the same transport with subscriptions and a shutdown of
/// its own.
#[derive(Clone)]
pub struct EventBus {
    shared: Arc<Shared>,
    scope: Arc<Scope>,
}

/// What every scope of a bus shares.
struct Shared {
    transport: Transport,
    config: BusConfig,
}

/// The subscriptions one shutdown ends.
struct Scope {
    cancel: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Scope {
    fn new(cancel: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            cancel,
            tasks: Mutex::new(Vec::new()),
        })
    }
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let transport = match self.shared.transport {
            Transport::InProcess(_) => "in-process",
            Transport::Redis(_) => "redis-streams",
        };
        f.debug_struct("EventBus")
            .field("transport", &transport)
            .finish()
    }
}

impl EventBus {
    /// A bus whose events never leave this process (the one-process mode).
    /// Nothing queued survives a restart; use the outbox for durability.
    pub fn in_process(config: BusConfig) -> Self {
        let transport = Transport::InProcess(InProcess::new(&config));
        Self::build(transport, config)
    }

    /// The bus a standalone service process uses: Redis Streams on the
    /// Redis at `url` (`REDIS_STATE_URL`, else `REDIS_URL`) under the shared
    /// `{brand}:bus` prefix, so the services of one deployment see each
    /// other's events; in-process when no URL is configured (a single
    /// process, where no other service could hear them anyway).
    ///
    /// A configured Redis that cannot be reached is an error, not a quiet
    /// fall-back: a process that went local would keep publishing its outbox
    /// into a bus nobody else listens to.
    pub async fn connect(
        url: Option<&RedisUrl>,
        brand: &str,
        config: BusConfig,
    ) -> Result<Self, RedisError> {
        let Some(url) = url else {
            return Ok(Self::in_process(config));
        };
        let prefix = KeyPrefix::new(brand.to_owned(), "bus")?;
        let redis = RedisAccessor::connect(url.expose(), prefix).await?;
        Ok(Self::redis_streams(redis, config, StreamsConfig::default()))
    }

    /// The bus of one service: a [`scope`](Self::scope) of `shared` when
    /// the services of a process share one bus, else a bus of its own
    /// ([`connect`](Self::connect) with the default settings). Either way
    /// the service shuts down what it got, which stops its own consumers
    /// and nothing else.
    pub async fn for_service(
        shared: Option<&EventBus>,
        url: Option<&RedisUrl>,
        brand: &str,
    ) -> Result<Self, RedisError> {
        match shared {
            Some(bus) => Ok(bus.scope()),
            None => Self::connect(url, brand, BusConfig::default()).await,
        }
    }

    /// A bus over Redis Streams. Every service exchanging events must use an
    /// accessor with the same key prefix (for example
    /// `KeyPrefix::new(brand, "bus")`), since streams live under it.
    pub fn redis_streams(redis: RedisAccessor, config: BusConfig, streams: StreamsConfig) -> Self {
        let transport = Transport::Redis(RedisStreams::new(redis, streams));
        Self::build(transport, config)
    }

    fn build(transport: Transport, config: BusConfig) -> Self {
        Self {
            shared: Arc::new(Shared { transport, config }),
            scope: Scope::new(CancellationToken::new()),
        }
    }

    /// A bus on the same transport whose subscriptions end with its own
    /// [`shutdown`](Self::shutdown), leaving this bus's running; shutting
    /// this bus down ends the scope's too. For a component that stops
    /// before the process does, such as a service restarted inside a
    /// process whose services share one bus: once its scope is shut down,
    /// its consumers have left their groups and the events of those groups
    /// go to the consumers that remain, such as the next instance's.
    pub fn scope(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            scope: Scope::new(self.scope.cancel.child_token()),
        }
    }

    /// Builds an event and publishes it; returns what was published.
    pub async fn emit(
        &self,
        event_type: &str,
        tenant_id: &str,
        user_id: Option<&str>,
        data: Value,
    ) -> Result<Event, EventError> {
        let event = Event::new(event_type, tenant_id, user_id, data)?;
        self.emit_event(&event).await?;
        Ok(event)
    }

    /// Publishes a prepared event (a re-publish keeps its id, which is what
    /// makes consumers skip it if they have seen it). In-process, waits while
    /// a subscriber's queue is full.
    #[tracing::instrument(level = "debug", skip_all, fields(event_type = %event.event_type, event_id = %event.id))]
    pub async fn emit_event(&self, event: &Event) -> Result<(), EventError> {
        super::pattern::validate_event_type(&event.event_type)?;
        if self.scope.cancel.is_cancelled() {
            return Err(EventError::Closed);
        }
        match &self.shared.transport {
            Transport::InProcess(t) => t.publish(event).await?,
            Transport::Redis(t) => t.publish(event).await?,
        }
        if let Some(metrics) = &self.shared.config.metrics {
            metrics.emitted(&event.event_type);
        }
        Ok(())
    }

    /// Calls `handler` for every event of type `event_type`, once per
    /// `group`: each group receives each event (once, barring crashes), and
    /// within a group each event goes to one consumer (one process of the
    /// service). Two subscriptions of one group that both match a type share
    /// its events, so overlapping subscriptions need different groups.
    /// Events emitted after this returns are delivered.
    pub async fn on(
        &self,
        event_type: &str,
        group: &str,
        handler: Handler,
    ) -> Result<(), EventError> {
        super::pattern::validate_event_type(event_type)?;
        self.subscribe(TypePattern::parse(event_type)?, group, handler)
            .await
    }

    /// Like [`on`](Self::on) for every type matching `pattern` (`*` one
    /// segment, trailing `#` any number; see the module docs).
    pub async fn on_pattern(
        &self,
        pattern: &str,
        group: &str,
        handler: Handler,
    ) -> Result<(), EventError> {
        self.subscribe(TypePattern::parse(pattern)?, group, handler)
            .await
    }

    async fn subscribe(
        &self,
        pattern: TypePattern,
        group: &str,
        handler: Handler,
    ) -> Result<(), EventError> {
        validate_group(group)?;
        if self.scope.cancel.is_cancelled() {
            return Err(EventError::Closed);
        }
        let subscriber = Arc::new(Subscriber {
            group: group.to_owned(),
            handler,
        });
        let config = self.shared.config.clone();
        let cancel = self.scope.cancel.clone();
        let task = match &self.shared.transport {
            Transport::InProcess(t) => t.subscribe(pattern, subscriber, config, cancel),
            Transport::Redis(t) => t.subscribe(pattern, subscriber, config, cancel).await?,
        };
        self.track(task);
        Ok(())
    }

    /// Keeps a consumer task so [`shutdown`](Self::shutdown) drains it.
    fn track(&self, task: JoinHandle<()>) {
        self.scope
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(task);
    }

    /// Calls `handler` for every event of type `event_type` in *this*
    /// process: a broadcast, where every caller hears every event (unlike
    /// [`on`](Self::on), where a group's processes share them). For state
    /// each process keeps for itself, such as the session revocation list.
    ///
    /// On Redis Streams the stream is read without a consumer group, so
    /// nothing is left behind when the process goes; events added in the
    /// last `replay` are handled before this returns, so a process that
    /// starts late still learns recent ones. In-process, nothing is kept and
    /// delivery starts now. A handler failure is logged at error level and
    /// not retried on Redis (retried, then dead-lettered, in-process); a
    /// failed read is logged and retried until the bus shuts down.
    pub async fn broadcast(
        &self,
        event_type: &str,
        replay: Duration,
        handler: Handler,
    ) -> Result<(), EventError> {
        super::pattern::validate_event_type(event_type)?;
        if self.scope.cancel.is_cancelled() {
            return Err(EventError::Closed);
        }
        match &self.shared.transport {
            Transport::InProcess(_) => {
                // A group of its own per call: every caller hears each event.
                let group = format!("broadcast-{}", uuid::Uuid::new_v4().simple());
                self.on(event_type, &group, handler).await
            }
            Transport::Redis(t) => {
                let config = self.shared.config.clone();
                let cancel = self.scope.cancel.clone();
                let task = t.tail(event_type, replay, handler, config, cancel).await?;
                self.track(task);
                Ok(())
            }
        }
    }

    /// The most recent dead letters of `event_type` (up to `limit`, oldest first).
    pub async fn dead_letters(
        &self,
        event_type: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, EventError> {
        super::pattern::validate_event_type(event_type)?;
        match &self.shared.transport {
            Transport::InProcess(t) => Ok(t.dead_letters(event_type, limit)),
            Transport::Redis(t) => t.dead_letters(event_type, limit).await,
        }
    }

    /// The token whose cancellation stops every consumer of this bus (and
    /// of its scopes); cancel it (or call [`shutdown`](Self::shutdown)) from
    /// the service's shutdown path.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.scope.cancel.clone()
    }

    /// Stops this bus's consumers (and its scopes') from taking new events,
    /// waits up to [`BusConfig::drain_timeout`] for in-flight handlers of
    /// this bus, then aborts the rest. In-process, events already queued for
    /// a consumer count as in flight: each gets one attempt. Later emits and
    /// subscriptions on this bus fail with [`EventError::Closed`]; a bus
    /// this one is a scope of carries on.
    pub async fn shutdown(&self) {
        self.scope.cancel.cancel();
        let tasks = std::mem::take(
            &mut *self
                .scope
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let deadline = tokio::time::Instant::now() + self.shared.config.drain_timeout;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                tracing::warn!("an event consumer did not drain in time, aborting it");
                task.abort();
            }
        }
    }
}
