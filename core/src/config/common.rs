//! Settings every service reads, from unprefixed variables (`APP_ENV`, ...).

use serde::Deserialize;
use serde_json::{json, Value};

use super::{ConfigError, ConfigSpec, LayeredConfig};

/// Development turns on conveniences (introspection, readable logs); production
/// turns them off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppEnv {
    /// Local work and tests.
    #[default]
    Development,
    /// Anything real users reach.
    Production,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    #[default]
    Json,
    /// Human-readable lines, for a terminal.
    Pretty,
}

/// Settings shared by every service and the gateway.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommonConfig {
    /// `APP_ENV`: `development` or `production`.
    pub app_env: AppEnv,
    /// `LOG_FORMAT`: `json` or `pretty`.
    pub log_format: LogFormat,
    /// `BRAND`: the brand this deployment serves (database and key naming).
    pub brand: String,
    /// `TENANT_ID`: the tenant new users belong to.
    pub tenant_id: String,
    /// `JWT_ISSUER`: the `iss` of access tokens.
    pub jwt_issuer: String,
    /// `JWT_AUDIENCE`: the `aud` of access tokens.
    pub jwt_audience: String,
    /// `JWT_PUBLIC_KEYS`: JSON object of `kid` → Ed25519 public key PEM that
    /// services use to verify access tokens; several keys allow rotation.
    pub jwt_public_keys: Option<serde_json::Map<String, Value>>,
}

impl CommonConfig {
    /// The keys, defaults and sensitivity of the shared settings.
    pub fn spec() -> ConfigSpec {
        let defaults = match json!({
            "app_env": "development",
            "log_format": "json",
            "brand": "default",
            "tenant_id": "default",
            "jwt_issuer": "payment-platform",
            "jwt_audience": "payment-platform-api",
            "jwt_public_keys": {},
        }) {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        ConfigSpec {
            service: "common",
            env_prefix: None,
            defaults,
            sensitive: &[],
        }
    }

    /// Reads the shared settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        LayeredConfig::new(Self::spec())
            .with_env(std::env::vars())?
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_build_and_env_overrides() {
        let config: CommonConfig = LayeredConfig::new(CommonConfig::spec())
            .with_env([
                ("APP_ENV".to_owned(), "production".to_owned()),
                ("app_env".to_owned(), "ignored: not upper-case".to_owned()),
            ])
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(config.app_env, AppEnv::Production);
        assert_eq!(config.log_format, LogFormat::Json);
    }
}
