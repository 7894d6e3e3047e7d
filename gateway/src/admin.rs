//! The gateway's own fields, served by an in-process async-graphql
//! subgraph called `gateway`: it is composed into the supergraph like any
//! other subgraph, so the planner routes `errorCodes`, `serviceHealth` and
//! `reloadSupergraph` to it, and the executor calls it without HTTP.

use std::time::Instant;

use access_engine::Resource;
use async_graphql::{Context, EmptySubscription, Json, Object, Schema, SimpleObject, Variables};
use serde_json::{Map, Value};
use service_core::context::RequestContext;
use service_core::error::ApiError;

use crate::execute::SubgraphResponse;
use crate::Gateway;

/// The name of the in-process subgraph in the supergraph.
pub const LOCAL_SUBGRAPH: &str = "gateway";

/// The URL the local subgraph is registered under (never dialled).
pub(crate) const LOCAL_URL: &str = "http://gateway.local/graphql";

const ANY: Resource<'static> = Resource {
    id: None,
    owner: None,
    tenant: None,
};

/// Health of one subgraph as `serviceHealth` reports it.
#[derive(SimpleObject)]
struct ServiceHealth {
    name: String,
    healthy: bool,
    latency_ms: Option<i32>,
    details: Option<Json<Value>>,
}

struct AdminQuery;

#[Object(name = "Query")]
impl AdminQuery {
    /// Every error code of every service, sorted and unique.
    async fn error_codes(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<String>> {
        let gateway = ctx.data::<Gateway>()?;
        Ok(gateway.error_codes().await)
    }

    /// Readiness of every subgraph (permission `health:read:*`).
    async fn service_health(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ServiceHealth>> {
        let request = ctx.data::<RequestContext>()?;
        request.require("health", "read", ANY)?;
        let gateway = ctx.data::<Gateway>()?;
        let mut out = Vec::new();
        for (name, healthy, latency, details) in gateway.subgraph_health().await {
            out.push(ServiceHealth {
                name,
                healthy,
                latency_ms: Some(i32::try_from(latency.as_millis()).unwrap_or(i32::MAX)),
                details: Some(Json(details)),
            });
        }
        Ok(out)
    }
}

struct AdminMutation;

#[Object(name = "Mutation")]
impl AdminMutation {
    /// Fetches every subgraph's SDL again, recomposes and swaps the
    /// supergraph in; requests in flight finish on the old one
    /// (permission `config:write:*`). Answers the number of subgraphs.
    async fn reload_supergraph(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        let request = ctx.data::<RequestContext>()?;
        request.require("config", "write", ANY)?;
        let gateway = ctx.data::<Gateway>()?;
        let started = Instant::now();
        let count = gateway
            .reload()
            .await
            .map_err(|err| ApiError::unavailable("subgraphs").with_cause(err))?;
        tracing::info!(
            subgraphs = count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "supergraph reloaded"
        );
        Ok(i32::try_from(count).unwrap_or(i32::MAX))
    }
}

/// The in-process subgraph.
pub(crate) struct LocalSubgraph {
    schema: Schema<AdminQuery, AdminMutation, EmptySubscription>,
}

impl LocalSubgraph {
    pub(crate) fn new() -> Self {
        Self {
            schema: Schema::build(AdminQuery, AdminMutation, EmptySubscription)
                .enable_federation()
                .finish(),
        }
    }

    /// Its federation SDL, as `_service { sdl }` would serve it.
    pub(crate) async fn sdl(&self) -> String {
        let response = self.schema.execute("{ _service { sdl } }").await;
        serde_json::to_value(&response.data)
            .ok()
            .and_then(|v| {
                v.pointer("/_service/sdl")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default()
    }

    /// Runs one fetch of a plan.
    pub(crate) async fn execute(
        &self,
        gateway: &Gateway,
        query: &str,
        variables: Map<String, Value>,
        context: &RequestContext,
    ) -> SubgraphResponse {
        let request = async_graphql::Request::new(query)
            .variables(Variables::from_json(Value::Object(variables)))
            .data(context.clone())
            .data(gateway.clone());
        let mut response = self.schema.execute(request).await;
        service_core::graphql::finalize_errors(&mut response);
        let data = serde_json::to_value(&response.data)
            .ok()
            .filter(|d| !d.is_null());
        let errors = response
            .errors
            .iter()
            .filter_map(|e| serde_json::to_value(e).ok())
            .collect();
        SubgraphResponse { data, errors }
    }
}
