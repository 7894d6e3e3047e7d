//! Mutation fields: templates, claims, awards and forfeits.

use async_graphql::{Context, Object, ID};

use super::types::{BonusTemplateInput, BonusView, TemplateView};
use super::{request, service};

/// The bonus subgraph's mutations. Named `Mutation` in the SDL: the
/// federation SDL carries no `schema { mutation: ... }` block, so the
/// gateway finds the root by that name.
pub struct BonusMutation;

#[Object(name = "Mutation")]
impl BonusMutation {
    /// Creates a template (permission `bonus:create:*`).
    async fn create_bonus_template(
        &self,
        ctx: &Context<'_>,
        input: BonusTemplateInput,
    ) -> async_graphql::Result<TemplateView> {
        let template = service(ctx)?
            .create_template(request(ctx)?, input.into())
            .await?;
        Ok(TemplateView(template))
    }

    /// Claims the bonus with this code for yourself. The bonus is PENDING
    /// until the payment service confirms the credit, then ACTIVE.
    async fn claim_bonus(
        &self,
        ctx: &Context<'_>,
        code: String,
    ) -> async_graphql::Result<BonusView> {
        let bonus = service(ctx)?.claim(request(ctx)?, &code).await?;
        Ok(BonusView(bonus))
    }

    /// Awards the bonus with this code to a user (permission `bonus:award:*`).
    async fn award_bonus(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        code: String,
    ) -> async_graphql::Result<BonusView> {
        let bonus = service(ctx)?.award(request(ctx)?, &user_id, &code).await?;
        Ok(BonusView(bonus))
    }

    /// Gives up an active bonus (its owner, or `bonus:award:*`): what remains
    /// is debited and the bonus becomes FORFEITED once that is confirmed
    /// (`pendingMovement` is FORFEIT meanwhile).
    async fn forfeit_bonus(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<BonusView> {
        let bonus = service(ctx)?.forfeit(request(ctx)?, &id).await?;
        Ok(BonusView(bonus))
    }
}
