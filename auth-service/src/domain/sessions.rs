//! Sessions, refresh-token rotation with reuse detection, and the cached
//! "is this session still live" answer every authenticated request needs.
//!
//! Every refresh spends the presented token and hands out its successor,
//! `HMAC(key, token)` (see [`RefreshToken::successor`]). The rotation is one
//! conditional update on the current hash, so of two concurrent refreshes
//! exactly one rotates; the other finds its token just spent and, inside
//! the grace window, receives the very same successor, so both clients end
//! up holding the one token the session will accept next. A spent token
//! presented after the window is a replay (someone holds a copy): the whole
//! family is revoked.
//!
//! Whether a session is live is cached in a [`LayeredCache`] (in process,
//! plus Redis when configured); every revocation deletes the entry, which
//! the cache propagates to the other instances.
//!
//! Every ended session is also announced as `auth.session.revoked`, staged
//! in the outbox in the same transaction as the change, so that the other
//! services and the gateway refuse its access tokens too (see
//! `service_core::auth::RevocationList`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use service_core::auth::SessionRevoked;
use service_core::cache::{CacheKey, LayeredCache};
use service_core::db::{from_document, Entity, Filter, StoreError, Update};
use service_core::events::{DomainEvent, Outbox, OutboxWaker};

use super::tokens::{RefreshToken, SuccessorKey};
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
    /// How long a just-spent token still answers with its successor.
    pub grace: Duration,
    /// How long a session's "live" answer may be served from the cache.
    /// Revocations delete the entry at once; this only bounds how long an
    /// instance that missed the invalidation message stays wrong.
    pub cache_ttl: Duration,
    /// The longest access-token lifetime: how long other services must
    /// remember a revocation.
    pub access_ttl: Duration,
}

/// Where ended sessions are announced.
#[derive(Clone)]
pub struct RevocationNotices {
    /// Wakes the relay that publishes the staged announcements.
    pub outbox: OutboxWaker,
    /// The tenant the announcements are filed under.
    pub tenant_id: String,
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

/// What the cache keeps per session: enough to answer "live for this user
/// at this moment" without the store. A revoked session never comes back,
/// so `revoked: true` may be cached as long as anything.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SessionState {
    user_id: String,
    expires_at: DateTime<Utc>,
    revoked: bool,
}

fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

fn to_value(at: DateTime<Utc>) -> Value {
    serde_json::to_value(at).unwrap_or(Value::Null)
}

fn cache_key(id: &str) -> String {
    CacheKey::one("session", id)
}

/// Whether `session` can still be used at `now`.
pub fn is_live(session: &Session, now: DateTime<Utc>) -> bool {
    session.revoked_at.is_none() && session.expires_at > now
}

/// The session operations over one store and cache. Cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    store: Store,
    policy: SessionPolicy,
    cache: LayeredCache,
    successor_key: SuccessorKey,
    notices: RevocationNotices,
}

impl Sessions {
    /// Sessions in `store`, their live state cached in `cache`, successors
    /// derived with `successor_key`, revocations announced through
    /// `notices`.
    pub fn new(
        store: Store,
        policy: SessionPolicy,
        cache: LayeredCache,
        successor_key: SuccessorKey,
        notices: RevocationNotices,
    ) -> Self {
        Self {
            store,
            policy,
            cache,
            successor_key,
            notices,
        }
    }

    /// The announcement of a revocation made at `now`.
    fn revoked_event(
        &self,
        user_id: &str,
        session_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<service_core::events::Event, StoreError> {
        SessionRevoked {
            user_id: user_id.to_owned(),
            session_id: session_id.map(str::to_owned),
            revoked_at: now,
            tokens_expire_by: now + chrono_duration(self.policy.access_ttl),
        }
        .to_event(&self.notices.tenant_id, Some(user_id))
        .map_err(|err| StoreError::Invalid(err.to_string()))
    }

    /// Opens a session for `user_id`; returns it and its first refresh token.
    pub async fn open(&self, user_id: &str) -> Result<(Session, RefreshToken), StoreError> {
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
            expires_at: now + chrono_duration(self.policy.ttl),
            revoked_at: None,
            id,
        };
        self.store.sessions.create(&session).await?;
        Ok((session, token))
    }

    /// The session `id`, live or not, straight from the store.
    pub async fn get(&self, id: &str) -> Result<Option<Session>, StoreError> {
        self.store.sessions.get(id).await
    }

