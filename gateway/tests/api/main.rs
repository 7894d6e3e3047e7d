//! The gateway's integration tests: benchmark-shaped subgraphs on port 0,
//! a gateway in front, exact JSON through HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod admin;
mod auth;
mod dedupe;
mod directives;
mod federation;
mod file_mode;
mod helpers;
mod launcher;
mod limits;
mod subscriptions;
mod transport;
