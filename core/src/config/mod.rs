//! Typed, layered configuration.
//!
//! A service declares a [`ConfigSpec`]: its environment prefix, every key with
//! its default, and which keys are sensitive. Values are resolved
//! defaults ← config store ← environment (the environment wins) and then
//! deserialised into the service's own struct, so a typo in a variable name is
//! an error at start-up rather than a silently ignored setting. Read-outs
//! ([`LayeredConfig::entries`]) redact sensitive values.

mod common;
mod store;

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

pub use common::{AppEnv, CommonConfig, LogFormat};
pub use store::{ConfigStore, StoredSetting, COLLECTION as CONFIG_COLLECTION};

/// What a text shows in place of a sensitive value.
pub const REDACTED: &str = "***";

/// A configuration failure found at start-up or when a value is changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A variable carries the service's prefix but names no known key.
    #[error("unknown configuration variable {variable} (known keys: {known})")]
    UnknownKey {
        /// The environment variable or store key that was not recognised.
        variable: String,
        /// The keys this service accepts, comma separated.
        known: String,
    },
    /// A value could not be read as the type its default has.
    #[error("configuration key {key} expects {expected}")]
    InvalidValue {
        /// The key.
        key: String,
        /// A description of the expected type.
        expected: &'static str,
    },
    /// The resolved values do not fit the service's config struct.
    #[error("configuration of {service} is invalid: {message}")]
    Invalid {
        /// The service whose configuration failed.
        service: &'static str,
        /// What serde reported (never includes the values themselves).
        message: String,
    },
}

/// The keys a service accepts, their defaults and which are sensitive.
#[derive(Clone, Debug)]
pub struct ConfigSpec {
    /// Service name, as used in `configs(service:)`.
    pub service: &'static str,
    /// Environment prefix: key `addr` of prefix `AUTH` is read from `AUTH_ADDR`.
    /// `None` means keys are read from their upper-cased names alone, and
    /// other variables are not checked (shared settings such as `REDIS_URL`).
    pub env_prefix: Option<&'static str>,
    /// Every key with its default; `null` marks an optional key.
    pub defaults: Map<String, Value>,
    /// Keys whose values never appear in read-outs or logs.
    pub sensitive: &'static [&'static str],
}

/// Where a resolved value came from, for read-outs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The service's registered default.
    Default,
    /// The database-backed config store.
    Store,
    /// An environment variable.
    Env,
}

/// One resolved key as an operator may see it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConfigEntry {
    /// The key.
    pub key: String,
    /// The value, or `"***"` when sensitive and set.
    pub value: Value,
    /// Whether the key is sensitive.
    pub sensitive: bool,
    /// Which layer supplied the value.
    pub origin: Origin,
}

/// The resolved values of one [`ConfigSpec`].
#[derive(Clone, Debug)]
pub struct LayeredConfig {
    spec: ConfigSpec,
    values: BTreeMap<String, (Value, Origin)>,
}

impl LayeredConfig {
    /// Starts from the spec's defaults.
    pub fn new(spec: ConfigSpec) -> Self {
        let values = spec
            .defaults
            .iter()
            .map(|(k, v)| (k.clone(), (v.clone(), Origin::Default)))
            .collect();
        Self { spec, values }
    }

    /// Overlays values from the config store; unknown keys are rejected.
    pub fn with_store(
        mut self,
        stored: impl IntoIterator<Item = (String, Value)>,
    ) -> Result<Self, ConfigError> {
        for (key, value) in stored {
            self.set(&key, value, Origin::Store)?;
        }
        Ok(self)
    }

    /// Overlays the settings a [`ConfigStore`] holds for this service.
    pub fn with_stored(self, stored: Vec<StoredSetting>) -> Result<Self, ConfigError> {
        self.with_store(stored.into_iter().map(|s| (s.key, s.value)))
    }

    /// Overlays environment variables (pass `std::env::vars()`).
    pub fn with_env(
        mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        for (name, raw) in vars {
            let key = match self.spec.env_prefix {
                Some(prefix) => match name
                    .strip_prefix(prefix)
                    .and_then(|rest| rest.strip_prefix('_'))
                {
                    Some(rest) => rest.to_ascii_lowercase(),
                    None => continue,
                },
                None => {
                    let key = name.to_ascii_lowercase();
                    if !self.values.contains_key(&key) || name != key.to_ascii_uppercase() {
                        continue;
                    }
                    key
                }
            };
            let value = self.parse_env_value(&key, &name, &raw)?;
            self.set(&key, value, Origin::Env)?;
        }
        Ok(self)
    }

    /// Sets one key, as the config store or an admin mutation does.
    pub fn set(&mut self, key: &str, value: Value, origin: Origin) -> Result<(), ConfigError> {
        let Some(slot) = self.values.get_mut(key) else {
            return Err(self.unknown(key));
        };
        *slot = (value, origin);
        Ok(())
    }

