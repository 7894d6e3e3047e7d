//! The error codes this service adds to the core ones (see `API.md`).

use service_core::{ErrorCode, ErrorRegistry};

/// Codes of the notification service, as clients see them in `extensions.code`.
pub mod codes {
    use super::ErrorCode;

    /// An unknown notification, or one that is not the caller's.
    pub const NOT_FOUND: ErrorCode = ErrorCode::new("MSNotificationNotFound");

    /// Every code above.
    pub const ALL: &[ErrorCode] = &[NOT_FOUND];
}

/// The core codes plus this service's.
pub fn registry() -> ErrorRegistry {
    let mut registry = ErrorRegistry::with_core();
    registry.register(codes::ALL);
    registry
}
