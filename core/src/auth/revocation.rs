//! The session revocation list: access tokens of ended sessions stop working
//! everywhere, not only in the auth service.
//!
//! An access token is a bearer credential valid until its `exp`; ending its
//! session (logout, `logoutAll`, a password change, refresh-token reuse, an
//! operator disabling the account) must also end the token. The auth service
//! announces every ended session as a [`SessionRevoked`] event, staged in its
//! outbox in the same transaction as the change; every process that verifies
//! tokens follows those events ([`RevocationList::follow`]) into an
//! in-memory list that [`TokenVerifier`](super::TokenVerifier) consults after
//! the signature and time checks. Entries are forgotten once every token
//! they could match has expired, so the list stays as small as the number of
//! revocations in one access-token lifetime.
//!
//! Checking is a hash-map lookup that cannot fail; what can fail is hearing
//! about a revocation (see [`EventBus::broadcast`]): the list then keeps
//! answering from what it knows. See `docs/decisions/0007-session-revocation.md`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::Claims;
use crate::events::{handler, DomainEvent, EventBus, EventError, HandlerError};

/// How long an entry outlives the expiry it was published with: at least
/// the verifiers' clock leeway (tokens are accepted that long past `exp`)
/// plus a margin for clock differences between the auth service and us.
pub const RETENTION_MARGIN: Duration = Duration::from_secs(5 * 60);

/// How far back a process that starts reads revocations it missed, when the
/// transport keeps them (Redis Streams). Far longer than any access-token
/// lifetime; entries whose tokens have all expired are skipped on arrival.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// Sessions were ended (auth): their access tokens must be refused by every
/// service and the gateway until `tokens_expire_by`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRevoked {
    /// Whose session(s) ended.
    pub user_id: String,
    /// The ended session. `None` ends every session of the user: tokens
    /// issued at or before `revoked_at` are refused (an account disabled).
    pub session_id: Option<String>,
    /// When the session(s) ended.
    pub revoked_at: DateTime<Utc>,
    /// No access token the revocation can match lives past this instant
    /// (the revocation time plus the longest access-token lifetime).
    pub tokens_expire_by: DateTime<Utc>,
}

impl DomainEvent for SessionRevoked {
    const TYPE: &'static str = "auth.session.revoked";
}

/// One revocation, kept until `until` (Unix seconds).
#[derive(Clone, Copy, Debug)]
struct UserWide {
    /// Tokens with `iat` at or before this (Unix seconds) are refused.
    issued_up_to: i64,
    until: i64,
}

#[derive(Clone, Debug)]
struct SessionEntry {
    user_id: String,
    until: i64,
}

#[derive(Debug, Default)]
struct Entries {
    sessions: HashMap<String, SessionEntry>,
    users: HashMap<String, UserWide>,
}

impl Entries {
    fn prune(&mut self, now: i64) {
        self.sessions.retain(|_, e| e.until > now);
        self.users.retain(|_, e| e.until > now);
    }
}

/// Sessions whose access tokens must be refused, each until no token of
/// it can still be valid. Cheap to share behind an `Arc`; every method is
/// safe to call from any thread. `Debug` shows only the size.
pub struct RevocationList {
    entries: RwLock<Entries>,
    /// Counts the revocations applied, for [`changes`](Self::changes).
    applied: watch::Sender<u64>,
}

impl Default for RevocationList {
    fn default() -> Self {
        Self {
            entries: RwLock::default(),
            applied: watch::Sender::new(0),
        }
    }
}

impl fmt::Debug for RevocationList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationList")
            .field("entries", &self.len())
            .finish()
    }
}

