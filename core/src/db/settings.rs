//! Reading [`DbConfig`] from the environment.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use super::{DbConfig, EmbeddedEngine, NamingStrategy, PoolSettings};
use crate::config::{CommonConfig, ConfigError, ConfigSpec, LayeredConfig};

/// The storage variables, unprefixed because every service shares them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StorageVars {
    mongodb_uri: Option<SecretString>,
    data_dir: PathBuf,
    embedded_engine: EmbeddedEngine,
    db_naming: NamingStrategy,
    mongodb_pool_max: u32,
    mongodb_pool_min: u32,
    mongodb_pool_max_idle_ms: u64,
    mongodb_wait_queue_timeout_ms: u64,
    mongodb_server_selection_timeout_ms: u64,
}

/// The keys, defaults and sensitivity of the storage settings.
pub(super) fn spec() -> ConfigSpec {
    let pool = PoolSettings::default();
    let defaults = match json!({
        "mongodb_uri": null,
        "data_dir": "data",
        "embedded_engine": "journal",
        "db_naming": "per-service",
        "mongodb_pool_max": pool.max_size,
        "mongodb_pool_min": pool.min_size,
        "mongodb_pool_max_idle_ms": pool.max_idle_ms,
        "mongodb_wait_queue_timeout_ms": pool.wait_queue_timeout_ms,
        "mongodb_server_selection_timeout_ms": pool.server_selection_timeout_ms,
    }) {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    ConfigSpec {
        service: "storage",
        env_prefix: None,
        defaults,
        // Connection strings carry credentials.
        sensitive: &["mongodb_uri"],
    }
}

impl DbConfig {
    /// The keys, defaults and sensitivity of the storage variables, for
    /// read-outs such as the gateway's `configs(service: "storage")`.
    pub fn spec() -> ConfigSpec {
        spec()
    }

    /// The storage settings of `service` from `vars` (pass
    /// `std::env::vars()`), with brand and tenant from `common`.
    pub fn from_vars(
        service: &str,
        common: &CommonConfig,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let vars: StorageVars = LayeredConfig::new(spec()).with_env(vars)?.build()?;
        Ok(Self {
            mongodb_uri: vars.mongodb_uri,
            data_dir: vars.data_dir,
            brand: common.brand.clone(),
            tenant: common.tenant_id.clone(),
            service: service.to_owned(),
            naming: vars.db_naming,
            embedded: vars.embedded_engine,
            pool: PoolSettings {
                max_size: vars.mongodb_pool_max,
                min_size: vars.mongodb_pool_min,
                max_idle_ms: vars.mongodb_pool_max_idle_ms,
                wait_queue_timeout_ms: vars.mongodb_wait_queue_timeout_ms,
                server_selection_timeout_ms: vars.mongodb_server_selection_timeout_ms,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn common() -> CommonConfig {
        LayeredConfig::new(CommonConfig::spec())
            .build()
            .expect("defaults build")
    }

    #[test]
    fn defaults_select_the_embedded_store() {
        let config = DbConfig::from_vars("payment", &common(), []).unwrap();
        assert!(config.mongodb_uri.is_none());
        assert_eq!(config.data_dir, PathBuf::from("data"));
        assert_eq!(config.naming, NamingStrategy::PerService);
        assert_eq!(config.embedded, EmbeddedEngine::Journal);
        assert_eq!(config.pool.max_size, 100);
    }

    #[test]
    fn environment_selects_the_sqlite_engine_and_refuses_others() {
        let vars = |engine: &str| [("EMBEDDED_ENGINE".to_owned(), engine.to_owned())];
        let config = DbConfig::from_vars("payment", &common(), vars("sqlite")).unwrap();
        assert_eq!(config.embedded, EmbeddedEngine::Sqlite);
        assert!(DbConfig::from_vars("payment", &common(), vars("leveldb")).is_err());
    }

    #[test]
    fn environment_selects_mongodb_and_tunes_the_pool() {
        let vars = [
            ("MONGODB_URI", "mongodb://u:p@db:27017/?replicaSet=rs0"),
            ("DB_NAMING", "per-brand-service"),
            ("MONGODB_POOL_MAX", "20"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let config = DbConfig::from_vars("payment", &common(), vars).unwrap();
        assert_eq!(
            config
                .mongodb_uri
                .as_ref()
                .map(|u| u.expose_secret().to_owned()),
            Some("mongodb://u:p@db:27017/?replicaSet=rs0".to_owned())
        );
        assert_eq!(config.naming, NamingStrategy::PerBrandService);
        assert_eq!(config.pool.max_size, 20);
        assert!(!format!("{config:?}").contains("u:p@"));
    }

    #[test]
    fn unknown_naming_is_refused() {
        let vars = [("DB_NAMING".to_owned(), "per-galaxy".to_owned())];
        assert!(DbConfig::from_vars("payment", &common(), vars).is_err());
    }
}
