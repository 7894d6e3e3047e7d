//! Assembling the running service: store, cache, bus, schema, background
//! jobs and HTTP server.

use std::sync::Arc;
use std::time::Duration;

use service_core::app::{ServiceRuntime, StartupError};
use service_core::cache::{CacheConfig, LayeredCache};
use service_core::config::ConfigError;
use service_core::db::{Database, DatabaseHealth, StoreError};
use service_core::events::{
    handler, BonusPaymentRequested, DomainEvent, EventBus, EventError, OutboxConfig, OutboxRelay,
    UserRegistered, WalletUpdated,
};
use service_core::redis::{KeyPrefix, RedisAccessor, RedisError, RedisUrl};
use service_core::resilience::RetryPolicy;
use service_core::server::{Server, Subgraph};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::domain::payout::{HttpPayoutProvider, ManualSettlement, PayoutGateway, PayoutProvider};
use crate::domain::{PaymentPolicy, PaymentService};
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
    /// A Redis URL or key prefix is invalid.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    /// The store could not be opened or indexed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// A subscription to the bus failed.
    #[error("events: {0}")]
    Events(#[from] EventError),
    /// The metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The listener could not be bound.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The L1 cache, with Redis as L2 when `REDIS_CACHE_URL`/`REDIS_URL` is
/// set and answers (a Redis that is down degrades to L1 only).
async fn balance_cache(
    settings: &Settings,
    shutdown: &CancellationToken,
) -> Result<LayeredCache, BuildError> {
    let config = CacheConfig {
        name: "balances".to_owned(),
        ..CacheConfig::default()
    };
    match connect_redis(
        settings,
        settings.redis.cache.as_ref(),
        "balances are cached",
    )
    .await?
    {
        Some(redis) => Ok(LayeredCache::new(config, Some(redis), shutdown.clone()).await),
        None => Ok(LayeredCache::l1_only(config)),
    }
}

/// Connects to the Redis at `url` under this service's prefix. A Redis that
/// does not answer at start-up is not fatal: what it would share (`what`)
/// stays in this process.
async fn connect_redis(
    settings: &Settings,
    url: Option<&RedisUrl>,
    what: &str,
) -> Result<Option<RedisAccessor>, BuildError> {
    let Some(url) = url else {
        return Ok(None);
    };
    let prefix = KeyPrefix::new(settings.common.brand.clone(), SERVICE)?;
    match RedisAccessor::connect(url.expose(), prefix).await {
        Ok(redis) => Ok(Some(redis)),
        Err(err) => {
            tracing::warn!(error = %err, "Redis unavailable: {what} in this process only");
            Ok(None)
        }
    }
}

/// The payment service, bound and ready to serve.
pub struct Application {
    server: Server,
    port: u16,
    service: PaymentService,
    bus: EventBus,
    relay: OutboxRelay,
    settings: Settings,
    background: CancellationToken,
}

impl Application {
    /// Builds the service with a bus of its own (in-process).
    pub async fn build(settings: Settings) -> Result<Self, BuildError> {
        Self::build_with_bus(settings, None).await
    }

    /// Opens the store (ensuring its indexes), subscribes to the events it
    /// consumes (`user.registered`, `bonus.payment.requested`,
    /// `wallet.updated`) on `bus` — the launcher's shared bus, or one of its
    /// own when `None` — builds the schema and binds `PAYMENT_ADDR`.
    pub async fn build_with_bus(
        settings: Settings,
        bus: Option<EventBus>,
    ) -> Result<Self, BuildError> {
        let mut runtime = ServiceRuntime::new(SERVICE, settings.common.clone())?;
        let background = CancellationToken::new();
        let db = Arc::new(Database::open(&settings.db).await?);
        crate::store::prepare(&db).await?;
        let bus = EventBus::for_service(
            bus.as_ref(),
            settings.redis.state.as_ref(),
            &settings.common.brand,
        )
        .await?;
        let relay = OutboxRelay::new(db.clone(), bus.clone(), OutboxConfig::default());
        let cache = Arc::new(balance_cache(&settings, &background).await?);
        let provider: Arc<dyn PayoutProvider> = match &settings.payment.payout_url {
            Some(url) => Arc::new(HttpPayoutProvider::new(url.clone())),
            None => {
                tracing::info!(
                    "PAYMENT_PAYOUT_URL is not set: withdrawals settle at once (manual settlement)"
                );
                Arc::new(ManualSettlement)
            }
        };
        let retry = RetryPolicy {
            max_attempts: settings.payment.payout_max_attempts.max(1),
            ..RetryPolicy::fast()
        };
        let payouts = PayoutGateway::new(
            provider,
            retry,
            Duration::from_millis(settings.payment.payout_timeout_ms),
        );
        let policy = PaymentPolicy {
            idempotency_ttl: Duration::from_secs(settings.payment.idempotency_ttl_hours * 3600),
            cache_ttl: Duration::from_secs(settings.payment.cache_ttl_seconds),
            withdrawal_lease: Duration::from_secs(settings.payment.withdrawal_lease_seconds.max(1)),
            default_tenant: settings.common.tenant_id.clone(),
        };
        let pubsub = connect_redis(
            &settings,
            settings.redis.pubsub.as_ref(),
            "wallet updates reach subscribers",
        )
        .await?;
        let service = PaymentService::new(db.clone(), cache, relay.waker(), payouts, policy)
            .with_live_updates(pubsub)
            .with_metrics(runtime.metrics.registry())?;
        // Ends with the other background work, when `background` is cancelled.
        let _relay = service.live_updates().start_relay(background.clone()).await;
        subscribe(&bus, &service).await?;
        runtime.follow_revocations(&bus).await?;

        let schema = crate::schema::build(service.clone());
        let mut subgraph = Subgraph::new(
            SERVICE,
            schema.clone(),
            runtime.access.clone(),
            runtime.metrics.clone(),
        )
        .health_check(Arc::new(DatabaseHealth(db)))
        .body_limit(settings.payment.body_limit_bytes);
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
        let server = Server::bind(&settings.payment.addr, router)
            .await?
            .with_shutdown(closing);
        let port = server.local_addr()?.port();
        tracing::info!(service = SERVICE, port, "payment subgraph ready");
        Ok(Self {
            server,
            port,
            service,
            bus,
            relay,
            settings,
            background,
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The operations the server runs.
    pub fn service(&self) -> &PaymentService {
        &self.service
    }

    /// Cancelling it stops the server gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.server.shutdown_token()
    }

    /// The bus events are published on and consumed from.
    pub fn event_bus(&self) -> &EventBus {
        &self.bus
    }

    /// Serves until a shutdown signal or the token, with the outbox relay,
    /// the withdrawal recovery and the scheduled reconciliation running
    /// meanwhile; drains in-flight requests, then stops them.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let stop = self.background.clone();
        let mut tasks: Vec<JoinHandle<()>> = vec![self.relay.clone().spawn(stop.clone())];
        let recovery = self.settings.payment.recovery_interval_seconds;
        if recovery > 0 {
            tasks.push(tokio::spawn(every(
                Duration::from_secs(recovery),
                stop.clone(),
                {
                    let service = self.service.clone();
                    move || {
                        let service = service.clone();
                        async move {
                            if let Err(err) = service.recover_withdrawals(100).await {
                                tracing::warn!(error = %err, "withdrawal recovery failed");
                            }
                            if let Err(err) = service.purge_idempotency_keys(1000).await {
                                tracing::warn!(error = %err, "purging idempotency keys failed");
                            }
                        }
                    }
                },
            )));
        }
        let reconcile = self.settings.payment.reconcile_interval_seconds;
        if reconcile > 0 {
            tasks.push(tokio::spawn(every(
                Duration::from_secs(reconcile),
                stop.clone(),
                {
                    let service = self.service.clone();
                    move || {
                        let service = service.clone();
                        async move {
                            if let Err(err) = service.reconcile().await {
                                tracing::warn!(error = %err, "scheduled reconciliation failed");
                            }
                        }
                    }
                },
            )));
        }
        let served = self.server.run_until_stopped().await;
        stop.cancel();
        for task in tasks {
            if let Err(err) = task.await {
                tracing::error!(error = %err, "a background task ended abnormally");
            }
        }
        self.bus.shutdown().await;
        served
    }
}

/// Runs `job` every `period` (first after one period) until `stop`.
async fn every<F, Fut>(period: Duration, stop: CancellationToken, job: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => job().await,
        }
    }
}

