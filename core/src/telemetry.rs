//! Logs and metrics.
//!
//! Logs are structured (`tracing`, JSON by default) and every line written
//! while a request is served carries that request's id, because the server
//! kit opens a span holding it around the whole request. Metrics live in one
//! Prometheus registry per service, labelled with the service name, and are
//! served at `/metrics`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global log subscriber: `RUST_LOG` filters (default `info`),
/// `format` chooses JSON or human-readable lines. Calling it again (as tests
/// do) keeps the first subscriber.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    // An error only means a subscriber is already installed.
    let _ = result;
}

/// Latency buckets in seconds, from 0.5 ms to 10 s: a gateway hop and a
/// slow payout both land in a meaningful bucket.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The metrics every service exposes, in a registry of its own so that
/// several services in one process do not collide.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    graphql_errors: IntCounterVec,
}

impl Metrics {
    /// A registry whose every series carries `service="<service>"`.
    pub fn new(service: &str) -> Result<Self, prometheus::Error> {
        let labels = [("service".to_owned(), service.to_owned())].into();
        let registry = Registry::new_custom(None, Some(labels))?;
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests served"),
            &["route", "method", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time to serve an HTTP request",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )?;
        let graphql_errors = IntCounterVec::new(
            Opts::new("graphql_errors_total", "GraphQL errors returned, by code"),
            &["code"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(graphql_errors.clone()))?;
        Ok(Self {
            registry,
            http_requests,
            http_duration,
            graphql_errors,
        })
    }

    /// The registry, for modules that add their own series.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records one served request.
    pub fn observe_http(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.http_requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.http_duration
            .with_label_values(&[route, method])
            .observe(seconds);
    }

    /// Counts one GraphQL error by its code.
    pub fn count_graphql_error(&self, code: &str) {
        self.graphql_errors.with_label_values(&[code]).inc();
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(error = %err, "could not encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_metrics_carry_the_service_label() {
        let metrics = Metrics::new("payment").unwrap();
        metrics.observe_http("/graphql", "POST", 200, 0.002);
        metrics.count_graphql_error("MSCoreValidation");
        let text = metrics.render();
        assert!(text.contains(r#"http_requests_total{method="POST",route="/graphql",status="200",service="payment"} 1"#), "{text}");
        assert!(
            text.contains(r#"graphql_errors_total{code="MSCoreValidation",service="payment"} 1"#),
            "{text}"
        );
        assert!(text.contains("http_request_duration_seconds_bucket"));
    }
}
