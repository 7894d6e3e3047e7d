//! Refresh tokens and the access tokens issued with them.
//!
//! A refresh token is `<session id>.<secret>`: the id finds the session in
//! one read, and only the SHA-256 of the 32-byte random secret is stored, so
//! a copy of the database cannot be replayed as tokens.

use std::fmt;

use access_engine::{AccessEngine, Effect, Subject};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// Longest refresh token accepted before any parsing.
const MAX_TOKEN_LEN: usize = 128;

/// An opaque refresh token as handed to a client. `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken {
    session_id: String,
    secret: String,
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshToken")
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

impl RefreshToken {
    /// A fresh token for session `session_id`.
    pub fn generate(session_id: &str) -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self {
            session_id: session_id.to_owned(),
            secret: URL_SAFE_NO_PAD.encode(bytes),
        }
    }

    /// Splits a token a client sent; `None` when it cannot be one of ours.
    pub fn parse(raw: &str) -> Option<Self> {
        if raw.len() > MAX_TOKEN_LEN {
            return None;
        }
        let (session_id, secret) = raw.split_once('.')?;
        let uuid_like = !session_id.is_empty()
            && session_id.len() <= 36
            && session_id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'-');
        let secret_ok = URL_SAFE_NO_PAD
            .decode(secret)
            .is_ok_and(|bytes| bytes.len() == 32);
        (uuid_like && secret_ok).then(|| Self {
            session_id: session_id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// The session the token belongs to.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// What the store keeps: base64url(SHA-256(secret)).
    pub fn hash(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.secret.as_bytes()))
    }

    /// The token that replaces this one at its rotation:
    /// base64url(HMAC-SHA256(`key`, secret)). Deterministic, so concurrent
    /// refreshes of one token inside the grace window all receive the same
    /// successor (see [`super::sessions`]); unpredictable without `key`, so
    /// holding a token does not reveal the next one.
    pub fn successor(&self, key: &SuccessorKey) -> Self {
        let mut mac = key.mac();
        mac.update(self.secret.as_bytes());
        Self {
            session_id: self.session_id.clone(),
            secret: URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()),
        }
    }

    /// The token to hand to the client (the only place the secret leaves).
    pub fn expose(&self) -> String {
        format!("{}.{}", self.session_id, self.secret)
    }
}

/// The server-side key that derives a refresh token's successor. Every
/// instance must hold the same one (it is derived from the JWT signing key,
/// which they share), or concurrent refreshes served by different instances
/// would disagree on the successor.
#[derive(Clone)]
pub struct SuccessorKey([u8; 32]);

impl fmt::Debug for SuccessorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SuccessorKey(..)")
    }
}

impl SuccessorKey {
    /// Derived from secret key material (the signing key's PEM) with a
    /// domain-separation label, so it is never the signing key itself.
    pub fn derive(material: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"auth-service refresh successor v1\0");
        hasher.update(material);
        Self(hasher.finalize().into())
    }

    /// A random key, for a process whose signing key is itself ephemeral.
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; 32 bytes cannot be refused.
        match <Hmac<Sha256> as Mac>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        }
    }
}

/// The allow rules `roles` grant, flattened to URN strings for the
/// `permissions` claim (informational: services decide with the engine).
pub fn permissions_for(
    access: &AccessEngine,
    user_id: &str,
    tenant: &str,
    roles: &[String],
) -> Vec<String> {
    access
        .list_permissions(&Subject {
            id: user_id,
            tenant,
            roles,
        })
        .into_iter()
        .filter(|p| p.effect == Effect::Allow)
        .map(|p| p.rule.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_hash_stably() {
        let token = RefreshToken::generate("0190c0de-0000-7000-8000-000000000001");
        let parsed = RefreshToken::parse(&token.expose()).unwrap();
        assert_eq!(parsed, token);
        assert_eq!(parsed.hash(), token.hash());
        assert_ne!(
            token.hash(),
            RefreshToken::generate(token.session_id()).hash()
        );
        assert!(!format!("{token:?}").contains(&token.secret));
    }

    #[test]
    fn successors_are_deterministic_per_key_and_parse() {
        let key = SuccessorKey::derive(b"pem");
        let token = RefreshToken::generate("0190c0de-0000-7000-8000-000000000001");
        let next = token.successor(&key);
        assert_eq!(next, token.successor(&SuccessorKey::derive(b"pem")));
        assert_ne!(next, token.successor(&SuccessorKey::derive(b"other pem")));
        assert_ne!(next.hash(), token.hash());
        assert_eq!(next.session_id(), token.session_id());
        assert_eq!(RefreshToken::parse(&next.expose()), Some(next));
    }

    #[test]
    fn garbage_is_not_a_token() {
        for bad in [
            "",
            "abc",
            "x.y",
            "../etc.passwd",
            &"a".repeat(500),
            "zz.AAAA",
        ] {
            assert!(RefreshToken::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn users_get_the_user_role_permissions() {
        let engine = access_engine::default_policy();
        let permissions = permissions_for(&engine, "u1", "t1", &["user".to_owned()]);
        assert!(
            permissions.iter().any(|p| p == "user:read:own"),
            "{permissions:?}"
        );
    }
}
