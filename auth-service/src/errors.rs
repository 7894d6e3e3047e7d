//! The error codes this service adds to the core ones (see `API.md`).

use service_core::{ErrorCode, ErrorRegistry};

/// Codes of the auth service, as clients see them in `extensions.code`.
pub mod codes {
    use super::ErrorCode;

    /// Wrong email or password (the same answer whether the email exists or not).
    pub const INVALID_CREDENTIALS: ErrorCode = ErrorCode::new("MSAuthInvalidCredentials");
    /// Registration with an email already in use.
    pub const EMAIL_TAKEN: ErrorCode = ErrorCode::new("MSAuthEmailTaken");
    /// A password under the policy.
    pub const WEAK_PASSWORD: ErrorCode = ErrorCode::new("MSAuthWeakPassword");
    /// A spent refresh token used again: the whole session family is revoked.
    pub const REFRESH_TOKEN_REUSED: ErrorCode = ErrorCode::new("MSAuthRefreshTokenReused");
    /// Login attempts over the limit.
    pub const TOO_MANY_ATTEMPTS: ErrorCode = ErrorCode::new("MSAuthTooManyAttempts");
    /// An admin operation on an unknown user.
    pub const USER_NOT_FOUND: ErrorCode = ErrorCode::new("MSAuthUserNotFound");
    /// A wrong or expired one-time code.
    pub const INVALID_OTP: ErrorCode = ErrorCode::new("MSAuthInvalidOtp");

    /// Every code above.
    pub const ALL: &[ErrorCode] = &[
        INVALID_CREDENTIALS,
        EMAIL_TAKEN,
        WEAK_PASSWORD,
        REFRESH_TOKEN_REUSED,
        TOO_MANY_ATTEMPTS,
        USER_NOT_FOUND,
        INVALID_OTP,
    ];
}

/// The core codes plus this service's.
pub fn registry() -> ErrorRegistry {
    let mut registry = ErrorRegistry::with_core();
    registry.register(codes::ALL);
    registry
}
