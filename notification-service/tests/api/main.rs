//! The notification subgraph over real HTTP, SMTP and WebSocket: one binary
//! for all of the service's integration tests, each against its own
//! `Application` on port 0 with its own temporary embedded store and its
//! own in-test provider listeners.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod delivery;
mod events;
mod helpers;
mod listeners;
mod real_deps;
mod subscription;
