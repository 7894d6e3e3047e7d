//! Errors of the Redis accessor.
//!
//! Connection URLs may carry credentials (`redis://user:pass@host`), so every
//! variant that names an endpoint holds it already redacted: an error can be
//! logged or returned anywhere without leaking a password.

use std::time::Duration;

/// What can go wrong when talking to Redis.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The configuration cannot work: a malformed URL, an empty key prefix, a
    /// topology this build does not support.
    #[error("invalid Redis configuration: {0}")]
    Config(String),
    /// The server refused or broke the connection while it was being set up.
    #[error("could not connect to Redis at {endpoint}: {source}")]
    Connect {
        /// The endpoint, with credentials redacted.
        endpoint: String,
        /// What the driver reported.
        source: ::redis::RedisError,
    },
    /// No connection could be established in time (Redis down or unreachable).
    #[error("Redis at {endpoint} did not accept a connection within {timeout:?}")]
    ConnectTimeout {
        /// The endpoint, with credentials redacted.
        endpoint: String,
        /// The limit that passed.
        timeout: Duration,
    },
    /// A command reached Redis (or tried to) and failed.
    #[error("Redis {command} failed: {source}")]
    Command {
        /// The command or operation, for the log.
        command: &'static str,
        /// What the driver reported.
        source: ::redis::RedisError,
    },
    /// A command did not complete in time; the connection may be reconnecting.
    #[error("Redis {command} did not complete within {timeout:?}")]
    Timeout {
        /// The command or operation, for the log.
        command: &'static str,
        /// The limit that passed.
        timeout: Duration,
    },
    /// A value could not be written as JSON.
    #[error("value for key {key} cannot be encoded as JSON: {source}")]
    Encode {
        /// The key (without the service prefix).
        key: String,
        /// What serde reported.
        source: serde_json::Error,
    },
    /// A stored value is not the JSON the caller asked for.
    #[error("value under key {key} is not valid JSON for the requested type: {source}")]
    Decode {
        /// The key (without the service prefix).
        key: String,
        /// What serde reported.
        source: serde_json::Error,
    },
}
