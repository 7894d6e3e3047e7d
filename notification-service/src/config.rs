//! The service's settings: the shared ones, storage, and its own
//! `NOTIFICATION_*` variables, read once at start-up so a typo stops the
//! process instead of being silently ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{json, Value};
use service_core::app::StartupSettings;
use service_core::config::{CommonConfig, ConfigError, ConfigSpec};
use service_core::db::DbConfig;
use service_core::redis::RedisUrls;

use crate::store::Channel;
use crate::{DEFAULT_ADDR, ENV_PREFIX, SERVICE};

/// How email leaves the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP upgraded with STARTTLS (port 587); refused if the server
    /// does not offer it.
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
    /// No encryption at all: only for a relay on the same host or a test.
    None,
}

/// Per-channel overrides of the delivery policy (`NOTIFICATION_CHANNEL_POLICIES`,
/// a JSON object keyed by channel name, e.g. `{"SMS": {"timeout_ms": 2000}}`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverride {
    /// Deadline of one provider call.
    pub timeout_ms: Option<u64>,
    /// Attempts per notification, the first included.
    pub max_attempts: Option<u32>,
    /// Pause before the first retry (doubling, with equal jitter).
    pub initial_backoff_ms: Option<u64>,
    /// Longest pause between retries.
    pub max_backoff_ms: Option<u64>,
    /// Failures within the breaker window that open the breaker.
    pub breaker_failures: Option<u32>,
    /// How long an open breaker refuses calls before a probe.
    pub breaker_reset_ms: Option<u64>,
    /// Sends in flight at once on this channel.
    pub concurrency: Option<usize>,
}

/// The resolved delivery policy of one channel.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelPolicy {
    /// Deadline of one provider call.
    pub timeout: Duration,
    /// Attempts per notification, the first included (at least 1).
    pub max_attempts: u32,
    /// Pause before the first retry.
    pub initial_backoff: Duration,
    /// Longest pause between retries.
    pub max_backoff: Duration,
    /// Failures within a minute that open the breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls.
    pub breaker_reset: Duration,
    /// Sends in flight at once (at least 1).
    pub concurrency: usize,
}

/// The `NOTIFICATION_*` variables.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationConfig {
    /// `NOTIFICATION_ADDR`: where the subgraph listens.
    pub addr: String,
    /// `NOTIFICATION_BODY_LIMIT_BYTES`: largest accepted request body.
    pub body_limit_bytes: usize,
    /// `NOTIFICATION_SMTP_HOST`: the SMTP relay; unset selects the log (or
    /// file) transport of the embedded default.
    pub smtp_host: Option<String>,
    /// `NOTIFICATION_SMTP_PORT`: the relay's port.
    pub smtp_port: u16,
    /// `NOTIFICATION_SMTP_TLS`: `starttls`, `tls` or `none`.
    pub smtp_tls: SmtpTls,
    /// `NOTIFICATION_SMTP_USERNAME`: login, when the relay wants one.
    pub smtp_username: Option<String>,
    /// `NOTIFICATION_SMTP_PASSWORD`: the login's password.
    pub smtp_password: Option<SecretString>,
    /// `NOTIFICATION_SMTP_FROM`: the `From:` mailbox.
    pub smtp_from: String,
    /// `NOTIFICATION_EMAIL_OUTBOX_DIR`: without an SMTP host, write each
    /// email as an `.eml` file here instead of only logging that it was sent.
    pub email_outbox_dir: Option<PathBuf>,
    /// `NOTIFICATION_SMS_URL`: the SMS provider's HTTP endpoint (JSON POST);
    /// unset disables the channel.
    pub sms_url: Option<String>,
    /// `NOTIFICATION_PUSH_URL`: the push provider's endpoint.
    pub push_url: Option<String>,
    /// `NOTIFICATION_WEBHOOK_URL`: the webhook endpoint.
    pub webhook_url: Option<String>,
    /// `NOTIFICATION_PROVIDER_TIMEOUT_MS`: default deadline of one provider call.
    pub provider_timeout_ms: u64,
    /// `NOTIFICATION_MAX_ATTEMPTS`: default attempts per notification.
    pub max_attempts: u32,
    /// `NOTIFICATION_INITIAL_BACKOFF_MS`: default pause before the first retry.
    pub initial_backoff_ms: u64,
    /// `NOTIFICATION_MAX_BACKOFF_MS`: default longest pause between retries.
    pub max_backoff_ms: u64,
    /// `NOTIFICATION_BREAKER_FAILURES`: default failures that open a breaker.
    pub breaker_failures: u32,
    /// `NOTIFICATION_BREAKER_RESET_MS`: default time an open breaker waits.
    pub breaker_reset_ms: u64,
    /// `NOTIFICATION_CONCURRENCY`: default sends in flight per channel.
    pub concurrency: usize,
    /// `NOTIFICATION_CHANNEL_POLICIES`: per-channel overrides (JSON object).
    pub channel_policies: BTreeMap<Channel, PolicyOverride>,
    /// `NOTIFICATION_QUEUE_CAPACITY`: jobs queued per channel in process
    /// before producers wait (backpressure).
    pub queue_capacity: usize,
    /// `NOTIFICATION_REDIS_QUEUE`: with Redis configured, queue deliveries
    /// on durable Redis Streams (`true`) or in process (`false`).
    pub redis_queue: bool,
}

