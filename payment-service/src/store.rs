//! What the service stores: collection names, document shapes and indexes.
//!
//! Documents are camelCase JSON with the id under `_id`. Amounts are `i64`
//! minor units. Every wallet change increments the wallet's `version`, and
//! the ledger entry it writes carries that version as `seq`, so "the newest
//! entry of a wallet" is exact even when two entries share a timestamp.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use service_core::db::{Database, Entity, IndexSpec, StoreResult};

/// One wallet per user and currency.
pub const WALLETS: &str = "wallets";
/// The ledger.
pub const TRANSACTIONS: &str = "transactions";
/// Transfers between users.
pub const TRANSFERS: &str = "transfers";
/// Withdrawals to the outside (the tracked state of each payout).
pub const WITHDRAWALS: &str = "withdrawals";
/// Idempotency keys per user.
pub const IDEMPOTENCY_KEYS: &str = "idempotency_keys";
/// Bonus requests already applied, by request id.
pub const BONUS_REQUESTS: &str = "bonus_requests";
/// Users known to exist (a projection of `user.registered`).
pub const KNOWN_USERS: &str = "known_users";

/// A wallet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Wallet {
    /// Its id.
    #[serde(rename = "_id")]
    pub id: String,
    /// Its owner.
    pub user_id: String,
    /// The owner's tenant.
    pub tenant_id: String,
    /// ISO 4217 code; unique per user.
    pub currency: String,
    /// Real money available; never negative.
    pub balance: i64,
    /// Bonus money; never negative.
    pub bonus_balance: i64,
    /// Money held for pending withdrawals (already debited from `balance`).
    pub locked_balance: i64,
    /// Incremented by every change; the `seq` of the ledger entry it wrote.
    pub version: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl Entity for Wallet {
    const COLLECTION: &'static str = WALLETS;
}

/// The kind of a ledger entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[graphql(rename_items = "SCREAMING_SNAKE_CASE")]
pub enum TransactionType {
    /// Money in from outside.
    Deposit,
    /// Money out to the outside.
    Withdrawal,
    /// The recipient's side of a transfer.
    TransferIn,
    /// The sender's side of a transfer.
    TransferOut,
    /// Bonus money credited.
    BonusCredit,
    /// Bonus money taken back.
    BonusDebit,
    /// Bonus money turned into real money (two entries).
    BonusConvert,
    /// The undoing of an earlier entry (a failed withdrawal).
    Reversal,
}

/// Which way money moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[graphql(name = "Direction", rename_items = "SCREAMING_SNAKE_CASE")]
pub enum EntryDirection {
    /// Into the wallet.
    Credit,
    /// Out of the wallet.
    Debit,
}

/// Which balance of the wallet an entry moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[graphql(rename_items = "SCREAMING_SNAKE_CASE")]
pub enum BalanceType {
    /// `balance`.
    Balance,
    /// `bonusBalance`.
    Bonus,
}

impl BalanceType {
    /// The wallet field this balance lives in.
    pub fn field(self) -> &'static str {
        match self {
            Self::Balance => "balance",
            Self::Bonus => "bonusBalance",
        }
    }
}

/// One ledger entry: one movement of one balance of one wallet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// Its id (UUID v7: ids sort by creation).
    #[serde(rename = "_id")]
    pub id: String,
    /// The wallet moved.
    pub wallet_id: String,
    /// The wallet's owner.
    pub user_id: String,
    /// What caused it.
    #[serde(rename = "type")]
    pub kind: TransactionType,
    /// In or out.
    pub direction: EntryDirection,
    /// Which balance.
    pub balance_type: BalanceType,
    /// Minor units, > 0.
    pub amount: i64,
    /// That balance right after this entry.
    pub balance_after: i64,
    /// Fee charged on top (0 today: no fees are configured).
    pub charge: i64,
    /// The record that caused it (a transfer, withdrawal, user bonus...).
    pub object_id: Option<String>,
    /// The kind of that record (`Transfer`, `Withdrawal`, `UserBonus`...).
    pub object_model: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// The wallet version this entry produced.
    pub seq: i64,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

