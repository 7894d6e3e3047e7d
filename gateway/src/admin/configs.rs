//! `configs` and `setConfig`: every service's settings as the gateway
//! process resolves them (defaults ← config store ← environment), read and
//! written through core's [`ConfigStore`] on the gateway's own database.
//!
//! The gateway knows the config specs of every service because it links
//! them (the one-process launcher runs them). A value is validated twice
//! before anything is written: its JSON type must match the key's default,
//! and the service's typed settings must still build with it.

use std::sync::Arc;

use async_graphql::{Json, SimpleObject};
use chrono::{DateTime, Utc};
use serde_json::Value;
use service_core::config::{
    CommonConfig, ConfigError, ConfigSpec, ConfigStore, LayeredConfig, Origin, StoredSetting,
    REDACTED,
};
use service_core::db::{Database, DbConfig, EmbeddedEngine, NamingStrategy};
use service_core::error::ApiError;

/// One setting as `configs` and `setConfig` answer it.
#[derive(Clone, Debug, PartialEq, SimpleObject)]
#[graphql(name = "ConfigEntry")]
pub(crate) struct ConfigEntry {
    /// The service the key belongs to (`gateway`, `auth`, `storage`, ...).
    pub(crate) service: String,
    /// The key, as its service's spec names it (`max_depth`, `mongodb_uri`).
    pub(crate) key: String,
    /// The resolved value; always `"***"` when the key is sensitive.
    pub(crate) value: Json<Value>,
    /// Whether the value is hidden: the key is registered as sensitive, or
    /// the value is a URL carrying credentials.
    pub(crate) sensitive: bool,
    /// When the stored value was last written; `null` when nothing is stored.
    pub(crate) updated_at: Option<DateTime<Utc>>,
    /// Who last wrote the stored value (a user id), for audit.
    pub(crate) updated_by: Option<String>,
    /// Which layer supplied `value`: `default`, `store` or `env` (an
    /// environment variable wins over a stored value).
    pub(crate) origin: String,
}

/// Checks a service's resolved values the way its own start-up would.
type Check = fn(&LayeredConfig) -> Result<(), ConfigError>;

/// The services whose settings can be read and written, with their checks.
fn catalogue() -> Vec<(ConfigSpec, Check)> {
    vec![
        (auth_service::AuthConfig::spec(), |l| {
            l.build::<auth_service::AuthConfig>().map(drop)
        }),
        (payment_service::PaymentConfig::spec(), |l| {
            l.build::<payment_service::PaymentConfig>().map(drop)
        }),
        (bonus_service::BonusConfig::spec(), |l| {
            l.build::<bonus_service::BonusConfig>().map(drop)
        }),
        (notification_service::NotificationConfig::spec(), |l| {
            l.build::<notification_service::NotificationConfig>()
                .map(drop)
        }),
        (crate::config::GatewaySettings::spec(), |l| {
            crate::config::GatewaySettings::from_layers(l).map(drop)
        }),
        (CommonConfig::spec(), |l| {
            l.build::<CommonConfig>().map(drop)
        }),
        (DbConfig::spec(), check_storage),
    ]
}

/// The storage variables are read by core into a private type; these are
/// the rules that type enforces beyond the JSON kind of each default.
fn check_storage(layers: &LayeredConfig) -> Result<(), ConfigError> {
    for entry in layers.entries() {
        let valid = match entry.key.as_str() {
            // Redacted in entries; its kind was checked against the default.
            "mongodb_uri" => true,
            "db_naming" => entry
                .value
                .as_str()
                .and_then(NamingStrategy::parse)
                .is_some(),
            "data_dir" => entry.value.is_string(),
            "embedded_engine" => {
                serde_json::from_value::<EmbeddedEngine>(entry.value.clone()).is_ok()
            }
            _ => entry.value.is_u64(),
        };
        if !valid {
            return Err(ConfigError::InvalidValue {
                key: entry.key,
                expected: "a value of the storage setting's type",
            });
        }
    }
    Ok(())
}

/// Whether `value` has the JSON kind the key's default has. A `null`
/// default marks an optional text setting.
fn same_kind(default: &Value, value: &Value) -> bool {
    match default {
        Value::Null => value.is_null() || value.is_string(),
        Value::Bool(_) => value.is_boolean(),
        Value::Number(_) => value.is_number(),
        Value::String(_) => value.is_string(),
        Value::Array(_) => value.is_array(),
        Value::Object(_) => value.is_object(),
    }
}

/// A URL whose authority carries a user or password (`redis://:pw@host`):
/// shown as `"***"` even when its key is not registered as sensitive.
fn carries_credentials(value: &Value) -> bool {
    let Some(text) = value.as_str() else {
        return false;
    };
    let Some((_, rest)) = text.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.contains('@')
}