impl RevocationList {
    /// An empty list; [`follow`](Self::follow) fills it from the bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty list that follows `bus` from now on, after reading the
    /// revocations of the last [`REPLAY_WINDOW`] the transport still holds.
    /// The subscription ends when the bus shuts down. An error here (Redis
    /// unreachable at start-up) must stop the start-up: a verifier that
    /// never hears of revocations would accept ended sessions silently.
    pub async fn follow(bus: &EventBus) -> Result<Arc<Self>, EventError> {
        let list = Arc::new(Self::new());
        let target = Arc::clone(&list);
        bus.broadcast(
            SessionRevoked::TYPE,
            REPLAY_WINDOW,
            handler(move |event| {
                let target = Arc::clone(&target);
                async move {
                    let revoked = SessionRevoked::from_event(&event)?;
                    target.apply(&revoked, Utc::now());
                    Ok::<(), HandlerError>(())
                }
            }),
        )
        .await?;
        Ok(list)
    }

    /// Records `revoked` as heard at `now`; an entry whose tokens have all
    /// expired (with the margin) is not kept. Applying one twice is harmless.
    pub fn apply(&self, revoked: &SessionRevoked, now: DateTime<Utc>) {
        let now = now.timestamp();
        let margin = i64::try_from(RETENTION_MARGIN.as_secs()).unwrap_or(i64::MAX);
        let until = revoked.tokens_expire_by.timestamp().saturating_add(margin);
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        entries.prune(now);
        if until <= now {
            return;
        }
        self.applied.send_modify(|applied| *applied += 1);
        match &revoked.session_id {
            Some(session_id) => {
                let entry = entries
                    .sessions
                    .entry(session_id.clone())
                    .or_insert_with(|| SessionEntry {
                        user_id: revoked.user_id.clone(),
                        until,
                    });
                entry.until = entry.until.max(until);
            }
            None => {
                let issued_up_to = revoked.revoked_at.timestamp();
                let entry = entries
                    .users
                    .entry(revoked.user_id.clone())
                    .or_insert(UserWide {
                        issued_up_to,
                        until,
                    });
                entry.issued_up_to = entry.issued_up_to.max(issued_up_to);
                entry.until = entry.until.max(until);
            }
        }
    }

    /// Whether the token with `claims` belongs to a revoked session (or to a
    /// user whose tokens up to its issue time were all revoked), at `now`.
    pub fn is_revoked(&self, claims: &Claims, now: DateTime<Utc>) -> bool {
        let now = now.timestamp();
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let session = entries
            .sessions
            .get(&claims.sid)
            .is_some_and(|e| e.until > now && e.user_id == claims.sub);
        let user = entries
            .users
            .get(&claims.sub)
            .is_some_and(|e| e.until > now && claims.iat <= e.issued_up_to);
        session || user
    }

