//! `walletUpdated`: the caller's wallets as they change, fed from the
//! `wallet.updated` events this instance receives from the bus.

use async_graphql::{Context, Subscription, ID};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

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
        let receiver = service.subscribe_updates();
        Ok(futures::stream::unfold(receiver, move |mut receiver| {
            let user_id = user_id.clone();
            let wallet_id = wallet_id.clone();
            let service = service.clone();
            async move {
                loop {
                    let update = match receiver.recv().await {
                        Ok(update) => update,
                        Err(RecvError::Lagged(skipped)) => {
                            tracing::warn!(skipped, "a walletUpdated subscriber fell behind");
                            continue;
                        }
                        Err(RecvError::Closed) => return None,
                    };
                    if update.user_id != user_id
                        || wallet_id.as_ref().is_some_and(|w| *w != update.wallet_id)
                    {
                        continue;
                    }
                    let created_at = service
                        .wallet_created_at(&update.wallet_id)
                        .await
                        .unwrap_or(update.updated_at);
                    let wallet = Wallet {
                        id: update.wallet_id,
                        user_id: update.user_id,
                        tenant_id: String::new(),
                        currency: update.currency,
                        balance: update.balance,
                        bonus_balance: update.bonus_balance,
                        locked_balance: update.locked_balance,
                        version: 0,
                        created_at,
                        updated_at: update.updated_at,
                    };
                    return Some((WalletView(wallet), receiver));
                }
            }
        }))
    }
}
