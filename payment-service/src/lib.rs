//! The payment subgraph: wallets, the double-entry ledger, deposits,
//! transfers, withdrawals, idempotency keys, bonus money requested by the
//! bonus service, recovery of stuck withdrawals and reconciliation.
//!
//! Layout: [`config`] reads the `PAYMENT_*` settings; [`domain`] holds the
//! rules (money newtypes, the ledger writer, each operation as one database
//! transaction with its outbox events); [`store`] the stored shapes and
//! their indexes; [`schema`](mod@schema) the thin GraphQL layer; the
//! [`Application`] assembles them behind the core server kit, so tests and
//! the launcher start the very same service on any port.
#![warn(missing_docs, unreachable_pub)]

pub mod config;
pub mod domain;
mod errors;
pub mod schema;
mod startup;
pub mod store;

pub use config::{PaymentConfig, Settings};
pub use domain::PaymentService;
pub use errors::{codes, registry};
pub use schema::{build as build_schema, PaymentSchema};
pub use startup::{Application, BuildError};

/// The service's name in logs, metrics and `configs(service:)`.
pub const SERVICE: &str = "payment";
/// Prefix of this service's environment variables (`PAYMENT_ADDR`).
pub const ENV_PREFIX: &str = "PAYMENT";
/// Where the service listens unless `PAYMENT_ADDR` says otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:4002";

/// Runs one reconciliation over the configured store (the `reconcile`
/// command of the binary), without serving anything.
pub async fn reconcile_once(
    settings: &Settings,
) -> Result<domain::ReconciliationReport, Box<dyn std::error::Error + Send + Sync>> {
    use std::sync::Arc;
    let db = Arc::new(service_core::db::Database::open(&settings.db).await?);
    store::prepare(&db).await?;
    let cache = Arc::new(service_core::cache::LayeredCache::l1_only(
        service_core::cache::CacheConfig::default(),
    ));
    let service = PaymentService::new(
        db,
        cache,
        service_core::events::OutboxWaker::default(),
        domain::PayoutGateway::manual(),
        domain::PaymentPolicy::default(),
    );
    Ok(service.reconcile().await?)
}
