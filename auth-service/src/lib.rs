//! The auth subgraph: users, argon2id password hashing, sessions, access
//! and refresh tokens with rotation and reuse detection, login throttling
//! with progressive lockout, one-time codes, roles, account status and the
//! bootstrap admin; new accounts (`user.registered`) and one-time codes
//! (`auth.otp.requested`) are announced through the transactional outbox.
//! `docs/auth.md` at the repository root describes the behaviour and settings.
//!
//! Layout: [`config`] reads the settings; [`domain`] holds the rules
//! (password policy and hashing, email parsing, refresh tokens, session
//! rotation and its cache, one-time codes, lockout, the account and role
//! operations); [`store`]
//! the stored shapes and their indexes; [`schema`](mod@schema) the thin GraphQL layer;
//! [`Application`] assembles them behind the core server kit, so tests start
//! the very same service on port 0.
#![warn(missing_docs, unreachable_pub)]

pub mod config;
pub mod domain;
mod errors;
pub mod schema;
mod startup;
pub mod store;

pub use config::{AuthConfig, Settings};
pub use errors::{codes, registry};
pub use schema::{AuthSchema, Query};
pub use startup::{Application, BuildError};

/// The service's name in logs, metrics and `configs(service:)`.
pub const SERVICE: &str = "auth";
/// Prefix of this service's environment variables (`AUTH_ADDR`).
pub const ENV_PREFIX: &str = "AUTH";
/// Where the service listens unless `AUTH_ADDR` says otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:4001";
