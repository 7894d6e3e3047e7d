//! One process, every service: the development launcher (four subgraphs
//! and the federated gateway, each a real HTTP server on loopback).

use std::future::Future;
use std::pin::Pin;

use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey};
use secrecy::SecretString;
use service_core::app::StartupError;
use service_core::auth::SigningKey;
use service_core::config::{CommonConfig, ConfigError};
use service_core::events::{BusConfig, EventBus};
use service_core::redis::{RedisError, RedisUrls};
use service_core::server::shutdown_signal;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Why the launcher could not start everything.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// A subgraph's shared start-up failed.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// A setting is missing or wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The auth service could not start.
    #[error("auth service: {0}")]
    Auth(#[from] auth_service::BuildError),
    /// The payment service could not start.
    #[error("payment service: {0}")]
    Payment(#[from] payment_service::BuildError),
    /// The bonus service could not start.
    #[error("bonus service: {0}")]
    Bonus(#[from] bonus_service::BuildError),
    /// The notification service could not start.
    #[error("notification service: {0}")]
    Notification(#[from] notification_service::BuildError),
    /// The shared event bus could not reach its Redis.
    #[error("event bus: {0}")]
    Redis(#[from] RedisError),
    /// The gateway could not follow session revocations on the bus.
    #[error("session revocations: {0}")]
    Events(#[from] service_core::events::EventError),
    /// The development signing key could not be made.
    #[error("development signing key: {0}")]
    Key(String),
    /// The gateway could not compose the subgraphs.
    #[error("gateway: {0}")]
    Gateway(#[from] crate::compose::ComposeError),
}

/// The kid of the key the launcher makes when none is configured.
const DEV_KID: &str = "dev-launcher";

/// Starts every subgraph on its configured loopback port and the federated
/// gateway in front of them on `GATEWAY_ADDR` (default `127.0.0.1:4000`),
/// prints where they listen, and stops them all on Ctrl-C or SIGTERM.
///
/// Without `AUTH_JWT_PRIVATE_KEY`, it makes one signing key for this run and
/// gives its public half to every subgraph, so the tokens the auth service
/// issues are accepted everywhere (and die with the process).
pub async fn run_dev() -> Result<(), LaunchError> {
    let common = CommonConfig::from_env()?;
    service_core::telemetry::init_tracing(common.log_format);
    let platform = start_dev(common).await?;
    println!("Query the gateway above; Ctrl-C stops everything.");
    shutdown_signal().await;
    platform.stop().await;
    Ok(())
}

/// Every server [`start_dev`] started.
pub struct DevPlatform {
    /// The gateway's `/graphql` URL.
    pub gateway_url: String,
    stop: CancellationToken,
    bus: EventBus,
    servers: JoinSet<()>,
}

impl DevPlatform {
    /// Stops every server and waits for them to drain.
    pub async fn stop(mut self) {
        self.stop.cancel();
        while self.servers.join_next().await.is_some() {}
        self.bus.shutdown().await;
    }
}

/// Starts the subgraphs and the gateway as [`run_dev`] does (reading the
/// same variables, printing the same lines) and hands back their handle
/// instead of waiting for a signal.
pub async fn start_dev(mut common: CommonConfig) -> Result<DevPlatform, LaunchError> {
    let mut auth = auth_service::Settings::from_env()?;
    if auth.auth.jwt_private_key.is_none() {
        let (private_pem, public_pem) = development_key()?;
        auth.auth.jwt_private_key = Some(SecretString::from(private_pem));
        auth.auth.jwt_kid = DEV_KID.to_owned();
        common
            .jwt_public_keys
            .get_or_insert_with(Default::default)
            .insert(DEV_KID.to_owned(), public_pem.into());
    }
    auth.common.jwt_public_keys = common.jwt_public_keys.clone();
    let admin_hint = match &auth.auth.bootstrap_admin_email {
        Some(email) => {
            format!("admin account: {email} (password from AUTH_BOOTSTRAP_ADMIN_PASSWORD)")
        }
        None => "no admin account: set AUTH_BOOTSTRAP_ADMIN_EMAIL and \
                 AUTH_BOOTSTRAP_ADMIN_PASSWORD to have one made at start-up"
            .to_owned(),
    };
    let mut payment = payment_service::Settings::from_env()?;
    payment.common.jwt_public_keys = common.jwt_public_keys.clone();
    let mut bonus = bonus_service::Settings::from_env()?;
    bonus.common.jwt_public_keys = common.jwt_public_keys.clone();
    let mut notification = notification_service::Settings::from_env()?;
    notification.common.jwt_public_keys = common.jwt_public_keys.clone();

    // One bus for the four services: what one emits, the others consume.
    let redis = RedisUrls::from_env()?;
    let bus = EventBus::connect(redis.state.as_ref(), &common.brand, BusConfig::default()).await?;
    let stop = CancellationToken::new();
    let mut servers: JoinSet<()> = JoinSet::new();
    let mut endpoints = Vec::new();

    let app = auth_service::Application::build_with_bus(auth, Some(bus.clone())).await?;
    let port = app.port();
    endpoints.push(announce(auth_service::SERVICE, port));
    follow(
        &mut servers,
        &stop,
        app.shutdown_token(),
        app.run_until_stopped(),
    );

    let app = payment_service::Application::build_with_bus(payment, Some(bus.clone())).await?;
    endpoints.push(announce(payment_service::SERVICE, app.port()));
    follow(
        &mut servers,
        &stop,
        app.shutdown_token(),
        app.run_until_stopped(),
    );

    let app = bonus_service::Application::build_with_bus(bonus, Some(bus.clone())).await?;
    endpoints.push(announce(bonus_service::SERVICE, app.port()));
    follow(
        &mut servers,
        &stop,
        app.shutdown_token(),
        app.run_until_stopped(),
    );

    let app =
        notification_service::Application::build_with_bus(notification, Some(bus.clone())).await?;
    endpoints.push(announce(notification_service::SERVICE, app.port()));
    follow(
        &mut servers,
        &stop,
        app.shutdown_token(),
        app.run_until_stopped(),
    );

    let mut settings = crate::GatewaySettings::from_env()?;
    if settings.subgraphs.is_empty() {
        settings.subgraphs = endpoints;
    }
    let deps = crate::GatewayDeps::from_common(&common)
        .await?
        .follow_revocations(&bus)
        .await?;
    let gateway = crate::Gateway::build(settings, deps).await?;
    let app = crate::Application::bind(gateway)
        .await
        .map_err(StartupError::from)?;
    let gateway_url = format!(
        "http://{}/graphql",
        app.local_addr().map_err(StartupError::from)?
    );
    println!("{:<13} gateway   {gateway_url}", "federated");
    println!("{admin_hint}");
    follow(
        &mut servers,
        &stop,
        app.shutdown_token(),
        app.run_until_stopped(),
    );
    Ok(DevPlatform {
        gateway_url,
        stop,
        bus,
        servers,
    })
}

/// Prints where a subgraph listens and names it for the gateway.
fn announce(service: &str, port: u16) -> crate::SubgraphEndpoint {
    let url = format!("http://127.0.0.1:{port}/graphql");
    println!("{service:<13} subgraph  {url}");
    crate::SubgraphEndpoint::new(service, url)
}

/// Runs one server until it stops, and stops it when the launcher stops.
fn follow(
    servers: &mut JoinSet<()>,
    stop: &CancellationToken,
    token: CancellationToken,
    run: impl Future<Output = std::io::Result<()>> + Send + 'static,
) {
    let stop = stop.clone();
    servers.spawn(async move {
        tokio::select! {
            () = stop.cancelled() => token.cancel(),
            () = token.cancelled() => {}
        }
    });
    let run: Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> = Box::pin(run);
    servers.spawn(async move {
        if let Err(err) = run.await {
            tracing::error!(error = %err, "a subgraph stopped with an error");
        }
    });
}

/// A fresh Ed25519 key for this run: (PKCS#8 private PEM, public PEM).
fn development_key() -> Result<(String, String), LaunchError> {
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let private_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|err| LaunchError::Key(err.to_string()))?;
    let public_pem = SigningKey::from_pkcs8_pem(DEV_KID, &private_pem)
        .map_err(|err| LaunchError::Key(err.to_string()))?
        .public_pem()
        .to_owned();
    Ok((private_pem.to_string(), public_pem))
}
