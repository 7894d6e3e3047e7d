//! The rules of the service, independent of GraphQL: passwords, emails,
//! tokens, sessions, one-time codes, and the account operations built from
//! them.

mod accounts;
pub mod email;
pub mod otp;
pub mod password;
pub mod sessions;
pub mod tokens;

pub use accounts::{AuthParts, AuthService, Issued, LockoutPolicy, NewUser, OtpPolicy, UserPage};
