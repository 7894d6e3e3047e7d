//! Access tokens: EdDSA-signed JWTs issued by the auth service and verified
//! by every other service on every request.
//!
//! One algorithm is pinned, EdDSA (Ed25519), and a token's header is read
//! before anything else so that `alg: none`, HMAC tokens forged with a
//! public key as the secret (the HS/RS confusion attack) and any other
//! algorithm are refused by name, before a key is even looked up. The key is
//! chosen by the header's `kid` from a [`KeySet`], which is what makes key
//! rotation possible. Each failure has its own [`TokenError`] variant for
//! logs and tests; clients only ever see "expired" or "invalid".

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::{KeySet, SigningKey};
use super::revocation::RevocationList;
use super::verified::VerifiedTokens;
use crate::error::{codes, ApiError};

/// JWT segments are unpadded base64url; the strict engine also refuses
/// non-canonical trailing bits, as `jsonwebtoken` does.
fn b64_decode(segment: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(segment).ok()
}

#[cfg(test)]
fn b64_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The only algorithm tokens may use, as written in the `alg` header.
const PINNED_ALG: &str = "EdDSA";

/// Real tokens are well under 2 KiB; refusing anything much larger keeps a
/// hostile header from costing decoding work.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Attacker-chosen header values are echoed in errors (for logs) only up to
/// this many characters.
const MAX_ECHOED_CHARS: usize = 64;

/// Verified tokens each verifier remembers, so that a client's next
/// request with the same token skips the signature check. About 1 KiB
/// each; far more than the sessions one process serves at once.
const VERIFIED_TOKENS: usize = 16 * 1024;

/// What a token says, as signed by the auth service. Every claim is
/// required; unknown extra claims are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id.
    pub sub: String,
    /// The user's tenant.
    pub tid: String,
    /// The user's roles when the token was issued.
    pub roles: Vec<String>,
    /// The user's flattened permissions when the token was issued.
    pub permissions: Vec<String>,
    /// The session the token belongs to (for revocation).
    pub sid: String,
    /// Who issued the token; checked against [`JwtSettings::issuer`].
    pub iss: String,
    /// Who the token is for; checked against [`JwtSettings::audience`].
    pub aud: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Issue time, seconds since the Unix epoch.
    pub iat: i64,
    /// Not valid before, seconds since the Unix epoch (equal to `iat`).
    pub nbf: i64,
    /// The token's unique id (a UUID v4), for revocation lists and logs.
    pub jti: String,
}

/// Issuer, audience and lifetimes shared by the issuing and verifying sides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtSettings {
    /// The `iss` written into tokens and required of them.
    pub issuer: String,
    /// The `aud` written into tokens and required of them.
    pub audience: String,
    /// How long an issued access token is valid (whole seconds count).
    pub access_ttl: Duration,
    /// Clock skew tolerated on `exp` and `nbf` when verifying (whole
    /// seconds count).
    pub leeway: Duration,
}

impl JwtSettings {
    /// The access-token lifetime used by [`JwtSettings::new`]: 15 minutes.
    pub const DEFAULT_ACCESS_TTL: Duration = Duration::from_secs(15 * 60);
    /// The leeway used by [`JwtSettings::new`]: 30 seconds.
    pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

    /// Settings with the default lifetime and leeway.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            access_ttl: Self::DEFAULT_ACCESS_TTL,
            leeway: Self::DEFAULT_LEEWAY,
        }
    }

    /// The same settings with another access-token lifetime.
    pub fn with_access_ttl(mut self, access_ttl: Duration) -> Self {
        self.access_ttl = access_ttl;
        self
    }

    /// The same settings with another verification leeway.
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }
}

/// Who a token is issued to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSubject {
    /// Becomes `sub`.
    pub user_id: String,
    /// Becomes `tid`.
    pub tenant_id: String,
    /// Becomes `roles`.
    pub roles: Vec<String>,
    /// Becomes `permissions`.
    pub permissions: Vec<String>,
    /// Becomes `sid`.
    pub session_id: String,
}

/// A freshly signed access token. `Debug` leaves the token out: it is a
/// bearer credential.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The compact JWT to hand to the client.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// Its lifetime in seconds (for an OAuth-style `expires_in`).
    pub expires_in_seconds: i64,
    /// Its expiry (`exp`).
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("jti", &self.jti)
            .field("expires_in_seconds", &self.expires_in_seconds)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A token could not be issued (a configuration problem, not the client's).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The access TTL or the resulting expiry does not fit a timestamp.
    #[error("access token lifetime out of range")]
    TtlOutOfRange,
    /// Signing failed; the message comes from the JWT library, never holds
    /// the key.
    #[error("signing the token failed: {0}")]
    Signing(String),
}