impl NotificationConfig {
    /// The keys, defaults and sensitive keys of [`NotificationConfig`].
    pub fn spec() -> ConfigSpec {
        let defaults = match json!({
            "addr": DEFAULT_ADDR,
            "body_limit_bytes": service_core::server::DEFAULT_BODY_LIMIT,
            "smtp_host": null,
            "smtp_port": 587,
            "smtp_tls": "starttls",
            "smtp_username": null,
            "smtp_password": null,
            "smtp_from": "Payment Platform <no-reply@localhost>",
            "email_outbox_dir": null,
            "sms_url": null,
            "push_url": null,
            "webhook_url": null,
            "provider_timeout_ms": 5000,
            "max_attempts": 4,
            "initial_backoff_ms": 200,
            "max_backoff_ms": 5000,
            "breaker_failures": 5,
            "breaker_reset_ms": 30000,
            "concurrency": 16,
            "channel_policies": {},
            "queue_capacity": 1024,
            "redis_queue": true,
        }) {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        ConfigSpec {
            service: SERVICE,
            env_prefix: Some(ENV_PREFIX),
            defaults,
            sensitive: &["smtp_password"],
        }
    }

    /// The policy of `channel`: the defaults with its overrides applied.
    pub fn policy(&self, channel: Channel) -> ChannelPolicy {
        let o = self
            .channel_policies
            .get(&channel)
            .cloned()
            .unwrap_or_default();
        ChannelPolicy {
            timeout: Duration::from_millis(o.timeout_ms.unwrap_or(self.provider_timeout_ms)),
            max_attempts: o.max_attempts.unwrap_or(self.max_attempts).max(1),
            initial_backoff: Duration::from_millis(
                o.initial_backoff_ms.unwrap_or(self.initial_backoff_ms),
            ),
            max_backoff: Duration::from_millis(o.max_backoff_ms.unwrap_or(self.max_backoff_ms)),
            breaker_failures: o.breaker_failures.unwrap_or(self.breaker_failures).max(1),
            breaker_reset: Duration::from_millis(
                o.breaker_reset_ms.unwrap_or(self.breaker_reset_ms),
            ),
            concurrency: o.concurrency.unwrap_or(self.concurrency).max(1),
        }
    }

    /// The HTTP endpoint configured for `channel`, if any.
    pub fn http_url(&self, channel: Channel) -> Option<&str> {
        let url = match channel {
            Channel::Sms => &self.sms_url,
            Channel::Push => &self.push_url,
            Channel::Webhook => &self.webhook_url,
            Channel::InApp | Channel::Email => &None,
        };
        url.as_deref().filter(|u| !u.trim().is_empty())
    }
}

/// Everything the service reads at start-up.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Settings shared by every service (`APP_ENV`, `JWT_PUBLIC_KEYS`, ...).
    pub common: CommonConfig,
    /// Where notifications and preferences are stored.
    pub db: DbConfig,
    /// The service's own settings.
    pub notification: NotificationConfig,
    /// Redis for the durable queue and the cross-instance fan-out
    /// (`REDIS_URL`, `REDIS_STATE_URL`, `REDIS_PUBSUB_URL`).
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
            service: notification,
        } = StartupSettings::from_vars(NotificationConfig::spec(), vars)?;
        Ok(Self {
            common,
            db,
            redis,
            notification,
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
    fn defaults_build_without_providers() {
        let settings = Settings::from_vars([]).unwrap();
        assert_eq!(settings.notification.addr, DEFAULT_ADDR);
        assert!(settings.notification.smtp_host.is_none());
        assert!(settings.notification.http_url(Channel::Sms).is_none());
        assert!(settings.redis.pubsub.is_none());
        assert_eq!(settings.notification.policy(Channel::Sms).max_attempts, 4);
    }

    #[test]
    fn per_channel_overrides_apply_to_that_channel_only() {
        let settings = Settings::from_vars(vars(&[
            (
                "NOTIFICATION_CHANNEL_POLICIES",
                r#"{"SMS": {"timeout_ms": 50, "concurrency": 2}}"#,
            ),
            ("NOTIFICATION_SMS_URL", "http://127.0.0.1:9/sms"),
        ]))
        .unwrap();
        let sms = settings.notification.policy(Channel::Sms);
        assert_eq!(sms.timeout, Duration::from_millis(50));
        assert_eq!(sms.concurrency, 2);
        assert_eq!(settings.notification.policy(Channel::Push).concurrency, 16);
        assert_eq!(
            settings.notification.http_url(Channel::Sms),
            Some("http://127.0.0.1:9/sms")
        );
    }

    #[test]
    fn unknown_variables_are_refused_and_the_password_is_redacted() {
        assert!(Settings::from_vars(vars(&[("NOTIFICATION_SMTP_HOSTNAME", "x")])).is_err());
        assert!(
            Settings::from_vars(vars(&[("NOTIFICATION_CHANNEL_POLICIES", r#"{"FAX": {}}"#)]))
                .is_err()
        );
        let settings =
            Settings::from_vars(vars(&[("NOTIFICATION_SMTP_PASSWORD", "smtp-secret")])).unwrap();
        assert!(!format!("{settings:?}").contains("smtp-secret"));
        assert_eq!(
            settings.notification.smtp_password.unwrap().expose_secret(),
            "smtp-secret"
        );
    }
}
