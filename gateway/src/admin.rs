//! The gateway's own fields, served by an in-process async-graphql
//! subgraph called `gateway`: it is composed into the supergraph like any
//! other subgraph, so the planner routes `errorCodes`, `configs`,
//! `serviceHealth`, `setConfig` and `reloadSupergraph` to it, and the
//! executor calls it without HTTP.

mod configs;

use std::time::Instant;

use access_engine::Resource;
use async_graphql::{Context, EmptySubscription, Json, Object, Schema, SimpleObject, Variables};
use serde_json::{Map, Value};
use service_core::context::RequestContext;
use service_core::error::ApiError;

pub(crate) use configs::ConfigAdmin;
use configs::ConfigEntry;

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
        let request = ctx.data::<RequestContext>()?;
        let gateway = ctx.data::<Gateway>()?;
        Ok(gateway.error_codes_for(Some(request.request_id())).await)
    }

    /// Every setting of `service` (of every service when omitted) as
    /// defaults ← config store ← environment resolve it; sensitive values
    /// come back as `"***"` (permission `config:read:*`).
    async fn configs(
        &self,
        ctx: &Context<'_>,
        service: Option<String>,
    ) -> async_graphql::Result<Vec<ConfigEntry>> {
        let request = ctx.data::<RequestContext>()?;
        request.require("config", "read", ANY)?;
        let gateway = ctx.data::<Gateway>()?;
        let admin = gateway.config_admin().await?;
        Ok(admin.entries(service.as_deref()).await?)
    }

    /// Readiness of every subgraph (permission `health:read:*`).
    async fn service_health(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ServiceHealth>> {
        let request = ctx.data::<RequestContext>()?;
        request.require("health", "read", ANY)?;
        let gateway = ctx.data::<Gateway>()?;
        let mut out = Vec::new();
        for (name, healthy, latency, details) in gateway
            .subgraph_health_for(Some(request.request_id()))
            .await
        {
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
    /// Stores `value` for `service`/`key` after checking both against the
    /// service's config spec (permission `config:write:*`); answers the key
    /// as `configs` now shows it. Who changed it and when is stored with
    /// it. The gateway applies its own stored keys at its next start.
    async fn set_config(
        &self,
        ctx: &Context<'_>,
        service: String,
        key: String,
        value: Json<Value>,
    ) -> async_graphql::Result<ConfigEntry> {
        let request = ctx.data::<RequestContext>()?;
        let principal = request.require("config", "write", ANY)?;
        let gateway = ctx.data::<Gateway>()?;
        let admin = gateway.config_admin().await?;
        Ok(admin
            .set(&service, &key, value.0, Some(&principal.user_id))
            .await?)
    }

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
