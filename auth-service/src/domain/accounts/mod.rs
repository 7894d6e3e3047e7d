//! Account operations: register, sign in, refresh, sign out, change the
//! password, and read users. Each returns an [`ApiResult`] with the
//! contract's codes; secrets (passwords, refresh tokens) are never logged
//! and never put into an error.

use std::sync::Arc;

use access_engine::{AccessEngine, Resource};
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use service_core::auth::{IssuedToken, TokenIssuer, TokenSubject};
use service_core::db::{
    to_document, Direction, Entity as _, Filter, PageArgs, StoreError, Update, ID,
};
use service_core::events::{DomainEvent as _, UserRegistered};
use service_core::events::{Outbox, OutboxWaker};
use service_core::resilience::AttemptCounter;
use service_core::{codes as core_codes, ApiError, ApiResult, Principal, RequestContext};

use super::email::Email;
use super::password::{HashOutcome, PasswordHasher};
use super::sessions::{RefreshError, Sessions};
use super::tokens::{permissions_for, RefreshToken};
use crate::codes;
use crate::store::{Session, Store, User, UserStatus, EMAIL_INDEX};

mod lockout;
mod otp;
mod roles;

pub use lockout::LockoutPolicy;
pub use otp::OtpPolicy;

/// Most sessions `sessions` lists (each login opens one; they live 30 days).
const SESSIONS_LISTED: usize = 100;
/// Usernames are optional; when given, 3 to 32 of these characters.
const USERNAME_MIN: usize = 3;
const USERNAME_MAX: usize = 32;

/// What `register` receives, as the client sent it.
pub struct NewUser {
    /// The email, not yet validated.
    pub email: String,
    /// The password, not yet checked against the policy.
    pub password: SecretString,
    /// The optional display name.
    pub username: Option<String>,
}

/// A successful sign-in: the tokens and the user they belong to.
pub struct Issued {
    /// The signed access token.
    pub access: IssuedToken,
    /// The session's new refresh token.
    pub refresh: RefreshToken,
    /// The signed-in user.
    pub user: User,
}

/// One page of users and the total number in the listing.
pub struct UserPage {
    /// The page.
    pub connection: service_core::db::Connection<User>,
    /// How many users the whole listing holds.
    pub total_count: u64,
}

/// What [`AuthService`] is built from.
pub struct AuthParts {
    /// Users and sessions.
    pub store: Store,
    /// argon2id hashing.
    pub hasher: PasswordHasher,
    /// Signs access tokens.
    pub issuer: Arc<TokenIssuer>,
    /// Roles and permissions, for the `permissions` claim and role checks.
    pub access: Arc<AccessEngine>,
    /// Sessions, refresh rotation and the session cache.
    pub sessions: Sessions,
    /// The tenant new users join.
    pub tenant_id: String,
    /// Counts failed sign-ins.
    pub throttle: Arc<AttemptCounter>,
    /// When repeated bursts of failures lock an account.
    pub lockout: LockoutPolicy,
    /// One-time code lifetime, tries and request limit.
    pub otp: OtpPolicy,
    /// Wakes the relay that publishes `user.registered` and
    /// `auth.otp.requested`.
    pub outbox: OutboxWaker,
}

/// The account operations over one store.
#[derive(Clone)]
pub struct AuthService {
    store: Store,
    hasher: PasswordHasher,
    issuer: Arc<TokenIssuer>,
    access: Arc<AccessEngine>,
    sessions: Sessions,
    tenant_id: String,
    throttle: Arc<AttemptCounter>,
    lockout: LockoutPolicy,
    otp: OtpPolicy,
    outbox: OutboxWaker,
}

fn invalid_credentials() -> ApiError {
    ApiError::new(codes::INVALID_CREDENTIALS, "Invalid email or password")
}

fn invalid_token() -> ApiError {
    ApiError::new(core_codes::AUTH_INVALID_TOKEN, "Invalid token")
}

fn too_many_attempts(retry_after_seconds: u64) -> ApiError {
    ApiError::new(
        codes::TOO_MANY_ATTEMPTS,
        "Too many failed sign-in attempts, try again later",
    )
    .with_extension("retryAfterSeconds", retry_after_seconds)
}

fn hash_failed(err: impl std::error::Error + Send + Sync + 'static) -> ApiError {
    ApiError::internal(err)
}

fn parse_email(raw: &str) -> ApiResult<Email> {
    Email::parse(raw).map_err(|err| ApiError::validation("input.email", err.to_string()))
}

