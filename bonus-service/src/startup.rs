//! Assembling the running service: store, event subscriptions, outbox
//! relay, scheduled jobs, schema and HTTP server.

use std::sync::Arc;
use std::time::Duration;

use service_core::app::{ServiceRuntime, StartupError};
use service_core::config::ConfigError;
use service_core::db::{Database, DatabaseHealth, StoreError};
use service_core::events::{EventBus, EventError, OutboxConfig, OutboxRelay};
use service_core::recovery::{OperationTracker, RecoveryConfig, RecoveryError, RecoveryJob};
use service_core::server::{Server, Subgraph};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::domain::{BonusParts, BonusService, ExpiryHandler, ResendHandler};
use crate::store::Store;
use crate::SERVICE;

/// Why the service could not start.
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
    /// The configured Redis (the event bus) could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] service_core::redis::RedisError),
    /// The event subscriptions could not be made.
    #[error("events: {0}")]
    Events(#[from] EventError),
    /// The scheduled jobs could not be set up.
    #[error("jobs: {0}")]
    Jobs(#[from] RecoveryError),
    /// The listener could not be bound.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The bonus service, bound and ready to serve.
pub struct Application {
    server: Server,
    port: u16,
    service: BonusService,
    bus: EventBus,
    relay: OutboxRelay,
    jobs: Arc<RecoveryJob>,
    jobs_enabled: bool,
}

impl Application {
    /// Builds the service with an in-process event bus of its own (a
    /// standalone process, or tests).
    pub async fn build(settings: Settings) -> Result<Self, BuildError> {
        Self::build_with_bus(settings, None).await
    }

    /// Builds the service on `bus`, shared with the other services of the
    /// process (the one-process launcher): it consumes `user.registered`,
    /// `deposit.completed`, `transfer.completed`, `withdrawal.completed` and
    /// `bonus.payment.settled` from it and publishes its own events to it.
    /// With `None` it makes a bus of its own. Stopping the application stops
    /// its consumers only (it works on a scope of a shared bus).
    pub async fn build_with_bus(
        settings: Settings,
        bus: Option<EventBus>,
    ) -> Result<Self, BuildError> {
        let bus = EventBus::for_service(
            bus.as_ref(),
            settings.redis.state.as_ref(),
            &settings.common.brand,
        )
        .await?;
        let mut runtime = ServiceRuntime::new(SERVICE, settings.common.clone())?;
        let db = Arc::new(Database::open(&settings.db).await?);
        let store = Store::open(db.clone()).await?;
        let relay = OutboxRelay::new(db.clone(), bus.clone(), OutboxConfig::default());
        let config = &settings.bonus;
        let service = BonusService::new(BonusParts {
            store,
            access: runtime.access.clone(),
            outbox: relay.waker(),
            resend_after: Duration::from_secs(config.payment_resend_seconds),
            batch_size: config.expiry_batch_size,
        });
        service.subscribe(&bus).await?;
        runtime.follow_revocations(&bus).await?;

        let tracker = Arc::new(OperationTracker::store(db.clone()).await?);
        let mut jobs = RecoveryJob::new(
            tracker,
            RecoveryConfig {
                interval: Duration::from_secs(config.expiry_interval_seconds.max(1)),
                batch_size: config.expiry_batch_size.max(1),
                lease_ttl: Duration::from_secs(config.expiry_lease_seconds.max(1)),
            },
            runtime.metrics.registry(),
        )?;
        jobs.register(Arc::new(ExpiryHandler(service.clone())));
        jobs.register(Arc::new(ResendHandler(service.clone())));

        let mut subgraph = Subgraph::new(
            SERVICE,
            crate::schema::build(service.clone()),
            runtime.access.clone(),
            runtime.metrics.clone(),
        )
        .health_check(Arc::new(DatabaseHealth(db)))
        .body_limit(config.body_limit_bytes);
        if let Some(verifier) = &runtime.verifier {
            subgraph = subgraph.verifier(verifier.clone());
        } else {
            tracing::warn!("JWT_PUBLIC_KEYS is empty: every request carrying a token is refused");
        }
        let server = Server::bind(&config.addr, subgraph.router()).await?;
        let port = server.local_addr()?.port();
        tracing::info!(service = SERVICE, port, "bonus subgraph ready");
        Ok(Self {
            server,
            port,
            service,
            bus,
            relay,
            jobs: Arc::new(jobs),
            jobs_enabled: config.jobs_enabled,
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bonus operations the server runs.
    pub fn service(&self) -> &BonusService {
        &self.service
    }

    /// The service's database (operators' tools and tests read and repair
    /// records below the API through it).
    pub fn database(&self) -> &Arc<Database> {
        self.service.database()
    }

    /// The bus the service consumes from and publishes to.
    pub fn event_bus(&self) -> &EventBus {
        &self.bus
    }

    /// Cancelling it stops the server gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.server.shutdown_token()
    }

    /// A handle on the scheduled jobs, to run them once by hand (tests,
    /// operators); the lease still applies.
    pub fn jobs(&self) -> Arc<RecoveryJob> {
        self.jobs.clone()
    }

    /// Serves until a shutdown signal or the token, draining in-flight
    /// requests, with the outbox relay and (when enabled) the scheduled
    /// jobs running meanwhile.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let stop = CancellationToken::new();
        let relay = self.relay.spawn(stop.clone());
        let jobs = self.jobs_enabled.then(|| {
            let jobs = self.jobs.clone();
            let stop = stop.clone();
            tokio::spawn(async move { jobs.run(stop).await })
        });
        let served = self.server.run_until_stopped().await;
        stop.cancel();
        if let Err(err) = relay.await {
            tracing::error!(error = %err, "outbox relay ended abnormally");
        }
        if let Some(jobs) = jobs {
            if let Err(err) = jobs.await {
                tracing::error!(error = %err, "scheduled jobs ended abnormally");
            }
        }
        self.bus.shutdown().await;
        served
    }
}