    /// Wakes its holder (`changed()`) after each revocation applied from
    /// then on, so that whatever holds a token for long (a subscription)
    /// can check it again.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// How many revocations are remembered (expired ones included until the
    /// next change prunes them).
    pub fn len(&self) -> usize {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries.sessions.len() + entries.users.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::BusConfig;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    const T0: i64 = 1_800_000_000;
    const TTL: i64 = 900;

    fn claims(user: &str, session: &str, iat: i64) -> Claims {
        Claims {
            sub: user.into(),
            tid: "t1".into(),
            roles: vec!["user".into()],
            permissions: vec![],
            sid: session.into(),
            iss: "issuer".into(),
            aud: "audience".into(),
            exp: iat + TTL,
            iat,
            nbf: iat,
            jti: uuid::Uuid::new_v4().to_string(),
        }
    }

    fn session_ended(user: &str, session: &str, at_secs: i64) -> SessionRevoked {
        SessionRevoked {
            user_id: user.into(),
            session_id: Some(session.into()),
            revoked_at: at(at_secs),
            tokens_expire_by: at(at_secs + TTL),
        }
    }

    fn user_disabled(user: &str, at_secs: i64) -> SessionRevoked {
        SessionRevoked {
            session_id: None,
            ..session_ended(user, "", at_secs)
        }
    }

    #[test]
    fn one_session_is_revoked_and_the_others_are_not() {
        let list = RevocationList::new();
        list.apply(&session_ended("alice", "s1", T0), at(T0));
        assert!(list.is_revoked(&claims("alice", "s1", T0 - 10), at(T0 + 1)));
        assert!(!list.is_revoked(&claims("alice", "s2", T0 - 10), at(T0 + 1)));
        assert!(!list.is_revoked(&claims("bob", "s3", T0 - 10), at(T0 + 1)));
        // A session id names one user's session: another user's token that
        // happened to carry it is not this entry's business.
        assert!(!list.is_revoked(&claims("bob", "s1", T0 - 10), at(T0 + 1)));
    }

    #[test]
    fn a_user_wide_revocation_covers_every_token_issued_up_to_it() {
        let list = RevocationList::new();
        list.apply(&user_disabled("alice", T0), at(T0));
        assert!(list.is_revoked(&claims("alice", "s1", T0 - 600), at(T0 + 1)));
        assert!(list.is_revoked(&claims("alice", "s2", T0), at(T0 + 1)));
        // A token issued after the revocation (the account enabled again
        // and a new login) is not covered.
        assert!(!list.is_revoked(&claims("alice", "s3", T0 + 1), at(T0 + 2)));
        assert!(!list.is_revoked(&claims("bob", "s1", T0 - 600), at(T0 + 1)));
    }

    #[test]
    fn entries_expire_after_the_tokens_they_match() {
        let list = RevocationList::new();
        list.apply(&session_ended("alice", "s1", T0), at(T0));
        list.apply(&user_disabled("bob", T0), at(T0));
        assert_eq!(list.len(), 2);
        let margin = RETENTION_MARGIN.as_secs() as i64;
        let last = T0 + TTL + margin - 1;
        assert!(list.is_revoked(&claims("alice", "s1", T0 - 1), at(last)));
        assert!(list.is_revoked(&claims("bob", "s9", T0 - 1), at(last)));
        let gone = T0 + TTL + margin;
        assert!(!list.is_revoked(&claims("alice", "s1", T0 - 1), at(gone)));
        assert!(!list.is_revoked(&claims("bob", "s9", T0 - 1), at(gone)));
        // The next change prunes what expired.
        list.apply(&session_ended("carol", "s5", gone), at(gone));
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn a_revocation_heard_after_its_tokens_expired_is_not_kept() {
        let list = RevocationList::new();
        let late = T0 + TTL + RETENTION_MARGIN.as_secs() as i64;
        list.apply(&session_ended("alice", "s1", T0), at(late));
        assert!(list.is_empty());
    }

    #[test]
    fn applying_twice_or_out_of_order_keeps_the_widest_entry() {
        let list = RevocationList::new();
        list.apply(&user_disabled("alice", T0 + 100), at(T0 + 100));
        list.apply(&user_disabled("alice", T0), at(T0 + 100));
        assert_eq!(list.len(), 1);
        assert!(list.is_revoked(&claims("alice", "s1", T0 + 50), at(T0 + 101)));
        list.apply(&session_ended("alice", "s1", T0), at(T0));
        list.apply(&session_ended("alice", "s1", T0), at(T0));
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn events_round_trip_through_the_catalog_shape() {
        let revoked = session_ended("alice", "s1", T0);
        let event = revoked.to_event("t1", Some("alice")).unwrap();
        assert_eq!(event.event_type, "auth.session.revoked");
        assert_eq!(event.data["sessionId"], "s1");
        assert_eq!(event.data["tokensExpireBy"], "2027-01-15T08:15:00Z");
        assert_eq!(SessionRevoked::from_event(&event).unwrap(), revoked);
    }

    #[tokio::test]
    async fn a_followed_bus_fills_the_list() {
        let bus = EventBus::in_process(BusConfig::default());
        let first = RevocationList::follow(&bus).await.unwrap();
        let second = RevocationList::follow(&bus).await.unwrap();
        let now = Utc::now().timestamp();
        let revoked = session_ended("alice", "s1", now);
        bus.emit_event(&revoked.to_event("t1", Some("alice")).unwrap())
            .await
            .unwrap();
        let token = claims("alice", "s1", now - 5);
        // Every follower hears every revocation (a broadcast, not a queue).
        for list in [&first, &second] {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !list.is_revoked(&token, Utc::now()) {
                assert!(tokio::time::Instant::now() < deadline, "never applied");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        bus.shutdown().await;
    }
}