    /// Deserialises the resolved values into the service's config type.
    pub fn build<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let object: Map<String, Value> = self
            .values
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect();
        serde_json::from_value(Value::Object(object)).map_err(|err| ConfigError::Invalid {
            service: self.spec.service,
            message: redact_quoted(&err.to_string()),
        })
    }

    /// Every key with its value, sensitive values redacted.
    pub fn entries(&self) -> Vec<ConfigEntry> {
        self.values
            .iter()
            .map(|(key, (value, origin))| {
                let sensitive = self.is_sensitive(key);
                let value = if sensitive && !value.is_null() {
                    Value::String(REDACTED.to_owned())
                } else {
                    value.clone()
                };
                ConfigEntry {
                    key: key.clone(),
                    value,
                    sensitive,
                    origin: *origin,
                }
            })
            .collect()
    }

    /// The service this configuration belongs to.
    pub fn service(&self) -> &'static str {
        self.spec.service
    }

    /// Whether `key` is registered as sensitive.
    pub fn is_sensitive(&self, key: &str) -> bool {
        self.spec.sensitive.contains(&key)
    }

    fn unknown(&self, key: &str) -> ConfigError {
        let known: BTreeSet<&str> = self.values.keys().map(String::as_str).collect();
        let variable = match self.spec.env_prefix {
            Some(prefix) => format!("{prefix}_{}", key.to_ascii_uppercase()),
            None => key.to_ascii_uppercase(),
        };
        ConfigError::UnknownKey {
            variable,
            known: known.into_iter().collect::<Vec<_>>().join(", "),
        }
    }

    /// Reads a variable as the type of the key's default, so `"10"` becomes a
    /// number where a number is expected and stays a string where not.
    fn parse_env_value(&self, key: &str, variable: &str, raw: &str) -> Result<Value, ConfigError> {
        let Some((default, _)) = self.values.get(key) else {
            return Err(ConfigError::UnknownKey {
                variable: variable.to_owned(),
                known: self.values.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        };
        let invalid = |expected| ConfigError::InvalidValue {
            key: key.to_owned(),
            expected,
        };
        Ok(match default {
            Value::Bool(_) => match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Value::Bool(true),
                "false" | "0" | "no" | "off" => Value::Bool(false),
                _ => return Err(invalid("a boolean (true/false)")),
            },
            Value::Number(_) => serde_json::from_str::<serde_json::Number>(raw.trim())
                .map_err(|_| invalid("a number"))?
                .into(),
            Value::Array(_) | Value::Object(_) => {
                serde_json::from_str(raw).map_err(|_| invalid("a JSON value"))?
            }
            Value::String(_) | Value::Null => Value::String(raw.to_owned()),
        })
    }
}

/// serde quotes the offending value in its messages (`invalid type: string
/// "hunter2", expected u32`); a secret must not reach a log that way.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut inside: Option<char> = None;
    for c in message.chars() {
        match inside {
            Some(close) if c == close => {
                out.push_str(REDACTED);
                out.push(c);
                inside = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if c == '"' || c == '`' {
                    inside = Some(c);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use secrecy::{ExposeSecret, SecretString};
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        addr: String,
        max_items: u32,
        enabled: bool,
        api_key: Option<SecretString>,
    }

    fn spec() -> ConfigSpec {
        let Value::Object(defaults) = json!({
            "addr": "127.0.0.1:4001",
            "max_items": 10,
            "enabled": false,
            "api_key": null,
        }) else {
            unreachable!()
        };
        ConfigSpec {
            service: "demo",
            env_prefix: Some("DEMO"),
            defaults,
            sensitive: &["api_key"],
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_wins_over_store_over_defaults() {
        let config = LayeredConfig::new(spec())
            .with_store([
                ("max_items".to_owned(), json!(20)),
                ("enabled".to_owned(), json!(true)),
            ])
            .unwrap()
            .with_env(env(&[("DEMO_MAX_ITEMS", "30"), ("OTHER_MAX_ITEMS", "99")]))
            .unwrap();
        let settings: Settings = config.build().unwrap();
        assert_eq!(settings.max_items, 30);
        assert!(settings.enabled);
        assert_eq!(settings.addr, "127.0.0.1:4001");
    }

    #[test]
    fn unknown_prefixed_variables_are_rejected() {
        let err = LayeredConfig::new(spec())
            .with_env(env(&[("DEMO_MAX_ITEM", "30")]))
            .unwrap_err();
        assert!(
            matches!(err, ConfigError::UnknownKey { ref variable, .. } if variable == "DEMO_MAX_ITEM")
        );
    }

    #[test]
    fn values_must_match_the_default_type() {
        let err = LayeredConfig::new(spec())
            .with_env(env(&[("DEMO_ENABLED", "maybe")]))
            .unwrap_err();
        assert!(matches!(err, ConfigError::InvalidValue { .. }));
    }

    #[test]
    fn sensitive_values_are_redacted_in_entries_and_debug() {
        let config = LayeredConfig::new(spec())
            .with_env(env(&[("DEMO_API_KEY", "s3cr3t-value")]))
            .unwrap();
        let entries = config.entries();
        let key = entries.iter().find(|e| e.key == "api_key").unwrap();
        assert_eq!(key.value, json!(REDACTED));
        assert!(key.sensitive);
        assert_eq!(key.origin, Origin::Env);
        let settings: Settings = config.build().unwrap();
        assert!(!format!("{settings:?}").contains("s3cr3t"));
        assert_eq!(settings.api_key.unwrap().expose_secret(), "s3cr3t-value");
    }

    #[test]
    fn build_errors_do_not_echo_values() {
        let mut config = LayeredConfig::new(spec());
        config
            .set("max_items", json!("s3cr3t-value"), Origin::Store)
            .unwrap();
        let err = config.build::<Settings>().unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }
}