fn check_username(username: Option<String>) -> ApiResult<Option<String>> {
    let Some(name) = username.map(|n| n.trim().to_owned()) else {
        return Ok(None);
    };
    let count = name.chars().count();
    let ok = (USERNAME_MIN..=USERNAME_MAX).contains(&count)
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(Some(name))
    } else {
        Err(ApiError::validation(
            "input.username",
            format!("must be {USERNAME_MIN} to {USERNAME_MAX} letters, digits, '_', '.' or '-'"),
        ))
    }
}

fn record_user(user_id: &str) {
    tracing::Span::current().record("user_id", user_id);
}

impl AuthService {
    /// The operations over `parts`.
    pub fn new(parts: AuthParts) -> Self {
        let AuthParts {
            store,
            hasher,
            issuer,
            access,
            sessions,
            tenant_id,
            throttle,
            lockout,
            otp,
            outbox,
        } = parts;
        Self {
            store,
            hasher,
            issuer,
            access,
            sessions,
            tenant_id,
            throttle,
            lockout,
            otp,
            outbox,
        }
    }

    /// The password hasher (its counter shows whether argon2 ran).
    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    fn issue_access(&self, user: &User, session_id: &str) -> ApiResult<IssuedToken> {
        let subject = TokenSubject {
            user_id: user.id.clone(),
            tenant_id: user.tenant_id.clone(),
            roles: user.roles.clone(),
            permissions: permissions_for(&self.access, &user.id, &user.tenant_id, &user.roles),
            session_id: session_id.to_owned(),
        };
        Ok(self.issuer.issue(&subject)?)
    }

    async fn sign_in(&self, user: User) -> ApiResult<Issued> {
        let (session, refresh) = self.sessions.open(&user.id).await?;
        self.issued(user, &session.id, refresh)
    }

    /// A fresh access token for `user` in session `session_id`, with the
    /// refresh token that goes with it.
    fn issued(&self, user: User, session_id: &str, refresh: RefreshToken) -> ApiResult<Issued> {
        Ok(Issued {
            access: self.issue_access(&user, session_id)?,
            refresh,
            user,
        })
    }

    /// Creates an account with the role `user` and signs it in.
    #[tracing::instrument(skip_all, fields(user_id))]
    pub async fn register(&self, input: NewUser) -> ApiResult<Issued> {
        let email = parse_email(&input.email)?;
        let username = check_username(input.username)?;
        let password_hash = match self.hasher.hash_new(input.password).await {
            Ok(hash) => hash,
            Err(HashOutcome::Refused(violation)) => {
                return Err(violation.into_api_error("input.password"))
            }
            Err(HashOutcome::Failed(err)) => return Err(hash_failed(err)),
        };
        let user = User {
            id: uuid::Uuid::now_v7().to_string(),
            email: email.as_str().to_owned(),
            username,
            tenant_id: self.tenant_id.clone(),
            roles: vec!["user".to_owned()],
            status: UserStatus::Active,
            password_hash,
            created_at: Utc::now(),
            version: 0,
            locked_until: None,
            lock_count: 0,
        };
        record_user(&user.id);
        match self.insert_announced(&user).await {
            Ok(()) => {}
            Err(StoreError::Duplicate { index, .. }) if index == EMAIL_INDEX => {
                return Err(ApiError::new(
                    codes::EMAIL_TAKEN,
                    "An account with this email already exists",
                )
                .with_extension("field", "input.email"))
            }
            Err(err) => return Err(err.into()),
        }
        self.outbox.wake();
        tracing::info!("user registered");
        self.sign_in(user).await
    }

    /// Inserts `user` and stages `user.registered` in one transaction, so
    /// the event is published if and only if the account exists.
    async fn insert_announced(&self, user: &User) -> Result<(), StoreError> {
        let doc = to_document(user)?;
        let event = UserRegistered {
            user_id: user.id.clone(),
            email: user.email.clone(),
            username: user.username.clone(),
        }
        .to_event(&user.tenant_id, Some(&user.id))
        .map_err(|err| StoreError::Invalid(err.to_string()))?;
        self.store
            .users
            .database()
            .transaction(|tx| {
                let doc = doc.clone();
                let event = &event;
                Box::pin(async move {
                    tx.insert(User::COLLECTION, doc).await?;
                    Outbox::stage(tx, event).await
                })
            })
            .await
    }