/// Reads and writes settings through the config store.
#[derive(Clone)]
pub(crate) struct ConfigAdmin {
    store: ConfigStore,
    /// The gateway's start-up variables, which `configs` resolves against.
    vars: Vec<(String, String)>,
}

impl ConfigAdmin {
    /// The admin over the gateway's database, resolving against `vars`.
    pub(crate) fn new(db: Arc<Database>, vars: Vec<(String, String)>) -> Self {
        Self {
            store: ConfigStore::new(db),
            vars,
        }
    }

    /// Every setting of `service` (of every known service when `None`),
    /// ordered by service then key, sensitive values redacted.
    pub(crate) async fn entries(
        &self,
        service: Option<&str>,
    ) -> Result<Vec<ConfigEntry>, ApiError> {
        let mut out = Vec::new();
        let mut found = false;
        for (spec, _) in catalogue() {
            if service.is_some_and(|wanted| wanted != spec.service) {
                continue;
            }
            found = true;
            out.extend(self.service_entries(spec).await?);
        }
        if !found {
            return Err(unknown_service(service.unwrap_or_default()));
        }
        out.sort_by(|a, b| (&a.service, &a.key).cmp(&(&b.service, &b.key)));
        Ok(out)
    }

    /// Validates `value` for `service`/`key`, stores it with `updated_by`
    /// and answers the key as `configs` now shows it. Nothing is written
    /// when the service, the key or the value is refused.
    pub(crate) async fn set(
        &self,
        service: &str,
        key: &str,
        value: Value,
        updated_by: Option<&str>,
    ) -> Result<ConfigEntry, ApiError> {
        let Some((spec, check)) = catalogue().into_iter().find(|(s, _)| s.service == service)
        else {
            return Err(unknown_service(service));
        };
        let Some(default) = spec.defaults.get(key) else {
            let mut known: Vec<&str> = spec.defaults.keys().map(String::as_str).collect();
            known.sort_unstable();
            return Err(ApiError::validation(
                "key",
                format!(
                    "`{}` is not a setting of {service}; known keys: {}",
                    clipped(key),
                    known.join(", ")
                ),
            ));
        };
        let sensitive = spec.sensitive.contains(&key) || carries_credentials(&value);
        if !same_kind(default, &value) {
            return Err(invalid_value(key, &kind_of(default)));
        }
        let stored = self.known_stored(&spec).await?;
        let mut candidate = LayeredConfig::new(spec.clone())
            .with_stored(stored)
            .map_err(|err| ApiError::internal(err.to_string()))?;
        candidate
            .set(key, value.clone(), Origin::Store)
            .map_err(|err| ApiError::internal(err.to_string()))?;
        if let Err(err) = check(&candidate) {
            let reason = if sensitive {
                "the value is not valid for this setting".to_owned()
            } else {
                err.to_string()
            };
            return Err(invalid_value(key, &reason));
        }
        self.store
            .set(service, key, value, updated_by)
            .await
            .map_err(|err| ApiError::unavailable("config store").with_cause(err))?;
        tracing::info!(
            service,
            key,
            updated_by = updated_by.unwrap_or("unknown"),
            "configuration changed"
        );
        self.service_entries(spec)
            .await?
            .into_iter()
            .find(|entry| entry.key == key)
            .ok_or_else(|| ApiError::internal(format!("{service}/{key} vanished after writing")))
    }

    /// The stored settings of `spec`'s service. Stored keys the spec no
    /// longer has (a renamed setting) are skipped rather than failing every
    /// read-out and write of that service.
    async fn known_stored(&self, spec: &ConfigSpec) -> Result<Vec<StoredSetting>, ApiError> {
        let stored = self
            .store
            .load(spec.service)
            .await
            .map_err(|err| ApiError::unavailable("config store").with_cause(err))?;
        Ok(stored
            .into_iter()
            .filter(|s| spec.defaults.contains_key(&s.key))
            .collect())
    }