    /// Spends `presented` and returns the session with its successor.
    ///
    /// - the current token rotates: its successor becomes current, the
    ///   presented one becomes `previous_hash` and is remembered as spent;
    /// - the token spent by the last rotation, within the grace window,
    ///   answers with the same successor and changes nothing;
    /// - any other spent token revokes the session ([`RefreshError::Reused`]).
    pub async fn rotate(
        &self,
        presented: &RefreshToken,
    ) -> Result<(Session, RefreshToken), RefreshError> {
        let presented_hash = presented.hash();
        let next = presented.successor(&self.successor_key);
        let next_hash = next.hash();
        for _ in 0..MAX_ROTATION_ATTEMPTS {
            let now = Utc::now();
            let session = self
                .get(presented.session_id())
                .await?
                .ok_or(RefreshError::Invalid)?;
            if !is_live(&session, now) {
                return Err(RefreshError::Invalid);
            }
            if presented_hash == session.token_hash {
                let mut spent = session.spent_hashes.clone();
                spent.push(presented_hash.clone());
                if spent.len() > SPENT_KEPT {
                    spent.drain(..spent.len() - SPENT_KEPT);
                }
                let update = Update::new()
                    .set("token_hash", next_hash.clone())
                    .set("previous_hash", presented_hash.clone())
                    .set("rotated_at", to_value(now))
                    .set("spent_hashes", Value::from(spent));
                let precondition = Filter::all()
                    .eq("token_hash", presented_hash.clone())
                    .eq("revoked_at", Value::Null);
                match self
                    .store
                    .sessions
                    .update(&session.id, precondition, &update)
                    .await?
                {
                    Some(updated) => return Ok((updated, next)),
                    // A concurrent refresh rotated (or a logout revoked)
                    // first: look again.
                    None => continue,
                }
            }
            let in_grace = session.previous_hash.as_deref() == Some(presented_hash.as_str())
                && session
                    .rotated_at
                    .is_some_and(|at| now - at <= chrono_duration(self.policy.grace));
            if in_grace {
                // A concurrent refresh of the same token: the same answer.
                // If the successor has itself been rotated since, the
                // presented token is simply stale (not a replay).
                return if session.token_hash == next_hash {
                    Ok((session, next))
                } else {
                    Err(RefreshError::Invalid)
                };
            }
            if session.spent_hashes.contains(&presented_hash) {
                self.revoke(&session.id).await?;
                tracing::warn!(
                    session_id = %session.id,
                    user_id = %session.user_id,
                    "spent refresh token replayed: session family revoked"
                );
                return Err(RefreshError::Reused);
            }
            return Err(RefreshError::Invalid);
        }
        Err(RefreshError::Invalid)
    }

    /// Ends session `id`; whether it was live until now. The cached state is
    /// dropped here and, through the cache, on every other instance; the end
    /// is announced (`auth.session.revoked`) if and only if it committed.
    pub async fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        let now = Utc::now();
        let update = Update::new().set("revoked_at", to_value(now));
        let filter = Filter::id(id).eq("revoked_at", Value::Null);
        let ended = self
            .store
            .sessions
            .database()
            .transaction(|tx| {
                let (filter, update) = (&filter, &update);
                Box::pin(async move {
                    let Some(doc) = tx.update_one(Session::COLLECTION, filter, update).await?
                    else {
                        return Ok(false);
                    };
                    let session: Session = from_document(doc)?;
                    let event = self.revoked_event(&session.user_id, Some(&session.id), now)?;
                    Outbox::stage(tx, &event).await?;
                    Ok::<_, StoreError>(true)
                })
            })
            .await?;
        self.cache.delete(&cache_key(id)).await;
        if ended {
            self.notices.outbox.wake();
        }
        Ok(ended)
    }

    /// Announces that every access token `user_id` holds, up to now, must be
    /// refused (an account disabled or locked), whatever happens to its
    /// sessions next. The sessions themselves are ended by
    /// [`revoke_all`](Self::revoke_all).
    pub async fn revoke_user_tokens(&self, user_id: &str) -> Result<(), StoreError> {
        let event = self.revoked_event(user_id, None, Utc::now())?;
        self.store
            .sessions
            .database()
            .transaction(|tx| {
                let event = &event;
                Box::pin(async move { Outbox::stage(tx, event).await })
            })
            .await?;
        self.notices.outbox.wake();
        Ok(())
    }

    /// Ends every live session of `user_id` except `keep`; how many ended.
    pub async fn revoke_all(&self, user_id: &str, keep: Option<&str>) -> Result<usize, StoreError> {
        let live = Filter::all()
            .eq("user_id", user_id)
            .eq("revoked_at", Value::Null);
        let sessions = self
            .store
            .sessions
            .find(&live, &service_core::db::FindOptions::by_id())
            .await?;
        let mut ended = 0;
        for session in sessions.iter().filter(|s| Some(s.id.as_str()) != keep) {
            if self.revoke(&session.id).await? {
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// The live sessions of `user_id`, newest first, at most `limit`.
    pub async fn live_of(&self, user_id: &str, limit: usize) -> Result<Vec<Session>, StoreError> {
        let filter = Filter::all()
            .eq("user_id", user_id)
            .eq("revoked_at", Value::Null);
        let options =
            service_core::db::FindOptions::sorted("created_at", service_core::db::Direction::Desc)
                .limit(limit);
        let now = Utc::now();
        Ok(self
            .store
            .sessions
            .find(&filter, &options)
            .await?
            .into_iter()
            .filter(|s| is_live(s, now))
            .collect())
    }

    /// Whether the session an access token names is live and belongs to
    /// `user_id` (a revoked session's access tokens stop working here at
    /// once). Served from the cache when it can be.
    pub async fn is_active(&self, id: &str, user_id: &str) -> Result<bool, StoreError> {
        let store = &self.store;
        let state: Option<SessionState> = self
            .cache
            .cached(&cache_key(id), self.policy.cache_ttl, async {
                Ok::<_, StoreError>(store.sessions.get(id).await?.map(|s| SessionState {
                    user_id: s.user_id,
                    expires_at: s.expires_at,
                    revoked: s.revoked_at.is_some(),
                }))
            })
            .await?;
        Ok(state.is_some_and(|s| !s.revoked && s.user_id == user_id && s.expires_at > Utc::now()))
    }
}
