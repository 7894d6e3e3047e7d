//! The subgraph server kit.
//!
//! [`Subgraph`] turns an async-graphql schema into an axum router with
//! `POST`/`GET /graphql`, `/health/live`, `/health/ready`, `/metrics`, request
//! ids, a body limit, panic containment and per-request logs and metrics.
//! [`Server`] binds it and runs it until a shutdown signal, letting in-flight
//! requests finish. [`ws`] adds subscriptions over WebSocket in front of it.

mod graphql;
mod health;
pub mod ws;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use access_engine::AccessEngine;
use async_graphql::Executor;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;

pub use health::HealthCheck;

use crate::auth::TokenVerifier;
use crate::context::RequestId;
use crate::error::codes;
use crate::telemetry::Metrics;

/// The largest request body accepted by default (1 MiB), as in the API contract.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// What the handlers share.
struct Shared<E> {
    service: &'static str,
    executor: E,
    verifier: Option<Arc<TokenVerifier>>,
    access: Arc<AccessEngine>,
    checks: Vec<Arc<dyn HealthCheck>>,
    metrics: Metrics,
    max_batch: usize,
}

/// Builds the HTTP surface of one subgraph around its schema.
pub struct Subgraph<E> {
    shared: Shared<E>,
    body_limit: usize,
}

impl<E: Executor> Subgraph<E> {
    /// A subgraph named `service` serving `executor` (an async-graphql
    /// `Schema`), with permissions decided by `access`.
    pub fn new(
        service: &'static str,
        executor: E,
        access: Arc<AccessEngine>,
        metrics: Metrics,
    ) -> Self {
        Self {
            shared: Shared {
                service,
                executor,
                verifier: None,
                access,
                checks: Vec::new(),
                metrics,
                max_batch: crate::graphql::QueryLimits::standard().max_batch,
            },
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }

    /// Verifies `Authorization: Bearer` tokens with `verifier`. Without one,
    /// any request that carries a token is refused as `MSAuthInvalidToken`.
    pub fn verifier(mut self, verifier: Arc<TokenVerifier>) -> Self {
        self.shared.verifier = Some(verifier);
        self
    }

    /// Adds a dependency that decides readiness.
    pub fn health_check(mut self, check: Arc<dyn HealthCheck>) -> Self {
        self.shared.checks.push(check);
        self
    }

    /// Largest accepted request body, in bytes (larger ones get 413).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Most operations accepted in one JSON array batch.
    pub fn max_batch(mut self, operations: usize) -> Self {
        self.shared.max_batch = operations;
        self
    }

    /// The router, ready to serve.
    pub fn router(self) -> Router {
        let metrics = self.shared.metrics.clone();
        let shared = Arc::new(self.shared);
        Router::new()
            .route("/graphql", get(graphql::get::<E>).post(graphql::post::<E>))
            .route("/health/live", get(live))
            .route("/health/ready", get(ready::<E>))
            .route("/metrics", get(render_metrics::<E>))
            .with_state(shared)
            .layer(DefaultBodyLimit::max(self.body_limit))
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(middleware::from_fn_with_state(metrics, observe))
    }
}

async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "live" }))
}

async fn ready<E>(State(shared): State<Arc<Shared<E>>>) -> impl IntoResponse {
    health::readiness(shared.service, &shared.checks).await
}

async fn render_metrics<E>(State(shared): State<Arc<Shared<E>>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        shared.metrics.render(),
    )
}

/// A panic is a bug: the client gets a coded 500 and the details go to the
/// log, where the request span adds the request id.
fn panic_response(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic payload");
    tracing::error!(panic = %detail, "request handler panicked");
    graphql::coded_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        codes::INTERNAL,
        "Internal error",
        &serde_json::Map::new(),
    )
}

/// Gives every request an id (the caller's, when it is well-formed), runs it
/// inside a span carrying that id, echoes the id, and records metrics.
async fn observe(State(metrics): State<Metrics>, mut request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(RequestId::HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(RequestId::parse)
        .unwrap_or_else(RequestId::generate);
    request.extensions_mut().insert(request_id.clone());
    // Only known routes become label values, so a scan of random paths
    // cannot blow up the metric's cardinality.
    let route: &'static str = match request.uri().path() {
        "/graphql" => "/graphql",
        "/health/live" => "/health/live",
        "/health/ready" => "/health/ready",
        "/metrics" => "/metrics",
        _ => "other",
    };
    let method = request.method().as_str().to_owned();
    let span = tracing::info_span!("request", request_id = %request_id, method = %method, route);
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics.observe_http(route, &method, status, elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            "request served"
        );
    });
    if let Ok(value) = HeaderValue::from_str(request_id.as_str()) {
        response.headers_mut().insert(RequestId::HEADER, value);
    }
    response
}

/// A bound listener and the router it serves.
pub struct Server {
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
}

impl Server {
    /// Binds `addr` (`127.0.0.1:0` picks a free port, as tests do).
    pub async fn bind(addr: &str, router: Router) -> io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
            router,
            shutdown: CancellationToken::new(),
        })
    }

    /// Stops on `token` instead of a token of its own: the one that also
    /// closes subscription connections ([`ws::with_subscriptions`]).
    pub fn with_shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Cancelling this token stops the server gracefully, like a signal.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the token is cancelled or the process receives SIGTERM or
    /// Ctrl-C, then stops accepting and waits for in-flight requests.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        let token = self.shutdown.clone();
        let addr = self.listener.local_addr()?;
        tracing::info!(%addr, "listening");
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move {
                tokio::select! {
                    () = token.cancelled() => {}
                    () = shutdown_signal() => token.cancel(),
                }
            })
            .await?;
        tracing::info!(%addr, "stopped");
        Ok(())
    }
}

/// Resolves on SIGTERM or Ctrl-C; if a handler cannot be installed, that
/// signal is simply not awaited (the token still stops the server).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
