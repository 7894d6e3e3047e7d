//! The rules of the service, independent of GraphQL: passwords, emails,
//! tokens, sessions, and the account operations built from them.

mod accounts;
pub mod email;
pub mod password;
pub mod sessions;
pub mod tokens;

pub use accounts::{AuthParts, AuthService, Issued, NewUser, UserPage, USER_REGISTERED};