    /// Signs in with email and password. Unknown email and wrong password
    /// get the same answer after the same work, whatever the account's
    /// status; after too many failures for one email, `MSAuthTooManyAttempts`
    /// (before any hashing) until the window lets the next one through, and
    /// the bursts of failures count towards a lockout (see `lockout`). The
    /// right password of a `LOCKED` account with a timed lock gets
    /// `MSAuthTooManyAttempts` with the time left; of a `DISABLED` account
    /// or an operator's open-ended lock, `MSAuthInvalidCredentials`.
    #[tracing::instrument(skip_all, fields(user_id))]
    pub async fn login(&self, email: &str, password: SecretString) -> ApiResult<Issued> {
        let email = parse_email(email)?;
        if let Some(wait) = self.throttle.is_locked(email.as_str()).await {
            return Err(too_many_attempts(wait.as_secs_ceil()));
        }
        let user = self
            .store
            .users
            .find_one(&Filter::all().eq("email", email.as_str()))
            .await?;
        let hash = user.as_ref().map(|u| u.password_hash.as_str());
        let matches = self
            .hasher
            .verify(password, hash)
            .await
            .map_err(hash_failed)?;
        let now = Utc::now();
        match user {
            Some(user) if matches => {
                record_user(&user.id);
                match user.status_at(now) {
                    UserStatus::Active => {
                        self.throttle.reset(email.as_str()).await;
                        self.signed_in_after_lock(&user).await?;
                        self.sign_in(user).await
                    }
                    // Only someone who knows the password learns that the
                    // account exists and is locked, and for how long.
                    UserStatus::Locked => match user.locked_until {
                        Some(until) => Err(too_many_attempts(
                            u64::try_from((until - now).num_seconds())
                                .unwrap_or(0)
                                .max(1),
                        )),
                        None => Err(invalid_credentials()),
                    },
                    UserStatus::Disabled => Err(invalid_credentials()),
                }
            }
            _ => {
                let attempts = self.throttle.record_failure(email.as_str()).await;
                if attempts.count == self.lockout.max_failures {
                    self.burst_tripped(email.as_str(), user.as_ref()).await?;
                }
                Err(invalid_credentials())
            }
        }
    }

    /// Spends `token` and signs the session's user in again.
    #[tracing::instrument(skip_all, fields(user_id))]
    pub async fn refresh(&self, token: &str) -> ApiResult<Issued> {
        let token = RefreshToken::parse(token).ok_or_else(invalid_token)?;
        // A user who may not sign in may not refresh either; checked before
        // rotating so a timed lock does not also cost the session its token.
        if let Some(session) = self.sessions.get(token.session_id()).await? {
            let user = self.store.users.get(&session.user_id).await?;
            match user.map(|u| u.status_at(Utc::now())) {
                Some(UserStatus::Active) => {}
                Some(UserStatus::Locked) => return Err(invalid_token()),
                Some(UserStatus::Disabled) | None => {
                    self.sessions.revoke(&session.id).await?;
                    return Err(invalid_token());
                }
            }
        }
        let (session, refresh) = match self.sessions.rotate(&token).await {
            Ok(rotated) => rotated,
            Err(RefreshError::Invalid) => return Err(invalid_token()),
            Err(RefreshError::Reused) => {
                return Err(ApiError::new(
                    codes::REFRESH_TOKEN_REUSED,
                    "Refresh token already used; the session has been revoked",
                ))
            }
            Err(RefreshError::Store(err)) => return Err(err.into()),
        };
        record_user(&session.user_id);
        let user = self.store.users.get(&session.user_id).await?;
        let Some(user) = user.filter(|u| u.status_at(Utc::now()) == UserStatus::Active) else {
            return Err(invalid_token());
        };
        self.issued(user, &session.id, refresh)
    }

    /// Ends the session `token` belongs to; the token must be its current
    /// one (a spent token cannot sign anyone out).
    #[tracing::instrument(skip_all, fields(user_id))]
    pub async fn logout(&self, token: &str) -> ApiResult<bool> {
        let token = RefreshToken::parse(token).ok_or_else(invalid_token)?;
        let session = self
            .store
            .sessions
            .get(token.session_id())
            .await?
            .filter(|s| super::sessions::is_live(s, Utc::now()) && s.token_hash == token.hash())
            .ok_or_else(invalid_token)?;
        record_user(&session.user_id);
        self.sessions.revoke(&session.id).await?;
        Ok(true)
    }