    /// One service's keys resolved as its process would resolve them, were
    /// it started with the gateway's start-up variables.
    async fn service_entries(&self, spec: ConfigSpec) -> Result<Vec<ConfigEntry>, ApiError> {
        let service = spec.service;
        let stored = self.known_stored(&spec).await?;
        let mut layers = LayeredConfig::new(spec)
            .with_stored(stored.clone())
            .map_err(|err| ApiError::internal(err.to_string()))?;
        // One variable at a time: a variable the gateway's environment
        // holds for another process and cannot parse is that process's
        // start-up error, not a reason to hide every other setting.
        for (name, raw) in &self.vars {
            if let Ok(next) = layers.clone().with_env([(name.clone(), raw.clone())]) {
                layers = next;
            }
        }
        Ok(layers
            .entries()
            .into_iter()
            .filter_map(|entry| {
                let record = stored.iter().find(|s| s.key == entry.key);
                let hidden = entry.sensitive || carries_credentials(&entry.value);
                // `value` is `JSON!`: a sensitive key reads "***" set or not
                // (whether a secret is configured is not shown either), and
                // an optional key left unset has no value to list.
                let value = if hidden {
                    Value::String(REDACTED.to_owned())
                } else if entry.value.is_null() {
                    return None;
                } else {
                    entry.value
                };
                Some(ConfigEntry {
                    service: service.to_owned(),
                    key: entry.key,
                    value: Json(value),
                    sensitive: hidden,
                    updated_at: record.map(|s| s.updated_at),
                    updated_by: record.and_then(|s| s.updated_by.clone()),
                    origin: match entry.origin {
                        Origin::Default => "default",
                        Origin::Store => "store",
                        Origin::Env => "env",
                    }
                    .to_owned(),
                })
            })
            .collect())
    }
}

fn unknown_service(service: &str) -> ApiError {
    let mut known: Vec<&str> = catalogue().iter().map(|(s, _)| s.service).collect();
    known.sort_unstable();
    ApiError::validation(
        "service",
        format!(
            "`{}` has no settings; known services: {}",
            clipped(service),
            known.join(", ")
        ),
    )
}

/// At most [`ECHOED_CHARS`] characters of a name the caller sent, for an
/// error message: a refusal never carries a megabyte back.
fn clipped(name: &str) -> String {
    match name.char_indices().nth(ECHOED_CHARS) {
        Some((end, _)) => format!("{}…", &name[..end]),
        None => name.to_owned(),
    }
}

/// How much of an unknown service or key name a refusal repeats.
const ECHOED_CHARS: usize = 64;

fn invalid_value(key: &str, reason: &str) -> ApiError {
    ApiError::validation("value", format!("Invalid value for `{key}`: {reason}"))
}

fn kind_of(default: &Value) -> String {
    match default {
        Value::Null => "expected a string or null",
        Value::Bool(_) => "expected a boolean",
        Value::Number(_) => "expected a number",
        Value::String(_) => "expected a string",
        Value::Array(_) => "expected a list",
        Value::Object(_) => "expected an object",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn credentials_in_urls_are_detected() {
        assert!(carries_credentials(&json!("redis://:pw@cache:6379/0")));
        assert!(carries_credentials(&json!(
            "mongodb://user:pw@db:27017/?replicaSet=rs"
        )));
        assert!(!carries_credentials(&json!("http://127.0.0.1:9/pay")));
        assert!(!carries_credentials(&json!(
            "http://host/path?email=a@b.example"
        )));
        assert!(!carries_credentials(&json!("someone@example.com")));
        assert!(!carries_credentials(&json!(42)));
    }

    #[test]
    fn values_must_match_the_kind_of_the_default() {
        assert!(same_kind(&json!(10), &json!(3)));
        assert!(!same_kind(&json!(10), &json!("3")));
        assert!(same_kind(&Value::Null, &json!("smtp.example")));
        assert!(!same_kind(&Value::Null, &json!(1)));
        assert!(!same_kind(&json!(true), &json!("yes")));
    }

    #[test]
    fn every_service_in_the_catalogue_builds_from_its_defaults() {
        for (spec, check) in catalogue() {
            let service = spec.service;
            check(&LayeredConfig::new(spec)).unwrap_or_else(|err| panic!("{service}: {err}"));
        }
    }

    #[test]
    fn storage_rules_refuse_unknown_naming_strategies_and_engines() {
        let mut layers = LayeredConfig::new(DbConfig::spec());
        layers
            .set("db_naming", json!("per-planet"), Origin::Store)
            .unwrap();
        assert!(check_storage(&layers).is_err());
        layers
            .set("db_naming", json!("shared"), Origin::Store)
            .unwrap();
        assert!(check_storage(&layers).is_ok());
        layers
            .set("embedded_engine", json!("leveldb"), Origin::Store)
            .unwrap();
        assert!(check_storage(&layers).is_err());
        layers
            .set("embedded_engine", json!("sqlite"), Origin::Store)
            .unwrap();
        assert!(check_storage(&layers).is_ok());
    }

    #[test]
    fn refusals_repeat_at_most_a_short_prefix_of_a_name() {
        assert_eq!(clipped("rateLimitBurst"), "rateLimitBurst");
        let long = "é".repeat(100_000);
        let echoed = clipped(&long);
        assert_eq!(echoed.chars().count(), ECHOED_CHARS + 1);
        assert!(echoed.ends_with('…'));
        let error = unknown_service(&long);
        assert!(error.to_string().len() < 1_000, "{error}");
    }
}
