//! Mutation fields: registration, sign-in, token refresh, sign-out,
//! password change, one-time codes, roles and account status.

use async_graphql::{Context, Object, ID};

use super::types::{secret, AuthPayload, LoginInput, RegisterInput, UserView};
use super::{request, service};
use crate::domain::NewUser;
use crate::store::UserStatus;

/// The auth subgraph's mutations. Named `Mutation` in the SDL: the
/// federation SDL carries no `schema { mutation: ... }` block, so the
/// gateway finds the root by that name (and the contract spells it so).
pub struct AuthMutation;

#[Object(name = "Mutation")]
impl AuthMutation {
    /// Creates an account (role `user`) and signs it in.
    async fn register(
        &self,
        ctx: &Context<'_>,
        input: RegisterInput,
    ) -> async_graphql::Result<AuthPayload> {
        let issued = service(ctx)?
            .register(NewUser {
                email: input.email,
                password: secret(input.password),
                username: input.username,
            })
            .await?;
        Ok(issued.into())
    }

    /// Signs in with email and password.
    async fn login(
        &self,
        ctx: &Context<'_>,
        input: LoginInput,
    ) -> async_graphql::Result<AuthPayload> {
        let issued = service(ctx)?
            .login(&input.email, secret(input.password))
            .await?;
        Ok(issued.into())
    }

    /// Spends a refresh token for new tokens; a replayed one revokes its
    /// session.
    async fn refresh_token(
        &self,
        ctx: &Context<'_>,
        refresh_token: String,
    ) -> async_graphql::Result<AuthPayload> {
        Ok(service(ctx)?.refresh(&refresh_token).await?.into())
    }

    /// Ends the session of this refresh token.
    async fn logout(
        &self,
        ctx: &Context<'_>,
        refresh_token: String,
    ) -> async_graphql::Result<bool> {
        Ok(service(ctx)?.logout(&refresh_token).await?)
    }

    /// Ends every session of the signed-in user.
    async fn logout_all(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        Ok(service(ctx)?.logout_all(request(ctx)?).await?)
    }

    /// Replaces the signed-in user's password; their other sessions end.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> async_graphql::Result<bool> {
        Ok(service(ctx)?
            .change_password(
                request(ctx)?,
                secret(current_password),
                secret(new_password),
            )
            .await?)
    }

    /// Gives a user a role; needs `role:assign:*`.
    async fn assign_role(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        role: String,
    ) -> async_graphql::Result<UserView> {
        let user = service(ctx)?
            .assign_role(request(ctx)?, &user_id, &role)
            .await?;
        Ok(UserView(user))
    }

    /// Takes a role from a user; needs `role:assign:*`.
    async fn revoke_role(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        role: String,
    ) -> async_graphql::Result<UserView> {
        let user = service(ctx)?
            .revoke_role(request(ctx)?, &user_id, &role)
            .await?;
        Ok(UserView(user))
    }

    /// Sends the signed-in user a fresh 6-digit code for `purpose` (a short
    /// lower-case word such as `withdrawal`), replacing the previous one;
    /// valid for 5 minutes and 5 tries.
    async fn request_otp(&self, ctx: &Context<'_>, purpose: String) -> async_graphql::Result<bool> {
        Ok(service(ctx)?.request_otp(request(ctx)?, &purpose).await?)
    }

    /// Checks and spends the signed-in user's code for `purpose`.
    async fn verify_otp(
        &self,
        ctx: &Context<'_>,
        purpose: String,
        code: String,
    ) -> async_graphql::Result<bool> {
        Ok(service(ctx)?
            .verify_otp(request(ctx)?, &purpose, &code)
            .await?)
    }

    /// Locks, disables or reactivates a user; needs `user:update:*` or
    /// `role:assign:*`. Locking or disabling ends the user's sessions.
    async fn set_user_status(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        status: UserStatus,
    ) -> async_graphql::Result<UserView> {
        let user = service(ctx)?
            .set_user_status(request(ctx)?, &user_id, status)
            .await?;
        Ok(UserView(user))
    }
}
