//! The error codes this service adds to the core ones (see `API.md`).

use service_core::{ErrorCode, ErrorRegistry};

/// Codes of the bonus service, as clients see them in `extensions.code`.
pub mod codes {
    use super::ErrorCode;

    /// An unknown or inactive bonus code.
    pub const TEMPLATE_NOT_FOUND: ErrorCode = ErrorCode::new("MSBonusTemplateNotFound");
    /// A one-per-user bonus claimed twice.
    pub const ALREADY_CLAIMED: ErrorCode = ErrorCode::new("MSBonusAlreadyClaimed");
    /// The user does not meet the template's conditions.
    pub const NOT_ELIGIBLE: ErrorCode = ErrorCode::new("MSBonusNotEligible");

    /// Every code above.
    pub const ALL: &[ErrorCode] = &[TEMPLATE_NOT_FOUND, ALREADY_CLAIMED, NOT_ELIGIBLE];
}

/// The core codes plus this service's.
pub fn registry() -> ErrorRegistry {
    let mut registry = ErrorRegistry::with_core();
    registry.register(codes::ALL);
    registry
}
