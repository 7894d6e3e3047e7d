//! Ed25519 keys for access tokens: one private key signs, public keys verify.
//!
//! Only the auth service holds a [`SigningKey`]; every other service and the
//! gateway hold a [`KeySet`] of [`VerifyingKey`]s, so a compromised service
//! cannot mint tokens. Keys are parsed once, at start-up, into the form
//! `jsonwebtoken` verifies with, because verification runs on every request.
//! No key type prints key material: `Debug` shows the `kid` only.

use std::collections::HashMap;
use std::fmt;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use jsonwebtoken::{DecodingKey, EncodingKey};

/// A key could not be loaded. Messages name the `kid`, never the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Tokens name their key by `kid`, so it must not be empty.
    #[error("a key id (kid) must not be empty")]
    EmptyKid,
    /// The PEM is not a PKCS#8 `PRIVATE KEY` holding an Ed25519 key.
    #[error("key {kid}: not an Ed25519 private key in PKCS#8 PEM")]
    InvalidPrivateKey {
        /// The key id it was loaded under.
        kid: String,
    },
    /// The PEM is not a `PUBLIC KEY` (SubjectPublicKeyInfo) holding an
    /// Ed25519 key.
    #[error("key {kid}: not an Ed25519 public key in SPKI PEM")]
    InvalidPublicKey {
        /// The key id it was loaded under.
        kid: String,
    },
    /// Re-encoding a parsed key failed (not expected with valid keys).
    #[error("key {kid}: could not be encoded")]
    Encoding {
        /// The key id it was loaded under.
        kid: String,
    },
}

fn checked_kid(kid: impl Into<String>) -> Result<String, KeyError> {
    let kid = kid.into();
    if kid.is_empty() {
        return Err(KeyError::EmptyKid);
    }
    Ok(kid)
}

/// The private key that signs access tokens, with its `kid`.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    verifying: VerifyingKey,
    public_pem: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads an Ed25519 private key from PKCS#8 PEM (`-----BEGIN PRIVATE
    /// KEY-----`, as `openssl genpkey -algorithm ed25519` writes it).
    pub fn from_pkcs8_pem(kid: impl Into<String>, pem: &str) -> Result<Self, KeyError> {
        let kid = checked_kid(kid)?;
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map_err(|_| KeyError::InvalidPrivateKey { kid: kid.clone() })?;
        Self::from_dalek(kid, &key)
    }

    /// A fresh random key from the operating system's generator, for
    /// development and tests; production keys come from configuration.
    pub fn generate(kid: impl Into<String>) -> Result<Self, KeyError> {
        let kid = checked_kid(kid)?;
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        Self::from_dalek(kid, &key)
    }

    fn from_dalek(kid: String, key: &ed25519_dalek::SigningKey) -> Result<Self, KeyError> {
        let encoding_failed = || KeyError::Encoding { kid: kid.clone() };
        // jsonwebtoken signs EdDSA with the PKCS#8 DER document.
        let der = key.to_pkcs8_der().map_err(|_| encoding_failed())?;
        let public = key.verifying_key();
        let public_pem = public
            .to_public_key_pem(LineEnding::LF)
            .map_err(|_| encoding_failed())?;
        Ok(Self {
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            verifying: VerifyingKey::from_dalek(kid.clone(), &public),
            public_pem,
            kid,
        })
    }

    /// The key id written into the `kid` header of every token it signs.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The matching public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`),
    /// to publish to the verifying services.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// The matching public key, under the same `kid`.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.verifying.clone()
    }

    pub(crate) fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }
}

/// A public key that verifies access tokens, with its `kid`.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: String,
    decoding: DecodingKey,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// Loads an Ed25519 public key from SPKI PEM (`-----BEGIN PUBLIC
    /// KEY-----`). Only Ed25519 keys are accepted, so an RSA or EC key
    /// cannot be slipped into the set.
    pub fn from_public_pem(kid: impl Into<String>, pem: &str) -> Result<Self, KeyError> {
        let kid = checked_kid(kid)?;
        let key = ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
            .map_err(|_| KeyError::InvalidPublicKey { kid: kid.clone() })?;
        Ok(Self::from_dalek(kid, &key))
    }

    fn from_dalek(kid: String, key: &ed25519_dalek::VerifyingKey) -> Self {
        Self {
            // Despite its name, `from_ed_der` takes the raw 32-byte public
            // key, which is what jsonwebtoken's EdDSA verifier reads.
            decoding: DecodingKey::from_ed_der(key.as_bytes()),
            kid,
        }
    }

    /// The key id tokens name in their `kid` header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }
}

