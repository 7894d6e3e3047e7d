//! Mutation fields: wallets and money movements. Input is parsed into the
//! domain's newtypes here; the domain never sees an unchecked amount.

use async_graphql::{Context, Object, ID};

use super::types::{
    AmountScalar, DepositInput, TransactionView, TransferInput, TransferView, WalletView,
    WithdrawInput,
};
use super::{request, service};
use crate::domain::{Amount, Currency, TransferCommand, WalletCommand};

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
        let command = wallet_command(
            input.wallet_id,
            &input.amount,
            input.idempotency_key,
            input.description,
        )?;
        let entry = service(ctx)?.deposit(ctx_req, command).await?;
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
        let command = wallet_command(
            input.wallet_id,
            &input.amount,
            input.idempotency_key,
            input.description,
        )?;
        let entry = service(ctx)?.withdraw(ctx_req, command).await?;
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

/// The domain command behind `deposit` and `withdraw`, whose inputs carry
/// the same fields.
fn wallet_command(
    wallet_id: ID,
    amount: &AmountScalar,
    idempotency_key: Option<String>,
    description: Option<String>,
) -> async_graphql::Result<WalletCommand> {
    Ok(WalletCommand {
        wallet_id: wallet_id.0,
        amount: Amount::from_json(&amount.0)?,
        idempotency_key,
        description,
    })
}
