//! The notification subgraph: notifications per user and channel (in-app,
//! email, SMS, push, webhook), preferences, delivery through providers
//! guarded by timeouts, circuit breakers and retries, and the live
//! `notificationReceived` subscription.
//!
//! Layout: [`config`] reads the settings; [`store`] the stored shapes and
//! their indexes; [`delivery`] the providers, their resilience policy, the
//! queue with its per-channel concurrency bound and the deliverer that
//! records every attempt; [`domain`] the rules (which channels, idempotent
//! creation, reading, preferences, the event consumers, the live feed);
//! [`schema`](mod@schema) the thin GraphQL layer; [`Application`] assembles
//! them behind the core server kit, with WebSocket subscriptions on
//! `/graphql`, so tests start the very same service on port 0.
#![warn(missing_docs, unreachable_pub)]

pub mod config;
pub mod delivery;
pub mod domain;
mod errors;
pub mod schema;
mod startup;
pub mod store;

pub use config::{NotificationConfig, Settings};
pub use errors::{codes, registry};
pub use schema::{NotificationSchema, Query};
pub use startup::{Application, BuildError};

/// The service's name in logs, metrics and `configs(service:)`.
pub const SERVICE: &str = "notification";
/// Prefix of this service's environment variables (`NOTIFICATION_ADDR`).
pub const ENV_PREFIX: &str = "NOTIFICATION";
/// Where the service listens unless `NOTIFICATION_ADDR` says otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:4004";
