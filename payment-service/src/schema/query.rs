//! Query fields and the entity resolvers the gateway calls.

use async_graphql::{Context, Object, ID};
use service_core::db::PageArgs;

use super::types::{
    ReconciliationReport, TransactionConnection, TransactionView, TransferConnection, TransferView,
    UserRef, WalletView,
};
use super::{request, service};

/// The payment subgraph's own query fields.
pub struct PaymentQuery;

#[Object]
impl PaymentQuery {
    /// The caller's wallets.
    async fn my_wallets(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<WalletView>> {
        let wallets = service(ctx)?.my_wallets(request(ctx)?).await?;
        Ok(wallets.into_iter().map(WalletView).collect())
    }

    /// A wallet: the caller's own, or any with `wallet:read:*`.
    async fn wallet(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<WalletView>> {
        let wallet = service(ctx)?.wallet(request(ctx)?, &id).await?;
        Ok(Some(WalletView(wallet)))
    }

    /// Ledger entries, newest first: of one readable wallet, or of all the
    /// caller's wallets.
    async fn transactions(
        &self,
        ctx: &Context<'_>,
        wallet_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<TransactionConnection> {
        let page = service(ctx)?
            .transactions(
                request(ctx)?,
                wallet_id.as_ref().map(|id| id.0.as_str()),
                PageArgs::forward(first, after),
            )
            .await?;
        Ok(TransactionConnection(page))
    }

    /// The caller's transfers, sent or received, newest first.
    async fn transfers(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<TransferConnection> {
        let page = service(ctx)?
            .transfers(request(ctx)?, PageArgs::forward(first, after))
            .await?;
        Ok(TransferConnection(page))
    }

    /// A transfer the caller sent or received (or any with `transfer:read:*`).
    async fn transfer(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<TransferView>> {
        let transfer = service(ctx)?.transfer_by_id(request(ctx)?, &id).await?;
        Ok(transfer.map(TransferView))
    }

    /// Checks every wallet against its ledger now; needs `wallet:reconcile:*`.
    async fn reconciliation_report(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<ReconciliationReport> {
        let report = service(ctx)?.reconciliation_report(request(ctx)?).await?;
        Ok(report.into())
    }

    /// Resolves a `Wallet` reference.
    #[graphql(entity)]
    async fn find_wallet_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<WalletView>> {
        let wallet = service(ctx)?.wallet(request(ctx)?, &id).await?;
        Ok(Some(WalletView(wallet)))
    }

    /// Resolves a `Transaction` reference.
    #[graphql(entity)]
    async fn find_transaction_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<TransactionView>> {
        let entry = service(ctx)?.transaction(request(ctx)?, &id).await?;
        Ok(entry.map(TransactionView))
    }

    /// Resolves a `Transfer` reference.
    #[graphql(entity)]
    async fn find_transfer_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<TransferView>> {
        let transfer = service(ctx)?.transfer_by_id(request(ctx)?, &id).await?;
        Ok(transfer.map(TransferView))
    }

    /// Resolves a `User` reference, so `User.wallets` can be served here.
    #[graphql(entity)]
    async fn find_user_by_id(&self, id: ID) -> UserRef {
        UserRef { id: id.0 }
    }
}
