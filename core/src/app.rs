//! What every subgraph binary assembles before it serves its schema: shared
//! settings, the access engine, the token verifier, metrics, and the
//! `_errorCodes` field the gateway collects for `errorCodes`.

use std::sync::Arc;

use access_engine::AccessEngine;
use async_graphql::Object;
use serde::de::DeserializeOwned;

use crate::auth::{JwtSettings, KeySet, RevocationList, TokenVerifier, VerifyingKey};
use crate::config::{CommonConfig, ConfigError, ConfigSpec, LayeredConfig};
use crate::db::DbConfig;
use crate::error::ErrorRegistry;
use crate::events::{EventBus, EventError};
use crate::redis::RedisUrls;
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

/// What every service reads at start-up besides its own section: the shared
/// settings, where its data lives and its Redis endpoints.
#[derive(Clone, Debug)]
pub struct StartupSettings<C> {
    /// Settings shared by every service (`APP_ENV`, `JWT_PUBLIC_KEYS`, ...).
    pub common: CommonConfig,
    /// Where the service's data lives.
    pub db: DbConfig,
    /// Redis per purpose (`REDIS_URL`, `REDIS_CACHE_URL`, ...).
    pub redis: RedisUrls,
    /// The service's own section (`<PREFIX>_*` variables, read with `spec`).
    pub service: C,
}

impl<C: DeserializeOwned> StartupSettings<C> {
    /// Reads `vars` (pass `std::env::vars()`; tests pass their own list so
    /// they never depend on the machine's environment).
    pub fn from_vars(
        spec: ConfigSpec,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let common: CommonConfig = LayeredConfig::new(CommonConfig::spec())
            .with_env(vars.iter().cloned())?
            .build()?;
        let db = DbConfig::from_vars(spec.service, &common, vars.iter().cloned())?;
        let redis = RedisUrls::from_vars(&vars)?;
        let service = LayeredConfig::new(spec).with_env(vars)?.build()?;
        Ok(Self {
            common,
            db,
            redis,
            service,
        })
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

    /// Makes the verifier refuse tokens of revoked sessions, following the
    /// revocations announced on `bus` (see [`RevocationList::follow`]). Call
    /// it once the service's bus exists and before `verifier` is handed to
    /// the server. An error (the bus's Redis unreachable) must stop the
    /// start-up rather than serve without revocations.
    pub async fn follow_revocations(&mut self, bus: &EventBus) -> Result<(), EventError> {
        if let Some(verifier) = &self.verifier {
            let revocations = RevocationList::follow(bus).await?;
            self.verifier = Some(Arc::new(
                verifier.as_ref().clone().with_revocations(revocations),
            ));
        }
        Ok(())
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
