//! The service's settings: the shared ones, storage, and its own
//! `PAYMENT_*` variables, read once at start-up so a typo stops the
//! process instead of being silently ignored.

use serde::Deserialize;
use serde_json::{json, Value};
use service_core::app::StartupSettings;
use service_core::config::{CommonConfig, ConfigError, ConfigSpec};
use service_core::db::DbConfig;
use service_core::redis::RedisUrls;

use crate::{DEFAULT_ADDR, ENV_PREFIX, SERVICE};

/// The `PAYMENT_*` variables.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentConfig {
    /// `PAYMENT_ADDR`: where the subgraph listens (`127.0.0.1:0` picks a port).
    pub addr: String,
    /// `PAYMENT_BODY_LIMIT_BYTES`: largest accepted request body.
    pub body_limit_bytes: usize,
    /// `PAYMENT_PAYOUT_URL`: the payout provider's endpoint. Unset: payouts
    /// settle at once in-process ("manual settlement").
    pub payout_url: Option<String>,
    /// `PAYMENT_PAYOUT_TIMEOUT_MS`: limit of one call to the provider.
    pub payout_timeout_ms: u64,
    /// `PAYMENT_PAYOUT_MAX_ATTEMPTS`: calls per payout while it fails transiently.
    pub payout_max_attempts: u32,
    /// `PAYMENT_IDEMPOTENCY_TTL_HOURS`: how long idempotency keys are kept.
    pub idempotency_ttl_hours: u64,
    /// `PAYMENT_CACHE_TTL_SECONDS`: how long a written-through balance stays cached.
    pub cache_ttl_seconds: u64,
    /// `PAYMENT_WITHDRAWAL_LEASE_SECONDS`: heartbeat lease of a pending
    /// withdrawal; past it, recovery takes it over.
    pub withdrawal_lease_seconds: u64,
    /// `PAYMENT_RECOVERY_INTERVAL_SECONDS`: pause between recovery sweeps (0: off).
    pub recovery_interval_seconds: u64,
    /// `PAYMENT_RECONCILE_INTERVAL_SECONDS`: pause between scheduled
    /// reconciliations (0: only on demand).
    pub reconcile_interval_seconds: u64,
}

impl PaymentConfig {
    /// The keys, defaults and sensitive keys of [`PaymentConfig`].
    pub fn spec() -> ConfigSpec {
        let defaults = match json!({
            "addr": DEFAULT_ADDR,
            "body_limit_bytes": service_core::server::DEFAULT_BODY_LIMIT,
            "payout_url": null,
            "payout_timeout_ms": 5000,
            "payout_max_attempts": 3,
            "idempotency_ttl_hours": 48,
            "cache_ttl_seconds": 30,
            "withdrawal_lease_seconds": 60,
            "recovery_interval_seconds": 30,
            "reconcile_interval_seconds": 3600,
        }) {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        ConfigSpec {
            service: SERVICE,
            env_prefix: Some(ENV_PREFIX),
            defaults,
            sensitive: &["payout_url"],
        }
    }
}

/// Everything the service reads at start-up.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Settings shared by every service (`APP_ENV`, `JWT_PUBLIC_KEYS`, ...).
    pub common: CommonConfig,
    /// Where wallets and the ledger are stored.
    pub db: DbConfig,
    /// Redis (`REDIS_URL`, `REDIS_CACHE_URL`, `REDIS_STATE_URL`): the balance
    /// cache and the event bus between services when set.
    pub redis: RedisUrls,
    /// The service's own settings.
    pub payment: PaymentConfig,
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
            service: payment,
        } = StartupSettings::from_vars(PaymentConfig::spec(), vars)?;
        Ok(Self {
            common,
            db,
            redis,
            payment,
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
        assert_eq!(settings.payment.addr, DEFAULT_ADDR);
        assert!(settings.payment.payout_url.is_none());
        assert!(settings.payment.idempotency_ttl_hours >= 24);
    }

    #[test]
    fn unknown_payment_variables_are_refused() {
        assert!(Settings::from_vars(vars(&[("PAYMENT_PAYOUT", "x")])).is_err());
        let settings =
            Settings::from_vars(vars(&[("PAYMENT_PAYOUT_URL", "http://127.0.0.1:9/pay")])).unwrap();
        assert_eq!(
            settings.payment.payout_url.as_deref(),
            Some("http://127.0.0.1:9/pay")
        );
    }
}
