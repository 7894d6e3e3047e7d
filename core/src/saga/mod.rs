//! Sagas: several steps that must all take effect or none, when one
//! database call cannot do it.
//!
//! A saga is declared once ([`SagaDefinition`]) as ordered, named steps and
//! run by a [`SagaEngine`] in one of two modes:
//!
//! - [`SagaMode::Transaction`]: every step writes through the same
//!   [`crate::db::Transaction`]; a failure rolls everything back, so no step
//!   needs an undo. Money moves this way: a wallet debit and its ledger entry
//!   must never exist without each other. The transaction may be re-run on a
//!   write conflict, so such steps act only through the transaction.
//! - [`SagaMode::Compensation`]: steps run one by one and each has an undo;
//!   when a step fails, the completed ones are undone in reverse order of
//!   completion. This is for work crossing a transaction boundary (another
//!   service, a provider). An undo that still fails after its retries ends
//!   the saga in `COMPENSATION_FAILED`, logged at error level as an alert
//!   and counted, because only an operator can settle it.
//!
//! Every instance and its step log are stored in the `sagas` collection (a
//! compensation-mode instance after each step transition) so that a process
//! that crashed mid-saga can [`SagaEngine::resume`] it: completed steps are
//! not run again, and a step found `STARTED` — its outcome unknown — runs
//! again. **Steps must therefore be idempotent by their key**
//! ([`StepContext::idempotency_key`], `"{saga_id}:{step}"`), for example by
//! storing it in a unique field of the record they create. Undos must be
//! idempotent too, for the same reason.

mod definition;
mod engine;
mod record;

pub use definition::{
    SagaDefinition, SagaMode, Step, StepContext, StepError, StepFn, StepPolicy, StepResult, TxStep,
    TxStepFn,
};
pub use engine::{SagaEngine, SagaError};
pub use record::{SagaRecord, SagaStatus, StepRecord, StepStatus, SAGAS};