/// The public keys a verifier trusts, by `kid`.
///
/// Rotation: add the new key everywhere, then switch the auth service to
/// sign with it; tokens signed with the old key keep verifying until the
/// old key is removed (after the longest token lifetime has passed).
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, VerifyingKey>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&str> = self.kids().collect();
        kids.sort_unstable();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

impl KeySet {
    /// An empty set, which verifies nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key`, replacing and returning a key with the same `kid`.
    pub fn insert(&mut self, key: VerifyingKey) -> Option<VerifyingKey> {
        self.keys.insert(key.kid.clone(), key)
    }

    /// The set with `key` added (builder form of [`insert`](Self::insert)).
    pub fn with(mut self, key: VerifyingKey) -> Self {
        self.insert(key);
        self
    }

    /// Removes the key `kid`; tokens naming it stop verifying.
    pub fn remove(&mut self, kid: &str) -> Option<VerifyingKey> {
        self.keys.remove(kid)
    }

    /// The key `kid`, if trusted.
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }

    /// The trusted key ids, in no particular order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl FromIterator<VerifyingKey> for KeySet {
    fn from_iter<I: IntoIterator<Item = VerifyingKey>>(iter: I) -> Self {
        let mut set = Self::new();
        for key in iter {
            set.insert(key);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private_pem() -> String {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string()
    }

    #[test]
    fn loads_a_pkcs8_private_key_and_derives_its_public_key() {
        let pem = private_pem();
        let key = SigningKey::from_pkcs8_pem("2024-01", &pem).unwrap();
        assert_eq!(key.kid(), "2024-01");
        assert!(key.public_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
        let again = SigningKey::from_pkcs8_pem("2024-01", &pem).unwrap();
        assert_eq!(key.public_pem(), again.public_pem());
        let public = VerifyingKey::from_public_pem("2024-01", key.public_pem()).unwrap();
        assert_eq!(public.kid(), "2024-01");
    }

    #[test]
    fn rejects_bad_pems_and_empty_kids() {
        let signing = SigningKey::generate("k").unwrap();
        assert_eq!(
            SigningKey::from_pkcs8_pem("k", signing.public_pem()).unwrap_err(),
            KeyError::InvalidPrivateKey { kid: "k".into() }
        );
        assert_eq!(
            VerifyingKey::from_public_pem("k", &private_pem()).unwrap_err(),
            KeyError::InvalidPublicKey { kid: "k".into() }
        );
        assert!(VerifyingKey::from_public_pem("k", "not a pem").is_err());
        assert_eq!(SigningKey::generate("").unwrap_err(), KeyError::EmptyKid);
        assert_eq!(
            VerifyingKey::from_public_pem("", signing.public_pem()).unwrap_err(),
            KeyError::EmptyKid
        );
    }

    #[test]
    fn debug_never_shows_key_material() {
        let pem = private_pem();
        let signing = SigningKey::from_pkcs8_pem("kid-1", &pem).unwrap();
        let verifying = signing.verifying_key();
        let set = KeySet::new().with(verifying.clone());
        let body = |pem: &str| {
            pem.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>()
        };
        for debug in [
            format!("{signing:?}"),
            format!("{signing:#?}"),
            format!("{verifying:?}"),
            format!("{set:?}"),
        ] {
            assert!(debug.contains("kid-1"), "{debug}");
            assert!(!debug.contains(&body(&pem)), "{debug}");
            assert!(!debug.contains(&body(signing.public_pem())), "{debug}");
            assert!(!debug.contains("BEGIN"), "{debug}");
        }
    }

    #[test]
    fn key_set_replaces_and_removes_by_kid() {
        let old = SigningKey::generate("old").unwrap().verifying_key();
        let new = SigningKey::generate("new").unwrap().verifying_key();
        let mut set: KeySet = [old.clone(), new].into_iter().collect();
        assert_eq!(set.len(), 2);
        assert!(set.insert(old).is_some(), "same kid replaces");
        assert_eq!(set.len(), 2);
        assert!(set.remove("old").is_some());
        assert!(set.get("old").is_none());
        assert_eq!(set.kids().collect::<Vec<_>>(), ["new"]);
        assert!(!set.is_empty());
    }
}
