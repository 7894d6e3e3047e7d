//! The gateway itself: the current supergraph (swapped whole on reload),
//! the plan cache that belongs to it, the subgraph client, and the
//! pipeline one operation goes through.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use graphql_tools::parser::query::{self as q, OperationDefinition};
use serde_json::{json, Map, Value};
use service_core::auth::TokenVerifier;
use service_core::config::AppEnv;
use service_core::context::{RequestContext, RequestId};
use service_core::resilience::{BreakerConfig, RateLimiter};

use crate::admin::{LocalSubgraph, LOCAL_SUBGRAPH, LOCAL_URL};
use crate::auth::Caller;
use crate::compose::{self, ComposeError, Supergraph};
use crate::config::{GatewaySettings, SubgraphEndpoint};
use crate::error::{codes, GraphqlError};
use crate::execute::{self, Executor, Forwarded, SubgraphClient};
use crate::metrics::GatewayMetrics;
use crate::operation::{apply_variable_defaults, clean_parse_error, select_operation, validate};
use crate::plan::{self, PlanCache};

/// What the gateway is built from besides its settings.
pub struct GatewayDeps {
    /// Shared settings (environment, token keys).
    pub app_env: AppEnv,
    /// Verifies bearer tokens; `None` refuses every token.
    pub verifier: Option<Arc<TokenVerifier>>,
    /// Permission rules for the gateway's own fields.
    pub access: Arc<access_engine::AccessEngine>,
    /// Shares rate budgets between instances when set.
    pub redis: Option<service_core::redis::RedisAccessor>,
}

/// A supergraph and the plans made for it.
pub(crate) struct Loaded {
    pub(crate) supergraph: Supergraph,
    pub(crate) plans: PlanCache,
}

pub(crate) struct Inner {
    pub(crate) settings: GatewaySettings,
    pub(crate) app_env: AppEnv,
    pub(crate) verifier: Option<Arc<TokenVerifier>>,
    pub(crate) access: Arc<access_engine::AccessEngine>,
    pub(crate) limiter: Arc<RateLimiter>,
    pub(crate) redis: Option<service_core::redis::RedisAccessor>,
    pub(crate) metrics: GatewayMetrics,
    pub(crate) client: SubgraphClient,
    pub(crate) local: LocalSubgraph,
    loaded: RwLock<Arc<Loaded>>,
    reload_lock: tokio::sync::Mutex<()>,
}

/// The federated gateway; cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

/// One GraphQL request as clients send it.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphqlRequest {
    /// The document.
    pub query: Option<String>,
    /// Variable values.
    pub variables: Option<Map<String, Value>>,
    /// Which operation of the document to run.
    pub operation_name: Option<String>,
    /// Protocol extensions (accepted, unused).
    pub extensions: Option<Value>,
}

/// How an operation ended, for the HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It ran (data may be partial).
    Executed,
    /// Refused before execution: a request error without `data`.
    RequestError,
    /// A mutation sent over GET.
    MutationOverGet,
}

