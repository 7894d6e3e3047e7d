//! One-time codes: six digits from the operating system's CSPRNG, kept only
//! as an HMAC-SHA256 under a random per-code key, and compared in constant
//! time.
//!
//! Six digits are a million possibilities: the hash keeps a database copy
//! from handing out live codes at a glance, while the 5-minute expiry and the
//! try limit are what make guessing useless.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::{Rng as _, RngCore as _};
use sha2::Sha256;

/// Digits in a code.
pub const CODE_DIGITS: usize = 6;
/// Shortest and longest purpose accepted.
const PURPOSE_MIN: usize = 2;
const PURPOSE_MAX: usize = 32;
/// Bytes of the per-code HMAC key.
const SALT_BYTES: usize = 16;

/// What a code is for (`login`, `withdrawal`, ...): a short lower-case
/// word, so it can be part of a stored id and a notification template name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purpose(String);

/// Why a purpose was refused (the message never echoes it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("must be {PURPOSE_MIN} to {PURPOSE_MAX} lower-case letters, digits or '_', starting with a letter")]
pub struct InvalidPurpose;

impl Purpose {
    /// Accepts `[a-z][a-z0-9_]{1,31}`.
    pub fn parse(raw: &str) -> Result<Self, InvalidPurpose> {
        let ok = (PURPOSE_MIN..=PURPOSE_MAX).contains(&raw.len())
            && raw.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidPurpose)
        }
    }

    /// The purpose as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A freshly drawn code. `Debug` hides the digits, so the code cannot
/// reach a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct OtpSecret(String);

impl fmt::Debug for OtpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpSecret(******)")
    }
}

impl OtpSecret {
    /// Six uniformly drawn digits from the OS CSPRNG.
    pub fn generate() -> Self {
        let n: u32 = rand::rngs::OsRng.gen_range(0..1_000_000);
        Self(format!("{n:06}"))
    }

    /// The digits, for the one place they leave: the notification event.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Whether `raw` has the shape of a code (six ASCII digits); anything else
/// cannot match and is refused without touching the store.
pub fn is_code_shaped(raw: &str) -> bool {
    raw.len() == CODE_DIGITS && raw.bytes().all(|b| b.is_ascii_digit())
}

/// A fresh random per-code key, base64url.
pub fn new_salt() -> String {
    let mut bytes = [0u8; SALT_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The MAC over everything the code is bound to: the user, the purpose and
/// the digits, so a stored hash cannot be moved to another user or purpose.
fn mac(salt: &[u8], user_id: &str, purpose: &str, code: &str) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(salt).ok()?;
    for part in [user_id, purpose, code] {
        mac.update(part.as_bytes());
        mac.update(&[0]);
    }
    Some(mac)
}

/// What is stored for `code`: base64url(HMAC-SHA256(salt, user ‖ purpose ‖
/// code)). `None` only for a salt that is not base64url.
pub fn hash_code(salt: &str, user_id: &str, purpose: &str, code: &str) -> Option<String> {
    let salt = URL_SAFE_NO_PAD.decode(salt).ok()?;
    let mac = mac(&salt, user_id, purpose, code)?;
    Some(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// Whether `code` is the one `stored` was made from, compared in constant
/// time (`hmac`'s `verify_slice`).
pub fn code_matches(salt: &str, stored: &str, user_id: &str, purpose: &str, code: &str) -> bool {
    let (Ok(salt), Ok(stored)) = (URL_SAFE_NO_PAD.decode(salt), URL_SAFE_NO_PAD.decode(stored))
    else {
        return false;
    };
    mac(&salt, user_id, purpose, code).is_some_and(|mac| mac.verify_slice(&stored).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_are_short_lower_case_words() {
        for good in ["login", "withdrawal", "email_change", "p2"] {
            assert_eq!(Purpose::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "x",
            "Login",
            "2fa",
            "with space",
            "a:b",
            "../etc",
            r#"{"$gt":""}"#,
            &"a".repeat(33),
        ] {
            assert_eq!(Purpose::parse(bad), Err(InvalidPurpose), "{bad}");
        }
    }

    #[test]
    fn codes_are_six_digits_and_hidden_from_debug() {
        for _ in 0..100 {
            let code = OtpSecret::generate();
            assert!(is_code_shaped(code.expose()), "{}", code.expose());
            assert!(!format!("{code:?}").contains(code.expose()));
        }
        for bad in ["", "12345", "1234567", "12345a", "١٢٣٤٥٦"] {
            assert!(!is_code_shaped(bad), "{bad}");
        }
    }

    #[test]
    fn hashes_bind_the_code_to_its_salt_user_and_purpose() {
        let salt = new_salt();
        let stored = hash_code(&salt, "u1", "login", "123456").unwrap();
        assert!(!stored.contains("123456"));
        assert!(code_matches(&salt, &stored, "u1", "login", "123456"));
        assert!(!code_matches(&salt, &stored, "u1", "login", "123457"));
        assert!(!code_matches(&salt, &stored, "u2", "login", "123456"));
        assert!(!code_matches(&salt, &stored, "u1", "withdrawal", "123456"));
        assert!(!code_matches(&new_salt(), &stored, "u1", "login", "123456"));
        assert_ne!(
            hash_code(&new_salt(), "u1", "login", "123456").unwrap(),
            stored,
            "per-code salt"
        );
        assert!(!code_matches("***", &stored, "u1", "login", "123456"));
    }
}