impl From<IssueError> for ApiError {
    /// `MSCoreInternal`: a broken key or setting is a bug, not the client's.
    fn from(error: IssueError) -> Self {
        ApiError::internal(error)
    }
}

/// Why a token was refused. Variants that echo header values (`alg`, `kid`)
/// clip them; none echoes the token itself.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not three base64url segments, a header or claims that are not the
    /// expected JSON, an oversized token, or a `crit` header.
    #[error("malformed token")]
    Malformed,
    /// The header names an algorithm other than EdDSA (including `none`).
    #[error("token algorithm {alg} is not allowed")]
    AlgorithmNotAllowed {
        /// The `alg` of the header, clipped.
        alg: String,
    },
    /// The header has no `kid`, so no key can be chosen.
    #[error("token names no key (kid)")]
    MissingKid,
    /// The header's `kid` is not in the key set.
    #[error("token key {kid} is unknown")]
    UnknownKey {
        /// The `kid` of the header, clipped.
        kid: String,
    },
    /// The signature does not match the header and claims under the key.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is still ahead (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("token issuer is wrong")]
    WrongIssuer,
    /// `aud` is not the configured audience.
    #[error("token audience is wrong")]
    WrongAudience,
    /// A required claim is absent.
    #[error("token lacks the {0} claim")]
    MissingClaim(String),
    /// The token is sound but its session was ended (logout, password
    /// change, refresh-token reuse, account disabled).
    #[error("token session was revoked")]
    Revoked,
}

impl From<TokenError> for ApiError {
    /// `MSAuthTokenExpired` for [`TokenError::Expired`], `MSAuthInvalidToken`
    /// with a generic message for everything else; the precise reason is
    /// kept as the cause, for the log.
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::Expired => ApiError::new(codes::AUTH_TOKEN_EXPIRED, "Token expired"),
            _ => ApiError::new(codes::AUTH_INVALID_TOKEN, "Invalid access token"),
        }
        .with_cause(error)
    }
}

/// Signs access tokens; lives in the auth service only.
#[derive(Clone, Debug)]
pub struct TokenIssuer {
    key: SigningKey,
    settings: JwtSettings,
    header: Header,
}

impl TokenIssuer {
    /// An issuer signing with `key` (its `kid` goes into every header).
    pub fn new(key: SigningKey, settings: JwtSettings) -> Self {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid().to_owned());
        Self {
            key,
            settings,
            header,
        }
    }

    /// The settings tokens are issued with.
    pub fn settings(&self) -> &JwtSettings {
        &self.settings
    }

    /// The `kid` of the signing key.
    pub fn kid(&self) -> &str {
        self.key.kid()
    }

    /// Issues an access token for `subject`, valid from now for
    /// `access_ttl`.
    pub fn issue(&self, subject: &TokenSubject) -> Result<IssuedToken, IssueError> {
        self.issue_at(subject, Utc::now())
    }

    /// Issues a token as if the time were `now` (whole seconds). Production
    /// code uses [`issue`](Self::issue); this exists for tests and tools
    /// that need tokens from another time.
    pub fn issue_at(
        &self,
        subject: &TokenSubject,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, IssueError> {
        let iat = now.timestamp();
        let ttl = i64::try_from(self.settings.access_ttl.as_secs())
            .map_err(|_| IssueError::TtlOutOfRange)?;
        let exp = iat.checked_add(ttl).ok_or(IssueError::TtlOutOfRange)?;
        let expires_at = DateTime::from_timestamp(exp, 0).ok_or(IssueError::TtlOutOfRange)?;
        let jti = uuid::Uuid::new_v4().to_string();
        let claims = Claims {
            sub: subject.user_id.clone(),
            tid: subject.tenant_id.clone(),
            roles: subject.roles.clone(),
            permissions: subject.permissions.clone(),
            sid: subject.session_id.clone(),
            iss: self.settings.issuer.clone(),
            aud: self.settings.audience.clone(),
            exp,
            iat,
            nbf: iat,
            jti: jti.clone(),
        };
        let token = jsonwebtoken::encode(&self.header, &claims, self.key.encoding_key())
            .map_err(|e| IssueError::Signing(e.to_string()))?;
        Ok(IssuedToken {
            token,
            jti,
            expires_in_seconds: ttl,
            expires_at,
        })
    }
}

