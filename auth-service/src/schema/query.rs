//! Query fields: `me`, `sessions`, `user`, `users`, and the `User` entity for the
//! gateway.

use async_graphql::{Context, Object, ID};
use service_core::db::PageArgs;

use super::types::{SessionView, UserConnection, UserView};
use super::{request, service};

/// The auth subgraph's own query fields.
pub struct AuthQuery;

#[Object]
impl AuthQuery {
    /// The signed-in user; null when anonymous.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<UserView>> {
        let user = service(ctx)?.me(request(ctx)?).await?;
        Ok(user.map(UserView))
    }

    /// Your live sessions (signed-in devices), newest first, at most 100;
    /// end one with `logout`, all with `logoutAll`.
    async fn sessions(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<SessionView>> {
        let request = request(ctx)?;
        let sessions = service(ctx)?.sessions(request).await?;
        let current = request.principal().map(|p| p.session_id.as_str());
        Ok(sessions
            .into_iter()
            .map(|session| SessionView {
                current: Some(session.id.as_str()) == current,
                session,
            })
            .collect())
    }

    /// A user by id: yourself, or anyone with `user:read:*`.
    async fn user(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<UserView>> {
        let user = service(ctx)?.user(request(ctx)?, &id).await?;
        Ok(user.map(UserView))
    }

    /// The users of your tenant, oldest first; needs `user:read:*`.
    async fn users(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<UserConnection> {
        let page = service(ctx)?
            .users(request(ctx)?, PageArgs::forward(first, after))
            .await?;
        Ok(UserConnection(page))
    }

    /// Resolves a `User` reference for the gateway, with the same access
    /// rule as `user(id)`.
    #[graphql(entity)]
    async fn find_user_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<UserView>> {
        let user = service(ctx)?.user(request(ctx)?, &id).await?;
        Ok(user.map(UserView))
    }
}
