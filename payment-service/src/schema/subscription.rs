//! `walletUpdated`: the caller's wallets as they change, fed from the
//! `wallet.updated` events the service's live feed fans out to every
//! instance.

use async_graphql::{Context, Subscription, ID};
use futures::{Stream, StreamExt};

use super::types::WalletView;
use super::{request, service};
use crate::store::Wallet;

/// The payment subgraph's subscriptions.
pub struct PaymentSubscription;

#[Subscription(name = "Subscription")]
impl PaymentSubscription {
    /// Every change of the caller's wallets (or of one of them).
    async fn wallet_updated(
        &self,
        ctx: &Context<'_>,
        wallet_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = WalletView>> {
        let req = request(ctx)?;
        let user_id = req.user()?.user_id.clone();
        let service = service(ctx)?.clone();
        if let Some(id) = &wallet_id {
            // Only the caller's own wallets, whatever else they may read.
            let wallet = service.wallet(req, id).await?;
            if wallet.user_id != user_id {
                return Err(crate::domain::WalletNotFound::error().into());
            }
        }
        let wallet_id = wallet_id.map(|id| id.0);
        let updates = service.subscribe_updates(move |update| {
            update.user_id == user_id && wallet_id.as_ref().is_none_or(|w| *w == update.wallet_id)
        });
        Ok(updates.map(|update| {
            WalletView(Wallet {
                created_at: update.created_at.unwrap_or(update.updated_at),
                id: update.wallet_id,
                user_id: update.user_id,
                tenant_id: String::new(),
                currency: update.currency,
                balance: update.balance,
                bonus_balance: update.bonus_balance,
                locked_balance: update.locked_balance,
                version: 0,
                updated_at: update.updated_at,
            })
        }))
    }
}
