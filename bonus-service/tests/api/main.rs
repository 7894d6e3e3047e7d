//! The bonus subgraph over real HTTP and a real event bus: one binary for
//! all of the service's integration tests, each against its own
//! `Application` on port 0 with its own store, and an in-test payment
//! responder answering its payment requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod automatic;
mod bonuses;
mod concurrency;
mod expiry;
mod helpers;
mod invariants;
mod mongo;
mod payment;
mod templates;
mod wagering;
