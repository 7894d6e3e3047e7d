//! Mutation fields: wallets and money movements. Input is parsed into the
//! domain's newtypes here; the domain never sees an unchecked amount.

use async_graphql::{Context, Object};

use super::types::{
    DepositInput, TransactionView, TransferInput, TransferView, WalletView, WithdrawInput,
};
use super::{request, service};
use crate::domain::{Amount, Currency, DepositCommand, TransferCommand, WithdrawCommand};

/// The payment subgraph's mutations.
pub struct PaymentMutation;

#[Object(name = "Mutation")]
impl PaymentMutation {
    /// Opens the caller's wallet in `currency`.
    async fn create_wallet(
        &self,
        ctx: &Context<'_>,
        currency: String,
    ) -> async_graphql::Result<WalletView> {
        let ctx_req = request(ctx)?;
        ctx_req.user()?;
        let currency = Currency::parse(&currency)?;
        let wallet = service(ctx)?.create_wallet(ctx_req, currency).await?;
        Ok(WalletView(wallet))
    }

    /// Credits a wallet with money from outside; needs `wallet:deposit:*`.
    async fn deposit(
        &self,
        ctx: &Context<'_>,
        input: DepositInput,
    ) -> async_graphql::Result<TransactionView> {
        let ctx_req = request(ctx)?;
        ctx_req.user()?;
        let amount = Amount::from_json(&input.amount.0)?;
        let entry = service(ctx)?
            .deposit(
                ctx_req,
                DepositCommand {
                    wallet_id: input.wallet_id.0,
                    amount,
                    idempotency_key: input.idempotency_key,
                    description: input.description,
                },
            )
            .await?;
        Ok(TransactionView(entry))
    }

    /// Pays money out of the caller's wallet.
    async fn withdraw(
        &self,
        ctx: &Context<'_>,
        input: WithdrawInput,
    ) -> async_graphql::Result<TransactionView> {
        let ctx_req = request(ctx)?;
        ctx_req.user()?;
        let amount = Amount::from_json(&input.amount.0)?;
        let entry = service(ctx)?
            .withdraw(
                ctx_req,
                WithdrawCommand {
                    wallet_id: input.wallet_id.0,
                    amount,
                    idempotency_key: input.idempotency_key,
                    description: input.description,
                },
            )
            .await?;
        Ok(TransactionView(entry))
    }

    /// Moves money to another user's wallet in the same currency.
    async fn transfer(
        &self,
        ctx: &Context<'_>,
        input: TransferInput,
    ) -> async_graphql::Result<TransferView> {
        let ctx_req = request(ctx)?;
        ctx_req.user()?;
        let amount = Amount::from_json(&input.amount.0)?;
        let currency = Currency::parse(&input.currency)?;
        let transfer = service(ctx)?
            .transfer(
                ctx_req,
                TransferCommand {
                    to_user_id: input.to_user_id.0,
                    amount,
                    currency,
                    idempotency_key: input.idempotency_key,
                    description: input.description,
                },
            )
            .await?;
        Ok(TransferView(transfer))
    }
}
