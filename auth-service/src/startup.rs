//! Assembling the running service: keys, store, schema and HTTP server.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use service_core::app::{ServiceRuntime, StartupError};
use service_core::auth::{JwtSettings, RevocationList, SigningKey, TokenIssuer, TokenVerifier};
use service_core::cache::{CacheConfig, L1Capacity, LayeredCache};
use service_core::config::{AppEnv, ConfigError};
use service_core::db::{Database, DatabaseHealth, StoreError};
use service_core::events::{EventBus, EventError, OutboxConfig, OutboxRelay};
use service_core::redis::{KeyPrefix, RedisAccessor, RedisError, RedisUrl};
use service_core::resilience::{AttemptCounter, RateLimiter};
use service_core::server::{Server, Subgraph};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::domain::password::{HashError, PasswordHasher};
use crate::domain::sessions::{RevocationNotices, SessionPolicy, Sessions};
use crate::domain::tokens::SuccessorKey;
use crate::domain::{AuthParts, AuthService, LockoutPolicy, OtpPolicy};
use crate::store::Store;
use crate::SERVICE;

/// Why the service could not start. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Shared start-up failure (metrics, listener, ...).
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// A configuration value is missing or wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A key could not be loaded.
    #[error("key {kid}: {reason}")]
    Key {
        /// The key id.
        kid: String,
        /// Why (never the key).
        reason: String,
    },
    /// `APP_ENV=production` without `AUTH_JWT_PRIVATE_KEY`: tokens signed
    /// by a key that dies with the process would log everyone out on restart.
    #[error("AUTH_JWT_PRIVATE_KEY is required when APP_ENV=production")]
    MissingSigningKey,
    /// A Redis URL or key prefix is invalid.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    /// The event bus refused a subscription (the revocation feed).
    #[error("events: {0}")]
    Events(#[from] EventError),
    /// The store could not be opened or indexed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The password hasher could not be set up.
    #[error(transparent)]
    Hasher(#[from] HashError),
    /// Only one of the two bootstrap-admin variables is set.
    #[error("set both AUTH_BOOTSTRAP_ADMIN_EMAIL and AUTH_BOOTSTRAP_ADMIN_PASSWORD, or neither")]
    PartialBootstrap,
    /// The bootstrap admin could not be ensured (a weak password, a bad
    /// email, the store); the message never holds the password.
    #[error("bootstrap admin: {0}")]
    Bootstrap(String),
    /// The listener could not be bound.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The configured signing key, or an ephemeral one in development.
fn signing_key(settings: &Settings) -> Result<SigningKey, BuildError> {
    let kid = settings.auth.jwt_kid.clone();
    match &settings.auth.jwt_private_key {
        Some(pem) => SigningKey::from_pkcs8_pem(kid.clone(), pem.expose_secret()).map_err(|err| {
            BuildError::Key {
                kid,
                reason: err.to_string(),
            }
        }),
        None if settings.common.app_env == AppEnv::Production => Err(BuildError::MissingSigningKey),
        None => {
            let kid = format!("ephemeral-{}", uuid::Uuid::new_v4());
            tracing::warn!(
                %kid,
                "AUTH_JWT_PRIVATE_KEY is not set: signing with an ephemeral key; \
                 tokens die with this process and other services cannot verify them"
            );
            SigningKey::generate(kid.clone()).map_err(|err| BuildError::Key {
                kid,
                reason: err.to_string(),
            })
        }
    }
}

/// Trusts the signing key's own public key plus every `JWT_PUBLIC_KEYS`
/// entry, so the service verifies what it issues even when the shared key
/// list is empty or not yet updated.
fn verifier(
    settings: &Settings,
    key: &SigningKey,
    jwt: &JwtSettings,
) -> Result<TokenVerifier, BuildError> {
    let mut keys = service_core::app::public_keys(&settings.common)?;
    keys.insert(key.verifying_key());
    Ok(TokenVerifier::new(keys, jwt.clone()))
}

/// Connects to the Redis at `url` under this service's key prefix. A
/// Redis that does not answer at start-up is not fatal: what it would share
/// (`purpose`) is then kept per instance.
async fn connect_redis(
    settings: &Settings,
    url: Option<&RedisUrl>,
    purpose: &str,
) -> Result<Option<RedisAccessor>, BuildError> {
    let Some(url) = url else {
        return Ok(None);
    };
    let prefix = KeyPrefix::new(settings.common.brand.clone(), SERVICE)?;
    match RedisAccessor::connect(url.expose(), prefix).await {
        Ok(redis) => Ok(Some(redis)),
        Err(err) => {
            tracing::warn!(error = %err, redis = %url.redacted(), "Redis unavailable: {purpose} kept per instance");
            Ok(None)
        }
    }
}

/// The key that derives refresh-token successors: from the configured
/// signing key, so every instance derives the same successors; random for
/// an ephemeral development key (whose tokens die with the process anyway).
fn successor_key(settings: &Settings) -> SuccessorKey {
    match &settings.auth.jwt_private_key {
        Some(pem) => SuccessorKey::derive(pem.expose_secret().as_bytes()),
        None => SuccessorKey::random(),
    }
}

/// The auth service, bound and ready to serve.
pub struct Application {
    server: Server,
    port: u16,
    service: AuthService,
    bus: EventBus,
    relay: OutboxRelay,
    /// Stops the session cache's invalidation listener when the server stops.
    background: CancellationToken,
}

impl Application {
    /// Builds the service with an in-process event bus of its own (a
    /// standalone process, or tests).
    pub async fn build(settings: Settings) -> Result<Self, BuildError> {
        Self::build_with_bus(settings, None).await
    }

    /// Loads keys, opens the store (ensuring its indexes), builds the schema
    /// and binds `AUTH_ADDR` (port 0 picks a free port, as tests do). Its
    /// events (`user.registered`, `auth.otp.requested`) go to `bus`, shared
    /// with the other services of the process (the one-process launcher),
    /// or to a bus of its own when `None`. Stopping the application stops
    /// its consumers only (it works on a scope of a shared bus).
    pub async fn build_with_bus(
        settings: Settings,
        bus: Option<EventBus>,
    ) -> Result<Self, BuildError> {
        let runtime = ServiceRuntime::new(SERVICE, settings.common.clone())?;
        let key = signing_key(&settings)?;
        let jwt = JwtSettings::new(&settings.common.jwt_issuer, &settings.common.jwt_audience)
            .with_access_ttl(Duration::from_secs(settings.auth.access_ttl_seconds));
        let verifier = verifier(&settings, &key, &jwt)?;
        let issuer = Arc::new(TokenIssuer::new(key, jwt));

        let db = Arc::new(Database::open(&settings.db).await?);
        let store = Store::open(db.clone()).await?;
        // The outbox keeps staged events across restarts whatever the bus.
        let bus = EventBus::for_service(
            bus.as_ref(),
            settings.redis.state.as_ref(),
            &settings.common.brand,
        )
        .await?;
        let relay = OutboxRelay::new(db.clone(), bus.clone(), OutboxConfig::default());
        // This service checks sessions in its store too; the list makes the
        // server kit refuse ended sessions before any resolver runs, as the
        // other services do.
        let verifier = Arc::new(verifier.with_revocations(RevocationList::follow(&bus).await?));
        let background = CancellationToken::new();
        let auth = &settings.auth;
        let state = connect_redis(&settings, settings.redis.state.as_ref(), "login counts").await?;
        let cache_redis = connect_redis(
            &settings,
            settings.redis.cache.as_ref(),
            "the session cache",
        )
        .await?;
        let session_cache_ttl = Duration::from_secs(auth.session_cache_ttl_seconds.max(1));
        let cache = LayeredCache::new(
            CacheConfig {
                name: "sessions".to_owned(),
                l1_capacity: L1Capacity::Entries(100_000),
                l1_max_ttl: session_cache_ttl,
                ..CacheConfig::default()
            },
            cache_redis,
            background.clone(),
        )
        .await;
        let sessions = Sessions::new(
            store.clone(),
            SessionPolicy {
                ttl: Duration::from_secs(auth.refresh_ttl_seconds),
                grace: Duration::from_secs(auth.refresh_grace_seconds),
                cache_ttl: session_cache_ttl,
                access_ttl: Duration::from_secs(auth.access_ttl_seconds),
            },
            cache,
            successor_key(&settings),
            RevocationNotices {
                outbox: relay.waker(),
                tenant_id: settings.common.tenant_id.clone(),
            },
        );
        let service = AuthService::new(AuthParts {
            store,
            hasher: PasswordHasher::new().await?,
            issuer,
            access: runtime.access.clone(),
            sessions,
            tenant_id: settings.common.tenant_id.clone(),
            throttle: Arc::new(AttemptCounter::new(
                "login",
                auth.login_max_failures,
                Duration::from_secs(auth.login_window_seconds),
                state.clone(),
            )),
            lockout: LockoutPolicy {
                max_failures: auth.login_max_failures.max(1),
                bursts: Arc::new(AttemptCounter::new(
                    "login-bursts",
                    auth.lockout_after_bursts,
                    Duration::from_secs(auth.lockout_burst_window_seconds),
                    state.clone(),
                )),
                after_bursts: auth.lockout_after_bursts.max(1),
                base: Duration::from_secs(auth.lockout_base_seconds),
                max: Duration::from_secs(auth.lockout_max_seconds),
            },
            otp: OtpPolicy {
                ttl: Duration::from_secs(auth.otp_ttl_seconds),
                max_tries: auth.otp_max_tries,
                limiter: RateLimiter::new(
                    "otp",
                    auth.otp_burst,
                    1.0 / auth.otp_refill_seconds.max(1) as f64,
                    state,
                ),
            },
            outbox: relay.waker(),
        });

        match (
            &settings.auth.bootstrap_admin_email,
            &settings.auth.bootstrap_admin_password,
        ) {
            (Some(email), Some(password)) => {
                service
                    .bootstrap_admin(email, password.clone())
                    .await
                    .map_err(|err| BuildError::Bootstrap(err.to_string()))?;
            }
            (None, None) => {}
            _ => return Err(BuildError::PartialBootstrap),
        }

        let router = Subgraph::new(
            SERVICE,
            crate::schema::build(service.clone()),
            runtime.access.clone(),
            runtime.metrics.clone(),
        )
        .verifier(verifier)
        .health_check(Arc::new(DatabaseHealth(db)))
        .body_limit(settings.auth.body_limit_bytes)
        .router();
        let server = Server::bind(&settings.auth.addr, router).await?;
        let port = server.local_addr()?.port();
        tracing::info!(service = SERVICE, port, "auth subgraph ready");
        Ok(Self {
            server,
            port,
            service,
            bus,
            relay,
            background,
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The account operations the server runs (tests read the hasher's
    /// counter through it).
    pub fn service(&self) -> &AuthService {
        &self.service
    }

    /// Cancelling it stops the server gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.server.shutdown_token()
    }

    /// The bus `user.registered` is published on.
    pub fn event_bus(&self) -> &EventBus {
        &self.bus
    }

    /// Serves until a shutdown signal or the token, draining in-flight
    /// requests, with the outbox relay publishing meanwhile.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let stop_relay = CancellationToken::new();
        let relay = self.relay.spawn(stop_relay.clone());
        let served = self.server.run_until_stopped().await;
        stop_relay.cancel();
        self.background.cancel();
        if let Err(err) = relay.await {
            tracing::error!(error = %err, "outbox relay ended abnormally");
        }
        self.bus.shutdown().await;
        served
    }
}
