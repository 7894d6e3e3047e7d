//! What the service stores: users, sessions and one-time codes, their collections and the
//! indexes they need, ensured at start-up.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use service_core::db::{Database, Entity, IndexSpec, Repository, StoreResult};

/// Name of the unique index on the normalised email, reported in
/// `StoreError::Duplicate` when an address is taken.
pub const EMAIL_INDEX: &str = "users_email_unique";

/// Whether a user may sign in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[graphql(name = "UserStatus")]
pub enum UserStatus {
    /// May sign in.
    Active,
    /// Temporarily refused (too many failures, an operator's decision).
    Locked,
    /// Permanently refused.
    Disabled,
}

/// A user account. The password hash lives here but never in the schema:
/// the GraphQL `User` type is built from chosen fields only.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct User {
    /// A UUID v7, so ids sort by creation time (the `users` listing order).
    #[serde(rename = "_id")]
    pub id: String,
    /// Lower-cased; unique through [`EMAIL_INDEX`].
    pub email: String,
    /// Display name, optional.
    pub username: Option<String>,
    /// The tenant the user belongs to.
    pub tenant_id: String,
    /// Role names as the access engine knows them.
    pub roles: Vec<String>,
    /// Whether the user may sign in.
    pub status: UserStatus,
    /// argon2id PHC string.
    pub password_hash: String,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
    /// Bumped by every role change, the precondition of the next one, so
    /// two concurrent changes cannot overwrite each other.
    #[serde(default)]
    pub version: i64,
    /// With status `LOCKED`: when the lock ends by itself. `None` with
    /// `LOCKED` is an operator's lock, lifted only by `setUserStatus`.
    #[serde(default)]
    pub locked_until: Option<DateTime<Utc>>,
    /// Automatic lockouts so far; each lasts twice as long as the one
    /// before. Back to zero after a successful sign-in or an unlock.
    #[serde(default)]
    pub lock_count: u32,
}

impl User {
    /// The status as it applies at `now`: a timed lock that has run out is
    /// `ACTIVE` again even before anything rewrites the stored status.
    pub fn status_at(&self, now: DateTime<Utc>) -> UserStatus {
        match (self.status, self.locked_until) {
            (UserStatus::Locked, Some(until)) if until <= now => UserStatus::Active,
            (status, _) => status,
        }
    }
}

impl Entity for User {
    const COLLECTION: &'static str = "users";
}

/// One signed-in device: the family of refresh tokens rotated from one login.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    /// The session id, also the access tokens' `sid`.
    #[serde(rename = "_id")]
    pub id: String,
    /// Whose session it is.
    pub user_id: String,
    /// The rotation family; every token rotated from one login shares it,
    /// and reuse of any spent one revokes it whole.
    pub family_id: String,
    /// Hash of the one refresh token that may rotate next.
    pub token_hash: String,
    /// Hash of the token spent by the last rotation, honoured for the
    /// grace window after `rotated_at` (concurrent refreshes).
    pub previous_hash: Option<String>,
    /// When the last rotation happened.
    pub rotated_at: Option<DateTime<Utc>>,
    /// Hashes of spent tokens (the most recent ones), to tell a replay from
    /// a forgery.
    pub spent_hashes: Vec<String>,
    /// When the login happened.
    pub created_at: DateTime<Utc>,
    /// After this, the session's refresh tokens are refused.
    pub expires_at: DateTime<Utc>,
    /// Set once, when the session is ended; a revoked session never comes back.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Entity for Session {
    const COLLECTION: &'static str = "sessions";
}

/// The one live one-time code of a user for a purpose. Its id is
/// `{user_id}:{purpose}`, so a new request replaces the previous code.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OtpCode {
    /// `{user_id}:{purpose}`.
    #[serde(rename = "_id")]
    pub id: String,
    /// Whose code it is.
    pub user_id: String,
    /// What it is for.
    pub purpose: String,
    /// The random per-code HMAC key (base64url); never reused.
    pub salt: String,
    /// HMAC-SHA256 of the code under `salt` (base64url): the code itself is
    /// never stored.
    pub code_hash: String,
    /// After this the code is refused.
    pub expires_at: DateTime<Utc>,
    /// Verifications attempted so far (each one counted before comparing).
    pub tries: i64,
    /// Set by the one successful verification; a used code never verifies again.
    pub used_at: Option<DateTime<Utc>>,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
}

impl Entity for OtpCode {
    const COLLECTION: &'static str = "otp_codes";
}

/// The indexes the service relies on.
pub fn indexes() -> Vec<IndexSpec> {
    let mut specs = vec![
        IndexSpec::new(User::COLLECTION, EMAIL_INDEX, &["email"]).unique(),
        IndexSpec::new(User::COLLECTION, "users_tenant", &["tenant_id"]),
        IndexSpec::new(Session::COLLECTION, "sessions_user", &["user_id"]),
    ];
    // `user.registered` is staged in the outbox with the user it announces.
    specs.extend(service_core::events::Outbox::indexes());
    specs
}

/// The repositories over one database.
#[derive(Clone)]
pub struct Store {
    /// Users.
    pub users: Repository<User>,
    /// Sessions.
    pub sessions: Repository<Session>,
    /// One-time codes.
    pub otps: Repository<OtpCode>,
}

impl Store {
    /// Ensures the indexes, then serves the repositories.
    pub async fn open(db: Arc<Database>) -> StoreResult<Self> {
        db.ensure_indexes(&indexes()).await?;
        Ok(Self {
            users: Repository::new(db.clone()),
            sessions: Repository::new(db.clone()),
            otps: Repository::new(db),
        })
    }
}
