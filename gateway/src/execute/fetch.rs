//! Calls to subgraphs: one pooled keep-alive HTTP client, a breaker and a
//! latency histogram per subgraph, the caller's `Authorization` and
//! `x-request-id` on every call.
//!
//! Fetches of a query that are identical to one already in flight (same
//! subgraph URL, same document and variables, same `Authorization`) wait
//! for that call's answer instead of making their own: a burst of the same
//! query costs each subgraph one call. Only queries share: a fetch in a
//! mutation (or after one) must see that mutation's effects, which a read
//! started earlier might not. A shared call carries the request id of the
//! request that started it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use prometheus::{Histogram, IntCounter, IntGauge};
use serde_json::{Map, Value};
use service_core::resilience::{BreakerConfig, BreakerError, CircuitBreaker};

use crate::metrics::GatewayMetrics;

/// What a caller's request carries to every subgraph.
#[derive(Clone, Debug, Default)]
pub(crate) struct Forwarded {
    pub(crate) authorization: Option<String>,
    pub(crate) request_id: Option<String>,
    /// The operation is a query: its fetches may share an identical call
    /// already in flight.
    pub(crate) shareable: bool,
}

/// A subgraph's answer: `data` and `errors` as it sent them.
#[derive(Clone, Debug, Default)]
pub(crate) struct SubgraphResponse {
    pub(crate) data: Option<Value>,
    pub(crate) errors: Vec<Value>,
}

/// Why a subgraph gave no GraphQL answer.
#[derive(Clone, Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("{0}")]
    Transport(String),
    #[error("the subgraph answered HTTP {0} without a GraphQL response")]
    Status(u16),
    #[error("the subgraph's breaker is open")]
    Open,
}

/// What identifies a fetch others may share.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FetchKey {
    url: String,
    authorization: Option<String>,
    body: Bytes,
}

/// The body of a subgraph request.
#[derive(serde::Serialize)]
struct RequestBody<'a> {
    query: &'a str,
    variables: &'a Map<String, Value>,
}

type InFlightCalls = HashMap<FetchKey, SharedCall, foldhash::fast::RandomState>;

/// A subgraph's breaker and its metric series, looked up once per fetch.
struct Subgraph {
    breaker: Arc<CircuitBreaker>,
    latency: Histogram,
    shared: IntCounter,
    state: IntGauge,
}

impl Subgraph {
    fn report_state(&self) {
        self.state.set(self.breaker.state_code());
    }
}

/// A call in flight, as its sharers await it.
type SharedCall = Shared<BoxFuture<'static, Result<Arc<SubgraphResponse>, FetchError>>>;

/// Removes the call it was made for from the in-flight map when the fetch
/// that started the call ends, finished or cancelled, so later fetches
/// start a fresh call. (Sharers still waiting keep the call running.)
struct InFlight<'a> {
    calls: &'a Mutex<InFlightCalls>,
    key: FetchKey,
    call: SharedCall,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        if calls
            .get(&self.key)
            .is_some_and(|call| call.ptr_eq(&self.call))
        {
            calls.remove(&self.key);
        }
    }
}

/// The subgraph HTTP client shared by every request.
pub(crate) struct SubgraphClient {
    http: reqwest::Client,
    timeout: Duration,
    breaker_config: BreakerConfig,
    subgraphs: RwLock<HashMap<String, Arc<Subgraph>, foldhash::fast::RandomState>>,
    metrics: GatewayMetrics,
    /// Whether query fetches share identical calls in flight.
    dedupe: bool,
    in_flight: Mutex<InFlightCalls>,
}

impl SubgraphClient {
    pub(crate) fn new(
        http: reqwest::Client,
        timeout: Duration,
        breaker_config: BreakerConfig,
        metrics: GatewayMetrics,
        dedupe: bool,
    ) -> Self {
        Self {
            http,
            timeout,
            breaker_config,
            subgraphs: RwLock::default(),
            metrics,
            dedupe,
            in_flight: Mutex::default(),
        }
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The breaker and metric series of `subgraph`, made on first use.
    fn subgraph(&self, subgraph: &str) -> Arc<Subgraph> {
        if let Some(found) = self
            .subgraphs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(subgraph)
        {
            return found.clone();
        }
        self.subgraphs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(subgraph.to_owned())
            .or_insert_with(|| {
                let breaker = Arc::new(CircuitBreaker::new(
                    format!("subgraph:{subgraph}"),
                    self.breaker_config.clone(),
                ));
                let metrics = &self.metrics;
                Arc::new(Subgraph {
                    latency: metrics.subgraph_latency.with_label_values(&[subgraph]),
                    shared: metrics.subgraph_shared.with_label_values(&[subgraph]),
                    state: metrics.breaker_state.with_label_values(&[breaker.name()]),
                    breaker,
                })
            })
            .clone()
    }

    /// Reports every breaker's state to the metrics gauge.
    pub(crate) fn report_breakers(&self) {
        for subgraph in self
            .subgraphs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            subgraph.report_state();
        }
    }

    /// Sends one operation to `subgraph` at `url`, or, for a query, waits
    /// for an identical call already in flight.
    pub(crate) async fn fetch(
        &self,
        subgraph: &str,
        url: &str,
        query: &str,
        variables: Map<String, Value>,
        forwarded: &Forwarded,
    ) -> Result<SubgraphResponse, FetchError> {
        let body = serde_json::to_vec(&RequestBody {
            query,
            variables: &variables,
        })
        .map_err(|err| FetchError::Transport(err.to_string()))?;
        let body = Bytes::from(body);
        let state = self.subgraph(subgraph);
        if !(self.dedupe && forwarded.shareable) {
            return self.call(state, url, body, forwarded).await;
        }
        let key = FetchKey {
            url: url.to_owned(),
            authorization: forwarded.authorization.clone(),
            body,
        };
        let (call, _started_here) = {
            let mut calls = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match calls.get(&key) {
                Some(call) => {
                    state.shared.inc();
                    (call.clone(), None)
                }
                None => {
                    let call = self
                        .call(state, url, key.body.clone(), forwarded)
                        .map(|answer| answer.map(Arc::new))
                        .boxed()
                        .shared();
                    calls.insert(key.clone(), call.clone());
                    let started_here = InFlight {
                        calls: &self.in_flight,
                        key,
                        call: call.clone(),
                    };
                    (call, Some(started_here))
                }
            }
        };
        call.await.map(Arc::unwrap_or_clone)
    }

    /// One call through the subgraph's breaker, timed. Owns what it needs,
    /// so that fetches of other requests can share it.
    fn call(
        &self,
        subgraph: Arc<Subgraph>,
        url: &str,
        body: Bytes,
        forwarded: &Forwarded,
    ) -> impl Future<Output = Result<SubgraphResponse, FetchError>> + Send + 'static {
        let mut request = self
            .http
            .post(url)
            .timeout(self.timeout)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(authorization) = &forwarded.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        if let Some(id) = &forwarded.request_id {
            request = request.header("x-request-id", id);
        }
        async move {
            let started = Instant::now();
            let result = subgraph.breaker.call(send(request)).await;
            subgraph.latency.observe(started.elapsed().as_secs_f64());
            subgraph.report_state();
            match result {
                Ok(response) => Ok(response),
                Err(BreakerError::Inner(err)) => Err(err),
                Err(_) => Err(FetchError::Open),
            }
        }
    }
}

/// Sends `request` and reads the subgraph's GraphQL answer.
async fn send(request: reqwest::RequestBuilder) -> Result<SubgraphResponse, FetchError> {
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
