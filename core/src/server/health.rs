//! Liveness and readiness.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::Json;
use futures::future::BoxFuture;
use serde_json::{json, Map, Value};

/// How long one dependency may take to answer a readiness probe before it
/// counts as down; a probe must answer quickly even when a dependency hangs.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A dependency whose health decides readiness (database, Redis, a subgraph).
pub trait HealthCheck: Send + Sync + 'static {
    /// The name shown in `/health/ready`.
    fn name(&self) -> &str;
    /// `Ok` when usable; the error text is shown to operators, so it must
    /// not contain secrets (no connection strings).
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// Runs every check concurrently, each bounded by [`CHECK_TIMEOUT`], and
/// answers 200 when all pass, 503 naming what is down otherwise.
pub(super) async fn readiness(
    service: &str,
    checks: &[Arc<dyn HealthCheck>],
) -> (StatusCode, Json<Value>) {
    let results = futures::future::join_all(checks.iter().map(|check| async move {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check.check()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {}s", CHECK_TIMEOUT.as_secs())),
        };
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        (check.name().to_owned(), outcome, latency_ms)
    }))
    .await;

    let mut all_healthy = true;
    let mut report = Map::new();
    for (name, outcome, latency_ms) in results {
        all_healthy &= outcome.is_ok();
        report.insert(
            name,
            json!({
                "healthy": outcome.is_ok(),
                "latencyMs": latency_ms,
                "error": outcome.err(),
            }),
        );
    }
    let status = if all_healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if all_healthy { "ready" } else { "unavailable" },
        "service": service,
        "checks": report,
    });
    (status, Json(body))
}
