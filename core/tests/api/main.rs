//! The subgraph server kit over real HTTP: one binary for all of the core's
//! integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;
mod server;