/// Verifies access tokens against a [`KeySet`]; cheap to share behind an
/// `Arc`. To rotate keys, build a new verifier with the new set.
#[derive(Clone, Debug)]
pub struct TokenVerifier {
    keys: KeySet,
    settings: JwtSettings,
    validation: Validation,
    /// Ended sessions, consulted after every other check; `None` only
    /// where no session can be revoked (tests, tools).
    revocations: Option<Arc<RevocationList>>,
    /// Tokens that passed every check before; shared by clones.
    verified: Arc<VerifiedTokens>,
}

/// The header fields the verifier checks before handing the token to
/// `jsonwebtoken` (which cannot parse an `alg` it does not know, e.g.
/// `none`).
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
    crit: Option<serde::de::IgnoredAny>,
}

/// Claims as found, so that a missing one is reported by name instead of as
/// a generic parse failure.
#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    tid: Option<String>,
    roles: Option<Vec<String>>,
    permissions: Option<Vec<String>>,
    sid: Option<String>,
    iss: Option<String>,
    aud: Option<String>,
    exp: Option<i64>,
    iat: Option<i64>,
    nbf: Option<i64>,
    jti: Option<String>,
}

impl RawClaims {
    fn into_claims(self) -> Result<Claims, TokenError> {
        fn need<T>(value: Option<T>, name: &str) -> Result<T, TokenError> {
            value.ok_or_else(|| TokenError::MissingClaim(name.to_owned()))
        }
        Ok(Claims {
            sub: need(self.sub, "sub")?,
            tid: need(self.tid, "tid")?,
            roles: need(self.roles, "roles")?,
            permissions: need(self.permissions, "permissions")?,
            sid: need(self.sid, "sid")?,
            iss: need(self.iss, "iss")?,
            aud: need(self.aud, "aud")?,
            exp: need(self.exp, "exp")?,
            iat: need(self.iat, "iat")?,
            nbf: need(self.nbf, "nbf")?,
            jti: need(self.jti, "jti")?,
        })
    }
}

