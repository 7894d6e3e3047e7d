//! Assembling the running service: store, providers, queue, live feed,
//! event consumers, schema and HTTP server.

use std::sync::Arc;
use std::time::Duration;

use service_core::app::{ServiceRuntime, StartupError};
use service_core::config::ConfigError;
use service_core::db::{Database, DatabaseHealth, StoreError};
use service_core::events::{EventBus, EventError};
use service_core::redis::{KeyPrefix, RedisAccessor, RedisError, RedisUrl};
use service_core::server::{Server, Subgraph};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::delivery::{
    Deliverer, DeliveryMetrics, DeliveryQueue, EmailSetupError, Providers, QueueError,
};
use crate::domain::{live_feed, NotificationService};
use crate::store::Store;
use crate::SERVICE;

/// Why the service could not start. Messages never contain credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Shared start-up failure (metrics, keys, listener, ...).
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// A configuration value is missing or wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened or indexed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// Redis is configured but unusable.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    /// The email transport could not be set up.
    #[error(transparent)]
    Email(#[from] EmailSetupError),
    /// The HTTP client for providers could not be built.
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    /// The delivery queue could not start.
    #[error("delivery queue: {0}")]
    Queue(#[from] QueueError),
    /// The event consumers could not subscribe.
    #[error("event bus: {0}")]
    Events(#[from] EventError),
    /// The listener could not be bound.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The notification service, bound and ready to serve.
pub struct Application {
    server: Server,
    port: u16,
    service: NotificationService,
    events: EventBus,
    background: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

async fn redis(url: &RedisUrl, settings: &Settings) -> Result<RedisAccessor, BuildError> {
    let prefix = KeyPrefix::new(settings.common.brand.clone(), SERVICE)?;
    Ok(RedisAccessor::connect(url.expose(), prefix).await?)
}

impl Application {
    /// Builds the service with its own in-process event bus (a standalone
    /// process; other services' events reach it only through Redis Streams
    /// once the bus is configured so, or through [`Self::build_with_bus`]).
    pub async fn build(settings: Settings) -> Result<Self, BuildError> {
        Self::build_with_bus(settings, None).await
    }

    /// Builds the service consuming domain events from `events` (the bus
    /// the other services emit on, when they share a process), or from a
    /// bus of its own when `None`. Binds `NOTIFICATION_ADDR` (port 0 picks
    /// a free port, as tests do).
    pub async fn build_with_bus(
        settings: Settings,
        events: Option<EventBus>,
    ) -> Result<Self, BuildError> {
        let mut runtime = ServiceRuntime::new(SERVICE, settings.common.clone())?;
        let config = &settings.notification;

        let db = Arc::new(Database::open(&settings.db).await?);
        let store = Store::open(db.clone()).await?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        let providers = Providers::from_config(config, client)?;
        let metrics =
            DeliveryMetrics::register(runtime.metrics.registry()).map_err(StartupError::from)?;
        let deliverer = Deliverer::new(store.clone(), providers.clone()).with_metrics(metrics);

        let queue = match (&settings.redis.state, config.redis_queue) {
            (Some(url), true) => {
                let redis = redis(url, &settings).await?;
                DeliveryQueue::redis_streams(deliverer, config, redis).await?
            }
            _ => DeliveryQueue::in_process(deliverer, config, config.queue_capacity),
        };
        let live = live_feed(match &settings.redis.pubsub {
            Some(url) => Some(redis(url, &settings).await?),
            None => None,
        });
        let background = CancellationToken::new();
        let mut tasks = Vec::new();
        if let Some(relay) = live.start_relay(background.clone()).await {
            tasks.push(relay);
        }

        let service = NotificationService::new(store, queue, live, providers);
        let events = EventBus::for_service(
            events.as_ref(),
            settings.redis.state.as_ref(),
            &settings.common.brand,
        )
        .await?;
        crate::domain::subscribe(&events, &service).await?;
        runtime.follow_revocations(&events).await?;

        // Whatever was pending when the last process stopped goes out now;
        // in the background, since a long backlog waits on the queue.
        let requeue = service.clone();
        tasks.push(tokio::spawn(async move {
            let release_leases = !requeue.queue().is_durable();
            match requeue.requeue_pending(release_leases).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(queued = n, "pending notifications queued again"),
                Err(err) => tracing::error!(error = %err, "could not queue pending notifications"),
            }
        }));

        let schema = crate::schema::build(service.clone());
        let mut subgraph = Subgraph::new(
            SERVICE,
            schema.clone(),
            runtime.access.clone(),
            runtime.metrics.clone(),
        )
        .health_check(Arc::new(DatabaseHealth(db)))
        .body_limit(config.body_limit_bytes);
        if let Some(verifier) = &runtime.verifier {
            subgraph = subgraph.verifier(verifier.clone());
        }
        let closing = CancellationToken::new();
        let router = service_core::server::ws::with_subscriptions(
            subgraph.router(),
            schema,
            runtime.verifier.clone(),
            runtime.access.clone(),
            closing.clone(),
        );
        let server = Server::bind(&config.addr, router)
            .await?
            .with_shutdown(closing);
        let port = server.local_addr()?.port();
        tracing::info!(
            service = SERVICE,
            port,
            durable_queue = service.queue().is_durable(),
            "notification subgraph ready"
        );
        Ok(Self {
            server,
            port,
            service,
            events,
            background,
            tasks,
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The notification operations the server runs.
    pub fn service(&self) -> &NotificationService {
        &self.service
    }

    /// The bus domain events are consumed from.
    pub fn event_bus(&self) -> &EventBus {
        &self.events
    }

    /// Cancelling it stops the server gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.server.shutdown_token()
    }

    /// Serves until a shutdown signal or the token, then drains: in-flight
    /// requests, then this service's event consumers (on a shared bus, the
    /// others carry on), then sends in flight.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.run_until_stopped().await;
        self.events.shutdown().await;
        self.service.queue().shutdown().await;
        self.background.cancel();
        for task in self.tasks {
            task.abort();
        }
        served
    }
}
