//! The whole platform through the gateway: each test starts a
//! [`e2e::Platform`] of its own and speaks only HTTP to the gateway.

mod abuse;
mod accounts;
mod bonus;
mod crash;
mod degraded;
mod faults;
mod gateway;
mod money;
mod revocation;
mod soak;
mod subscriptions;
mod transport;
