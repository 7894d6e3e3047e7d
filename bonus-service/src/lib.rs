//! The bonus subgraph: bonus templates, user bonuses, wagering, conversion and expiry.
//!
//! The domain arrives issue by issue; today the subgraph serves its error
//! codes (`_errorCodes`) and the federation fields, with the health, metrics
//! and request-id endpoints of the core server kit.
#![warn(missing_docs)]

mod errors;

pub use errors::{codes, registry};

use service_core::app::{base_schema, BaseSchema, ServiceRuntime};

/// The service's name in logs, metrics and `configs(service:)`.
pub const SERVICE: &str = "bonus";
/// Prefix of this service's environment variables (`BONUS_ADDR`).
pub const ENV_PREFIX: &str = "BONUS";
/// Where the service listens unless `BONUS_ADDR` says otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:4003";

/// The subgraph schema.
pub fn schema(_runtime: &ServiceRuntime) -> BaseSchema {
    base_schema(registry())
}