impl TokenVerifier {
    /// A verifier trusting `keys` and requiring the issuer and audience of
    /// `settings`, with its leeway on `exp` and `nbf`.
    pub fn new(keys: KeySet, settings: JwtSettings) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.leeway = settings.leeway.as_secs();
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        Self {
            keys,
            settings,
            validation,
            revocations: None,
            verified: Arc::new(VerifiedTokens::new(VERIFIED_TOKENS)),
        }
    }

    /// The same verifier, also refusing tokens whose session is in
    /// `revocations` ([`TokenError::Revoked`]).
    pub fn with_revocations(mut self, revocations: Arc<RevocationList>) -> Self {
        self.revocations = Some(revocations);
        self
    }

    /// The revocation list consulted, if any.
    pub fn revocations(&self) -> Option<&Arc<RevocationList>> {
        self.revocations.as_ref()
    }

    /// The trusted keys.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// The settings tokens are checked against.
    pub fn settings(&self) -> &JwtSettings {
        &self.settings
    }

    /// Checks `token` (the compact JWT, without `Bearer `) and returns its
    /// claims. In order: shape and header (`alg` must be EdDSA, `kid` must
    /// name a trusted key), signature, then `exp`, `nbf`, `iss`, `aud` and
    /// the presence of every claim, and last whether the token's session
    /// was revoked. Time checks apply only to correctly signed tokens, so
    /// `Expired` never describes a forgery. A token that passed all of it
    /// before is recognised by its exact text and only its expiry and
    /// session are checked again (`verified`).
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let now = Utc::now();
        let leeway = i64::try_from(self.validation.leeway).unwrap_or(i64::MAX);
        let claims = match self.verified.get(token, now.timestamp(), leeway) {
            Some(claims) => claims,
            None => {
                let claims = self.check_signed(token)?;
                self.verified
                    .insert(token, &claims, now.timestamp(), leeway);
                claims
            }
        };
        if let Some(revocations) = &self.revocations {
            if revocations.is_revoked(&claims, now) {
                return Err(TokenError::Revoked);
            }
        }
        Ok(claims)
    }

    /// Resolves once `token` no longer verifies, with the reason: at once
    /// if it does not verify now, else when it expires (past the leeway) or
    /// its session is revoked. For whatever keeps serving a caller on one
    /// verification, such as a subscription.
    pub async fn until_invalid(&self, token: &str) -> TokenError {
        let mut changes = self.revocations.as_ref().map(|list| list.changes());
        let leeway = i64::try_from(self.validation.leeway).unwrap_or(i64::MAX);
        loop {
            let claims = match self.verify(token) {
                Ok(claims) => claims,
                Err(err) => return err,
            };
            let left = claims
                .exp
                .saturating_add(leeway)
                .saturating_sub(Utc::now().timestamp());
            // At least a second, so a token at the edge of its leeway is
            // checked again later rather than in a busy loop.
            let expiry =
                tokio::time::sleep(Duration::from_secs(u64::try_from(left).unwrap_or(0).max(1)));
            let Some(revocations) = changes.as_mut() else {
                expiry.await;
                continue;
            };
            tokio::select! {
                () = expiry => {}
                changed = revocations.changed() => {
                    if changed.is_err() {
                        // The list is gone: only the expiry is left to wait for.
                        changes = None;
                    }
                }
            }
        }
    }

    /// Everything [`verify`](Self::verify) checks but the revocation list.
    fn check_signed(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let mut segments = token.split('.');
        let (Some(header), Some(_claims), Some(_signature), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(TokenError::Malformed);
        };
        let header: RawHeader = b64_decode(header)
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(TokenError::Malformed)?;
        if header.alg != PINNED_ALG {
            return Err(TokenError::AlgorithmNotAllowed {
                alg: clip(&header.alg),
            });
        }
        // `crit` lists extensions a verifier must understand; we understand
        // none, so RFC 7515 says refuse.
        if header.crit.is_some() {
            return Err(TokenError::Malformed);
        }
        let kid = header.kid.ok_or(TokenError::MissingKid)?;
        let key = self
            .keys
            .get(&kid)
            .ok_or_else(|| TokenError::UnknownKey { kid: clip(&kid) })?;
        let data = jsonwebtoken::decode::<RawClaims>(token, key.decoding_key(), &self.validation)
            .map_err(|e| token_error(e.kind()))?;
        data.claims.into_claims()
    }
}

fn token_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::MissingRequiredClaim(name) => TokenError::MissingClaim(clip(name)),
        // The header was checked above; this is only reachable if the
        // library reads it differently, and then the token is refused.
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            TokenError::AlgorithmNotAllowed {
                alg: "unexpected".to_owned(),
            }
        }
        // A key the library cannot use cannot vouch for the token.
        ErrorKind::InvalidEddsaKey | ErrorKind::InvalidKeyFormat | ErrorKind::Provider(_) => {
            TokenError::BadSignature
        }
        _ => TokenError::Malformed,
    }
}

