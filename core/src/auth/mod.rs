//! Access tokens for the platform: issuing (auth service only) and
//! verifying (every service and the gateway).
//!
//! Tokens are JWTs signed with Ed25519 (EdDSA), the one algorithm accepted:
//! see [`TokenVerifier::verify`] for what is checked and [`TokenError`] for
//! how each failure is reported. Keys are loaded once into a [`KeySet`]
//! indexed by `kid`, which is how keys rotate without downtime. Tokens of
//! ended sessions are refused through the [`RevocationList`] every verifier
//! follows.

mod jwt;
mod keys;
mod revocation;
mod verified;

pub use jwt::{
    Claims, IssueError, IssuedToken, JwtSettings, TokenError, TokenIssuer, TokenSubject,
    TokenVerifier,
};
pub use keys::{KeyError, KeySet, SigningKey, VerifyingKey};
pub use revocation::{RevocationList, SessionRevoked, REPLAY_WINDOW, RETENTION_MARGIN};
