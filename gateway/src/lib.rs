//! The gateway crate: the federated front door of the platform, and the
//! launcher that runs every service in one process.
//!
//! A request goes through [`http`] (transport, request id, body limit),
//! `auth` (token verified once, rate budget), `limits` (nesting guard,
//! depth, aliases, complexity), `operation` (parse, operation selection,
//! validation against the public schema, variable defaults), `plan` (Hive
//! planner, plan cache) and `execute` (fetches
//! over pooled HTTP, entity batching, merge, projection with null
//! propagation). [`compose`] builds the supergraph from the subgraphs'
//! SDL with graphql-composition; `admin` serves the gateway's own fields
//! as an in-process subgraph; `subscriptions` serves subscriptions over
//! WebSocket and SSE, opening each on its subgraph over WebSocket. See
//! `docs/gateway.md`.
#![warn(missing_docs)]

mod admin;
mod auth;
pub mod compose;
pub mod config;
pub mod error;
mod execute;
mod gateway;
pub mod http;
pub mod launcher;
mod limits;
mod metrics;
mod operation;
mod plan;
mod subscriptions;
pub mod testing;

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use admin::LOCAL_SUBGRAPH;
pub use config::{GatewaySettings, StartFlags, StartVars, SubgraphEndpoint};
pub use gateway::{Gateway, GatewayDeps, GraphqlRequest};
pub use metrics::GatewayMetrics;

/// Why [`Application::start`] could not start the gateway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The address could not be bound.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The supergraph could not be loaded or composed.
    #[error(transparent)]
    Compose(#[from] compose::ComposeError),
}

/// A bound gateway, ready to serve.
pub struct Application {
    listener: TcpListener,
    gateway: Gateway,
    shutdown: CancellationToken,
}

impl Application {
    /// Binds the gateway's address (`127.0.0.1:0` picks a free port).
    pub async fn bind(gateway: Gateway) -> std::io::Result<Self> {
        let listener = TcpListener::bind(&gateway.settings().addr).await?;
        Ok(Self {
            listener,
            gateway,
            shutdown: CancellationToken::new(),
        })
    }

    /// Binds `settings.addr` first, answers `/health/live` (200) and
    /// `/health/ready` (503, `starting`) while the gateway fetches and
    /// composes its subgraphs (which may take until
    /// `GATEWAY_STARTUP_TIMEOUT_SECS` when they are slow to come up), then
    /// serves the gateway on the same socket. Connections arriving during
    /// the switch wait in the socket's backlog; none is refused.
    pub async fn start(settings: GatewaySettings, deps: GatewayDeps) -> Result<Self, StartError> {
        let std_listener = std::net::TcpListener::bind(&settings.addr)?;
        std_listener.set_nonblocking(true)?;
        let interim = TcpListener::from_std(std_listener.try_clone()?)?;
        let composed = CancellationToken::new();
        let until_composed = composed.clone();
        let health = tokio::spawn(async move {
            axum::serve(interim, http::starting_router())
                .with_graceful_shutdown(until_composed.cancelled_owned())
                .await
        });
        let built = Gateway::build(settings, deps).await;
        composed.cancel();
        match health.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "the start-up health server failed"),
            Err(err) => tracing::warn!(error = %err, "the start-up health server ended abnormally"),
        }
        Ok(Self {
            listener: TcpListener::from_std(std_listener)?,
            gateway: built?,
            shutdown: CancellationToken::new(),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    /// The gateway served.
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// Cancelling this token stops the server gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the token is cancelled or the process gets SIGTERM or
    /// Ctrl-C, then lets in-flight requests finish.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let token = self.shutdown.clone();
        reload_on_hangup(self.gateway.clone(), token.clone());
        self.gateway.watch_supergraph_file(token.clone());
        let closing = self.gateway.inner.closing.clone();
        let router = http::router(self.gateway);
        axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            tokio::select! {
                () = token.cancelled() => {}
                () = service_core::server::shutdown_signal() => token.cancel(),
            }
            // Subscriptions never end on their own: complete them.
            closing.cancel();
        })
        .await
    }
}

/// `SIGHUP` recomposes the supergraph, like the `reloadSupergraph` mutation.
#[cfg(unix)]
fn reload_on_hangup(gateway: Gateway, stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("SIGHUP handler unavailable: reload only through the mutation");
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                received = hangups.recv() => {
                    if received.is_none() {
                        return;
                    }
                    match gateway.reload().await {
                        Ok(count) => tracing::info!(subgraphs = count, "supergraph reloaded on SIGHUP"),
                        Err(err) => tracing::error!(error = %err, "reload failed; the previous supergraph stays"),
                    }
                }
            }
        }
    });
}

#[cfg(not(unix))]
fn reload_on_hangup(_gateway: Gateway, _stop: CancellationToken) {}
