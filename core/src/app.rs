//! What every subgraph binary assembles before it serves its schema: shared
//! settings, the access engine, the token verifier, metrics, and the
//! `_errorCodes` field the gateway collects for `errorCodes`.

use std::sync::Arc;

use access_engine::AccessEngine;
use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{JwtSettings, KeySet, TokenVerifier, VerifyingKey};
use crate::config::{CommonConfig, ConfigError, ConfigSpec, LayeredConfig};
use crate::error::ErrorRegistry;
use crate::server::{Server, Subgraph};
use crate::telemetry::Metrics;

/// A failure while a service starts; it stops the process with a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    /// The configuration is missing, unknown or ill-typed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A configured key could not be read.
    #[error("access-token key {kid} is invalid: {reason}")]
    Key {
        /// The key's id.
        kid: String,
        /// Why it was refused (never the key itself).
        reason: String,
    },
    /// The metrics registry could not be set up.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The listener could not be bound or served.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The listening settings every subgraph has, read from `<PREFIX>_ADDR` and
/// `<PREFIX>_BODY_LIMIT_BYTES`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Address to listen on.
    pub addr: String,
    /// Largest accepted request body in bytes.
    pub body_limit_bytes: usize,
}

impl ListenConfig {
    /// The spec of a service whose variables start with `prefix`.
    pub fn spec(service: &'static str, prefix: &'static str, default_addr: &str) -> ConfigSpec {
        let defaults = match json!({
            "addr": default_addr,
            "body_limit_bytes": crate::server::DEFAULT_BODY_LIMIT,
        }) {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        ConfigSpec {
            service,
            env_prefix: Some(prefix),
            defaults,
            sensitive: &[],
        }
    }

    /// Reads the settings of `spec` from the process environment.
    pub fn from_env(spec: ConfigSpec) -> Result<Self, ConfigError> {
        LayeredConfig::new(spec).with_env(std::env::vars())?.build()
    }
}

/// The shared parts of a running service.
#[derive(Clone)]
pub struct ServiceRuntime {
    /// The service's name.
    pub service: &'static str,
    /// Shared settings.
    pub common: CommonConfig,
    /// The permission rules.
    pub access: Arc<AccessEngine>,
    /// Verifies access tokens; `None` when no public key is configured, in
    /// which case every request carrying a token is refused.
    pub verifier: Option<Arc<TokenVerifier>>,
    /// The service's metrics registry.
    pub metrics: Metrics,
}

impl ServiceRuntime {
    /// Builds the runtime from shared settings, with the default roles.
    pub fn new(service: &'static str, common: CommonConfig) -> Result<Self, StartupError> {
        let verifier = verifier_from(&common)?.map(Arc::new);
        Ok(Self {
            service,
            access: Arc::new(access_engine::default_policy()),
            verifier,
            metrics: Metrics::new(service)?,
            common,
        })
    }
}

fn verifier_from(common: &CommonConfig) -> Result<Option<TokenVerifier>, StartupError> {
    let keys = public_keys(common)?;
    if keys.is_empty() {
        return Ok(None);
    }
    let settings = JwtSettings::new(&common.jwt_issuer, &common.jwt_audience);
    Ok(Some(TokenVerifier::new(keys, settings)))
}

/// The verifying keys listed in `JWT_PUBLIC_KEYS`, by `kid`; empty when none
/// are configured. A key that does not parse stops the start-up.
pub fn public_keys(common: &CommonConfig) -> Result<KeySet, StartupError> {
    let mut set = KeySet::default();
    for (kid, pem) in common.jwt_public_keys.iter().flatten() {
        let invalid = |reason: String| StartupError::Key {
            kid: kid.clone(),
            reason,
        };
        let pem = pem
            .as_str()
            .ok_or_else(|| invalid("expected a PEM string".to_owned()))?;
        let key =
            VerifyingKey::from_public_pem(kid, pem).map_err(|err| invalid(err.to_string()))?;
        set.insert(key);
    }
    Ok(set)
}

/// Runs a subgraph binary: reads the shared and listening settings from the
/// environment, sets up logs, builds the schema with `schema`, serves it, and
/// returns when a shutdown signal has drained the server.
pub async fn run_subgraph<E, F>(
    service: &'static str,
    env_prefix: &'static str,
    default_addr: &str,
    schema: F,
) -> Result<(), StartupError>
where
    E: async_graphql::Executor,
    F: FnOnce(&ServiceRuntime) -> E,
{
    let common = CommonConfig::from_env()?;
    crate::telemetry::init_tracing(common.log_format);
    let listen = ListenConfig::from_env(ListenConfig::spec(service, env_prefix, default_addr))?;
    let runtime = ServiceRuntime::new(service, common)?;
    let server = Server::bind(&listen.addr, subgraph(&runtime, &listen, schema(&runtime))).await?;
    tracing::info!(service, addr = %server.local_addr()?, "subgraph ready");
    server.run_until_stopped().await?;
    Ok(())
}

/// The router of a subgraph serving `executor` with the runtime's verifier,
/// access rules and metrics.
pub fn subgraph<E: async_graphql::Executor>(
    runtime: &ServiceRuntime,
    listen: &ListenConfig,
    executor: E,
) -> axum::Router {
    let mut subgraph = Subgraph::new(
        runtime.service,
        executor,
        runtime.access.clone(),
        runtime.metrics.clone(),
    )
    .body_limit(listen.body_limit_bytes);
    if let Some(verifier) = &runtime.verifier {
        subgraph = subgraph.verifier(verifier.clone());
    }
    subgraph.router()
}

/// The `_errorCodes` query field: every code this subgraph can return. The
/// gateway reads it from each subgraph to answer `errorCodes`.
pub struct ErrorCodesQuery {
    registry: Arc<ErrorRegistry>,
}

impl ErrorCodesQuery {
    /// Serves the codes of `registry`.
    pub fn new(registry: ErrorRegistry) -> Self {
        Self {
            registry: Arc::new(registry),
        }
    }
}

#[Object]
impl ErrorCodesQuery {
    /// Every error code this service can return, sorted and unique.
    #[graphql(name = "_errorCodes")]
    async fn error_codes(&self) -> Vec<&'static str> {
        self.registry.codes()
    }
}

/// The schema of a subgraph that serves only `_errorCodes` and the
/// federation fields.
pub type BaseSchema = Schema<ErrorCodesQuery, EmptyMutation, EmptySubscription>;

/// Builds a [`BaseSchema`] serving the codes of `registry`, with the
/// standard query limits as a second line of defence behind the gateway.
pub fn base_schema(registry: ErrorRegistry) -> BaseSchema {
    crate::graphql::federated_schema(
        ErrorCodesQuery::new(registry),
        EmptyMutation,
        EmptySubscription,
    )
    .finish()
}
