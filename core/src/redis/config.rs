//! Where Redis lives and how a service names its keys.
//!
//! URLs are wrapped in [`RedisUrl`] so that printing a configuration, an error
//! or a `Debug` dump never shows the password a URL may carry.

use std::{fmt, str::FromStr, time::Duration};

use super::RedisError;

/// A Redis connection URL (`redis://[user:pass@]host[:port][/db]`) whose
/// `Display` and `Debug` hide the credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Checks the scheme; the rest is parsed by the driver when connecting.
    pub fn parse(url: impl Into<String>) -> Result<Self, RedisError> {
        let url = url.into().trim().to_owned();
        const SCHEMES: [&str; 6] = [
            "redis://",
            "rediss://",
            "redis+unix://",
            "unix://",
            "valkey://",
            "valkeys://",
        ];
        if SCHEMES.iter().any(|scheme| url.starts_with(scheme)) {
            Ok(Self(url))
        } else {
            Err(RedisError::Config(format!(
                "{} is not a Redis URL (expected redis://host:port)",
                redact(&url)
            )))
        }
    }

    /// The URL with its credentials, for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with `user:pass@` and any `password=` query value replaced by `***`.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

impl FromStr for RedisUrl {
    type Err = RedisError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        Self::parse(url)
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.redacted())
    }
}

/// Hides credentials in anything URL-shaped. Everything up to the last `@`
/// after the scheme is treated as user info, even when a password contains an
/// unescaped `/` or `?`: over-redacting a host is better than leaking a secret.
pub(crate) fn redact(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(at) => url.split_at(at + 3),
        None => ("", url),
    };
    let rest = match rest.rfind('@') {
        Some(at) => format!("***@{}", &rest[at + 1..]),
        None => rest.to_owned(),
    };
    let Some((head, query)) = rest.split_once('?') else {
        return format!("{scheme}{rest}");
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if matches!(name, "pass" | "password") => format!("{name}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{scheme}{head}?{}", query.join("&"))
}

/// The `{brand}:{service}:` namespace every key and channel of a service lives in.
///
/// Neither part may be empty or contain `:` or whitespace, so a prefix can
/// never reach into another service's keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyPrefix {
    brand: String,
    service: String,
    rendered: String,
}

impl KeyPrefix {
    /// Validates both parts.
    pub fn new(brand: impl Into<String>, service: impl Into<String>) -> Result<Self, RedisError> {
        let brand = brand.into();
        let service = service.into();
        for (what, value) in [("brand", &brand), ("service", &service)] {
            if value.is_empty() || value.contains(':') || value.contains(char::is_whitespace) {
                return Err(RedisError::Config(format!(
                    "key prefix {what} {value:?} must be non-empty, without ':' or spaces"
                )));
            }
        }
        let rendered = format!("{brand}:{service}:");
        Ok(Self {
            brand,
            service,
            rendered,
        })
    }

    /// The brand part.
    pub fn brand(&self) -> &str {
        &self.brand
    }

    /// The service part.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// `{brand}:{service}:`, with the trailing colon.
    pub fn as_str(&self) -> &str {
        &self.rendered
    }

    /// The full Redis name of `key`: `{brand}:{service}:{key}`.
    pub fn key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.rendered.len() + key.len());
        full.push_str(&self.rendered);
        full.push_str(key);
        full
    }

    /// `key` without this prefix, or `None` when it is not one of ours.
    pub fn strip<'a>(&self, full: &'a str) -> Option<&'a str> {
        full.strip_prefix(self.rendered.as_str())
    }

    /// A SCAN pattern for `pattern` inside this prefix. The prefix itself is
    /// escaped, so a brand containing `*` or `[` matches only itself.
    pub(crate) fn pattern(&self, pattern: &str) -> String {
        let mut full = super::glob::escape(&self.rendered);
        full.push_str(pattern);
        full
    }
}

/// Redis endpoints per purpose, so cache, state and pub/sub can be split onto
/// separate servers when one is not enough.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisUrls {
    /// `REDIS_CACHE_URL`, else `REDIS_URL`: the L2 cache.
    pub cache: Option<RedisUrl>,
    /// `REDIS_STATE_URL`, else `REDIS_URL`: leases, operation state, rate limits.
    pub state: Option<RedisUrl>,
    /// `REDIS_PUBSUB_URL`, else `REDIS_URL`: fan-out and invalidation messages.
    pub pubsub: Option<RedisUrl>,
}

