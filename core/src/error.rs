//! The error every client-facing failure becomes, and the registry of codes.
//!
//! A resolver returns `async_graphql::Result<T>` and uses `?` on
//! [`ApiResult`]: async-graphql keeps the [`ApiError`] as the error's source,
//! and the server kit turns it into `extensions.code` (see
//! [`crate::graphql::finalize_errors`]). Internal details never reach the
//! client: [`ApiError::internal`] keeps its cause for the log only.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

/// A stable, registered error code of the form `MS<Service><Name>`.
///
/// Codes are part of the public contract: once published they are never
/// renamed. The constructor checks the shape at compile time when used in a
/// `const`, which is how every code is declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(&'static str);

impl ErrorCode {
    /// Declares a code. Panics (at compile time, in a `const`) unless the code
    /// is `MS` followed by an upper-case letter and ASCII letters or digits.
    pub const fn new(code: &'static str) -> Self {
        let bytes = code.as_bytes();
        assert!(
            bytes.len() > 3 && bytes[0] == b'M' && bytes[1] == b'S',
            "error codes start with MS"
        );
        assert!(
            bytes[2].is_ascii_uppercase(),
            "the service name in an error code starts upper-case"
        );
        let mut i = 3;
        while i < bytes.len() {
            assert!(
                bytes[i].is_ascii_alphanumeric(),
                "error codes are ASCII letters and digits"
            );
            i += 1;
        }
        Self(code)
    }

    /// The code as clients see it in `extensions.code`.
    pub const fn as_str(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The generic codes every service may return, and the token codes every
/// service returns when it verifies an access token.
pub mod codes {
    use super::ErrorCode;

    /// Input fails validation; `extensions.field` names the field.
    pub const VALIDATION: ErrorCode = ErrorCode::new("MSCoreValidation");
    /// The operation needs a signed-in user.
    pub const UNAUTHENTICATED: ErrorCode = ErrorCode::new("MSCoreUnauthenticated");
    /// Signed in, but the access engine denies it; `extensions.permission`.
    pub const FORBIDDEN: ErrorCode = ErrorCode::new("MSCoreForbidden");
    /// Generic not-found.
    pub const NOT_FOUND: ErrorCode = ErrorCode::new("MSCoreNotFound");
    /// A rate limit was hit; `extensions.retryAfterSeconds`.
    pub const RATE_LIMITED: ErrorCode = ErrorCode::new("MSCoreRateLimited");
    /// A dependency is down and there is no degraded answer.
    pub const UNAVAILABLE: ErrorCode = ErrorCode::new("MSCoreUnavailable");
    /// A bug: the message says nothing internal; the log has the details.
    pub const INTERNAL: ErrorCode = ErrorCode::new("MSCoreInternal");
    /// A token that is malformed, badly signed, of the wrong algorithm or revoked.
    pub const AUTH_INVALID_TOKEN: ErrorCode = ErrorCode::new("MSAuthInvalidToken");
    /// An expired token.
    pub const AUTH_TOKEN_EXPIRED: ErrorCode = ErrorCode::new("MSAuthTokenExpired");

    /// Every code declared by the core library.
    pub const ALL: &[ErrorCode] = &[
        VALIDATION,
        UNAUTHENTICATED,
        FORBIDDEN,
        NOT_FOUND,
        RATE_LIMITED,
        UNAVAILABLE,
        INTERNAL,
        AUTH_INVALID_TOKEN,
        AUTH_TOKEN_EXPIRED,
    ];
}

/// The set of codes a service can return, sorted and unique; the gateway's
/// `errorCodes` is the union of every service's registry.
#[derive(Clone, Debug, Default)]
pub struct ErrorRegistry {
    codes: BTreeSet<ErrorCode>,
}

impl ErrorRegistry {
    /// A registry holding the core codes.
    pub fn with_core() -> Self {
        let mut registry = Self::default();
        registry.register(codes::ALL);
        registry
    }

    /// Adds codes; registering a code twice is harmless.
    pub fn register(&mut self, codes: &[ErrorCode]) -> &mut Self {
        self.codes.extend(codes.iter().copied());
        self
    }

    /// Every registered code, sorted and unique.
    pub fn codes(&self) -> Vec<&'static str> {
        self.codes.iter().map(ErrorCode::as_str).collect()
    }
}

/// Shorthand for results whose error reaches a client.
pub type ApiResult<T> = Result<T, ApiError>;

type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failure a client is allowed to see: a registered code, a message meant
/// for people, and structured `extensions`.
///
/// The optional cause is for operators: it is logged (with the request id of
/// the span) when the error is turned into a response, and never serialised.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: Cow<'static, str>,
    // Boxed: keeps `Result<_, ApiError>` small whatever map type serde_json
    // is built with (its `preserve_order` feature doubles the map's size).
    extensions: Box<Map<String, Value>>,
    cause: Option<Cause>,
}

