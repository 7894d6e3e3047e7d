//! The gateway's Prometheus series, beside the HTTP ones core registers:
//! operations and their latency by type, subgraph fetch latency, refusals
//! by code, breaker state per subgraph and plan-cache hits and misses.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};
use service_core::telemetry::Metrics;

const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Requests, latencies, subgraph fetches, limit rejections, breakers and
/// the plan cache.
#[derive(Clone, Debug)]
pub struct GatewayMetrics {
    /// The registry shared with core's HTTP series.
    pub core: Metrics,
    pub(crate) operations: IntCounterVec,
    pub(crate) operation_latency: HistogramVec,
    pub(crate) subgraph_latency: HistogramVec,
    pub(crate) rejections: IntCounterVec,
    pub(crate) breaker_state: IntGaugeVec,
    /// Plan-cache lookups by `result` (`hit`, `miss`).
    pub(crate) plan_cache: IntCounterVec,
    /// Subgraph fetches answered by an identical fetch already in flight.
    pub(crate) subgraph_shared: IntCounterVec,
}

impl GatewayMetrics {
    /// Registers the gateway's series.
    pub fn new() -> Result<Self, prometheus::Error> {
        let core = Metrics::new(crate::config::SERVICE)?;
        let registry = core.registry().clone();
        let operations = IntCounterVec::new(
            Opts::new(
                "gateway_operations_total",
                "GraphQL operations served, by type",
            ),
            &["operation_type"],
        )?;
        let operation_latency = HistogramVec::new(
            HistogramOpts::new(
                "gateway_operation_duration_seconds",
                "Time to serve one GraphQL operation, by type",
            )
            .buckets(BUCKETS.to_vec()),
            &["operation_type"],
        )?;
        let subgraph_latency = HistogramVec::new(
            HistogramOpts::new(
                "gateway_subgraph_fetch_duration_seconds",
                "Time of one fetch to a subgraph",
            )
            .buckets(BUCKETS.to_vec()),
            &["subgraph"],
        )?;
        let rejections = IntCounterVec::new(
            Opts::new(
                "gateway_limit_rejections_total",
                "Operations refused before planning, by code",
            ),
            &["code"],
        )?;
        let plan_cache = IntCounterVec::new(
            Opts::new(
                "gateway_plan_cache_requests_total",
                "Plan-cache lookups, by result (hit or miss)",
            ),
            &["result"],
        )?;
        let subgraph_shared = IntCounterVec::new(
            Opts::new(
                "gateway_subgraph_fetches_shared_total",
                "Subgraph fetches answered by an identical fetch already in flight",
            ),
            &["subgraph"],
        )?;
        registry.register(Box::new(operations.clone()))?;
        registry.register(Box::new(operation_latency.clone()))?;
        registry.register(Box::new(subgraph_latency.clone()))?;
        registry.register(Box::new(rejections.clone()))?;
        registry.register(Box::new(plan_cache.clone()))?;
        registry.register(Box::new(subgraph_shared.clone()))?;
        let breaker_state = service_core::resilience::state_gauge(&registry)?;
        Ok(Self {
            core,
            operations,
            operation_latency,
            subgraph_latency,
            rejections,
            breaker_state,
            plan_cache,
            subgraph_shared,
        })
    }
}