/// The events the service consumes.
async fn subscribe(bus: &EventBus, service: &PaymentService) -> Result<(), EventError> {
    let known = service.clone();
    bus.on(
        UserRegistered::TYPE,
        "payment-known-users",
        handler(move |event| {
            let service = known.clone();
            async move {
                let user = UserRegistered::from_event(&event)?;
                service
                    .remember_user(&user.user_id, &event.tenant_id, "user.registered")
                    .await;
                Ok(())
            }
        }),
    )
    .await?;
    let bonus = service.clone();
    bus.on(
        BonusPaymentRequested::TYPE,
        "payment-bonus-requests",
        handler(move |event| {
            let service = bonus.clone();
            async move {
                let request = BonusPaymentRequested::from_event(&event)?;
                service
                    .handle_bonus_request(&event.tenant_id, &request)
                    .await
                    .map_err(|err| {
                        service_core::events::HandlerError::new(format!(
                            "bonus request {}: {}",
                            request.request_id,
                            err.message()
                        ))
                    })?;
                Ok(())
            }
        }),
    )
    .await?;
    // One instance takes each update off the bus; the live feed hands it to
    // the subscribers of every instance.
    let updates = service.clone();
    bus.on(
        WalletUpdated::TYPE,
        "payment-subscriptions",
        handler(move |event| {
            let service = updates.clone();
            async move {
                service
                    .publish_update(&WalletUpdated::from_event(&event)?)
                    .await;
                Ok(())
            }
        }),
    )
    .await?;
    Ok(())
}
