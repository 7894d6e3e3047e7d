//! The payment rules: wallets, the ledger, movements, idempotency, bonus
//! requests, withdrawals with their recovery, and reconciliation.
//!
//! Every operation that moves money is one database transaction that
//! writes the wallet changes, their ledger entries, the business record
//! (transfer, withdrawal), the idempotency key and the outbox events
//! together; after it commits, the balance cache is written through and the
//! outbox relay is woken.

mod bonus;
mod gate;
pub mod idempotency;
mod ledger;
pub mod money;
mod movements;
pub mod payout;
mod reads;
pub mod reconcile;
mod withdrawals;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use service_core::cache::LayeredCache;
use service_core::db::{Database, StoreError, Transaction};
use service_core::events::{DomainEvent, Event, Outbox, OutboxWaker, WalletUpdated};
use service_core::redis::{LiveFeed, RedisAccessor};
use service_core::{ApiError, RequestContext};

pub use bonus::BonusOutcome;
pub use money::{Amount, Currency, MAX_AMOUNT};
pub use movements::{TransferCommand, WalletCommand};
pub use payout::{HttpPayoutProvider, ManualSettlement, PayoutGateway, PayoutProvider};
pub use reads::{Page, TransferPage};
pub use reconcile::{Mismatch, ReconciliationReport};

use crate::store::Wallet;

/// Why a transaction body stopped.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A client-facing error; the transaction rolls back.
    Api(ApiError),
    /// A concurrent request won a unique insert (an idempotency key, a new
    /// wallet): run the whole request again, it will see the winner's work.
    Race,
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        Self::Api(err.into())
    }
}

impl From<ApiError> for Failure {
    fn from(err: ApiError) -> Self {
        Self::Api(err)
    }
}

/// How many times a request that lost a race is run again.
const RACE_ATTEMPTS: u32 = 8;

/// Decides whether a named point of an operation should fail, so tests can
/// interrupt an operation where a crash would (see [`PaymentService::inject_faults`]).
pub type FaultInjector = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Named points where faults can be injected.
pub mod fault_points {
    /// In a transfer, after the sender's debit and before the credit.
    pub const TRANSFER_AFTER_DEBIT: &str = "transfer.after_debit";
    /// In a withdrawal, after the funds are locked and before the payout.
    pub const WITHDRAW_AFTER_LOCK: &str = "withdraw.after_lock";
}

/// Settings of the domain.
#[derive(Clone, Debug)]
pub struct PaymentPolicy {
    /// How long an idempotency key is kept (at least 24 h in production).
    pub idempotency_ttl: Duration,
    /// How long a balance stays in the cache after a write.
    pub cache_ttl: Duration,
    /// How long a pending withdrawal may go without a heartbeat before
    /// recovery takes it over.
    pub withdrawal_lease: Duration,
    /// The tenant of users known only by id (bonus credits).
    pub default_tenant: String,
}

impl Default for PaymentPolicy {
    fn default() -> Self {
        Self {
            idempotency_ttl: Duration::from_secs(24 * 60 * 60),
            cache_ttl: Duration::from_secs(30),
            withdrawal_lease: Duration::from_secs(60),
            default_tenant: "default".to_owned(),
        }
    }
}

/// The payment operations. Cheap to clone.
#[derive(Clone)]
pub struct PaymentService {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    cache: Arc<LayeredCache>,
    outbox: OutboxWaker,
    payouts: PayoutGateway,
    policy: PaymentPolicy,
    faults: RwLock<Option<FaultInjector>>,
    /// Users seen to exist, in front of the `known_users` collection: by
    /// id, with their tenant once it has been read from (or written to)
    /// that collection. Users are never forgotten, so a hit is the truth.
    known: Mutex<HashMap<String, Option<String>>>,
    /// `wallet.updated` as received from the bus, fanned out to the
    /// subscriptions of every instance.
    updates: LiveFeed<WalletUpdated>,
    metrics: Option<reconcile::ReconcileMetrics>,
    /// Queues money transactions per wallet on MongoDB.
    gate: gate::WalletGate,
}

/// Most ids remembered in memory before the set starts over.
const KNOWN_CACHE: usize = 100_000;

/// The Redis channel (under the service prefix) wallet updates cross on.
const UPDATES_CHANNEL: &str = "wallets:live";

fn live_feed(redis: Option<RedisAccessor>) -> LiveFeed<WalletUpdated> {
    LiveFeed::new(UPDATES_CHANNEL, redis)
}

impl PaymentService {
    /// The operations over `db`, caching balances in `cache` and paying out
    /// through `payouts`.
    pub fn new(
        db: Arc<Database>,
        cache: Arc<LayeredCache>,
        outbox: OutboxWaker,
        payouts: PayoutGateway,
        policy: PaymentPolicy,
    ) -> Self {
        let gate = gate::WalletGate::new(db.engine() == "mongodb", gate::MAX_WAIT);
        Self {
            inner: Arc::new(Inner {
                gate,
                db,
                cache,
                outbox,
                payouts,
                policy,
                faults: RwLock::new(None),
                known: Mutex::new(HashMap::new()),
                updates: live_feed(None),
                metrics: None,
            }),
        }
    }