impl ApiError {
    /// An error with a code and a client-facing message.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            extensions: Box::default(),
            cause: None,
        }
    }

    /// Input that fails validation; `field` is the input path (`input.amount`).
    pub fn validation(field: impl Into<String>, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(codes::VALIDATION, message).with_extension("field", field.into())
    }

    /// The operation needs a signed-in user.
    pub fn unauthenticated() -> Self {
        Self::new(codes::UNAUTHENTICATED, "You must be signed in to do this")
    }

    /// The access engine denied `permission` (the URN that was checked).
    pub fn forbidden(permission: impl fmt::Display) -> Self {
        Self::new(codes::FORBIDDEN, "You are not allowed to do this")
            .with_extension("permission", permission.to_string())
    }

    /// Generic not-found; `what` names the kind of thing (`"wallet"`).
    pub fn not_found(what: &str) -> Self {
        Self::new(codes::NOT_FOUND, format!("{what} not found"))
    }

    /// A rate limit was hit; the client may retry after that many seconds.
    pub fn rate_limited(retry_after_seconds: u64) -> Self {
        Self::new(codes::RATE_LIMITED, "Too many requests, slow down")
            .with_extension("retryAfterSeconds", retry_after_seconds)
    }

    /// A dependency is down; `dependency` is a public name (`"payment"`).
    pub fn unavailable(dependency: &str) -> Self {
        Self::new(
            codes::UNAVAILABLE,
            format!("{dependency} is unavailable, try again later"),
        )
    }

    /// A bug or unexpected failure. The client sees only a generic message;
    /// `cause` goes to the log.
    pub fn internal(cause: impl Into<Cause>) -> Self {
        Self::new(codes::INTERNAL, "Internal error").with_cause(cause)
    }

    /// Attaches a value under `extensions.<key>`.
    pub fn with_extension(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    /// Attaches a cause for the log; it is never shown to the client.
    pub fn with_cause(mut self, cause: impl Into<Cause>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    /// The registered code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The client-facing message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The extensions besides `code`.
    pub fn extensions(&self) -> &Map<String, Value> {
        &self.extensions
    }

    /// The operator-only cause, if any.
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.cause.as_deref()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_sorted_and_unique() {
        let mut registry = ErrorRegistry::with_core();
        registry.register(&[codes::VALIDATION, ErrorCode::new("MSAuthEmailTaken")]);
        let codes = registry.codes();
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(codes, sorted);
        assert!(codes.contains(&"MSAuthEmailTaken"));
        assert_eq!(codes.len(), codes::ALL.len() + 1);
    }

    #[test]
    fn internal_errors_hide_their_cause_from_the_message() {
        let err = ApiError::internal("connection string postgres://secret@db");
        assert_eq!(err.code(), codes::INTERNAL);
        assert_eq!(err.to_string(), "Internal error");
        assert!(err.cause().is_some());
    }

    #[test]
    fn constructors_fill_their_documented_extensions() {
        assert_eq!(
            ApiError::validation("input.amount", "must be positive").extensions()["field"],
            "input.amount"
        );
        assert_eq!(
            ApiError::forbidden("wallet:read:*").extensions()["permission"],
            "wallet:read:*"
        );
        assert_eq!(
            ApiError::rate_limited(30).extensions()["retryAfterSeconds"],
            30
        );
    }
}
