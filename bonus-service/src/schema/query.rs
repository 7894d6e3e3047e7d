//! Query fields: `bonusTemplates`, `myBonuses`, `userBonus`, and the
//! `BonusTemplate` and `UserBonus` entities for the gateway.

use async_graphql::{Context, Object, ID};
use service_core::db::PageArgs;

use super::types::{BonusView, TemplateView, UserBonusConnection};
use super::{request, service};

/// The bonus subgraph's own query fields.
pub struct BonusQuery;

#[Object]
impl BonusQuery {
    /// The active templates; every template for holders of `bonus:read:*`.
    async fn bonus_templates(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<TemplateView>> {
        let templates = service(ctx)?.templates(request(ctx)?).await?;
        Ok(templates.into_iter().map(TemplateView).collect())
    }

    /// The caller's bonuses, newest first (`first` at most 100).
    async fn my_bonuses(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<UserBonusConnection> {
        let page = service(ctx)?
            .my_bonuses(request(ctx)?, PageArgs::forward(first, after))
            .await?;
        Ok(UserBonusConnection(page))
    }

    /// One bonus: your own, or anyone's with `bonus:read:*`.
    async fn user_bonus(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<BonusView>> {
        let bonus = service(ctx)?.bonus(request(ctx)?, &id).await?;
        Ok(bonus.map(BonusView))
    }

    /// Resolves a `UserBonus` reference, with the rule of `userBonus`.
    #[graphql(entity)]
    async fn find_user_bonus_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<BonusView>> {
        let bonus = service(ctx)?.bonus(request(ctx)?, &id).await?;
        Ok(bonus.map(BonusView))
    }

    /// Resolves a `BonusTemplate` reference (inactive ones only for
    /// holders of `bonus:read:*`).
    #[graphql(entity)]
    async fn find_bonus_template_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<TemplateView>> {
        let template = service(ctx)?.template(request(ctx)?, &id).await?;
        Ok(template.map(TemplateView))
    }
}
