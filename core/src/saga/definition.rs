//! How a saga is declared: its name, its mode and its ordered steps.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::db::{StoreError, Transaction};
use crate::resilience::RetryPolicy;

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// A failure that may go away (a dependency blipped): the step's
    /// [`RetryPolicy`] tries it again.
    #[error("transient failure: {0}")]
    Transient(String),
    /// A refusal that will not go away (insufficient balance, bad input):
    /// never retried.
    #[error("{0}")]
    Rejected(String),
    /// The store failed. Not retried by the step policy: inside a
    /// transaction-mode saga a write conflict re-runs the whole transaction,
    /// which [`crate::db::Database::transaction`] does by itself.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The step did not finish within its timeout (it may have taken effect,
    /// which is why steps must be idempotent by their key).
    #[error("step timed out after {0:?}")]
    Timeout(Duration),
}

impl StepError {
    /// Whether the step's retry policy may try again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient(_) | Self::Timeout(_))
    }
}

/// What a step sees when it runs.
#[derive(Clone, Debug)]
pub struct StepContext {
    /// The saga instance.
    pub saga_id: String,
    /// The step's name.
    pub step: String,
    /// `"{saga_id}:{step}"`: the key a step must use to make its effect
    /// idempotent, since after a crash a step whose outcome is unknown runs
    /// again.
    pub idempotency_key: String,
    /// The saga's input, as given when it started.
    pub input: Arc<Value>,
    /// The outputs of the steps completed before this one, by step name
    /// (for a compensation: including this step's own output).
    pub outputs: Arc<BTreeMap<String, Value>>,
}

impl StepContext {
    /// The output of an earlier completed step.
    pub fn output(&self, step: &str) -> Option<&Value> {
        self.outputs.get(step)
    }
}

/// The result of one step: its output (kept in the step log), or why it failed.
pub type StepResult = Result<Value, StepError>;

/// An `execute` or `compensate` action of a compensation-mode step.
pub type StepFn = Arc<dyn Fn(StepContext) -> BoxFuture<'static, StepResult> + Send + Sync>;

/// The `execute` action of a transaction-mode step: it writes through the
/// saga's one open transaction.
pub type TxStepFn = Arc<
    dyn for<'t, 'a> Fn(&'t mut Transaction<'a>, StepContext) -> BoxFuture<'t, StepResult>
        + Send
        + Sync,
>;

/// Retry and timeout of one step.
#[derive(Clone, Debug)]
pub struct StepPolicy {
    /// Attempts for retryable failures, applied to `execute` and to
    /// `compensate` alike.
    pub retry: RetryPolicy,
    /// Limit of each attempt.
    pub timeout: Duration,
}

impl Default for StepPolicy {
    /// The `fast` retry preset and a 30 s timeout per attempt.
    fn default() -> Self {
        Self {
            retry: RetryPolicy::fast(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// A compensation-mode step: an action and its undo.
#[derive(Clone)]
pub struct Step {
    pub(crate) name: String,
    pub(crate) execute: StepFn,
    pub(crate) compensate: StepFn,
    pub(crate) policy: StepPolicy,
}

impl Step {
    /// A step named `name` (unique within its saga) with the default policy.
    pub fn new<E, C>(name: &str, execute: E, compensate: C) -> Self
    where
        E: Fn(StepContext) -> BoxFuture<'static, StepResult> + Send + Sync + 'static,
        C: Fn(StepContext) -> BoxFuture<'static, StepResult> + Send + Sync + 'static,
    {
        Self {
            name: name.to_owned(),
            execute: Arc::new(execute),
            compensate: Arc::new(compensate),
            policy: StepPolicy::default(),
        }
    }

    /// The same step with another retry policy and timeout.
    pub fn with_policy(mut self, policy: StepPolicy) -> Self {
        self.policy = policy;
        self
    }
}

/// A transaction-mode step: no undo, since a failure rolls the whole
/// transaction back.
///
/// It has a timeout but no retry policy: a step that failed half-way has
/// left its writes in the transaction, so running it again inside the same
/// transaction could apply them twice. Any failure ends the transaction
/// instead; a write conflict re-runs the whole transaction from the start
/// (see [`crate::db::Database::transaction`]).
#[derive(Clone)]
pub struct TxStep {
    pub(crate) name: String,
    pub(crate) execute: TxStepFn,
    pub(crate) timeout: Duration,
}

impl TxStep {
    /// A step named `name` (unique within its saga) with a 30 s timeout.
    ///
    /// `execute` may run more than once (the transaction is re-run on a
    /// write conflict), so it must only act through the transaction.
    pub fn new<E>(name: &str, execute: E) -> Self
    where
        E: for<'t, 'a> Fn(&'t mut Transaction<'a>, StepContext) -> BoxFuture<'t, StepResult>
            + Send
            + Sync
            + 'static,
    {
        Self {
            name: name.to_owned(),
            execute: Arc::new(execute),
            timeout: StepPolicy::default().timeout,
        }
    }

    /// The same step with another timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// How a saga keeps its steps all-or-nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SagaMode {
    /// Every step in one database transaction; for money.
    Transaction,
    /// Steps one by one, undone in reverse order on failure; for everything
    /// that crosses a transaction boundary (other services, providers).
    Compensation,
}

#[derive(Clone)]
pub(crate) enum Steps {
    Transaction(Vec<TxStep>),
    Compensation(Vec<Step>),
}

/// A named saga and its steps, registered once with the engine.
#[derive(Clone)]
pub struct SagaDefinition {
    pub(crate) name: String,
    pub(crate) steps: Steps,
}

impl SagaDefinition {
    /// A compensation-mode saga.
    pub fn compensation(name: &str, steps: Vec<Step>) -> Self {
        Self {
            name: name.to_owned(),
            steps: Steps::Compensation(steps),
        }
    }

    /// A transaction-mode saga.
    pub fn transaction(name: &str, steps: Vec<TxStep>) -> Self {
        Self {
            name: name.to_owned(),
            steps: Steps::Transaction(steps),
        }
    }

    /// The saga's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The saga's mode.
    pub fn mode(&self) -> SagaMode {
        match self.steps {
            Steps::Transaction(_) => SagaMode::Transaction,
            Steps::Compensation(_) => SagaMode::Compensation,
        }
    }

    pub(crate) fn step_names(&self) -> Vec<String> {
        match &self.steps {
            Steps::Transaction(steps) => steps.iter().map(|s| s.name.clone()).collect(),
            Steps::Compensation(steps) => steps.iter().map(|s| s.name.clone()).collect(),
        }
    }
}
