//! The service's settings: the shared ones, storage, and its own `AUTH_*`
//! variables, read once at start-up so a typo stops the process instead of
//! being silently ignored.

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{json, Value};
use service_core::config::{CommonConfig, ConfigError, ConfigSpec, LayeredConfig};
use service_core::db::DbConfig;

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
}

impl Settings {
    /// Reads the settings from `vars` (pass `std::env::vars()`); tests pass
    /// their own list so they never depend on the machine's environment.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let common: CommonConfig = LayeredConfig::new(CommonConfig::spec())
            .with_env(vars.iter().cloned())?
            .build()?;
        let db = DbConfig::from_vars(SERVICE, &common, vars.iter().cloned())?;
        let auth = LayeredConfig::new(AuthConfig::spec())
            .with_env(vars)?
            .build()?;
        Ok(Self { common, db, auth })
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
}
