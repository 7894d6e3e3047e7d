//! Calls to subgraphs: one pooled keep-alive HTTP client, a breaker and a
//! latency histogram per subgraph, the caller's `Authorization` and
//! `x-request-id` on every call.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use service_core::resilience::{BreakerConfig, BreakerError, CircuitBreaker};

use crate::metrics::GatewayMetrics;

/// What a caller's request carries to every subgraph.
#[derive(Clone, Debug, Default)]
pub(crate) struct Forwarded {
    pub(crate) authorization: Option<String>,
    pub(crate) request_id: Option<String>,
}

/// A subgraph's answer: `data` and `errors` as it sent them.
#[derive(Debug, Default)]
pub(crate) struct SubgraphResponse {
    pub(crate) data: Option<Value>,
    pub(crate) errors: Vec<Value>,
}

/// Why a subgraph gave no GraphQL answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("{0}")]
    Transport(String),
    #[error("the subgraph answered HTTP {0} without a GraphQL response")]
    Status(u16),
    #[error("the subgraph's breaker is open")]
    Open,
}

/// The subgraph HTTP client shared by every request.
pub(crate) struct SubgraphClient {
    http: reqwest::Client,
    timeout: Duration,
    breaker_config: BreakerConfig,
    breakers: RwLock<HashMap<String, Arc<CircuitBreaker>>>,
    metrics: GatewayMetrics,
}

impl SubgraphClient {
    pub(crate) fn new(
        http: reqwest::Client,
        timeout: Duration,
        breaker_config: BreakerConfig,
        metrics: GatewayMetrics,
    ) -> Self {
        Self {
            http,
            timeout,
            breaker_config,
            breakers: RwLock::new(HashMap::new()),
            metrics,
        }
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The breaker of `subgraph`, made on first use.
    pub(crate) fn breaker(&self, subgraph: &str) -> Arc<CircuitBreaker> {
        if let Some(breaker) = self
            .breakers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(subgraph)
        {
            return breaker.clone();
        }
        self.breakers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(subgraph.to_owned())
            .or_insert_with(|| {
                Arc::new(CircuitBreaker::new(
                    format!("subgraph:{subgraph}"),
                    self.breaker_config.clone(),
                ))
            })
            .clone()
    }

    /// Reports every breaker's state to the metrics gauge.
    pub(crate) fn report_breakers(&self) {
        for breaker in self
            .breakers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
        {
            breaker.report_state(&self.metrics.breaker_state);
        }
    }

    /// Sends one operation to `subgraph` at `url`.
    pub(crate) async fn fetch(
        &self,
        subgraph: &str,
        url: &str,
        query: &str,
        variables: Map<String, Value>,
        forwarded: &Forwarded,
    ) -> Result<SubgraphResponse, FetchError> {
        let breaker = self.breaker(subgraph);
        let started = Instant::now();
        let call = self.send(url, query, variables, forwarded);
        let result = breaker.call(call).await;
        self.metrics
            .subgraph_latency
            .with_label_values(&[subgraph])
            .observe(started.elapsed().as_secs_f64());
        breaker.report_state(&self.metrics.breaker_state);
        match result {
            Ok(response) => Ok(response),
            Err(BreakerError::Inner(err)) => Err(err),
            Err(_) => Err(FetchError::Open),
        }
    }

    async fn send(
        &self,
        url: &str,
        query: &str,
        variables: Map<String, Value>,
        forwarded: &Forwarded,
    ) -> Result<SubgraphResponse, FetchError> {
        let mut request = self
            .http
            .post(url)
            .timeout(self.timeout)
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(authorization) = &forwarded.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        if let Some(id) = &forwarded.request_id {
            request = request.header("x-request-id", id);
        }
        let response = request
            .send()
            .await
            .map_err(|err| FetchError::Transport(err.to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|err| FetchError::Transport(err.to_string()))?;
        let parsed: Option<Map<String, Value>> = serde_json::from_slice(&body).ok();
        match parsed {
            Some(mut object) if object.contains_key("data") || object.contains_key("errors") => {
                let data = object.remove("data").filter(|d| !d.is_null());
                let errors = match object.remove("errors") {
                    Some(Value::Array(errors)) => errors,
                    _ => Vec::new(),
                };
                Ok(SubgraphResponse { data, errors })
            }
            _ => Err(FetchError::Status(status.as_u16())),
        }
    }
}
