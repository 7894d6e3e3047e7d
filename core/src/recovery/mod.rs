//! Recovery of operations whose owner went silent.
//!
//! A process can die between the steps of a long operation (a transfer
//! waiting on a provider, a payout being confirmed). The owner registers the
//! operation with an [`OperationTracker`] and sends heartbeats while it
//! works; if the heartbeats stop for longer than the operation's TTL, the
//! [`RecoveryJob`] hands it to the [`RecoveryHandler`] registered for its
//! type, which finishes or abandons it.
//!
//! Each operation is scheduled by the time it becomes stale (a Redis sorted
//! set, or an indexed `stale_at` field in embedded mode); heartbeats push
//! the entry forward and finishing removes it. The job therefore reads only
//! the entries that are due, so a run costs O(stuck), not O(tracked). Only
//! one instance runs the job at a time, through a lease (Redis
//! `SET NX PX`, renewed while a run lasts and released by compare-and-delete;
//! a conditional document update in embedded mode).
//!
//! Boundaries:
//!
//! - Steps of a transaction-mode saga are not tracked: they commit or roll
//!   back atomically and never hang half done.
//! - The tracker only knows an operation went silent, not what it achieved.
//!   Recovery never acts on what a saga already compensated or a transaction
//!   already rolled back: a handler reads the business record first and acts
//!   only on its state.
//! - Finished operations (`COMPLETED`, `FAILED`) are never touched: every
//!   transition is conditional on the operation still being in progress, so
//!   an owner finishing late and the job cannot both win.

mod job;
mod lease;
mod tracker;

pub use job::{
    HandlerError, RecoveryConfig, RecoveryHandler, RecoveryJob, RecoveryOutcome, RecoveryStats,
};
pub use lease::LEASES;
pub use tracker::{DueOperations, OperationState, OperationTracker, TrackedOperation, OPERATIONS};

use crate::db::StoreError;
use crate::redis::RedisError;

/// What can go wrong tracking or recovering operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// An operation with this id is tracked already.
    #[error("operation {0} is already tracked")]
    AlreadyTracked(String),
    /// Redis failed.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored operation could not be read or written as JSON.
    #[error("tracked operation is not valid JSON: {0}")]
    Corrupt(String),
    /// Another instance took the lease while a run was going on.
    #[error("the recovery lease was lost")]
    LeaseLost,
    /// The recovery counters could not be registered.
    #[error("cannot register recovery metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}
