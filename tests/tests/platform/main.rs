//! The whole platform through the gateway: each test starts a
//! [`e2e::Platform`] of its own and speaks only HTTP to the gateway.

mod accounts;
mod bonus;
mod degraded;
mod gateway;
mod money;
mod subscriptions;
mod transport;