    /// Reports reconciliation results to `registry` as well.
    pub fn with_metrics(self, registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let metrics = reconcile::ReconcileMetrics::register(registry)?;
        let mut inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(_) => {
                return Err(prometheus::Error::Msg(
                    "metrics must be set before the service is shared".to_owned(),
                ))
            }
        };
        inner.metrics = Some(metrics);
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The database.
    pub fn db(&self) -> &Arc<Database> {
        &self.inner.db
    }

    /// Test hook: `injector(point)` returning `true` makes the operation
    /// fail at that point (see [`fault_points`]), as a crash there would.
    /// Production code never sets it.
    pub fn inject_faults(&self, injector: Option<FaultInjector>) {
        *self
            .inner
            .faults
            .write()
            .unwrap_or_else(PoisonError::into_inner) = injector;
    }

    fn fault(&self, point: &str) -> Result<(), Failure> {
        let faults = self
            .inner
            .faults
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match faults.as_ref() {
            Some(injector) if injector(point) => Err(Failure::Api(
                ApiError::unavailable("the payment store")
                    .with_cause(format!("fault injected at {point}")),
            )),
            _ => Ok(()),
        }
    }

    /// Runs `work` as one transaction, again when it lost a race.
    async fn run_tx<'a, T, F>(&'a self, mut work: F) -> Result<T, ApiError>
    where
        F: for<'t> FnMut(&'t mut Transaction<'a>) -> BoxFuture<'t, Result<T, Failure>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.inner.db.transaction(&mut work).await {
                Ok(value) => return Ok(value),
                Err(Failure::Api(err)) => return Err(err),
                Err(Failure::Race) if attempt < RACE_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(2u64 << attempt.min(6))).await;
                }
                Err(Failure::Race) => {
                    return Err(ApiError::unavailable("the payment store")
                        .with_cause("a request kept losing races for the same key"))
                }
            }
        }
    }

    /// After a commit: writes changed wallets through to the cache and
    /// wakes the outbox relay.
    async fn committed(&self, wallets: &[Wallet]) {
        for wallet in wallets {
            self.cache_wallet(wallet).await;
        }
        self.inner.outbox.wake();
    }

    fn cache_key(wallet_id: &str) -> String {
        format!("wallet:{wallet_id}")
    }

    /// Writes `wallet` to the cache unless a newer version is there already
    /// (two commits may finish their write-through out of order).
    async fn cache_wallet(&self, wallet: &Wallet) {
        let key = Self::cache_key(&wallet.id);
        if let Some(cached) = self.inner.cache.get::<Wallet>(&key).await {
            if cached.version >= wallet.version {
                return;
            }
        }
        self.inner
            .cache
            .set(&key, wallet, self.inner.policy.cache_ttl)
            .await;
    }

    /// Remembers that `user_id` exists (from `user.registered`, or because
    /// a token signed for it called us).
    pub async fn remember_user(&self, user_id: &str, tenant_id: &str, source: &str) {
        if self.known_lock().contains_key(user_id) {
            return;
        }
        let doc = serde_json::json!({
            "_id": user_id,
            "tenantId": tenant_id,
            "source": source,
            "seenAt": chrono::Utc::now().timestamp_millis(),
        });
        if let serde_json::Value::Object(doc) = doc {
            // A duplicate was recorded earlier, maybe with another source's
            // idea of the tenant: the stored one is read when needed.
            let tenant = match self.inner.db.insert(crate::store::KNOWN_USERS, doc).await {
                Ok(()) => Some(tenant_id.to_owned()),
                Err(StoreError::Duplicate { .. }) => None,
                Err(err) => {
                    tracing::warn!(error = %err, "could not record a known user");
                    return;
                }
            };
            self.remember_tenant(user_id, tenant);
        }
    }

    fn known_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<String>>> {
        self.inner
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn remember_tenant(&self, user_id: &str, tenant: Option<String>) {
        let mut known = self.known_lock();
        if known.len() >= KNOWN_CACHE {
            known.clear();
        }
        let slot = known.entry(user_id.to_owned()).or_default();
        if tenant.is_some() {
            *slot = tenant;
        }
    }

    /// The tenant of a user known to exist; `None` for an unknown user.
    async fn known_user(&self, user_id: &str) -> Result<Option<String>, ApiError> {
        if let Some(Some(tenant)) = self.known_lock().get(user_id) {
            return Ok(Some(tenant.clone()));
        }
        let doc = self
            .inner
            .db
            .get(crate::store::KNOWN_USERS, user_id)
            .await?;
        let tenant = doc.map(|d| {
            d.get("tenantId")
                .and_then(serde_json::Value::as_str)
                .unwrap_or(&self.inner.policy.default_tenant)
                .to_owned()
        });
        if let Some(tenant) = &tenant {
            self.remember_tenant(user_id, Some(tenant.clone()));
        }
        Ok(tenant)
    }

    /// Whether `user_id` is known to exist (a transfer to them is allowed).
    pub async fn knows_user(&self, user_id: &str) -> bool {
        matches!(self.known_user(user_id).await, Ok(Some(_)))
    }

    /// Records the caller as a known user (their verified token proves it).
    async fn caller(&self, ctx: &RequestContext) -> Result<Caller, ApiError> {
        let principal = ctx.user()?;
        self.remember_user(&principal.user_id, &principal.tenant_id, "token")
            .await;
        Ok(Caller {
            user_id: principal.user_id.clone(),
            tenant_id: principal.tenant_id.clone(),
        })
    }

    /// Fans `wallet.updated` out across instances over Redis pub/sub
    /// (through `redis`; within this process without it). Call before the
    /// service is shared; start the feed's relay with [`Self::live_updates`].
    pub fn with_live_updates(mut self, redis: Option<RedisAccessor>) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.updates = live_feed(redis),
            None => tracing::error!("the live feed must be set before the service is shared"),
        }
        self
    }

    /// The feed behind `walletUpdated`.
    pub fn live_updates(&self) -> &LiveFeed<WalletUpdated> {
        &self.inner.updates
    }

    /// Feeds a `wallet.updated` event to the subscriptions of every instance.
    pub async fn publish_update(&self, update: &WalletUpdated) {
        self.inner.updates.publish(update).await;
    }

    /// Deletes idempotency keys past their expiry (at most `limit`); how
    /// many. Lookups already ignore expired keys: this only frees space.
    pub async fn purge_idempotency_keys(&self, limit: usize) -> Result<usize, ApiError> {
        use service_core::db::{Direction, Filter, FindOptions, ID};
        let expired = Filter::all().lt("expiresAt", chrono::Utc::now().timestamp_millis());
        let docs = self
            .inner
            .db
            .find(
                crate::store::IDEMPOTENCY_KEYS,
                &expired,
                &FindOptions::sorted("expiresAt", Direction::Asc).limit(limit),
            )
            .await?;
        let mut deleted = 0;
        for doc in docs {
            if let Some(id) = doc.get(ID).and_then(serde_json::Value::as_str) {
                let this = expired.clone().eq(ID, id);
                if self
                    .inner
                    .db
                    .delete_one(crate::store::IDEMPOTENCY_KEYS, &this)
                    .await?
                {
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }

    /// How many subscriptions of this instance are listening right now.
    pub fn subscriber_count(&self) -> usize {
        self.inner.updates.subscriber_count()
    }

    /// The `wallet.updated` events `keep` accepts, from now on.
    pub fn subscribe_updates(
        &self,
        keep: impl Fn(&WalletUpdated) -> bool + Send + 'static,
    ) -> BoxStream<'static, WalletUpdated> {
        self.inner.updates.subscribe(keep)
    }
}

/// `MSPaymentWalletNotFound`, for layers above the domain.
#[derive(Clone, Copy, Debug)]
pub struct WalletNotFound;

impl WalletNotFound {
    /// The error.
    pub fn error() -> ApiError {
        ledger::wallet_not_found()
    }
}

/// The signed-in caller of an operation.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) user_id: String,
    pub(crate) tenant_id: String,
}