fn clip(value: &str) -> String {
    value.chars().take(MAX_ECHOED_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::EncodingKey;
    use serde_json::{json, Value};

    use super::*;
    use crate::auth::VerifyingKey;

    const ISSUER: &str = "payment-platform";
    const AUDIENCE: &str = "payment-platform-api";

    fn settings() -> JwtSettings {
        JwtSettings::new(ISSUER, AUDIENCE)
    }

    fn subject() -> TokenSubject {
        TokenSubject {
            user_id: "user-1".into(),
            tenant_id: "tenant-1".into(),
            roles: vec!["customer".into()],
            permissions: vec!["wallet:read:own".into()],
            session_id: "session-1".into(),
        }
    }

    struct Fixture {
        key: SigningKey,
        issuer: TokenIssuer,
        verifier: TokenVerifier,
    }

    fn fixture() -> Fixture {
        let key = SigningKey::generate("key-1").unwrap();
        let verifier = TokenVerifier::new(KeySet::new().with(key.verifying_key()), settings());
        Fixture {
            issuer: TokenIssuer::new(key.clone(), settings()),
            key,
            verifier,
        }
    }

    /// A token with exactly this header and these claims, correctly signed
    /// with `key` under `alg`.
    fn craft(header: &Value, claims: &Value, alg: Algorithm, key: &EncodingKey) -> String {
        sign_segments(
            &b64_encode(header.to_string().as_bytes()),
            &b64_encode(claims.to_string().as_bytes()),
            alg,
            key,
        )
    }

    /// A token of these two (already encoded) segments, correctly signed.
    fn sign_segments(header: &str, claims: &str, alg: Algorithm, key: &EncodingKey) -> String {
        let message = format!("{header}.{claims}");
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
        format!("{message}.{signature}")
    }

    fn valid_claims() -> Value {
        let now = Utc::now().timestamp();
        json!({
            "sub": "user-1", "tid": "tenant-1", "roles": [], "permissions": [],
            "sid": "session-1", "iss": ISSUER, "aud": AUDIENCE,
            "exp": now + 600, "iat": now, "nbf": now, "jti": "jti-1",
        })
    }

    fn segment(token: &str, index: usize) -> Value {
        let part = token.split('.').nth(index).unwrap();
        serde_json::from_slice(&b64_decode(part).unwrap()).unwrap()
    }

    #[test]
    fn round_trip_returns_the_issued_claims() {
        let f = fixture();
        let issued = f.issuer.issue(&subject()).unwrap();
        let claims = f.verifier.verify(&issued.token).unwrap();
        assert_eq!(claims.sub, "user-1");
        assert_eq!(claims.tid, "tenant-1");
        assert_eq!(claims.roles, ["customer"]);
        assert_eq!(claims.permissions, ["wallet:read:own"]);
        assert_eq!(claims.sid, "session-1");
        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.aud, AUDIENCE);
        assert_eq!(claims.jti, issued.jti);
        assert_eq!(claims.nbf, claims.iat);
        assert_eq!(claims.exp, issued.expires_at.timestamp());
    }

    #[test]
    fn tokens_of_a_revoked_session_are_refused_as_invalid() {
        use crate::auth::SessionRevoked;

        let f = fixture();
        let list = Arc::new(RevocationList::new());
        let verifier = f.verifier.clone().with_revocations(Arc::clone(&list));
        let issued = f.issuer.issue(&subject()).unwrap();
        let mut other = subject();
        other.session_id = "session-2".into();
        let other = f.issuer.issue(&other).unwrap();
        assert!(verifier.verify(&issued.token).is_ok());

        let now = Utc::now();
        list.apply(
            &SessionRevoked {
                user_id: "user-1".into(),
                session_id: Some("session-1".into()),
                revoked_at: now,
                tokens_expire_by: now + chrono::Duration::minutes(15),
            },
            now,
        );
        let err = verifier.verify(&issued.token).unwrap_err();
        assert_eq!(err, TokenError::Revoked);
        assert_eq!(ApiError::from(err).code(), codes::AUTH_INVALID_TOKEN);
        assert!(verifier.verify(&other.token).is_ok());
        // A verifier without the list is unaffected (and says so).
        assert!(f.verifier.revocations().is_none());
        assert!(f.verifier.verify(&issued.token).is_ok());
    }

    #[tokio::test]
    async fn until_invalid_resolves_when_the_session_is_revoked() {
        use crate::auth::SessionRevoked;

        let f = fixture();
        let list = Arc::new(RevocationList::new());
        let verifier = f.verifier.clone().with_revocations(Arc::clone(&list));
        let issued = f.issuer.issue(&subject()).unwrap();
        let ended = verifier.until_invalid(&issued.token);
        tokio::pin!(ended);
        let revoke = |session: &str| {
            let now = Utc::now();
            list.apply(
                &SessionRevoked {
                    user_id: "user-1".into(),
                    session_id: Some(session.into()),
                    revoked_at: now,
                    tokens_expire_by: now + chrono::Duration::minutes(15),
                },
                now,
            );
        };

        revoke("session-2");
        let early = tokio::time::timeout(std::time::Duration::from_millis(200), &mut ended).await;
        assert!(early.is_err(), "another session's revocation ended it");
        revoke("session-1");

        assert_eq!(ended.await, TokenError::Revoked);
    }

    #[tokio::test]
    async fn until_invalid_resolves_when_the_token_expires_or_at_once_when_invalid() {
        let short = settings()
            .with_access_ttl(Duration::from_secs(1))
            .with_leeway(Duration::ZERO);
        let key = SigningKey::generate("key-1").unwrap();
        let verifier = TokenVerifier::new(KeySet::new().with(key.verifying_key()), short.clone());
        let issued = TokenIssuer::new(key, short).issue(&subject()).unwrap();

        assert_eq!(
            verifier.until_invalid(&issued.token).await,
            TokenError::Expired
        );
        assert_eq!(
            verifier.until_invalid("not-a-token").await,
            TokenError::Malformed
        );
    }

    #[test]
    fn issued_tokens_carry_kid_eddsa_and_a_fresh_uuid_jti() {
        let f = fixture();
        let issued = f.issuer.issue(&subject()).unwrap();
        let header = segment(&issued.token, 0);
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["kid"], "key-1");
        let jti = uuid::Uuid::parse_str(&issued.jti).unwrap();
        assert_eq!(jti.get_version_num(), 4);
        assert_ne!(issued.jti, f.issuer.issue(&subject()).unwrap().jti);
        assert_eq!(issued.expires_in_seconds, 15 * 60);
        let claims = segment(&issued.token, 1);
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            900
        );
        assert_eq!(f.issuer.kid(), "key-1");
    }

    #[test]
    fn expired_tokens_are_rejected_as_expired() {
        let f = fixture();
        let issued = f
            .issuer
            .issue_at(&subject(), Utc::now() - chrono::Duration::hours(2))
            .unwrap();
        assert_eq!(f.verifier.verify(&issued.token), Err(TokenError::Expired));
    }

    #[test]
    fn expiry_within_the_leeway_is_tolerated() {
        let f = fixture();
        let ttl = chrono::Duration::from_std(JwtSettings::DEFAULT_ACCESS_TTL).unwrap();
        let issued = f
            .issuer
            .issue_at(&subject(), Utc::now() - ttl - chrono::Duration::seconds(10))
            .unwrap();
        assert!(f.verifier.verify(&issued.token).is_ok());
        let strict = TokenVerifier::new(
            f.verifier.keys().clone(),
            settings().with_leeway(Duration::ZERO),
        );
        assert_eq!(strict.verify(&issued.token), Err(TokenError::Expired));
    }

    #[test]
    fn tokens_from_the_future_are_not_yet_valid() {
        let f = fixture();
        let issued = f
            .issuer
            .issue_at(&subject(), Utc::now() + chrono::Duration::minutes(5))
            .unwrap();
        assert_eq!(
            f.verifier.verify(&issued.token),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn wrong_issuer_is_rejected() {
        let f = fixture();
        let other = TokenIssuer::new(f.key.clone(), JwtSettings::new("someone-else", AUDIENCE));
        let token = other.issue(&subject()).unwrap().token;
        assert_eq!(f.verifier.verify(&token), Err(TokenError::WrongIssuer));
    }

    #[test]
    fn wrong_audience_is_rejected() {
        let f = fixture();
        let other = TokenIssuer::new(f.key.clone(), JwtSettings::new(ISSUER, "another-api"));
        let token = other.issue(&subject()).unwrap().token;
        assert_eq!(f.verifier.verify(&token), Err(TokenError::WrongAudience));
    }

    #[test]
    fn alg_none_is_rejected_by_name() {
        let f = fixture();
        for header in [
            json!({"alg": "none", "typ": "JWT"}),
            json!({"alg": "none", "typ": "JWT", "kid": "key-1"}),
        ] {
            let token = format!(
                "{}.{}.",
                b64_encode(header.to_string().as_bytes()),
                b64_encode(valid_claims().to_string().as_bytes())
            );
            assert_eq!(
                f.verifier.verify(&token),
                Err(TokenError::AlgorithmNotAllowed { alg: "none".into() })
            );
        }
    }

    #[test]
    fn hmac_token_keyed_with_the_public_key_is_rejected() {
        let f = fixture();
        let secret = EncodingKey::from_secret(f.key.public_pem().as_bytes());
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": "key-1"});
        let token = craft(&header, &valid_claims(), Algorithm::HS256, &secret);
        assert_eq!(
            f.verifier.verify(&token),
            Err(TokenError::AlgorithmNotAllowed {
                alg: "HS256".into()
            })
        );
    }

    #[test]
    fn other_algorithms_are_rejected_before_the_signature_is_looked_at() {
        let f = fixture();
        for alg in ["RS256", "ES256", "PS512", "eddsa", "EdDSA "] {
            let header = json!({"alg": alg, "kid": "key-1"});
            let token = format!(
                "{}.{}.c2ln",
                b64_encode(header.to_string().as_bytes()),
                b64_encode(valid_claims().to_string().as_bytes())
            );
            assert_eq!(
                f.verifier.verify(&token),
                Err(TokenError::AlgorithmNotAllowed { alg: alg.into() })
            );
        }
    }

    #[test]
    fn another_key_under_the_same_kid_is_a_bad_signature() {
        let f = fixture();
        let impostor = TokenIssuer::new(SigningKey::generate("key-1").unwrap(), settings());
        let token = impostor.issue(&subject()).unwrap().token;
        assert_eq!(f.verifier.verify(&token), Err(TokenError::BadSignature));
    }

    #[test]
    fn expired_forgeries_are_bad_signatures_not_expired() {
        let f = fixture();
        let impostor = TokenIssuer::new(SigningKey::generate("key-1").unwrap(), settings());
        let token = impostor
            .issue_at(&subject(), Utc::now() - chrono::Duration::days(1))
            .unwrap()
            .token;
        assert_eq!(f.verifier.verify(&token), Err(TokenError::BadSignature));
    }

    #[test]
    fn unknown_and_missing_kids_are_rejected() {
        let f = fixture();
        let stranger = TokenIssuer::new(SigningKey::generate("key-9").unwrap(), settings());
        let token = stranger.issue(&subject()).unwrap().token;
        assert_eq!(
            f.verifier.verify(&token),
            Err(TokenError::UnknownKey {
                kid: "key-9".into()
            })
        );
        let header = json!({"alg": "EdDSA", "typ": "JWT"});
        let token = craft(
            &header,
            &valid_claims(),
            Algorithm::EdDSA,
            f.key.encoding_key(),
        );
        assert_eq!(f.verifier.verify(&token), Err(TokenError::MissingKid));
    }

    #[test]
    fn a_tampered_payload_is_a_bad_signature() {
        let f = fixture();
        let token = f.issuer.issue(&subject()).unwrap().token;
        let mut claims = segment(&token, 1);
        claims["sub"] = json!("admin");
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64_encode(claims.to_string().as_bytes()),
            parts[2]
        );
        assert_eq!(f.verifier.verify(&forged), Err(TokenError::BadSignature));
    }

    #[test]
    fn a_truncated_or_swapped_signature_is_a_bad_signature() {
        let f = fixture();
        let token = f.issuer.issue(&subject()).unwrap().token;
        let other = f.issuer.issue(&subject()).unwrap().token;
        let (message, _) = token.rsplit_once('.').unwrap();
        let (_, other_signature) = other.rsplit_once('.').unwrap();
        for forged in [
            format!("{message}."),
            format!("{message}.AAAA"),
            format!("{message}.{other_signature}"),
        ] {
            assert_eq!(
                f.verifier.verify(&forged),
                Err(TokenError::BadSignature),
                "{forged}"
            );
        }
    }

    #[test]
    fn garbage_is_malformed() {
        let f = fixture();
        let token = f.issuer.issue(&subject()).unwrap().token;
        let parts: Vec<&str> = token.split('.').collect();
        let not_json = b64_encode(b"not json");
        let oversized = format!("{}.{}.{}", parts[0], "A".repeat(MAX_TOKEN_BYTES), parts[2]);
        for garbage in [
            "".to_owned(),
            "abc".to_owned(),
            "a.b".to_owned(),
            "..".to_owned(),
            "!!!.!!!.!!!".to_owned(),
            "a.b.c.d".to_owned(),
            format!("{token}.{}", parts[2]),
            format!("{not_json}.{}.{}", parts[1], parts[2]),
            sign_segments(parts[0], &not_json, Algorithm::EdDSA, f.key.encoding_key()),
            sign_segments(parts[0], "", Algorithm::EdDSA, f.key.encoding_key()),
            sign_segments(parts[0], "e30=", Algorithm::EdDSA, f.key.encoding_key()),
            format!("{}.{}.{}", parts[0], parts[1], "*"),
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            oversized,
        ] {
            assert_eq!(
                f.verifier.verify(&garbage),
                Err(TokenError::Malformed),
                "{garbage}"
            );
        }
    }

    #[test]
    fn critical_header_extensions_are_refused() {
        let f = fixture();
        let header = json!({"alg": "EdDSA", "kid": "key-1", "crit": ["b64"], "b64": false});
        let token = craft(
            &header,
            &valid_claims(),
            Algorithm::EdDSA,
            f.key.encoding_key(),
        );
        assert_eq!(f.verifier.verify(&token), Err(TokenError::Malformed));
    }

    #[test]
    fn missing_claims_are_named() {
        let f = fixture();
        let header = json!({"alg": "EdDSA", "kid": "key-1"});
        for name in [
            "exp", "nbf", "iss", "aud", "sub", "tid", "roles", "sid", "jti", "iat",
        ] {
            let mut claims = valid_claims();
            claims.as_object_mut().unwrap().remove(name);
            let token = craft(&header, &claims, Algorithm::EdDSA, f.key.encoding_key());
            assert_eq!(
                f.verifier.verify(&token),
                Err(TokenError::MissingClaim(name.into())),
                "{name}"
            );
        }
        let crafted = craft(
            &header,
            &valid_claims(),
            Algorithm::EdDSA,
            f.key.encoding_key(),
        );
        assert!(
            f.verifier.verify(&crafted).is_ok(),
            "the crafting itself is sound"
        );
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_until_the_old_key_is_removed() {
        let old = TokenIssuer::new(SigningKey::generate("2024-01").unwrap(), settings());
        let new = TokenIssuer::new(SigningKey::generate("2024-07").unwrap(), settings());
        let old_public = VerifyingKey::from_public_pem("2024-01", old.key.public_pem()).unwrap();
        let new_public = VerifyingKey::from_public_pem("2024-07", new.key.public_pem()).unwrap();
        let old_token = old.issue(&subject()).unwrap().token;
        let new_token = new.issue(&subject()).unwrap().token;

        let both = TokenVerifier::new(
            KeySet::new().with(old_public).with(new_public.clone()),
            settings(),
        );
        assert!(both.verify(&old_token).is_ok());
        assert!(both.verify(&new_token).is_ok());

        let mut keys = both.keys().clone();
        keys.remove("2024-01");
        let rotated = TokenVerifier::new(keys, settings());
        assert!(rotated.verify(&new_token).is_ok());
        assert_eq!(
            rotated.verify(&old_token),
            Err(TokenError::UnknownKey {
                kid: "2024-01".into()
            })
        );
    }

    #[test]
    fn echoed_header_values_are_clipped() {
        let f = fixture();
        let long = "x".repeat(500);
        let header = json!({"alg": long});
        let token = format!(
            "{}.{}.",
            b64_encode(header.to_string().as_bytes()),
            b64_encode(b"{}")
        );
        let Err(TokenError::AlgorithmNotAllowed { alg }) = f.verifier.verify(&token) else {
            panic!("expected AlgorithmNotAllowed");
        };
        assert_eq!(alg.len(), MAX_ECHOED_CHARS);
    }

    #[test]
    fn errors_map_to_the_two_client_codes_without_echoing_anything() {
        let expired: ApiError = TokenError::Expired.into();
        assert_eq!(expired.code(), codes::AUTH_TOKEN_EXPIRED);
        assert_eq!(expired.message(), "Token expired");
        for error in [
            TokenError::Malformed,
            TokenError::AlgorithmNotAllowed { alg: "none".into() },
            TokenError::MissingKid,
            TokenError::UnknownKey {
                kid: "secret-kid".into(),
            },
            TokenError::BadSignature,
            TokenError::NotYetValid,
            TokenError::WrongIssuer,
            TokenError::WrongAudience,
            TokenError::MissingClaim("sub".into()),
        ] {
            let api: ApiError = error.clone().into();
            assert_eq!(api.code(), codes::AUTH_INVALID_TOKEN, "{error:?}");
            assert_eq!(api.message(), "Invalid access token");
            assert!(api.extensions().is_empty());
            assert_eq!(api.cause().unwrap().to_string(), error.to_string());
        }
    }

    #[test]
    fn issued_token_debug_hides_the_token() {
        let f = fixture();
        let issued = f.issuer.issue(&subject()).unwrap();
        let debug = format!("{issued:?}");
        assert!(!debug.contains(&issued.token));
        assert!(debug.contains(&issued.jti));
        let debug = format!("{:?}", f.issuer);
        assert!(!debug.contains("BEGIN"), "{debug}");
    }

    #[test]
    fn out_of_range_ttl_is_an_issue_error() {
        let key = SigningKey::generate("k").unwrap();
        let issuer = TokenIssuer::new(
            key,
            settings().with_access_ttl(Duration::from_secs(u64::MAX)),
        );
        assert_eq!(issuer.issue(&subject()), Err(IssueError::TtlOutOfRange));
        let api: ApiError = IssueError::TtlOutOfRange.into();
        assert_eq!(api.code(), codes::INTERNAL);
    }
}