impl RedisUrls {
    /// Reads the process environment. Unset or empty variables mean "no Redis
    /// for that purpose", which callers treat as running without it.
    pub fn from_env() -> Result<Self, RedisError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads `vars` (a service's start-up variables) as a configuration
    /// step. The error never quotes the URL, which may hold credentials.
    pub fn from_vars(vars: &[(String, String)]) -> Result<Self, crate::config::ConfigError> {
        Self::from_lookup(|name| {
            vars.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        })
        .map_err(|_| crate::config::ConfigError::Invalid {
            service: "redis",
            message: "a REDIS_*URL variable is not a valid redis:// or rediss:// URL".to_owned(),
        })
    }

    /// Same as [`RedisUrls::from_env`] with any variable source (tests, config store).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, RedisError> {
        let read = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let fallback = read("REDIS_URL");
        let resolve = |name: &str| -> Result<Option<RedisUrl>, RedisError> {
            read(name)
                .or_else(|| fallback.clone())
                .map(RedisUrl::parse)
                .transpose()
        };
        Ok(Self {
            cache: resolve("REDIS_CACHE_URL")?,
            state: resolve("REDIS_STATE_URL")?,
            pubsub: resolve("REDIS_PUBSUB_URL")?,
        })
    }
}

/// How one logical Redis is deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisTopology {
    /// One server for everything.
    Standalone {
        /// The server.
        url: RedisUrl,
    },
    /// A master found through Sentinel. The master is resolved when the
    /// accessor connects; data-node credentials are not configurable yet.
    Sentinel {
        /// The name the sentinels monitor the master under.
        master_name: String,
        /// Sentinel endpoints, tried in order.
        sentinels: Vec<RedisUrl>,
    },
    /// Writes, SCAN-deletes and pub/sub go to the primary; reads go to the
    /// replicas in turn. Reads may lag writes by the replication delay.
    ReadReplicas {
        /// The primary, for writes.
        primary: RedisUrl,
        /// Replicas, for reads; empty means reads go to the primary.
        replicas: Vec<RedisUrl>,
    },
}

impl From<RedisUrl> for RedisTopology {
    fn from(url: RedisUrl) -> Self {
        Self::Standalone { url }
    }
}

/// Connection behaviour. The defaults suit a service on the same network as Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Limit for establishing a connection, so start-up fails fast when Redis is down.
    pub connect_timeout: Duration,
    /// Limit for one command or pipeline, including any wait for a reconnect.
    pub command_timeout: Duration,
    /// Reconnect attempts (with exponential backoff) after a connection drops,
    /// before the pending command fails; the next command starts a new round.
    pub reconnect_attempts: usize,
    /// Longest pause between two reconnect attempts.
    pub reconnect_max_delay: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
            reconnect_attempts: 4,
            reconnect_max_delay: Duration::from_secs(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_user_info_and_password_parameters() {
        assert_eq!(
            redact("redis://user:s3cret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact("redis://:p@ss/w?rd@host"), "redis://***@host");
        assert_eq!(
            redact("redis+unix:///tmp/r.sock?db=1&password=s3cret"),
            "redis+unix:///tmp/r.sock?db=1&password=***"
        );
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
        let url = RedisUrl::parse("redis://u:topsecret@h:1").unwrap();
        assert!(!format!("{url} {url:?}").contains("topsecret"));
        assert_eq!(url.expose(), "redis://u:topsecret@h:1");
    }

    #[test]
    fn non_redis_urls_are_rejected_without_echoing_secrets() {
        let err = RedisUrl::parse("http://u:topsecret@h").unwrap_err();
        assert!(matches!(err, RedisError::Config(_)));
        assert!(!err.to_string().contains("topsecret"));
    }

    #[test]
    fn prefix_renders_brand_service_key() {
        let prefix = KeyPrefix::new("acme", "payment").unwrap();
        assert_eq!(prefix.key("tx:123"), "acme:payment:tx:123");
        assert_eq!(prefix.strip("acme:payment:tx:123"), Some("tx:123"));
        assert_eq!(prefix.strip("other:payment:tx:123"), None);
        assert_eq!(prefix.brand(), "acme");
        assert_eq!(prefix.service(), "payment");
    }

    #[test]
    fn prefix_rejects_parts_that_could_escape_the_namespace() {
        assert!(KeyPrefix::new("", "payment").is_err());
        assert!(KeyPrefix::new("acme", "pay:ment").is_err());
        assert!(KeyPrefix::new("ac me", "payment").is_err());
    }

    #[test]
    fn prefix_pattern_escapes_glob_characters_of_the_prefix() {
        let prefix = KeyPrefix::new("a*b", "svc").unwrap();
        assert_eq!(prefix.pattern("user:*"), r"a\*b:svc:user:*");
    }

    #[test]
    fn urls_fall_back_to_redis_url_per_purpose() {
        let urls = RedisUrls::from_lookup(|name| match name {
            "REDIS_URL" => Some("redis://main:6379".into()),
            "REDIS_PUBSUB_URL" => Some("redis://bus:6379".into()),
            "REDIS_STATE_URL" => Some("  ".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(urls.cache.unwrap().expose(), "redis://main:6379");
        assert_eq!(urls.state.unwrap().expose(), "redis://main:6379");
        assert_eq!(urls.pubsub.unwrap().expose(), "redis://bus:6379");

        let none = RedisUrls::from_lookup(|_| None).unwrap();
        assert_eq!(none, RedisUrls::default());
        assert!(RedisUrls::from_lookup(|_| Some("nope".into())).is_err());
    }
}
