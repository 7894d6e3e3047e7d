//! The bonus rules: templates, awards, the payment-request saga, wagering
//! and expiry.
//!
//! The service never touches wallets. Every movement of bonus money is a
//! `bonus.payment.requested` event staged in the outbox in the same
//! transaction as the bonus's own change, and finished when the payment
//! service answers with `bonus.payment.settled` (see [`movements`]). A
//! bonus therefore has at most one movement in flight, named by
//! `UserBonus::pending` and `pending_request_id`.

mod awards;
mod consumer;
mod jobs;
pub mod money;
mod movements;
mod templates;

use std::sync::Arc;
use std::time::Duration;

use access_engine::{AccessEngine, Resource};
use chrono::{DateTime, Utc};
use service_core::db::{
    to_document, Entity as _, StoreError, StoreResult, Transaction, Update, ID,
};
use service_core::events::{Event, OutboxWaker};
use service_core::{ApiError, Principal};

use crate::store::{Store, UserBonus};

pub use awards::BonusPage;
pub use consumer::EVENT_GROUP;
pub use jobs::{ExpiryHandler, ResendHandler, EXPIRY_OPERATION, RESEND_OPERATION};
pub use templates::NewTemplate;

/// How often an optimistic update is tried before the caller is told the
/// store is busy (another writer changed the same bonus each time).
const MAX_ATTEMPTS: u32 = 5;

/// What [`BonusService`] is built from.
pub struct BonusParts {
    /// Templates and bonuses.
    pub store: Store,
    /// Roles and permissions.
    pub access: Arc<AccessEngine>,
    /// Wakes the relay that publishes staged events.
    pub outbox: OutboxWaker,
    /// A movement unanswered for this long is requested again (same
    /// request id, so the payment service applies it at most once).
    pub resend_after: Duration,
    /// Most bonuses one expiry or resend run handles.
    pub batch_size: usize,
}

/// The bonus operations over one store. Cheap to clone.
#[derive(Clone)]
pub struct BonusService {
    inner: Arc<BonusParts>,
}

impl BonusService {
    /// The service over `parts`.
    pub fn new(parts: BonusParts) -> Self {
        Self {
            inner: Arc::new(parts),
        }
    }

    /// The database the service stores its records in.
    pub fn database(&self) -> &Arc<service_core::db::Database> {
        &self.inner.store.db
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Runs `work` in a transaction, again when an optimistic precondition
    /// lost a race, then wakes the outbox relay.
    async fn transact<'a, T, F>(&'a self, mut work: F) -> StoreResult<T>
    where
        F: for<'t> FnMut(&'t mut Transaction<'a>) -> futures::future::BoxFuture<'t, StoreResult<T>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.inner.store.db.transaction(&mut work).await {
                Err(StoreError::Conflict) if attempt < MAX_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                }
                Ok(value) => {
                    self.inner.outbox.wake();
                    return Ok(value);
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// The signed-in caller and a resource they own.
fn own<'a>(principal: &'a Principal) -> Resource<'a> {
    Resource {
        id: None,
        owner: Some(&principal.user_id),
        tenant: Some(&principal.tenant_id),
    }
}

/// Any instance in the caller's tenant (`*` targets).
fn any<'a>(principal: &'a Principal) -> Resource<'a> {
    Resource {
        id: None,
        owner: None,
        tenant: Some(&principal.tenant_id),
    }
}

/// Writes `bonus` over its stored version, bumping `version`; a bonus
/// changed meanwhile is a [`StoreError::Conflict`] (the transaction runs again).
async fn save(
    tx: &mut Transaction<'_>,
    bonus: &mut UserBonus,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let expected = bonus.version;
    bonus.version += 1;
    bonus.updated_at = now;
    let mut update = Update::new();
    for (key, value) in to_document(bonus)? {
        if key != ID {
            update = update.set(&key, value);
        }
    }
    let filter = service_core::db::Filter::id(bonus.id.as_str()).eq("version", expected);
    match tx
        .update_one(UserBonus::COLLECTION, &filter, &update)
        .await?
    {
        Some(_) => Ok(()),
        None => Err(StoreError::Conflict),
    }
}

/// Stages `event` in the outbox of `tx`.
async fn stage(tx: &mut Transaction<'_>, event: &Event) -> StoreResult<()> {
    service_core::events::Outbox::stage(tx, event).await
}

fn event_error(err: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(format!("event cannot be built: {err}"))
}

/// A storage failure as clients see it (details go to the log).
fn api_store_error(err: StoreError) -> ApiError {
    tracing::error!(error = %err, "bonus storage failure");
    ApiError::from(err)
}
