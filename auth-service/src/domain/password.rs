//! Passwords: the policy a new password must meet, and argon2id hashing.
//!
//! Hashing is deliberately slow (OWASP parameters: 19 MiB, 2 passes, 1 lane),
//! so it runs on the blocking pool, and the policy, which is cheap, always
//! runs first: a megabyte of "password" is refused before argon2 sees it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use service_core::ApiError;

use crate::codes;

/// Fewer characters than this is weak (the API contract's floor).
pub const MIN_CHARS: usize = 10;
/// More characters than this is not a password but a denial-of-service
/// attempt on the hasher.
pub const MAX_CHARS: usize = 256;
/// Bytes checked before counting characters, so even counting stays cheap.
const MAX_BYTES: usize = MAX_CHARS * 4;

/// OWASP's argon2id recommendation: m = 19 MiB, t = 2, p = 1.
const MEMORY_KIB: u32 = 19 * 1024;
const ITERATIONS: u32 = 2;
const PARALLELISM: u32 = 1;

static COMMON: LazyLock<HashSet<String>> = LazyLock::new(|| {
    include_str!("../../data/common-passwords.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_lowercase)
        .collect()
});

/// Why a password was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyViolation {
    /// Over [`MAX_CHARS`]: an input limit, reported as `MSCoreValidation`.
    #[error("password must be at most {MAX_CHARS} characters")]
    TooLong,
    /// Under [`MIN_CHARS`]: `MSAuthWeakPassword`.
    #[error("password must be at least {MIN_CHARS} characters")]
    TooShort,
    /// On the list of the most common passwords: `MSAuthWeakPassword`.
    #[error("password is too common")]
    TooCommon,
}

impl PolicyViolation {
    /// The client-facing error for the password in input field `field`.
    /// The message never repeats the password.
    pub fn into_api_error(self, field: &str) -> ApiError {
        match self {
            Self::TooLong => ApiError::validation(field, self.to_string()),
            Self::TooShort | Self::TooCommon => {
                ApiError::new(codes::WEAK_PASSWORD, self.to_string()).with_extension("field", field)
            }
        }
    }
}

/// Whether `password` may be hashed at all (checked on every input that is
/// about to be hashed or verified).
pub fn check_length_limit(password: &str) -> Result<(), PolicyViolation> {
    if password.len() > MAX_BYTES || password.chars().count() > MAX_CHARS {
        return Err(PolicyViolation::TooLong);
    }
    Ok(())
}

/// Whether `password` is acceptable as a new password: not over-long, at
/// least [`MIN_CHARS`] characters, and not a common password (compared
/// case-insensitively).
pub fn check_policy(password: &str) -> Result<(), PolicyViolation> {
    check_length_limit(password)?;
    if password.chars().count() < MIN_CHARS {
        return Err(PolicyViolation::TooShort);
    }
    if COMMON.contains(&password.to_lowercase()) {
        return Err(PolicyViolation::TooCommon);
    }
    Ok(())
}