    /// The signed-in caller whose session is still live; `None` when
    /// anonymous. A token of a revoked session is `MSAuthInvalidToken`.
    pub async fn caller<'a>(&self, ctx: &'a RequestContext) -> ApiResult<Option<&'a Principal>> {
        let Some(principal) = ctx.principal() else {
            return Ok(None);
        };
        if self
            .sessions
            .is_active(&principal.session_id, &principal.user_id)
            .await?
        {
            Ok(Some(principal))
        } else {
            Err(invalid_token())
        }
    }

    /// Like [`AuthService::caller`], but someone must be signed in.
    pub async fn signed_in<'a>(&self, ctx: &'a RequestContext) -> ApiResult<&'a Principal> {
        self.caller(ctx)
            .await?
            .ok_or_else(ApiError::unauthenticated)
    }

    /// Ends every session of the caller, this one included.
    #[tracing::instrument(skip_all, fields(user_id))]
    pub async fn logout_all(&self, ctx: &RequestContext) -> ApiResult<bool> {
        let principal = self.signed_in(ctx).await?;
        record_user(&principal.user_id);
        self.sessions.revoke_all(&principal.user_id, None).await?;
        Ok(true)
    }

    /// The caller's live sessions (signed-in devices), newest first, at
    /// most 100.
    pub async fn sessions(&self, ctx: &RequestContext) -> ApiResult<Vec<Session>> {
        let principal = self.signed_in(ctx).await?;
        Ok(self
            .sessions
            .live_of(&principal.user_id, SESSIONS_LISTED)
            .await?)
    }

    /// Replaces the caller's password and ends their other sessions.
    #[tracing::instrument(skip_all, fields(user_id))]
    pub async fn change_password(
        &self,
        ctx: &RequestContext,
        current: SecretString,
        new: SecretString,
    ) -> ApiResult<bool> {
        let principal = self.signed_in(ctx).await?;
        record_user(&principal.user_id);
        let user = self
            .store
            .users
            .get(&principal.user_id)
            .await?
            .ok_or_else(invalid_token)?;
        // The new password is checked before anything is hashed.
        if let Err(violation) = super::password::check_policy(new.expose_secret()) {
            return Err(violation.into_api_error("newPassword"));
        }
        let matches = self
            .hasher
            .verify(current, Some(&user.password_hash))
            .await
            .map_err(hash_failed)?;
        if !matches {
            return Err(invalid_credentials().with_extension("field", "currentPassword"));
        }
        let hash = match self.hasher.hash_new(new).await {
            Ok(hash) => hash,
            Err(HashOutcome::Refused(violation)) => {
                return Err(violation.into_api_error("newPassword"))
            }
            Err(HashOutcome::Failed(err)) => return Err(hash_failed(err)),
        };
        self.store
            .users
            .update(
                &user.id,
                Filter::all(),
                &Update::new().set("password_hash", hash),
            )
            .await?
            .ok_or_else(invalid_token)?;
        let ended = self
            .sessions
            .revoke_all(&user.id, Some(&principal.session_id))
            .await?;
        tracing::info!(sessions_ended = ended, "password changed");
        Ok(true)
    }

    /// The caller's own account; `None` when anonymous.
    pub async fn me(&self, ctx: &RequestContext) -> ApiResult<Option<User>> {
        match self.caller(ctx).await? {
            Some(principal) => Ok(self.store.users.get(&principal.user_id).await?),
            None => Ok(None),
        }
    }

    /// User `id`, for the user themself or a holder of `user:read:*` in the
    /// user's tenant. Whether an id exists is not revealed to others.
    pub async fn user(&self, ctx: &RequestContext, id: &str) -> ApiResult<Option<User>> {
        let principal = self.signed_in(ctx).await?;
        let user = self.store.users.get(id).await?;
        let target = match &user {
            Some(u) => Resource {
                id: Some(id),
                owner: Some(&u.id),
                tenant: Some(&u.tenant_id),
            },
            None => Resource {
                id: Some(id),
                owner: None,
                tenant: Some(&principal.tenant_id),
            },
        };
        ctx.require("user", "read", target)?;
        Ok(user)
    }

    /// A page of the users of the caller's tenant, oldest first; needs
    /// `user:read:*`.
    pub async fn users(&self, ctx: &RequestContext, args: PageArgs) -> ApiResult<UserPage> {
        let principal = self.signed_in(ctx).await?;
        ctx.require(
            "user",
            "read",
            Resource {
                id: None,
                owner: None,
                tenant: Some(&principal.tenant_id),
            },
        )?;
        let query = args.validate()?;
        let filter = Filter::all().eq("tenant_id", principal.tenant_id.as_str());
        let connection = self
            .store
            .users
            .page(&filter, ID, Direction::Asc, &query)
            .await?;
        let total_count = self.store.users.count(&filter).await?;
        Ok(UserPage {
            connection,
            total_count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_optional_and_checked() {
        assert_eq!(check_username(None).unwrap(), None);
        assert_eq!(
            check_username(Some(" alice_1 ".into())).unwrap().as_deref(),
            Some("alice_1")
        );
        for bad in ["ab", "with space", "<script>", &"x".repeat(33)] {
            let err = check_username(Some(bad.to_owned())).unwrap_err();
            assert_eq!(err.extensions()["field"], "input.username", "{bad}");
        }
    }
}
