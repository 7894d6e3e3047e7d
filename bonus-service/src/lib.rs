//! The bonus subgraph: bonus templates, user bonuses, automatic awards,
//! wagering, conversion and expiry.
//!
//! The service never touches a wallet: every movement of bonus money is a
//! `bonus.payment.requested` event staged in the outbox with the bonus's own
//! change, and the bonus moves on when `bonus.payment.settled` answers it
//! (an event-driven saga; see `docs/bonus.md`).
//!
//! Layout: [`config`] reads the settings; [`domain`] holds the rules
//! (money and currencies, templates, awards, the payment-request saga,
//! wagering, the scheduled jobs, the consumed events); [`store`] the stored
//! shapes and their indexes; [`schema`](mod@schema) the thin GraphQL layer;
//! [`Application`] assembles them behind the core server kit, so tests start
//! the very same service on port 0.
#![warn(missing_docs, unreachable_pub)]

pub mod config;
pub mod domain;
mod errors;
pub mod schema;
mod startup;
pub mod store;

pub use config::{BonusConfig, Settings};
pub use domain::BonusService;
pub use errors::{codes, registry};
pub use schema::{BonusSchema, Query};
pub use startup::{Application, BuildError};

/// The service's name in logs, metrics and `configs(service:)`.
pub const SERVICE: &str = "bonus";
/// Prefix of this service's environment variables (`BONUS_ADDR`).
pub const ENV_PREFIX: &str = "BONUS";
/// Where the service listens unless `BONUS_ADDR` says otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:4003";
