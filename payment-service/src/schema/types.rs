//! The GraphQL shapes of the payment subgraph, built field by field from
//! the stored documents.

use async_graphql::{
    Context, InputObject, InputValueError, InputValueResult, Object, Scalar, ScalarType,
    SimpleObject, Value, ID,
};
use chrono::{DateTime, Utc};
use service_core::db::PageArgs;
use service_core::graphql::PageInfo;

use super::{request, service};
use crate::domain::{reconcile, Page};
use crate::store::{
    BalanceType, EntryDirection, LedgerEntry, TransactionType, Transfer, TransferStatus, Wallet,
};

/// `Amount`: an integer number of minor units. As input, any JSON value is
/// accepted here and validated by the domain, so a fraction, a string or a
/// number past 2^53−1 is `MSPaymentInvalidAmount` rather than a generic
/// type error.
#[derive(Clone, Debug, PartialEq)]
pub struct AmountScalar(pub serde_json::Value);

impl AmountScalar {
    /// An output amount.
    pub fn of(minor: i64) -> Self {
        Self(serde_json::Value::from(minor))
    }
}

#[Scalar(name = "Amount")]
impl ScalarType for AmountScalar {
    fn parse(value: Value) -> InputValueResult<Self> {
        match value.into_json() {
            Ok(json) => Ok(Self(json)),
            Err(err) => Err(InputValueError::custom(err)),
        }
    }

    fn to_value(&self) -> Value {
        Value::from_json(self.0.clone()).unwrap_or(Value::Null)
    }
}

/// A wallet as clients see it.
pub struct WalletView(pub Wallet);