impl Gateway {
    /// Fetches the SDL of every configured subgraph (waiting for them up to
    /// the start-up timeout), composes, and builds the gateway.
    pub async fn build(settings: GatewaySettings, deps: GatewayDeps) -> Result<Self, ComposeError> {
        let metrics = GatewayMetrics::new().map_err(|e| ComposeError::Supergraph(e.to_string()))?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ComposeError::Supergraph(e.to_string()))?;
        let client = SubgraphClient::new(
            http,
            settings.subgraph_timeout,
            BreakerConfig {
                failure_threshold: settings.breaker_failures,
                rolling_window: Duration::from_secs(60),
                reset_timeout: settings.breaker_reset,
                half_open_max_probes: 1,
            },
            metrics.clone(),
        );
        let local = LocalSubgraph::new();
        let loaded = load(&client, &local, &settings).await?;
        let limiter = Arc::new(RateLimiter::new(
            "gateway-client",
            settings.rate_limit_burst,
            settings.rate_limit_per_second,
            deps.redis.clone(),
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                app_env: deps.app_env,
                verifier: deps.verifier,
                access: deps.access,
                limiter,
                redis: deps.redis,
                metrics,
                client,
                local,
                loaded: RwLock::new(Arc::new(loaded)),
                reload_lock: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The settings the gateway runs with.
    pub fn settings(&self) -> &GatewaySettings {
        &self.inner.settings
    }

    /// The metrics registry (Prometheus text through [`GatewayMetrics::core`]).
    pub fn metrics(&self) -> &GatewayMetrics {
        &self.inner.metrics
    }

    pub(crate) fn loaded(&self) -> Arc<Loaded> {
        self.inner
            .loaded
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The supergraph SDL currently served.
    pub fn supergraph_sdl(&self) -> String {
        self.loaded().supergraph.sdl().to_owned()
    }

    /// Recomposes from the subgraphs' current SDL and swaps the result in;
    /// requests already running keep the supergraph they started with.
    /// Answers how many subgraphs were composed.
    pub async fn reload(&self) -> Result<usize, ComposeError> {
        let _one_at_a_time = self.inner.reload_lock.lock().await;
        let loaded = load(&self.inner.client, &self.inner.local, &self.inner.settings).await?;
        let count = loaded.supergraph.endpoints.len();
        *self
            .inner
            .loaded
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
        Ok(count)
    }

    /// Every error code of every service: the gateway's own and each
    /// subgraph's `_errorCodes`, sorted and unique. A subgraph that does
    /// not answer is logged and left out.
    pub async fn error_codes(&self) -> Vec<String> {
        let mut all: std::collections::BTreeSet<String> = crate::error::registry()
            .codes()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let loaded = self.loaded();
        let endpoints: Vec<SubgraphEndpoint> = loaded
            .supergraph
            .subgraphs()
            .filter(|e| e.name != LOCAL_SUBGRAPH)
            .cloned()
            .collect();
        let http = self.inner.client.http();
        let answers = futures::future::join_all(endpoints.iter().map(|endpoint| async move {
            let answer = http
                .post(&endpoint.url)
                .timeout(self.inner.settings.subgraph_timeout)
                .json(&json!({ "query": "{ _errorCodes }" }))
                .send()
                .await;
            let body: Option<Value> = match answer {
                Ok(response) => response.json().await.ok(),
                Err(_) => None,
            };
            (endpoint.name.clone(), body)
        }))
        .await;
        for (name, body) in answers {
            match body
                .as_ref()
                .and_then(|b| b.pointer("/data/_errorCodes"))
                .and_then(Value::as_array)
            {
                Some(codes) => {
                    all.extend(codes.iter().filter_map(Value::as_str).map(str::to_owned))
                }
                None => tracing::info!(subgraph = %name, "no _errorCodes from subgraph"),
            }
        }
        all.into_iter().collect()
    }

    /// Each subgraph's readiness: name, healthy, latency and its report.
    pub async fn subgraph_health(&self) -> Vec<(String, bool, Duration, Value)> {
        let loaded = self.loaded();
        let mut endpoints: Vec<SubgraphEndpoint> = loaded
            .supergraph
            .subgraphs()
            .filter(|e| e.name != LOCAL_SUBGRAPH)
            .cloned()
            .collect();
        endpoints.sort_by(|a, b| a.name.cmp(&b.name));
        let http = self.inner.client.http();
        futures::future::join_all(endpoints.into_iter().map(|endpoint| async move {
            let started = Instant::now();
            let answer = http
                .get(endpoint.health_url())
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            let (healthy, details) = match answer {
                Ok(response) => {
                    let ok = response.status().is_success();
                    let body = response.json::<Value>().await.unwrap_or(Value::Null);
                    (ok, body)
                }
                Err(err) => (false, json!({ "error": err.to_string() })),
            };
            (endpoint.name, healthy, started.elapsed(), details)
        }))
        .await
    }

    /// Redis's health when one is configured: `Ok(latency)` or the reason.
    pub async fn redis_health(&self) -> Option<Result<Duration, String>> {
        let redis = self.inner.redis.as_ref()?;
        Some(
            match tokio::time::timeout(Duration::from_secs(2), redis.health()).await {
                Ok(Ok(latency)) => Ok(latency),
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err("no answer within 2s".to_owned()),
            },
        )
    }

    /// Runs one GraphQL request for `caller`.
    pub(crate) async fn execute(
        &self,
        request: GraphqlRequest,
        caller: &Caller,
        request_id: &RequestId,
        over_get: bool,
    ) -> (Value, Outcome) {
        let started = Instant::now();
        let loaded = self.loaded();
        match self
            .run(&loaded, request, caller, request_id, over_get)
            .await
        {
            Ok((body, kind)) => {
                self.inner
                    .metrics
                    .operations
                    .with_label_values(&[kind])
                    .inc();
                self.inner
                    .metrics
                    .operation_latency
                    .with_label_values(&[kind])
                    .observe(started.elapsed().as_secs_f64());
                (body, Outcome::Executed)
            }
            Err((error, outcome)) => {
                self.inner
                    .metrics
                    .rejections
                    .with_label_values(&[error.code()])
                    .inc();
                (json!({ "errors": [error.to_json()] }), outcome)
            }
        }
    }

    async fn run(
        &self,
        loaded: &Loaded,
        request: GraphqlRequest,
        caller: &Caller,
        request_id: &RequestId,
        over_get: bool,
    ) -> Result<(Value, &'static str), (GraphqlError, Outcome)> {
        let refuse = |error: GraphqlError| (error, Outcome::RequestError);
        let supergraph = &loaded.supergraph;
        let settings = &self.inner.settings;
        let production = self.inner.app_env == AppEnv::Production;
        let query = request
            .query
            .as_deref()
            .filter(|q| !q.trim().is_empty())
            .ok_or_else(|| {
                refuse(GraphqlError::new(
                    codes::PARSE_FAILED,
                    "The request has no query",
                ))
            })?;
        crate::limits::check_nesting(query, &settings.limits).map_err(refuse)?;
        let document = q::parse_query::<String>(query)
            .map_err(|err| {
                refuse(GraphqlError::new(
                    codes::PARSE_FAILED,
                    clean_parse_error(&err.to_string()),
                ))
            })?
            .into_static();
        let operation_name = request.operation_name.as_deref().filter(|n| !n.is_empty());
        let operation = select_operation(&document, operation_name).map_err(refuse)?;
        let is_mutation = matches!(operation, OperationDefinition::Mutation(_));
        if over_get && is_mutation {
            return Err((
                GraphqlError::new(codes::VALIDATION_FAILED, "Mutations must be sent with POST"),
                Outcome::MutationOverGet,
            ));
        }
        if matches!(operation, OperationDefinition::Subscription(_)) {
            return Err(refuse(GraphqlError::new(
                codes::VALIDATION_FAILED,
                "Subscriptions are not served over plain HTTP requests",
            )));
        }
        let key = (
            q::minify_query(query).unwrap_or_else(|_| query.to_owned()),
            operation_name.map(str::to_owned),
        );
        let mut variables = request.variables.unwrap_or_default();
        apply_variable_defaults(operation, &mut variables);
        // Limits first: they are linear in the document (fragment bombs
        // included); validation is not.
        crate::limits::check(
            &document,
            operation,
            &supergraph.types,
            &settings.limits,
            &variables,
        )
        .map_err(refuse)?;
        let cached = loaded.plans.get(&key);
        if cached.is_none() {
            validate(supergraph, &document, production).map_err(refuse)?;
        }
        let prepared = match cached {
            Some(prepared) => prepared,
            None => {
                let prepared =
                    plan::prepare(supergraph, &document, operation_name).map_err(|err| {
                        refuse(match err {
                            plan::PlanError::Normalization(message) => {
                                GraphqlError::new(codes::VALIDATION_FAILED, message)
                            }
                            plan::PlanError::Planner(reason) => {
                                // A valid operation the planner cannot plan is
                                // our bug: the details go to the log only.
                                tracing::error!(%reason, "query planning failed");
                                GraphqlError::new(
                                    service_core::error::codes::INTERNAL,
                                    "The operation could not be planned",
                                )
                            }
                        })
                    })?;
                let prepared = Arc::new(prepared);
                loaded.plans.insert(key, prepared.clone());
                prepared
            }
        };
        let context = RequestContext::new(
            request_id.clone(),
            caller.principal.clone(),
            self.inner.access.clone(),
        );
        let forwarded = Forwarded {
            authorization: caller.authorization.clone(),
            request_id: Some(request_id.as_str().to_owned()),
        };
        let mut merged = match &prepared.plan {
            Some(plan) => match &plan.node {
                Some(node) => {
                    let executor = Executor {
                        gateway: self,
                        supergraph,
                        client: &self.inner.client,
                        context: &context,
                        variables: &variables,
                        forwarded: &forwarded,
                    };
                    executor.run(node).await
                }
                None => execute::Merged::empty(),
            },
            None => execute::Merged::empty(),
        };
        let kind = match prepared.kind {
            hive_router_query_planner::state::supergraph_state::OperationKind::Mutation => {
                "mutation"
            }
            hive_router_query_planner::state::supergraph_state::OperationKind::Subscription => {
                "subscription"
            }
            hive_router_query_planner::state::supergraph_state::OperationKind::Query => "query",
        };
        let root = match kind {
            "mutation" => supergraph
                .types
                .mutation
                .clone()
                .unwrap_or_else(|| "Mutation".to_owned()),
            _ => supergraph.types.query.clone(),
        };
        execute::introspection::resolve_root(
            supergraph,
            &prepared.operation.selection_set,
            &variables,
            &mut merged.data,
        );
        let mut errors = merged.errors;
        let data = execute::project(
            &supergraph.types,
            &root,
            &prepared.operation.selection_set,
            &merged.data,
            &variables,
            &mut errors,
        );
        let mut body = Map::new();
        if !errors.is_empty() {
            body.insert("errors".to_owned(), Value::Array(errors));
        }
        body.insert("data".to_owned(), data);
        Ok((Value::Object(body), kind))
    }
}

async fn load(
    client: &SubgraphClient,
    local: &LocalSubgraph,
    settings: &GatewaySettings,
) -> Result<Loaded, ComposeError> {
    if let Some(path) = &settings.supergraph_path {
        let supergraph_sdl =
            tokio::fs::read_to_string(path)
                .await
                .map_err(|err| ComposeError::File {
                    path: path.display().to_string(),
                    reason: err.to_string(),
                })?;
        let endpoints = compose::graphs_of(&supergraph_sdl)?;
        let supergraph = Supergraph::new(supergraph_sdl, &endpoints)?;
        return Ok(Loaded {
            supergraph,
            plans: PlanCache::new(settings.plan_cache_size),
        });
    }
    let mut sdls =
        compose::fetch_all(client.http(), &settings.subgraphs, settings.startup_timeout).await?;
    let local_endpoint = SubgraphEndpoint::new(LOCAL_SUBGRAPH, LOCAL_URL);
    sdls.push((local_endpoint, local.sdl().await));
    let endpoints: Vec<SubgraphEndpoint> = sdls.iter().map(|(e, _)| e.clone()).collect();
    let supergraph_sdl = compose::compose(&sdls)?;
    let supergraph = Supergraph::new(supergraph_sdl, &endpoints)?;
    Ok(Loaded {
        supergraph,
        plans: PlanCache::new(settings.plan_cache_size),
    })
}

impl GatewayDeps {
    /// The dependencies described by shared settings and the environment:
    /// the token verifier from `JWT_PUBLIC_KEYS`, the default roles, and
    /// Redis for rate budgets when `REDIS_STATE_URL`/`REDIS_URL` is set (an
    /// unreachable Redis is logged and the budgets stay per process).
    pub async fn from_common(
        common: &service_core::config::CommonConfig,
    ) -> Result<Self, service_core::app::StartupError> {
        let keys = service_core::app::public_keys(common)?;
        let verifier = (!keys.is_empty()).then(|| {
            Arc::new(TokenVerifier::new(
                keys,
                service_core::auth::JwtSettings::new(&common.jwt_issuer, &common.jwt_audience),
            ))
        });
        let redis = match service_core::redis::RedisUrls::from_env() {
            Ok(urls) => match urls.state {
                Some(url) => {
                    let prefix = service_core::redis::KeyPrefix::new(
                        common.brand.clone(),
                        crate::config::SERVICE,
                    );
                    match prefix {
                        Ok(prefix) => {
                            match service_core::redis::RedisAccessor::connect(url.expose(), prefix)
                                .await
                            {
                                Ok(accessor) => Some(accessor),
                                Err(err) => {
                                    tracing::warn!(error = %err, "Redis unreachable: rate budgets are per process");
                                    None
                                }
                            }
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "bad Redis key prefix: rate budgets are per process");
                            None
                        }
                    }
                }
                None => None,
            },
            Err(err) => {
                tracing::warn!(error = %err, "bad Redis URL: rate budgets are per process");
                None
            }
        };
        Ok(Self {
            app_env: common.app_env,
            verifier,
            access: Arc::new(access_engine::default_policy()),
            redis,
        })
    }
}
