//! The auth subgraph over real HTTP: one binary for all of the service's
//! integration tests, each against its own `Application` on port 0 with its
//! own database (a temporary embedded store, or a database of its own on the
//! MongoDB wire server at `TEST_MONGODB_URI`) and, where Redis is used, its
//! own key prefix on `TEST_REDIS_URL`. Tests that need one of those fail
//! with a clear message when the variable is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;
mod otp;
mod passwords;
mod registration;
mod schema;
mod sessions;
mod startup;
mod status;
mod tokens;
mod users;