#[Object(name = "Wallet")]
impl WalletView {
    /// The wallet's id.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// Its owner's id.
    async fn user_id(&self) -> ID {
        ID(self.0.user_id.clone())
    }
    /// ISO 4217 code.
    async fn currency(&self) -> &str {
        &self.0.currency
    }
    /// Real money available.
    async fn balance(&self) -> AmountScalar {
        AmountScalar::of(self.0.balance)
    }
    /// Bonus money.
    async fn bonus_balance(&self) -> AmountScalar {
        AmountScalar::of(self.0.bonus_balance)
    }
    /// Money held for pending withdrawals.
    async fn locked_balance(&self) -> AmountScalar {
        AmountScalar::of(self.0.locked_balance)
    }
    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When it last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// Its owner (resolved by the auth subgraph).
    async fn user(&self) -> UserRef {
        UserRef {
            id: self.0.user_id.clone(),
        }
    }
    /// Its ledger entries, newest first.
    async fn transactions(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<TransactionConnection> {
        let page = service(ctx)?
            .transactions(
                request(ctx)?,
                Some(&self.0.id),
                PageArgs::forward(first, after),
            )
            .await?;
        Ok(TransactionConnection(page))
    }
}

/// A ledger entry as clients see it.
pub struct TransactionView(pub LedgerEntry);

#[Object(name = "Transaction")]
impl TransactionView {
    /// The entry's id.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// The wallet moved.
    async fn wallet_id(&self) -> ID {
        ID(self.0.wallet_id.clone())
    }
    /// The wallet's owner.
    async fn user_id(&self) -> ID {
        ID(self.0.user_id.clone())
    }
    /// What caused it.
    #[graphql(name = "type")]
    async fn kind(&self) -> TransactionType {
        self.0.kind
    }
    /// In or out.
    async fn direction(&self) -> EntryDirection {
        self.0.direction
    }
    /// Which balance.
    async fn balance_type(&self) -> BalanceType {
        self.0.balance_type
    }
    /// Minor units moved.
    async fn amount(&self) -> AmountScalar {
        AmountScalar::of(self.0.amount)
    }
    /// That balance right after.
    async fn balance_after(&self) -> AmountScalar {
        AmountScalar::of(self.0.balance_after)
    }
    /// Fee charged.
    async fn charge(&self) -> AmountScalar {
        AmountScalar::of(self.0.charge)
    }
    /// The record that caused it.
    async fn object_id(&self) -> Option<ID> {
        self.0.object_id.clone().map(ID)
    }
    /// That record's kind.
    async fn object_model(&self) -> Option<&str> {
        self.0.object_model.as_deref()
    }
    /// Free text.
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    /// When it was written.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// A transfer as clients see it.
pub struct TransferView(pub Transfer);

#[Object(name = "Transfer")]
impl TransferView {
    /// The transfer's id.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// The sender.
    async fn from_user_id(&self) -> ID {
        ID(self.0.from_user_id.clone())
    }
    /// The recipient.
    async fn to_user_id(&self) -> ID {
        ID(self.0.to_user_id.clone())
    }
    /// The debited wallet.
    async fn from_wallet_id(&self) -> ID {
        ID(self.0.from_wallet_id.clone())
    }
    /// The credited wallet.
    async fn to_wallet_id(&self) -> ID {
        ID(self.0.to_wallet_id.clone())
    }
    /// Minor units.
    async fn amount(&self) -> AmountScalar {
        AmountScalar::of(self.0.amount)
    }
    /// ISO 4217 code.
    async fn currency(&self) -> &str {
        &self.0.currency
    }
    /// Where it is.
    async fn status(&self) -> TransferStatus {
        self.0.status
    }
    /// The sender's note.
    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }
    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When it completed.
    async fn completed_at(&self) -> Option<DateTime<Utc>> {
        self.0.completed_at
    }
    /// The sender (resolved by the auth subgraph).
    async fn from_user(&self) -> UserRef {
        UserRef {
            id: self.0.from_user_id.clone(),
        }
    }
    /// The recipient (resolved by the auth subgraph).
    async fn to_user(&self) -> UserRef {
        UserRef {
            id: self.0.to_user_id.clone(),
        }
    }
}

/// The auth subgraph's `User`, to which this subgraph contributes `wallets`.
pub struct UserRef {
    /// The user's id (the entity key).
    pub id: String,
}

#[Object(name = "User")]
impl UserRef {
    /// The user's id.
    async fn id(&self) -> ID {
        ID(self.id.clone())
    }
    /// The user's wallets: for the user themselves or `wallet:read:*`.
    async fn wallets(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<WalletView>> {
        let wallets = service(ctx)?.user_wallets(request(ctx)?, &self.id).await?;
        Ok(wallets.into_iter().map(WalletView).collect())
    }
}

/// A ledger entry and its cursor.
#[derive(SimpleObject)]
pub struct TransactionEdge {
    /// Opaque position of `node`.
    pub cursor: String,
    /// The entry.
    pub node: TransactionView,
}

/// A page of ledger entries.
pub struct TransactionConnection(pub Page<LedgerEntry>);

#[Object]
impl TransactionConnection {
    /// The entries with their cursors.
    async fn edges(&self) -> Vec<TransactionEdge> {
        self.0
            .connection
            .edges
            .iter()
            .map(|e| TransactionEdge {
                cursor: e.cursor.clone(),
                node: TransactionView(e.node.clone()),
            })
            .collect()
    }
    /// The entries alone.
    async fn nodes(&self) -> Vec<TransactionView> {
        self.0
            .connection
            .edges
            .iter()
            .map(|e| TransactionView(e.node.clone()))
            .collect()
    }
    /// Position information.
    async fn page_info(&self) -> PageInfo {
        PageInfo::from(&self.0.connection.page_info)
    }
    /// How many entries the whole listing holds.
    async fn total_count(&self) -> i64 {
        i64::try_from(self.0.total_count).unwrap_or(i64::MAX)
    }
}

/// A transfer and its cursor.
#[derive(SimpleObject)]
pub struct TransferEdge {
    /// Opaque position of `node`.
    pub cursor: String,
    /// The transfer.
    pub node: TransferView,
}

/// A page of transfers.
pub struct TransferConnection(pub Page<Transfer>);

#[Object]
impl TransferConnection {
    /// The transfers with their cursors.
    async fn edges(&self) -> Vec<TransferEdge> {
        self.0
            .connection
            .edges
            .iter()
            .map(|e| TransferEdge {
                cursor: e.cursor.clone(),
                node: TransferView(e.node.clone()),
            })
            .collect()
    }
    /// The transfers alone.
    async fn nodes(&self) -> Vec<TransferView> {
        self.0
            .connection
            .edges
            .iter()
            .map(|e| TransferView(e.node.clone()))
            .collect()
    }
    /// Position information.
    async fn page_info(&self) -> PageInfo {
        PageInfo::from(&self.0.connection.page_info)
    }
    /// How many transfers the whole listing holds.
    async fn total_count(&self) -> i64 {
        i64::try_from(self.0.total_count).unwrap_or(i64::MAX)
    }
}

/// `deposit`'s input.
#[derive(InputObject)]
pub struct DepositInput {
    /// The credited wallet.
    pub wallet_id: ID,
    /// Minor units, a positive integer ≤ 2^53−1.
    pub amount: AmountScalar,
    /// Replaying the same key with the same input returns the first result.
    pub idempotency_key: Option<String>,
    /// Free text.
    pub description: Option<String>,
}

/// `withdraw`'s input.
#[derive(InputObject)]
pub struct WithdrawInput {
    /// The debited wallet (yours).
    pub wallet_id: ID,
    /// Minor units, a positive integer ≤ 2^53−1.
    pub amount: AmountScalar,
    /// Replaying the same key with the same input returns the first result.
    pub idempotency_key: Option<String>,
    /// Free text.
    pub description: Option<String>,
}

/// `transfer`'s input.
#[derive(InputObject)]
pub struct TransferInput {
    /// The recipient.
    pub to_user_id: ID,
    /// Minor units, a positive integer ≤ 2^53−1.
    pub amount: AmountScalar,
    /// ISO 4217 code of the wallets involved.
    pub currency: String,
    /// Replaying the same key with the same input returns the first result.
    pub idempotency_key: Option<String>,
    /// Free text.
    pub description: Option<String>,
}

/// One disagreement between a wallet and its ledger.
#[derive(SimpleObject)]
pub struct ReconciliationMismatch {
    /// The wallet.
    pub wallet_id: ID,
    /// `BALANCE`, `BONUS` or `LOCKED`.
    pub balance_type: String,
    /// What the wallet says.
    pub balance: AmountScalar,
    /// What the ledger says.
    pub expected: AmountScalar,
    /// `balanceAfter` of the newest entry.
    pub last_balance_after: Option<AmountScalar>,
    /// What is wrong.
    pub reason: String,
}

/// The result of a reconciliation run.
#[derive(SimpleObject)]
pub struct ReconciliationReport {
    /// When it ran.
    pub ran_at: DateTime<Utc>,
    /// Wallets checked.
    pub wallets_checked: i64,
    /// Ledger entries summed.
    pub entries_checked: i64,
    /// Everything that disagrees; empty when the books balance.
    pub mismatches: Vec<ReconciliationMismatch>,
}

impl From<reconcile::ReconciliationReport> for ReconciliationReport {
    fn from(r: reconcile::ReconciliationReport) -> Self {
        Self {
            ran_at: r.ran_at,
            wallets_checked: i64::try_from(r.wallets_checked).unwrap_or(i64::MAX),
            entries_checked: i64::try_from(r.entries_checked).unwrap_or(i64::MAX),
            mismatches: r
                .mismatches
                .into_iter()
                .map(|m| ReconciliationMismatch {
                    wallet_id: ID(m.wallet_id),
                    balance_type: m.balance_type,
                    balance: AmountScalar::of(m.balance),
                    expected: AmountScalar::of(m.expected),
                    last_balance_after: m.last_balance_after.map(AmountScalar::of),
                    reason: m.reason,
                })
                .collect(),
        }
    }
}
