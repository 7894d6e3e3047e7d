//! One process, every service: the development launcher.

use service_core::app::{self, ListenConfig, ServiceRuntime, StartupError};
use service_core::config::CommonConfig;
use service_core::server::{shutdown_signal, Server};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A subgraph the launcher starts: name, environment prefix, default address
/// and schema.
struct Member {
    service: &'static str,
    prefix: &'static str,
    default_addr: &'static str,
    router: fn(&ServiceRuntime, &ListenConfig) -> axum::Router,
}

/// Starts the four subgraphs on their configured loopback ports, prints where
/// they listen, and stops them all on Ctrl-C or SIGTERM.
pub async fn run_dev() -> Result<(), StartupError> {
    let common = CommonConfig::from_env()?;
    service_core::telemetry::init_tracing(common.log_format);
    let members = [
        Member {
            service: auth_service::SERVICE,
            prefix: auth_service::ENV_PREFIX,
            default_addr: auth_service::DEFAULT_ADDR,
            router: |rt, listen| app::subgraph(rt, listen, auth_service::schema(rt)),
        },
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

    let stop = CancellationToken::new();
    let mut servers = JoinSet::new();
    for member in members {
        let listen = ListenConfig::from_env(ListenConfig::spec(
            member.service,
            member.prefix,
            member.default_addr,
        ))?;
        let runtime = ServiceRuntime::new(member.service, common.clone())?;
        let server = Server::bind(&listen.addr, (member.router)(&runtime, &listen)).await?;
        println!(
            "{:<13} subgraph  http://{}/graphql",
            member.service,
            server.local_addr()?
        );
        let token = server.shutdown_token();
        let stop = stop.clone();
        servers.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => token.cancel(),
                () = token.cancelled() => {}
            }
        });
        servers.spawn(async move {
            if let Err(err) = server.run_until_stopped().await {
                tracing::error!(error = %err, "subgraph stopped with an error");
            }
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
