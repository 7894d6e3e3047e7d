//! The GraphQL shapes of the auth subgraph. `User` is built field by field
//! from the stored user, so the password hash cannot leak into the schema.

use async_graphql::{InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use service_core::graphql::PageInfo;

use crate::domain::{Issued, UserPage};
use crate::store::{Session, User, UserStatus};

/// A user account as clients see it.
pub struct UserView(pub User);

#[Object(name = "User")]
impl UserView {
    /// The user's id.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    /// The email, lower-cased.
    async fn email(&self) -> &str {
        &self.0.email
    }

    /// The display name, if one was chosen.
    async fn username(&self) -> Option<&str> {
        self.0.username.as_deref()
    }

    /// Role names.
    async fn roles(&self) -> &[String] {
        &self.0.roles
    }

    /// Whether the user may sign in (a timed lock that has run out reads
    /// `ACTIVE`).
    async fn status(&self) -> UserStatus {
        self.0.status_at(Utc::now())
    }

    /// When the account was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// One signed-in device of the caller.
pub struct SessionView {
    /// The session.
    pub session: Session,
    /// The session of the token making the request.
    pub current: bool,
}

#[Object(name = "AuthSession")]
impl SessionView {
    /// The session id (the access tokens' `sid`).
    async fn id(&self) -> ID {
        ID(self.session.id.clone())
    }

    /// When the user signed in.
    async fn created_at(&self) -> DateTime<Utc> {
        self.session.created_at
    }

    /// When its refresh token was last rotated, if ever.
    async fn last_refreshed_at(&self) -> Option<DateTime<Utc>> {
        self.session.rotated_at
    }

    /// When it ends unless revoked before.
    async fn expires_at(&self) -> DateTime<Utc> {
        self.session.expires_at
    }

    /// Whether this is the session of the token making the request.
    async fn current(&self) -> bool {
        self.current
    }
}

/// Tokens handed out by `register`, `login` and `refreshToken`.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// A short-lived JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// An opaque token for `refreshToken`; spent on use.
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: i32,
    /// The signed-in user.
    pub user: UserView,
}

impl From<Issued> for AuthPayload {
    fn from(issued: Issued) -> Self {
        Self {
            access_token: issued.access.token,
            refresh_token: issued.refresh.expose(),
            expires_in: i32::try_from(issued.access.expires_in_seconds).unwrap_or(i32::MAX),
            user: UserView(issued.user),
        }
    }
}

/// `register`'s input.
#[derive(InputObject)]
pub struct RegisterInput {
    /// The email (unique, case-insensitively).
    pub email: String,
    /// At least 10 characters, not a common password.
    pub password: String,
    /// Optional display name.
    pub username: Option<String>,
}

/// `login`'s input.
#[derive(InputObject)]
pub struct LoginInput {
    /// The email the account was registered with.
    pub email: String,
    /// The password.
    pub password: String,
}

/// Wraps a password as a secret as soon as it leaves the GraphQL layer.
pub(super) fn secret(password: String) -> SecretString {
    SecretString::from(password)
}

/// A user and its cursor.
#[derive(SimpleObject)]
pub struct UserEdge {
    /// Opaque position of `node`.
    pub cursor: String,
    /// The user.
    pub node: UserView,
}

/// A page of users.
pub struct UserConnection(pub UserPage);

#[Object]
impl UserConnection {
    /// The users with their cursors.
    async fn edges(&self) -> Vec<UserEdge> {
        self.0
            .connection
            .edges
            .iter()
            .map(|e| UserEdge {
                cursor: e.cursor.clone(),
                node: UserView(e.node.clone()),
            })
            .collect()
    }

    /// The users alone.
    async fn nodes(&self) -> Vec<UserView> {
        self.0
            .connection
            .edges
            .iter()
            .map(|e| UserView(e.node.clone()))
            .collect()
    }

    /// Position information.
    async fn page_info(&self) -> PageInfo {
        PageInfo::from(&self.0.connection.page_info)
    }

    /// How many users the whole listing holds.
    async fn total_count(&self) -> i64 {
        i64::try_from(self.0.total_count).unwrap_or(i64::MAX)
    }
}
