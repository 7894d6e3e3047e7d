//! Sessions and refresh-token rotation with reuse detection.
//!
//! Every refresh spends the presented token and hands out a new one. The
//! rotation is one conditional update on the current hash, so of two
//! concurrent refreshes exactly one rotates; the other finds its token just
//! spent and, inside the grace window, rotates again from the new current
//! token. A spent token presented after the window is a replay (someone
//! holds a copy): the whole family is revoked.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use service_core::db::{Filter, StoreError, Update};

use super::tokens::RefreshToken;
use crate::store::{Session, Store};

/// How many spent hashes a session remembers for replay detection.
const SPENT_KEPT: usize = 64;
/// Rotations retried when other refreshes keep winning the race.
const MAX_ROTATION_ATTEMPTS: usize = 4;

/// Session lifetimes.
#[derive(Clone, Copy, Debug)]
pub struct SessionPolicy {
    /// How long a session lives after its login.
    pub ttl: Duration,
    /// How long a just-spent token still rotates.
    pub grace: Duration,
}

/// Why a refresh token was refused.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Unknown, forged, revoked or expired: `MSAuthInvalidToken`.
    #[error("invalid refresh token")]
    Invalid,
    /// A spent token replayed: the family was revoked.
    #[error("refresh token reused")]
    Reused,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// Opens a session for `user_id`; returns it and its first refresh token.
pub async fn open(
    store: &Store,
    policy: SessionPolicy,
    user_id: &str,
) -> Result<(Session, RefreshToken), StoreError> {
    let id = uuid::Uuid::new_v4().to_string();
    let token = RefreshToken::generate(&id);
    let now = Utc::now();
    let session = Session {
        family_id: id.clone(),
        user_id: user_id.to_owned(),
        token_hash: token.hash(),
        previous_hash: None,
        rotated_at: None,
        spent_hashes: Vec::new(),
        created_at: now,
        expires_at: now + chrono_duration(policy.ttl),
        revoked_at: None,
        id,
    };
    store.sessions.create(&session).await?;
    Ok((session, token))
}

/// Whether `session` can still be used at `now`.
pub fn is_live(session: &Session, now: DateTime<Utc>) -> bool {
    session.revoked_at.is_none() && session.expires_at > now
}

/// Spends `presented` and returns the session with its next token.
pub async fn rotate(
    store: &Store,
    policy: SessionPolicy,
    presented: &RefreshToken,
) -> Result<(Session, RefreshToken), RefreshError> {
    let presented_hash = presented.hash();
    for _ in 0..MAX_ROTATION_ATTEMPTS {
        let now = Utc::now();
        let session = store
            .sessions
            .get(presented.session_id())
            .await?
            .ok_or(RefreshError::Invalid)?;
        if !is_live(&session, now) {
            return Err(RefreshError::Invalid);
        }
        let in_grace = session.previous_hash.as_deref() == Some(presented_hash.as_str())
            && session
                .rotated_at
                .is_some_and(|at| now - at <= chrono_duration(policy.grace));
        if presented_hash != session.token_hash && !in_grace {
            if session.spent_hashes.contains(&presented_hash) {
                revoke(store, &session.id).await?;
                tracing::warn!(
                    session_id = %session.id,
                    user_id = %session.user_id,
                    "spent refresh token replayed: session family revoked"
                );
                return Err(RefreshError::Reused);
            }
            return Err(RefreshError::Invalid);
        }
        let next = RefreshToken::generate(&session.id);
        let mut spent = session.spent_hashes.clone();
        spent.push(session.token_hash.clone());
        if spent.len() > SPENT_KEPT {
            spent.drain(..spent.len() - SPENT_KEPT);
        }
        // In the grace window the presented token is already the previous
        // one; keep it as such so its window does not restart.
        let previous = if in_grace {
            presented_hash.clone()
        } else {
            session.token_hash.clone()
        };
        let rotated_at = if in_grace {
            session.rotated_at.unwrap_or(now)
        } else {
            now
        };
        let update = Update::new()
            .set("token_hash", next.hash())
            .set("previous_hash", previous)
            .set("rotated_at", to_value(rotated_at))
            .set("spent_hashes", Value::from(spent));
        let precondition = Filter::all()
            .eq("token_hash", session.token_hash.clone())
            .eq("revoked_at", Value::Null);
        if let Some(updated) = store
            .sessions
            .update(&session.id, precondition, &update)
            .await?
        {
            return Ok((updated, next));
        }
        // Another refresh rotated (or a logout revoked) first: look again.
    }
    Err(RefreshError::Invalid)
}

fn to_value(at: DateTime<Utc>) -> Value {
    serde_json::to_value(at).unwrap_or(Value::Null)
}

/// Ends session `id`; whether it was live until now.
pub async fn revoke(store: &Store, id: &str) -> Result<bool, StoreError> {
    let update = Update::new().set("revoked_at", to_value(Utc::now()));
    let precondition = Filter::all().eq("revoked_at", Value::Null);
    Ok(store
        .sessions
        .update(id, precondition, &update)
        .await?
        .is_some())
}

/// Ends every live session of `user_id` except `keep`; how many ended.
pub async fn revoke_all(
    store: &Store,
    user_id: &str,
    keep: Option<&str>,
) -> Result<usize, StoreError> {
    let live = Filter::all()
        .eq("user_id", user_id)
        .eq("revoked_at", Value::Null);
    let sessions = store
        .sessions
        .find(&live, &service_core::db::FindOptions::by_id())
        .await?;
    let mut ended = 0;
    for session in sessions.iter().filter(|s| Some(s.id.as_str()) != keep) {
        if revoke(store, &session.id).await? {
            ended += 1;
        }
    }
    Ok(ended)
}

/// Whether the session an access token names is still live (a revoked
/// session's access tokens stop working here at once).
pub async fn is_active(store: &Store, id: &str, user_id: &str) -> Result<bool, StoreError> {
    Ok(store
        .sessions
        .get(id)
        .await?
        .is_some_and(|s| s.user_id == user_id && is_live(&s, Utc::now())))
}
