//! The gateway itself: the current supergraph (swapped whole on reload),
//! the plan cache that belongs to it, the subgraph client, and the
//! pipeline one operation goes through.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use graphql_tools::parser::query::{self as q, OperationDefinition};
use hive_router_query_planner::state::supergraph_state::OperationKind;
use serde_json::{json, Map, Value};
use service_core::auth::{RevocationList, TokenVerifier};
use service_core::config::AppEnv;
use service_core::context::{RequestContext, RequestId};
use service_core::db::{Database, DbConfig};
use service_core::error::ApiError;
use service_core::events::{EventBus, EventError};
use service_core::resilience::{BreakerConfig, RateLimiter};

use crate::admin::{ConfigAdmin, LocalSubgraph, LOCAL_SUBGRAPH, LOCAL_URL};
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

/// The gateway's own database, opened on first use: a store that is down
/// at start-up makes `/health/ready` say so and is retried, rather than
/// keeping the gateway from serving.
pub(crate) struct GatewayDatabase {
    config: DbConfig,
    open: tokio::sync::OnceCell<Arc<Database>>,
}

impl GatewayDatabase {
    /// The database, opening it if this is the first successful use.
    pub(crate) async fn get(&self) -> Result<Arc<Database>, service_core::db::StoreError> {
        self.open
            .get_or_try_init(|| async { Database::open(&self.config).await.map(Arc::new) })
            .await
            .cloned()
    }
}

/// A supergraph and the plans made for it.
pub(crate) struct Loaded {
    pub(crate) supergraph: Supergraph,
    pub(crate) plans: PlanCache,
    /// In file mode, the fingerprint of the file content it was loaded
    /// from: the file watcher reloads when the file no longer matches.
    pub(crate) source: Option<u64>,
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
    database: Option<GatewayDatabase>,
    loaded: RwLock<Arc<Loaded>>,
    reload_lock: tokio::sync::Mutex<()>,
    /// Cancelled when the server stops: running subscriptions complete, so
    /// their connections (an SSE stream is a request) let it drain.
    pub(crate) closing: tokio_util::sync::CancellationToken,
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

/// A request ready to execute: its plan and its variables (defaults applied).
pub(crate) struct Prepared {
    pub(crate) operation: Arc<plan::PreparedOperation>,
    pub(crate) variables: Map<String, Value>,
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
    ///
    /// With a database (`settings.database`), the gateway's own keys stored
    /// through `setConfig` are applied over `settings` first (an
    /// environment variable still wins over a stored value).
    pub async fn build(
        mut settings: GatewaySettings,
        deps: GatewayDeps,
    ) -> Result<Self, ComposeError> {
        let database = settings.database.clone().map(|config| GatewayDatabase {
            config,
            open: tokio::sync::OnceCell::new(),
        });
        if let Some(database) = &database {
            match database.get().await {
                Ok(db) => apply_stored_settings(&mut settings, &db).await,
                Err(err) => tracing::error!(
                    error = %err,
                    "gateway database unavailable: stored settings not applied, configs unavailable until it answers"
                ),
            }
        }
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
            settings.subgraph_dedupe,
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
                database,
                loaded: RwLock::new(Arc::new(loaded)),
                reload_lock: tokio::sync::Mutex::new(()),
                closing: tokio_util::sync::CancellationToken::new(),
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
        self.error_codes_for(None).await
    }

    /// [`Gateway::error_codes`] on behalf of a request: its id goes with
    /// every subgraph call as `x-request-id`.
    pub async fn error_codes_for(&self, request_id: Option<&RequestId>) -> Vec<String> {
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
            let mut call = http
                .post(&endpoint.url)
                .timeout(self.inner.settings.subgraph_timeout)
                .json(&json!({ "query": "{ _errorCodes }" }));
            if let Some(id) = request_id {
                call = call.header("x-request-id", id.as_str());
            }
            let answer = call.send().await;
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
        self.subgraph_health_for(None).await
    }

