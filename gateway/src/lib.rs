//! The gateway crate: the federated front door of the platform and the
//! launcher that runs every service in one process.
//!
//! Federation (composition, planning, execution, limits, subscriptions) is
//! not built yet; today [`launcher`] starts the four subgraphs, each a real
//! HTTP server on its own loopback port.
#![warn(missing_docs)]

pub mod launcher;