impl Entity for LedgerEntry {
    const COLLECTION: &'static str = TRANSACTIONS;
}

/// Where a transfer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[graphql(rename_items = "SCREAMING_SNAKE_CASE")]
pub enum TransferStatus {
    /// Started, not settled.
    Pending,
    /// Both sides written.
    Completed,
    /// Refused or abandoned; nothing moved.
    Failed,
    /// Undone by compensating entries.
    Reversed,
}

/// A transfer between two users.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transfer {
    /// Its id.
    #[serde(rename = "_id")]
    pub id: String,
    /// The sender.
    pub from_user_id: String,
    /// The recipient.
    pub to_user_id: String,
    /// The debited wallet.
    pub from_wallet_id: String,
    /// The credited wallet.
    pub to_wallet_id: String,
    /// Minor units.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Where it is.
    pub status: TransferStatus,
    /// The sender's note.
    pub description: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it completed.
    pub completed_at: Option<DateTime<Utc>>,
}

impl Entity for Transfer {
    const COLLECTION: &'static str = TRANSFERS;
}

/// Where a withdrawal is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WithdrawalStatus {
    /// Funds locked, payout not settled.
    Pending,
    /// Paid out; the lock is released.
    Completed,
    /// Payout failed; the lock was released back to the balance.
    Failed,
}

/// A withdrawal: the tracked state of one payout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Withdrawal {
    /// Its id; also the idempotency key given to the payout provider.
    #[serde(rename = "_id")]
    pub id: String,
    /// The debited wallet.
    pub wallet_id: String,
    /// Its owner.
    pub user_id: String,
    /// The owner's tenant.
    pub tenant_id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Minor units.
    pub amount: i64,
    /// Where it is.
    pub status: WithdrawalStatus,
    /// The WITHDRAWAL ledger entry written when the funds were locked.
    pub transaction_id: String,
    /// The REVERSAL entry, when the payout failed.
    pub reversal_id: Option<String>,
    /// The provider's reference, once paid.
    pub payout_reference: Option<String>,
    /// Why it failed.
    pub failure: Option<String>,
    /// Heartbeat: while `PENDING`, the owner pushes this forward; past it,
    /// recovery takes the withdrawal over (epoch milliseconds).
    pub stale_at: i64,
    /// The sender's note.
    pub description: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it settled either way.
    pub settled_at: Option<DateTime<Utc>>,
}

impl Entity for Withdrawal {
    const COLLECTION: &'static str = WITHDRAWALS;
}

/// Every index the service needs, created at start-up.
pub fn indexes() -> Vec<IndexSpec> {
    let mut specs = vec![
        IndexSpec::new(WALLETS, "wallets_user_currency", &["userId", "currency"]).unique(),
        IndexSpec::new(TRANSACTIONS, "transactions_wallet", &["walletId", "_id"]),
        IndexSpec::new(TRANSFERS, "transfers_from", &["fromUserId", "_id"]),
        IndexSpec::new(TRANSFERS, "transfers_to", &["toUserId", "_id"]),
        IndexSpec::new(WITHDRAWALS, "withdrawals_pending", &["status", "staleAt"]),
        IndexSpec::new(IDEMPOTENCY_KEYS, "idempotency_expiry", &["expiresAt"]),
    ];
    specs.extend(service_core::events::Outbox::indexes());
    specs
}

/// Indexes earlier releases created and this one no longer reads. The
/// ledger by user: a user's listing merges their wallets' listings, so each
/// movement writes one ledger index entry fewer.
const RETIRED_INDEXES: &[(&str, &str)] = &[(TRANSACTIONS, "transactions_user")];

/// Brings the store's indexes to what this release uses: creates the
/// missing ones and drops the retired ones. Run at start-up.
pub async fn prepare(db: &Database) -> StoreResult<()> {
    db.ensure_indexes(&indexes()).await?;
    db.drop_indexes(RETIRED_INDEXES).await
}
