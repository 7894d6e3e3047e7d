//! The auth subgraph over real HTTP: one binary for all of the service's
//! integration tests, each against its own `Application` on port 0 with its
//! own temporary embedded store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;
mod passwords;
mod registration;
mod sessions;
mod startup;
mod tokens;
mod users;
