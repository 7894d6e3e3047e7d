//! One process, every service: the development launcher.

use std::future::Future;
use std::pin::Pin;

use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey};
use secrecy::SecretString;
use service_core::app::{self, ListenConfig, ServiceRuntime, StartupError};
use service_core::auth::SigningKey;
use service_core::config::{CommonConfig, ConfigError};
use service_core::server::{shutdown_signal, Server};
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
    /// The development signing key could not be made.
    #[error("development signing key: {0}")]
    Key(String),
}

/// A subgraph that still serves only its error codes: name, environment
/// prefix, default address and router.
struct Member {
    service: &'static str,
    prefix: &'static str,
    default_addr: &'static str,
    router: fn(&ServiceRuntime, &ListenConfig) -> axum::Router,
}

/// The kid of the key the launcher makes when none is configured.
const DEV_KID: &str = "dev-launcher";

/// Starts every subgraph on its configured loopback port, prints where they
/// listen, and stops them all on Ctrl-C or SIGTERM.
///
/// Without `AUTH_JWT_PRIVATE_KEY`, it makes one signing key for this run and
/// gives its public half to every subgraph, so the tokens the auth service
/// issues are accepted everywhere (and die with the process).
pub async fn run_dev() -> Result<(), LaunchError> {
    let mut common = CommonConfig::from_env()?;
    service_core::telemetry::init_tracing(common.log_format);
    let mut auth = auth_service::Settings::from_env()?;
    if auth.auth.jwt_private_key.is_none() {
        let (private_pem, public_pem) = development_key()?;
        auth.auth.jwt_private_key = Some(SecretString::from(private_pem));
        auth.auth.jwt_kid = DEV_KID.to_owned();
        common
            .jwt_public_keys
            .get_or_insert_with(Default::default)
            .insert(DEV_KID.to_owned(), public_pem.into());
        auth.common.jwt_public_keys = common.jwt_public_keys.clone();
    }

    let stop = CancellationToken::new();
    let mut servers: JoinSet<()> = JoinSet::new();

    let auth_app = auth_service::Application::build(auth).await?;
    println!(
        "{:<13} subgraph  http://127.0.0.1:{}/graphql",
        auth_service::SERVICE,
        auth_app.port()
    );
    follow(&mut servers, &stop, auth_app.shutdown_token(), async move {
        auth_app.run_until_stopped().await
    });

    let members = [
        Member {
            service: payment_service::SERVICE,
            prefix: payment_service::ENV_PREFIX,
            default_addr: payment_service::DEFAULT_ADDR,
            router: |rt, listen| app::subgraph(rt, listen, payment_service::schema(rt)),
        },
        Member {
            service: bonus_service::SERVICE,
            prefix: bonus_service::ENV_PREFIX,
            default_addr: bonus_service::DEFAULT_ADDR,
            router: |rt, listen| app::subgraph(rt, listen, bonus_service::schema(rt)),
        },
        Member {
            service: notification_service::SERVICE,
            prefix: notification_service::ENV_PREFIX,
            default_addr: notification_service::DEFAULT_ADDR,
            router: |rt, listen| app::subgraph(rt, listen, notification_service::schema(rt)),
        },
    ];
    for member in members {
        let listen = ListenConfig::from_env(ListenConfig::spec(
            member.service,
            member.prefix,
            member.default_addr,
        ))?;
        let runtime = ServiceRuntime::new(member.service, common.clone())?;
        let server = Server::bind(&listen.addr, (member.router)(&runtime, &listen))
            .await
            .map_err(StartupError::from)?;
        println!(
            "{:<13} subgraph  http://{}/graphql",
            member.service,
            server.local_addr().map_err(StartupError::from)?
        );
        follow(&mut servers, &stop, server.shutdown_token(), async move {
            server.run_until_stopped().await
        });
    }
    println!(
        "The federated gateway is not built yet: query the subgraphs above directly. Ctrl-C stops everything."
    );
    shutdown_signal().await;
    stop.cancel();
    while servers.join_next().await.is_some() {}
    Ok(())
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
