//! The service's settings: the shared ones, storage, and its own `AUTH_*`
//! variables, read once at start-up so a typo stops the process instead of
//! being silently ignored.

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{json, Value};
use service_core::app::StartupSettings;
use service_core::config::{CommonConfig, ConfigError, ConfigSpec};
use service_core::db::DbConfig;
use service_core::redis::RedisUrls;

use crate::{DEFAULT_ADDR, ENV_PREFIX, SERVICE};

/// The `AUTH_*` variables.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `AUTH_ADDR`: where the subgraph listens (`127.0.0.1:0` picks a port).
    pub addr: String,
    /// `AUTH_BODY_LIMIT_BYTES`: largest accepted request body.
    pub body_limit_bytes: usize,
    /// `AUTH_JWT_PRIVATE_KEY`: the Ed25519 signing key, PKCS#8 PEM. Without it
    /// a development process signs with an ephemeral key; production refuses
    /// to start.
    pub jwt_private_key: Option<SecretString>,
    /// `AUTH_JWT_KID`: the `kid` tokens signed with that key carry.
    pub jwt_kid: String,
    /// `AUTH_ACCESS_TTL_SECONDS`: access-token lifetime.
    pub access_ttl_seconds: u64,
    /// `AUTH_REFRESH_TTL_SECONDS`: how long a session (and its refresh
    /// tokens) lives without a new login.
    pub refresh_ttl_seconds: u64,
    /// `AUTH_REFRESH_GRACE_SECONDS`: how long a just-rotated refresh token is
    /// still honoured, so two tabs refreshing at once do not revoke the session.
    pub refresh_grace_seconds: u64,
    /// `AUTH_LOGIN_MAX_FAILURES`: failed sign-ins allowed per email in the
    /// window before `MSAuthTooManyAttempts`.
    pub login_max_failures: u32,
    /// `AUTH_LOGIN_WINDOW_SECONDS`: the sliding window those failures count in.
    pub login_window_seconds: u64,
    /// `AUTH_LOCKOUT_AFTER_BURSTS`: the how-manyth tripping of the login
    /// limit within `AUTH_LOCKOUT_BURST_WINDOW_SECONDS` locks the account
    /// (status `LOCKED`).
    pub lockout_after_bursts: u32,
    /// `AUTH_LOCKOUT_BURST_WINDOW_SECONDS`: the window those trips count in.
    pub lockout_burst_window_seconds: u64,
    /// `AUTH_LOCKOUT_BASE_SECONDS`: the first automatic lock's length; each
    /// further one lasts twice as long as the one before.
    pub lockout_base_seconds: u64,
    /// `AUTH_LOCKOUT_MAX_SECONDS`: the longest automatic lock.
    pub lockout_max_seconds: u64,
    /// `AUTH_SESSION_CACHE_TTL_SECONDS`: how long "this session is live" may
    /// be answered from the cache (revocations invalidate it at once).
    pub session_cache_ttl_seconds: u64,
    /// `AUTH_OTP_TTL_SECONDS`: how long a one-time code is accepted.
    pub otp_ttl_seconds: u64,
    /// `AUTH_OTP_MAX_TRIES`: verifications a code allows before it is dead.
    pub otp_max_tries: u32,
    /// `AUTH_OTP_BURST`: codes a user may request in a row.
    pub otp_burst: u32,
    /// `AUTH_OTP_REFILL_SECONDS`: after the burst, one more request per this
    /// many seconds.
    pub otp_refill_seconds: u64,
    /// `AUTH_BOOTSTRAP_ADMIN_EMAIL`: with the password, the admin ensured at
    /// start-up. There are no other default credentials.
    pub bootstrap_admin_email: Option<String>,
    /// `AUTH_BOOTSTRAP_ADMIN_PASSWORD`: that admin's password, used only
    /// when the account is created.
    pub bootstrap_admin_password: Option<SecretString>,
}

impl AuthConfig {
    /// The keys, defaults and sensitive keys of [`AuthConfig`].
    pub fn spec() -> ConfigSpec {
        let defaults = match json!({
            "addr": DEFAULT_ADDR,
            "body_limit_bytes": service_core::server::DEFAULT_BODY_LIMIT,
            "jwt_private_key": null,
            "jwt_kid": "auth-1",
            "access_ttl_seconds": 15 * 60,
            "refresh_ttl_seconds": 30 * 24 * 60 * 60,
            "refresh_grace_seconds": 10,
            "login_max_failures": 5,
            "login_window_seconds": 15 * 60,
            "lockout_after_bursts": 3,
            "lockout_burst_window_seconds": 24 * 60 * 60,
            "lockout_base_seconds": 30 * 60,
            "lockout_max_seconds": 24 * 60 * 60,
            "session_cache_ttl_seconds": 60,
            "otp_ttl_seconds": 5 * 60,
            "otp_max_tries": 5,
            "otp_burst": 3,
            "otp_refill_seconds": 60,
            "bootstrap_admin_email": null,
            "bootstrap_admin_password": null,
        }) {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        ConfigSpec {
            service: SERVICE,
            env_prefix: Some(ENV_PREFIX),
            defaults,
            sensitive: &["jwt_private_key", "bootstrap_admin_password"],
        }
    }
}

/// Everything the service reads at start-up.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Settings shared by every service (`APP_ENV`, `JWT_ISSUER`, ...).
    pub common: CommonConfig,
    /// Where the users and sessions are stored.
    pub db: DbConfig,
    /// The service's own settings.
    pub auth: AuthConfig,
    /// `REDIS_URL` (or per purpose `REDIS_STATE_URL`, `REDIS_CACHE_URL`,
    /// `REDIS_PUBSUB_URL`): login counts, OTP request limits and the session
    /// cache are shared through it when set.
    pub redis: RedisUrls,
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
            service: auth,
        } = StartupSettings::from_vars(AuthConfig::spec(), vars)?;
        Ok(Self {
            common,
            db,
            redis,
            auth,
        })
    }

    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

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
        assert_eq!(settings.auth.addr, DEFAULT_ADDR);
        assert!(settings.auth.jwt_private_key.is_none());
        assert_eq!(settings.auth.access_ttl_seconds, 900);
    }

    #[test]
    fn unknown_auth_variables_are_refused_and_keys_are_redacted() {
        assert!(Settings::from_vars(vars(&[("AUTH_JWT_PRIVATE", "x")])).is_err());
        let settings =
            Settings::from_vars(vars(&[("AUTH_JWT_PRIVATE_KEY", "pem-secret")])).unwrap();
        assert!(!format!("{settings:?}").contains("pem-secret"));
        assert_eq!(
            settings.auth.jwt_private_key.unwrap().expose_secret(),
            "pem-secret"
        );
    }

    #[test]
    fn redis_comes_from_the_given_variables_and_bad_urls_are_not_echoed() {
        let settings =
            Settings::from_vars(vars(&[("REDIS_URL", "redis://127.0.0.1:6390")])).unwrap();
        assert!(settings.redis.state.is_some() && settings.redis.cache.is_some());
        assert!(Settings::from_vars([]).unwrap().redis.state.is_none());
        let err = Settings::from_vars(vars(&[("REDIS_URL", "http://user:hunter2@x")])).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn lockout_and_otp_settings_have_their_defaults() {
        let auth = Settings::from_vars([]).unwrap().auth;
        assert_eq!(
            (
                auth.lockout_after_bursts,
                auth.lockout_base_seconds,
                auth.lockout_max_seconds
            ),
            (3, 1800, 86_400)
        );
        assert_eq!((auth.otp_ttl_seconds, auth.otp_max_tries), (300, 5));
    }
}
