//! The auth subgraph: users, password hashing, sessions, access and refresh tokens, OTP and roles.
//!
//! The domain arrives issue by issue; today the subgraph serves its error
//! codes (`_errorCodes`) and the federation fields, with the health, metrics
//! and request-id endpoints of the core server kit.
#![warn(missing_docs)]

mod errors;

pub use errors::{codes, registry};

use service_core::app::{base_schema, BaseSchema, ServiceRuntime};

/// The service's name in logs, metrics and `configs(service:)`.
pub const SERVICE: &str = "auth";
/// Prefix of this service's environment variables (`AUTH_ADDR`).
pub const ENV_PREFIX: &str = "AUTH";
/// Where the service listens unless `AUTH_ADDR` says otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:4001";

/// The subgraph schema.
pub fn schema(_runtime: &ServiceRuntime) -> BaseSchema {
    base_schema(registry())
}