/// A hashing failure: a bug or an exhausted machine, never the client's.
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Hashes and verifies passwords with argon2id off the async runtime.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    /// A hash of a random password, verified against when a login names an
    /// unknown email so that answer costs what a wrong password costs.
    dummy_hash: Arc<str>,
    hashes: Arc<AtomicU64>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A hasher with the OWASP parameters; computes its dummy hash once.
    pub async fn new() -> Result<Self, HashError> {
        let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
            .map_err(|err| HashError(err.to_string()))?;
        let mut hasher = Self {
            params,
            dummy_hash: Arc::from(""),
            hashes: Arc::new(AtomicU64::new(0)),
        };
        let random = SecretString::from(uuid::Uuid::new_v4().to_string());
        hasher.dummy_hash = Arc::from(hasher.hash_unchecked(random).await?);
        hasher.hashes.store(0, Ordering::Relaxed);
        Ok(hasher)
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// How many hashes this hasher has computed (verifications included);
    /// lets tests prove that refused input never reached argon2.
    pub fn hash_count(&self) -> u64 {
        self.hashes.load(Ordering::Relaxed)
    }

    /// Checks `password` against the policy, then hashes it (PHC string).
    /// Refused passwords are never hashed.
    pub async fn hash_new(&self, password: SecretString) -> Result<String, HashOutcome> {
        check_policy(password.expose_secret()).map_err(HashOutcome::Refused)?;
        self.hash_unchecked(password)
            .await
            .map_err(HashOutcome::Failed)
    }

    async fn hash_unchecked(&self, password: SecretString) -> Result<String, HashError> {
        let argon2 = self.argon2();
        self.hashes.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            argon2
                .hash_password(password.expose_secret().as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|err| HashError(err.to_string()))
        })
        .await
        .map_err(|err| HashError(err.to_string()))?
    }

    /// Whether `password` matches `hash`; with `None` (unknown user) it
    /// verifies against the dummy hash and answers `false`, doing the same
    /// work. Over-long input is `false` without hashing.
    pub async fn verify(
        &self,
        password: SecretString,
        hash: Option<&str>,
    ) -> Result<bool, HashError> {
        if check_length_limit(password.expose_secret()).is_err() {
            return Ok(false);
        }
        let known = hash.is_some();
        let hash = hash.map_or_else(|| self.dummy_hash.to_string(), str::to_owned);
        let argon2 = self.argon2();
        self.hashes.fetch_add(1, Ordering::Relaxed);
        let matches = tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&hash).map_err(|err| HashError(err.to_string()))?;
            Ok::<bool, HashError>(
                argon2
                    .verify_password(password.expose_secret().as_bytes(), &parsed)
                    .is_ok(),
            )
        })
        .await
        .map_err(|err| HashError(err.to_string()))??;
        Ok(known && matches)
    }
}

/// Why [`PasswordHasher::hash_new`] produced no hash.
#[derive(Debug, thiserror::Error)]
pub enum HashOutcome {
    /// The password breaks the policy.
    #[error(transparent)]
    Refused(PolicyViolation),
    /// Hashing itself failed.
    #[error(transparent)]
    Failed(HashError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn the_policy_refuses_short_long_and_common_passwords() {
        assert_eq!(check_policy("short1!"), Err(PolicyViolation::TooShort));
        assert_eq!(check_policy("Password123"), Err(PolicyViolation::TooCommon));
        assert_eq!(check_policy("QWERTYUIOP"), Err(PolicyViolation::TooCommon));
        assert_eq!(
            check_policy(&"a".repeat(MAX_CHARS + 1)),
            Err(PolicyViolation::TooLong)
        );
        assert_eq!(check_policy("correct horse battery staple"), Ok(()));
        assert_eq!(check_policy(&"é".repeat(MAX_CHARS)), Ok(()));
        assert!(COMMON.len() >= 1000, "{}", COMMON.len());
    }

    #[test]
    fn violations_map_to_their_codes_without_the_password() {
        let long = PolicyViolation::TooLong.into_api_error("input.password");
        assert_eq!(long.code(), service_core::codes::VALIDATION);
        let weak = PolicyViolation::TooCommon.into_api_error("input.password");
        assert_eq!(weak.code(), codes::WEAK_PASSWORD);
        assert_eq!(weak.extensions()["field"], "input.password");
    }

    #[tokio::test]
    async fn a_megabyte_password_is_refused_before_hashing() {
        let hasher = PasswordHasher::new().await.unwrap();
        let huge = secret(&"x".repeat(1024 * 1024));
        let outcome = hasher.hash_new(huge.clone()).await;
        assert!(matches!(
            outcome,
            Err(HashOutcome::Refused(PolicyViolation::TooLong))
        ));
        assert!(!hasher.verify(huge, None).await.unwrap());
        assert_eq!(hasher.hash_count(), 0, "argon2 never ran");
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let hasher = PasswordHasher::new().await.unwrap();
        let hash = hasher
            .hash_new(secret("a sturdy passphrase"))
            .await
            .unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(hasher
            .verify(secret("a sturdy passphrase"), Some(&hash))
            .await
            .unwrap());
        assert!(!hasher
            .verify(secret("another passphrase"), Some(&hash))
            .await
            .unwrap());
        assert!(!hasher
            .verify(secret("a sturdy passphrase"), None)
            .await
            .unwrap());
    }
}