/// `payload` as an event of `tenant_id`, about `user_id`.
pub(crate) fn event<E: DomainEvent>(
    tenant_id: &str,
    user_id: Option<&str>,
    payload: &E,
) -> Result<Event, Failure> {
    payload
        .to_event(tenant_id, user_id)
        .map_err(|err| Failure::Api(ApiError::internal(err)))
}

/// Stages the events of one transaction in the outbox within `tx`, as one
/// entry (see [`Outbox::stage_all`]).
pub(crate) async fn stage(tx: &mut Transaction<'_>, events: &[Event]) -> Result<(), Failure> {
    Outbox::stage_all(tx, events).await?;
    Ok(())
}

/// The `wallet.updated` payload of a wallet as it is now.
pub(crate) fn wallet_updated(wallet: &Wallet) -> WalletUpdated {
    WalletUpdated {
        wallet_id: wallet.id.clone(),
        user_id: wallet.user_id.clone(),
        currency: wallet.currency.clone(),
        balance: wallet.balance,
        bonus_balance: wallet.bonus_balance,
        locked_balance: wallet.locked_balance,
        updated_at: wallet.updated_at,
        created_at: Some(wallet.created_at),
    }
}

/// What an idempotent request stored as its result.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StoredResult {
    /// The record the request produced (a transfer or a ledger entry id).
    pub(crate) id: String,
}
