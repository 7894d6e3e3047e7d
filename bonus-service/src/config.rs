//! The service's settings: the shared ones, storage, and its own `BONUS_*`
//! variables, read once at start-up so a typo stops the process instead of
//! being silently ignored.

use serde::Deserialize;
use serde_json::{json, Value};
use service_core::app::StartupSettings;
use service_core::config::{CommonConfig, ConfigError, ConfigSpec};
use service_core::db::DbConfig;
use service_core::redis::RedisUrls;

use crate::{DEFAULT_ADDR, ENV_PREFIX, SERVICE};

/// The `BONUS_*` variables.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BonusConfig {
    /// `BONUS_ADDR`: where the subgraph listens (`127.0.0.1:0` picks a port).
    pub addr: String,
    /// `BONUS_BODY_LIMIT_BYTES`: largest accepted request body.
    pub body_limit_bytes: usize,
    /// `BONUS_JOBS_ENABLED`: whether this process runs the scheduled jobs
    /// (expiry, overdue payment requests). Several instances may all run
    /// them: a lease lets one at a time do the work.
    pub jobs_enabled: bool,
    /// `BONUS_EXPIRY_INTERVAL_SECONDS`: pause between two job runs.
    pub expiry_interval_seconds: u64,
    /// `BONUS_EXPIRY_BATCH_SIZE`: most bonuses one run expires (and most
    /// overdue requests it re-sends).
    pub expiry_batch_size: usize,
    /// `BONUS_EXPIRY_LEASE_SECONDS`: lifetime of the job's lease (renewed
    /// while a run lasts; frees itself if the holder dies).
    pub expiry_lease_seconds: u64,
    /// `BONUS_PAYMENT_RESEND_SECONDS`: a payment request unanswered for this
    /// long is sent again (same request id).
    pub payment_resend_seconds: u64,
}

impl BonusConfig {
    /// The keys, defaults and sensitive keys of [`BonusConfig`].
    pub fn spec() -> ConfigSpec {
        let defaults = match json!({
            "addr": DEFAULT_ADDR,
            "body_limit_bytes": service_core::server::DEFAULT_BODY_LIMIT,
            "jobs_enabled": true,
            "expiry_interval_seconds": 60,
            "expiry_batch_size": 100,
            "expiry_lease_seconds": 60,
            "payment_resend_seconds": 300,
        }) {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        ConfigSpec {
            service: SERVICE,
            env_prefix: Some(ENV_PREFIX),
            defaults,
            sensitive: &[],
        }
    }
}

/// Everything the service reads at start-up.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Settings shared by every service (`APP_ENV`, `JWT_PUBLIC_KEYS`, ...).
    pub common: CommonConfig,
    /// Where templates and bonuses are stored.
    pub db: DbConfig,
    /// Redis (`REDIS_STATE_URL`, else `REDIS_URL`): the event bus between
    /// services when set.
    pub redis: RedisUrls,
    /// The service's own settings.
    pub bonus: BonusConfig,
}

impl Settings {
    /// Reads the settings from `vars` (pass `std::env::vars()`); tests pass
    /// their own list so they never depend on the machine's environment.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let StartupSettings {
            common,
            db,
            redis,
            service: bonus,
        } = StartupSettings::from_vars(BonusConfig::spec(), vars)?;
        Ok(Self {
            common,
            db,
            redis,
            bonus,
        })
    }

    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_build() {
        let settings = Settings::from_vars([]).unwrap();
        assert_eq!(settings.bonus.addr, DEFAULT_ADDR);
        assert!(settings.bonus.jobs_enabled);
        assert_eq!(settings.bonus.expiry_interval_seconds, 60);
    }

    #[test]
    fn variables_override_and_unknown_ones_are_refused() {
        let settings = Settings::from_vars(vars(&[
            ("BONUS_EXPIRY_INTERVAL_SECONDS", "5"),
            ("BONUS_JOBS_ENABLED", "false"),
        ]))
        .unwrap();
        assert_eq!(settings.bonus.expiry_interval_seconds, 5);
        assert!(!settings.bonus.jobs_enabled);
        assert!(Settings::from_vars(vars(&[("BONUS_EXPIRY_INTERVAL", "5")])).is_err());
    }
}
