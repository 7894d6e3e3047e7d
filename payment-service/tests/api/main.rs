//! The payment subgraph over real HTTP (and, for the heavy concurrency
//! checks, through the library's service API): one binary for all of the
//! service's integration tests, each against its own `Application` on port
//! 0 with its own store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_input;
mod bonus;
mod concurrency;
mod crash;
mod helpers;
mod idempotency;
mod invariants;
mod reconciliation;
mod wallets;
mod withdrawals;
