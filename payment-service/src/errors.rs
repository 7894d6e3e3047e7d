//! The error codes this service adds to the core ones (see `API.md`).

use service_core::{ErrorCode, ErrorRegistry};

/// Codes of the payment service, as clients see them in `extensions.code`.
pub mod codes {
    use super::ErrorCode;

    /// A debit larger than the available balance.
    pub const INSUFFICIENT_BALANCE: ErrorCode = ErrorCode::new("MSPaymentInsufficientBalance");
    /// An unknown wallet, or one that is not the caller's.
    pub const WALLET_NOT_FOUND: ErrorCode = ErrorCode::new("MSPaymentWalletNotFound");
    /// `createWallet` for a currency the user already has.
    pub const WALLET_EXISTS: ErrorCode = ErrorCode::new("MSPaymentWalletExists");
    /// An amount that is not a positive integer within 2^53-1.
    pub const INVALID_AMOUNT: ErrorCode = ErrorCode::new("MSPaymentInvalidAmount");
    /// Not a three-letter upper-case ISO 4217 code.
    pub const INVALID_CURRENCY: ErrorCode = ErrorCode::new("MSPaymentInvalidCurrency");
    /// A transfer to oneself.
    pub const SELF_TRANSFER: ErrorCode = ErrorCode::new("MSPaymentSelfTransfer");
    /// An idempotency key reused with different parameters.
    pub const IDEMPOTENCY_CONFLICT: ErrorCode = ErrorCode::new("MSPaymentIdempotencyConflict");

    /// A transfer to a user this service does not know: no `user.registered`
    /// event and no signed-in request ever named them.
    pub const RECIPIENT_NOT_FOUND: ErrorCode = ErrorCode::new("MSPaymentRecipientNotFound");

    /// Every code above.
    pub const ALL: &[ErrorCode] = &[
        INSUFFICIENT_BALANCE,
        WALLET_NOT_FOUND,
        WALLET_EXISTS,
        INVALID_AMOUNT,
        INVALID_CURRENCY,
        SELF_TRANSFER,
        IDEMPOTENCY_CONFLICT,
        RECIPIENT_NOT_FOUND,
    ];
}

/// The core codes plus this service's.
pub fn registry() -> ErrorRegistry {
    let mut registry = ErrorRegistry::with_core();
    registry.register(codes::ALL);
    registry
}