    /// [`Gateway::subgraph_health`] on behalf of a request: its id goes
    /// with every health call as `x-request-id`.
    pub async fn subgraph_health_for(
        &self,
        request_id: Option<&RequestId>,
    ) -> Vec<(String, bool, Duration, Value)> {
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
            let mut call = http
                .get(endpoint.health_url())
                .timeout(Duration::from_secs(2));
            if let Some(id) = request_id {
                call = call.header("x-request-id", id.as_str());
            }
            let answer = call.send().await;
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

    /// The gateway's database's health when it has one: `Ok(latency)` or
    /// the reason.
    pub async fn database_health(&self) -> Option<Result<Duration, String>> {
        let database = self.inner.database.as_ref()?;
        let check = async {
            let db = database.get().await.map_err(|err| err.to_string())?;
            db.check_health().await.map_err(|err| err.to_string())
        };
        Some(
            tokio::time::timeout(Duration::from_secs(2), check)
                .await
                .unwrap_or_else(|_| Err("no answer within 2s".to_owned())),
        )
    }

    /// `configs` and `setConfig` over the gateway's database;
    /// `MSCoreUnavailable` without one or while it does not answer.
    pub(crate) async fn config_admin(&self) -> Result<ConfigAdmin, ApiError> {
        let database = self
            .inner
            .database
            .as_ref()
            .ok_or_else(|| ApiError::unavailable("config store"))?;
        let db = database
            .get()
            .await
            .map_err(|err| ApiError::unavailable("config store").with_cause(err))?;
        Ok(ConfigAdmin::new(db, self.inner.settings.vars.0.clone()))
    }

    /// Runs one GraphQL request for `caller`; answers the response body,
    /// serialized.
    pub(crate) async fn execute(
        &self,
        request: GraphqlRequest,
        caller: &Caller,
        request_id: &RequestId,
        over_get: bool,
    ) -> (Vec<u8>, Outcome) {
        let started = Instant::now();
        let loaded = self.loaded();
        match self
            .run(&loaded, request, caller, request_id, over_get)
            .await
        {
            Ok((body, kind)) => {
                let series = self.inner.metrics.operation(&kind);
                series.count.inc();
                series.latency.observe(started.elapsed().as_secs_f64());
                (body, Outcome::Executed)
            }
            Err((error, outcome)) => {
                self.inner
                    .metrics
                    .rejections
                    .with_label_values(&[error.code()])
                    .inc();
                let body = json!({ "errors": [error.to_json()] });
                (serde_json::to_vec(&body).unwrap_or_default(), outcome)
            }
        }
    }

    /// Parses, checks limits, validates and plans one request (the plan
    /// from the cache when there is one). Subscriptions are prepared too;
    /// the transport decides whether it serves them.
    pub(crate) fn prepare(
        &self,
        loaded: &Loaded,
        request: GraphqlRequest,
        over_get: bool,
    ) -> Result<Prepared, Box<(GraphqlError, Outcome)>> {
        let refuse = |error: GraphqlError| Box::new((error, Outcome::RequestError));
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
        // A text already parsed was checked, parsed and minified then: the
        // checks depend on the text and the settings only.
        let kept = loaded.plans.document(query);
        let parsed = match &kept {
            Some(parsed) => parsed.clone(),
            None => {
                crate::limits::check_nesting(query, &settings.limits).map_err(refuse)?;
                let document = q::parse_query::<String>(query)
                    .map_err(|err| {
                        refuse(GraphqlError::new(
                            codes::PARSE_FAILED,
                            clean_parse_error(&err.to_string()),
                        ))
                    })?
                    .into_static();
                Arc::new(plan::Parsed {
                    document,
                    minified: q::minify_query(query).unwrap_or_else(|_| query.to_owned()),
                })
            }
        };
        let document = &parsed.document;
        let operation_name = request.operation_name.as_deref().filter(|n| !n.is_empty());
        let operation = select_operation(document, operation_name).map_err(refuse)?;
        let is_mutation = matches!(operation, OperationDefinition::Mutation(_));
        if over_get && is_mutation {
            return Err(Box::new((
                GraphqlError::new(codes::VALIDATION_FAILED, "Mutations must be sent with POST"),
                Outcome::MutationOverGet,
            )));
        }
        let mut variables = request.variables.unwrap_or_default();
        apply_variable_defaults(operation, &mut variables);
        // Limits first: they are linear in the document (fragment bombs
        // included); validation is not.
        crate::limits::check(
            document,
            operation,
            &supergraph.types,
            &settings.limits,
            &variables,
        )
        .map_err(refuse)?;
        let cached = loaded.plans.get(&parsed.minified, operation_name);
        self.inner.metrics.plan_cache_lookup(cached.is_some());
        if cached.is_none() {
            validate(supergraph, document, production).map_err(refuse)?;
        }
        let prepared = match cached {
            Some(prepared) => prepared,
            None => {
                let prepared =
                    plan::prepare(supergraph, document, operation_name).map_err(|err| {
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
                loaded
                    .plans
                    .insert(&parsed.minified, operation_name, prepared.clone());
                prepared
            }
        };
        if kept.is_none() {
            loaded.plans.insert_document(query, parsed);
        }
        Ok(Prepared {
            operation: prepared,
            variables,
        })
    }

    async fn run(
        &self,
        loaded: &Loaded,
        request: GraphqlRequest,
        caller: &Caller,
        request_id: &RequestId,
        over_get: bool,
    ) -> Result<(Vec<u8>, OperationKind), (GraphqlError, Outcome)> {
        let supergraph = &loaded.supergraph;
        let Prepared {
            operation: prepared,
            variables,
        } = self
            .prepare(loaded, request, over_get)
            .map_err(|refused| *refused)?;
        if prepared.kind == OperationKind::Subscription {
            return Err((
                GraphqlError::new(
                    codes::VALIDATION_FAILED,
                    "Subscriptions are served over WebSocket or with Accept: text/event-stream",
                ),
                Outcome::RequestError,
            ));
        }
        let context = RequestContext::new(
            request_id.clone(),
            caller.principal.clone(),
            self.inner.access.clone(),
        );
        let forwarded = Forwarded {
            authorization: caller.authorization.clone(),
            request_id: Some(request_id.as_str().to_owned()),
            shareable: prepared.kind == OperationKind::Query,
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
        let root = match prepared.kind {
            OperationKind::Mutation => supergraph.types.mutation.as_deref().unwrap_or("Mutation"),
            OperationKind::Query | OperationKind::Subscription => &supergraph.types.query,
        };
        execute::introspection::resolve_root(
            supergraph,
            &prepared.operation.selection_set,
            &variables,
            &mut merged.data,
        );
        let body = execute::response_body(
            &supergraph.types,
            root,
            &prepared.operation.selection_set,
            &merged.data,
            &variables,
            merged.errors,
        );
        Ok((body, prepared.kind.clone()))
    }
}

/// Overlays the gateway's keys stored in the config store on `settings`.
/// The store is a lower layer than the environment, so a store that cannot
/// be read, or a stored value the current spec refuses (it was checked when
/// written, so only a changed spec does that), is logged and the gateway
/// starts on its other layers.
async fn apply_stored_settings(settings: &mut GatewaySettings, db: &Arc<Database>) {
    let stored = match service_core::config::ConfigStore::new(db.clone())
        .load(crate::config::SERVICE)
        .await
    {
        Ok(stored) => stored,
        Err(err) => {
            tracing::error!(error = %err, "config store unreadable: stored gateway settings not applied");
            return;
        }
    };
    if stored.is_empty() {
        return;
    }
    match settings.apply_stored(stored, settings.vars.0.clone()) {
        Ok(applied) if !applied.is_empty() => {
            tracing::info!(keys = ?applied, "stored gateway settings applied");
        }
        Ok(_) => {}
        Err(err) => {
            tracing::error!(error = %err, "stored gateway settings refused: not applied");
        }
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
        let source = Some(fingerprint(supergraph_sdl.as_bytes()));
        // Federation 1 files are rewritten to the Federation 2 shape.
        let supergraph_sdl = compose::upgrade_federation1(&supergraph_sdl)?;
        let endpoints =
            with_url_overrides(compose::graphs_of(&supergraph_sdl)?, &settings.subgraphs)?;
        let supergraph = Supergraph::new(supergraph_sdl, &endpoints)?;
        return Ok(Loaded {
            supergraph,
            plans: PlanCache::new(settings.plan_cache_size),
            source,
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
        source: None,
    })
}

/// The graphs a supergraph file names, with the URL of each one that
/// `overrides` names replaced (a file composed for one environment served
/// in another). An override naming no graph of the file is an error.
fn with_url_overrides(
    mut graphs: Vec<SubgraphEndpoint>,
    overrides: &[SubgraphEndpoint],
) -> Result<Vec<SubgraphEndpoint>, ComposeError> {
    for endpoint in overrides {
        match graphs.iter_mut().find(|g| g.name == endpoint.name) {
            Some(graph) => graph.url.clone_from(&endpoint.url),
            None => {
                return Err(ComposeError::Supergraph(format!(
                    "subgraph {} is not in the supergraph file",
                    endpoint.name
                )))
            }
        }
    }
    Ok(graphs)
}

/// A cheap fingerprint of a file's content, to tell a real change from a
/// touch.
fn fingerprint(content: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    content.hash(&mut hasher);
    hasher.finish()
}

impl Gateway {
    /// In file mode, checks the supergraph file every
    /// `settings.supergraph_poll` and reloads when its content changes,
    /// until `stop`. Requests keep running on the supergraph they started
    /// with; a file that fails to load is logged once per content and the
    /// previous supergraph stays. Does nothing without a supergraph file.
    pub fn watch_supergraph_file(&self, stop: tokio_util::sync::CancellationToken) {
        let Some(path) = self.inner.settings.supergraph_path.clone() else {
            return;
        };
        let gateway = self.clone();
        let every = self.inner.settings.supergraph_poll;
        tokio::spawn(async move {
            // The content of the last reload that failed, not retried.
            let mut failed = None;
            let mut stamp = None;
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                // Modification time and length first: the file is only
                // read when they move.
                let metadata = match tokio::fs::metadata(&path).await {
                    Ok(metadata) => metadata,
                    Err(err) => {
                        if stamp.take().is_some() {
                            tracing::warn!(path = %path.display(), error = %err, "supergraph file unreadable; the current supergraph stays");
                        }
                        continue;
                    }
                };
                let current = (metadata.modified().ok(), metadata.len());
                if stamp == Some(current) {
                    continue;
                }
                stamp = Some(current);
                let Ok(content) = tokio::fs::read(&path).await else {
                    stamp = None;
                    continue;
                };
                let print = Some(fingerprint(&content));
                if print == gateway.loaded().source || print == failed {
                    continue;
                }
                let reloaded = gateway.reload().await;
                failed = reloaded.is_err().then_some(print).flatten();
                match reloaded {
                    Ok(count) => {
                        tracing::info!(path = %path.display(), subgraphs = count, "supergraph file changed: reloaded")
                    }
                    Err(err) => {
                        tracing::error!(path = %path.display(), error = %err, "supergraph file changed but does not load; the previous supergraph stays")
                    }
                }
            }
        });
    }
}

impl GatewayDeps {
    /// Makes the verifier refuse tokens of sessions the auth service ended,
    /// following its announcements on `bus` (see
    /// [`RevocationList::follow`]). Every gateway that verifies tokens next
    /// to a running auth service needs this; an error (the bus's Redis
    /// unreachable) should stop the start-up rather than serve without it.
    pub async fn follow_revocations(mut self, bus: &EventBus) -> Result<Self, EventError> {
        if let Some(verifier) = self.verifier.take() {
            let revocations = RevocationList::follow(bus).await?;
            self.verifier = Some(Arc::new(
                verifier.as_ref().clone().with_revocations(revocations),
            ));
        }
        Ok(self)
    }

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
