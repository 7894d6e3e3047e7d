//! The gateway's Prometheus series, beside the HTTP ones core registers:
//! operations and their latency by type, subgraph fetch latency, refusals
//! by code, breaker state per subgraph and plan-cache hits and misses.

use std::sync::{Arc, OnceLock};

use hive_router_query_planner::state::supergraph_state::OperationKind;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
};
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
    /// The labelled series every request touches, looked up once.
    series: Arc<Series>,
}

/// Series with fixed labels, made on first use (so that, as with
/// `with_label_values` per request, a series appears once it counts).
#[derive(Debug, Default)]
struct Series {
    query: OnceLock<OperationSeries>,
    mutation: OnceLock<OperationSeries>,
    subscription: OnceLock<OperationSeries>,
    plan_hit: OnceLock<IntCounter>,
    plan_miss: OnceLock<IntCounter>,
}

/// The operation count and latency of one operation type.
#[derive(Clone, Debug)]
pub(crate) struct OperationSeries {
    pub(crate) count: IntCounter,
    pub(crate) latency: Histogram,
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
            series: Arc::default(),
        })
    }

    /// The series of operations of type `kind`.
    pub(crate) fn operation(&self, kind: &OperationKind) -> &OperationSeries {
        let (cell, label) = match kind {
            OperationKind::Query => (&self.series.query, "query"),
            OperationKind::Mutation => (&self.series.mutation, "mutation"),
            OperationKind::Subscription => (&self.series.subscription, "subscription"),
        };
        cell.get_or_init(|| OperationSeries {
            count: self.operations.with_label_values(&[label]),
            latency: self.operation_latency.with_label_values(&[label]),
        })
    }

    /// Counts one plan-cache lookup.
    pub(crate) fn plan_cache_lookup(&self, hit: bool) {
        let (cell, label) = if hit {
            (&self.series.plan_hit, "hit")
        } else {
            (&self.series.plan_miss, "miss")
        };
        cell.get_or_init(|| self.plan_cache.with_label_values(&[label]))
            .inc();
    }
}
