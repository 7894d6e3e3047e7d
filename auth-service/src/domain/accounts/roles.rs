//! Roles: the bootstrap admin and `assignRole` / `revokeRole`. A role change
//! is a conditional update on the user's `version`, so two concurrent
//! changes cannot overwrite each other; new roles reach the user's access
//! tokens at their next refresh.

use access_engine::Resource;
use chrono::Utc;
use secrecy::SecretString;
use service_core::db::{Filter, StoreError, Update};
use service_core::{ApiError, ApiResult, RequestContext};

use super::{hash_failed, parse_email, record_user, AuthService};
use crate::codes;
use crate::domain::password::HashOutcome;
use crate::store::{User, UserStatus};

/// Role changes retried when concurrent changes keep winning.
const ROLE_CHANGE_ATTEMPTS: usize = 4;

impl AuthService {
    /// Makes sure an admin account with `email` exists: creates it (roles
    /// `user` and `admin`) when missing, or adds `admin` to an existing
    /// account without touching its password. Run at start-up; the
    /// password must meet the policy like any other.
    #[tracing::instrument(skip_all, fields(user_id))]
    pub async fn bootstrap_admin(&self, email: &str, password: SecretString) -> ApiResult<User> {
        let email = parse_email(email)?;
        let by_email = Filter::all().eq("email", email.as_str());
        if self.store.users.find_one(&by_email).await?.is_none() {
            let password_hash = match self.hasher.hash_new(password).await {
                Ok(hash) => hash,
                Err(HashOutcome::Refused(violation)) => {
                    return Err(violation.into_api_error("AUTH_BOOTSTRAP_ADMIN_PASSWORD"))
                }
                Err(HashOutcome::Failed(err)) => return Err(hash_failed(err)),
            };
            let user = User {
                id: uuid::Uuid::now_v7().to_string(),
                email: email.as_str().to_owned(),
                username: None,
                tenant_id: self.tenant_id.clone(),
                roles: vec!["user".to_owned(), "admin".to_owned()],
                status: UserStatus::Active,
                password_hash,
                created_at: Utc::now(),
                version: 0,
                locked_until: None,
                lock_count: 0,
            };
            match self.store.users.create(&user).await {
                Ok(()) => {
                    record_user(&user.id);
                    tracing::info!("bootstrap admin created");
                    return Ok(user);
                }
                // Another instance created it at the same moment.
                Err(StoreError::Duplicate { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        }
        for _ in 0..ROLE_CHANGE_ATTEMPTS {
            let user = self
                .store
                .users
                .find_one(&by_email)
                .await?
                .ok_or_else(|| ApiError::internal("bootstrap admin vanished"))?;
            record_user(&user.id);
            if user.roles.iter().any(|r| r == "admin") {
                return Ok(user);
            }
            let mut roles = user.roles.clone();
            roles.push("admin".to_owned());
            let update = Update::new().set("roles", roles).inc("version", 1);
            let precondition = Filter::all().eq("version", user.version);
            if let Some(updated) = self
                .store
                .users
                .update(&user.id, precondition, &update)
                .await?
            {
                tracing::info!("existing account made bootstrap admin");
                return Ok(updated);
            }
        }
        Err(ApiError::unavailable("the user store").with_cause("bootstrap kept conflicting"))
    }

    /// Gives `role` to user `user_id`; needs `role:assign:*`.
    #[tracing::instrument(skip_all, fields(user_id = %user_id))]
    pub async fn assign_role(
        &self,
        ctx: &RequestContext,
        user_id: &str,
        role: &str,
    ) -> ApiResult<User> {
        self.change_roles(ctx, user_id, role, true).await
    }

    /// Takes `role` from user `user_id`; needs `role:assign:*`.
    #[tracing::instrument(skip_all, fields(user_id = %user_id))]
    pub async fn revoke_role(
        &self,
        ctx: &RequestContext,
        user_id: &str,
        role: &str,
    ) -> ApiResult<User> {
        self.change_roles(ctx, user_id, role, false).await
    }

    /// New roles reach the user's access tokens at their next refresh.
    async fn change_roles(
        &self,
        ctx: &RequestContext,
        user_id: &str,
        role: &str,
        add: bool,
    ) -> ApiResult<User> {
        let principal = self.signed_in(ctx).await?;
        ctx.require(
            "role",
            "assign",
            Resource {
                id: None,
                owner: None,
                tenant: Some(&principal.tenant_id),
            },
        )?;
        if !self.access.has_role_defined(role) {
            return Err(ApiError::validation("role", "unknown role"));
        }
        let not_found = || ApiError::new(codes::USER_NOT_FOUND, "User not found");
        for _ in 0..ROLE_CHANGE_ATTEMPTS {
            let user = self
                .store
                .users
                .get(user_id)
                .await?
                // Another tenant's user is as good as unknown.
                .filter(|u| ctx.same_tenant(&u.tenant_id))
                .ok_or_else(not_found)?;
            let has = user.roles.iter().any(|r| r == role);
            if has == add {
                return Ok(user);
            }
            let mut roles = user.roles.clone();
            if add {
                roles.push(role.to_owned());
            } else {
                roles.retain(|r| r != role);
            }
            let update = Update::new().set("roles", roles).inc("version", 1);
            let precondition = Filter::all().eq("version", user.version);
            if let Some(updated) = self
                .store
                .users
                .update(&user.id, precondition, &update)
                .await?
            {
                tracing::info!(role, added = add, "roles changed");
                return Ok(updated);
            }
        }
        Err(ApiError::unavailable("the user store").with_cause("role change kept conflicting"))
    }
}
