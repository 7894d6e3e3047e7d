//! Tokens that already passed every check, so a client sending the same
//! token with each request pays for its signature once per process.
//!
//! Only a token that verified is remembered, keyed by its exact text (not
//! by a hash of it: a collision would let one token stand for another),
//! together with its claims. A hit still checks expiry against the clock,
//! and the verifier still consults the revocation list afterwards; what a
//! hit skips is decoding and the Ed25519 signature check. At most
//! `capacity` tokens are kept: when full, the expired ones are dropped,
//! and if none had expired, all of them are (verifying again is slower,
//! never wrong). Only verified tokens get in, so no client can fill the
//! cache with garbage; the capacity bounds what many live sessions cost.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::jwt::Claims;

/// Verified tokens and their claims; see the module documentation.
#[derive(Debug)]
pub(super) struct VerifiedTokens {
    capacity: usize,
    entries: Mutex<HashMap<Box<str>, Claims>>,
}

impl VerifiedTokens {
    /// An empty cache holding at most `capacity` tokens.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The claims of `token` if it verified before and, at `now` (seconds
    /// since the epoch) with `leeway` seconds of grace, has not expired.
    pub(super) fn get(&self, token: &str, now: i64, leeway: i64) -> Option<Claims> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let claims = entries.get(token)?;
        // The rule `jsonwebtoken` applies: expired once `exp < now - leeway`.
        (claims.exp >= now.saturating_sub(leeway)).then(|| claims.clone())
    }

    /// Remembers that `token` verified with `claims`.
    pub(super) fn insert(&self, token: &str, claims: &Claims, now: i64, leeway: i64) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity {
            let cutoff = now.saturating_sub(leeway);
            entries.retain(|_, claims| claims.exp >= cutoff);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(token.into(), claims.clone());
    }

    /// How many tokens are remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: "user-1".into(),
            tid: "tenant-1".into(),
            roles: vec!["user".into()],
            permissions: vec![],
            sid: "session-1".into(),
            iss: "issuer".into(),
            aud: "audience".into(),
            exp,
            iat: exp - 900,
            nbf: exp - 900,
            jti: "jti-1".into(),
        }
    }

    #[test]
    fn a_hit_is_the_exact_token_and_only_until_it_expires() {
        let cache = VerifiedTokens::new(8);
        cache.insert("a.b.c", &claims(1_000), 500, 30);
        assert_eq!(cache.get("a.b.c", 900, 30), Some(claims(1_000)));
        assert_eq!(cache.get("a.b.C", 900, 30), None, "another token");
        assert_eq!(cache.get("a.b.c", 1_030, 30), Some(claims(1_000)));
        assert_eq!(cache.get("a.b.c", 1_031, 30), None, "expired");
    }

    #[test]
    fn a_full_cache_drops_expired_tokens_first_and_never_grows_past_capacity() {
        let cache = VerifiedTokens::new(3);
        cache.insert("old", &claims(100), 0, 0);
        cache.insert("live-1", &claims(1_000), 0, 0);
        cache.insert("live-2", &claims(1_000), 0, 0);
        cache.insert("live-3", &claims(1_000), 500, 0);
        assert_eq!(cache.len(), 3);
        assert!(cache.get("old", 50, 0).is_none(), "the expired one went");
        assert!(cache.get("live-1", 500, 0).is_some());

        cache.insert("live-4", &claims(1_000), 500, 0);
        assert_eq!(cache.len(), 1, "nothing had expired, so all went");
        assert!(cache.get("live-4", 500, 0).is_some());
    }
}
