//! Runs, persists and resumes saga instances.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::Utc;
use futures::future::BoxFuture;
use prometheus::{IntCounterVec, Opts, Registry};
use serde_json::Value;

use super::definition::{SagaDefinition, Step, StepContext, StepError, StepFn, StepPolicy};
use super::definition::{StepResult, Steps, TxStep};
use super::record::{SagaRecord, SagaStatus, StepRecord, StepStatus, SAGAS};
use crate::db::{
    from_document, paginate, to_document, Connection, Database, Direction, Filter, IndexSpec,
    PageQuery, StoreError, Update, ID,
};
use crate::resilience::RetryPolicy;

/// What can go wrong running or inspecting a saga.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SagaError {
    /// No definition with this name was registered.
    #[error("no saga named {0} is registered")]
    UnknownSaga(String),
    /// No instance with this id is stored.
    #[error("saga {0} not found")]
    NotFound(String),
    /// The stored step log does not match the registered definition (the
    /// steps changed between deployments), so resuming could skip or repeat
    /// the wrong step.
    #[error("saga {0} was stored with other steps than its definition has")]
    DefinitionMismatch(String),
    /// A definition names two steps alike, which would make their
    /// idempotency keys collide.
    #[error("saga {0} has duplicate step names")]
    DuplicateStep(String),
    /// A step failed; the saga ended in `status` (`FAILED`, `COMPENSATED` or
    /// `COMPENSATION_FAILED`).
    #[error("saga {saga_id} failed at step {step} and ended {status:?}: {source}")]
    StepFailed {
        /// The instance.
        saga_id: String,
        /// The failed step.
        step: String,
        /// Where the saga ended.
        status: SagaStatus,
        /// Why the step failed.
        source: StepError,
    },
    /// The store failed; the instance is left as last persisted and can be
    /// resumed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The saga counters could not be registered.
    #[error("cannot register saga metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Saga counters, labelled by saga name.
#[derive(Clone)]
struct SagaMetrics {
    started: IntCounterVec,
    completed: IntCounterVec,
    compensated: IntCounterVec,
    compensation_failed: IntCounterVec,
    failed: IntCounterVec,
}

impl SagaMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str| -> Result<IntCounterVec, prometheus::Error> {
            let counter = IntCounterVec::new(Opts::new(name, help), &["saga"])?;
            registry.register(Box::new(counter.clone()))?;
            Ok(counter)
        };
        Ok(Self {
            started: counter("saga_started_total", "Saga instances started")?,
            completed: counter("saga_completed_total", "Saga instances completed")?,
            compensated: counter(
                "saga_compensated_total",
                "Saga instances whose completed steps were all undone",
            )?,
            compensation_failed: counter(
                "saga_compensation_failed_total",
                "Saga instances left in COMPENSATION_FAILED (need an operator)",
            )?,
            failed: counter(
                "saga_failed_total",
                "Transaction-mode saga instances rolled back",
            )?,
        })
    }

    fn ended(&self, saga: &str, status: SagaStatus) {
        let counter = match status {
            SagaStatus::Completed => &self.completed,
            SagaStatus::Compensated => &self.compensated,
            SagaStatus::CompensationFailed => &self.compensation_failed,
            SagaStatus::Failed => &self.failed,
            SagaStatus::Running | SagaStatus::Compensating => return,
        };
        counter.with_label_values(&[saga]).inc();
    }
}

/// Runs registered sagas and keeps their instances in the `sagas` collection.
///
/// A compensation-mode instance is written after every step transition, so
/// after a crash [`SagaEngine::resume`] continues where it stopped. Resuming
/// is meant for one process at a time (start-up, or a job holding the
/// recovery lease): two processes resuming the same instance at once would
/// both run its next step.
pub struct SagaEngine {
    db: Arc<Database>,
    definitions: HashMap<String, Arc<SagaDefinition>>,
    metrics: SagaMetrics,
}

/// Why a transaction-mode run ended without committing.
enum TxFailure {
    Step {
        // Boxed: the record dwarfs the other variant.
        record: Box<SagaRecord>,
        step: String,
        error: StepError,
    },
    Store(StoreError),
}

impl From<StoreError> for TxFailure {
    fn from(err: StoreError) -> Self {
        Self::Store(err)
    }
}

impl SagaEngine {
    /// An engine over `db` whose counters go into `registry`; creates the
    /// `sagas` index it lists by.
    pub async fn new(db: Arc<Database>, registry: &Registry) -> Result<Self, SagaError> {
        db.ensure_indexes(&[IndexSpec::new(SAGAS, "sagas_status", &["status"])])
            .await?;
        Ok(Self {
            db,
            definitions: HashMap::new(),
            metrics: SagaMetrics::register(registry)?,
        })
    }

    /// Adds a definition (replacing one of the same name).
    pub fn register(&mut self, definition: SagaDefinition) -> Result<(), SagaError> {
        let mut names = definition.step_names();
        let count = names.len();
        names.sort();
        names.dedup();
        if names.len() != count {
            return Err(SagaError::DuplicateStep(definition.name));
        }
        self.definitions
            .insert(definition.name.clone(), Arc::new(definition));
        Ok(())
    }

    /// Starts saga `name` with a fresh id and runs it to its end.
    ///
    /// `Ok` means every step completed; a failed step gives
    /// [`SagaError::StepFailed`] after the transaction rolled back or the
    /// completed steps were compensated.
    pub async fn run(&self, name: &str, input: Value) -> Result<SagaRecord, SagaError> {
        self.run_with_id(name, &uuid::Uuid::now_v7().to_string(), input)
            .await
    }

    /// Like [`run`](Self::run) with a caller-chosen id: starting the same id
    /// twice fails with [`StoreError::Duplicate`], so the id can be a
    /// business key (one saga per transfer).
    pub async fn run_with_id(
        &self,
        name: &str,
        saga_id: &str,
        input: Value,
    ) -> Result<SagaRecord, SagaError> {
        let definition = self.definition(name)?;
        let now = Utc::now();
        let record = SagaRecord {
            id: saga_id.to_owned(),
            name: name.to_owned(),
            mode: definition.mode(),
            status: SagaStatus::Running,
            input,
            steps: definition
                .step_names()
                .into_iter()
                .map(StepRecord::pending)
                .collect(),
            error: None,
            created_at: now,
            updated_at: now,
        };
        self.db.insert(SAGAS, to_document(&record)?).await?;
        self.metrics.started.with_label_values(&[name]).inc();
        let (record, failure) = self.drive(&definition, record).await?;
        match failure {
            None => Ok(record),
            Some((step, source)) => Err(SagaError::StepFailed {
                saga_id: record.id,
                step,
                status: record.status,
                source,
            }),
        }
    }

    /// Continues instance `saga_id` after a crash and returns it as it ends:
    /// completed steps are not run again, a step whose outcome is unknown
    /// (`STARTED`) runs again under the same idempotency key, an interrupted
    /// compensation carries on. A transaction-mode instance found `RUNNING`
    /// committed nothing, so it runs again whole. Ended instances are
    /// returned unchanged.
    pub async fn resume(&self, saga_id: &str) -> Result<SagaRecord, SagaError> {
        let record = self
            .get(saga_id)
            .await?
            .ok_or_else(|| SagaError::NotFound(saga_id.to_owned()))?;
        if record.status.is_terminal() {
            return Ok(record);
        }
        let definition = self.definition(&record.name)?;
        if definition.step_names()
            != record
                .steps
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>()
        {
            return Err(SagaError::DefinitionMismatch(saga_id.to_owned()));
        }
        tracing::info!(saga = %record.name, saga_id, status = ?record.status, "resuming saga");
        Ok(self.drive(&definition, record).await?.0)
    }

    /// Resumes every `RUNNING` or `COMPENSATING` instance of a registered
    /// saga that has not changed for `idle_for`, and returns them as they
    /// ended. Run at start-up (or from a job holding the recovery lease);
    /// `idle_for` must exceed the longest a step may take with its retries,
    /// or an instance another process is still running would be run twice.
    pub async fn resume_incomplete(
        &self,
        idle_for: std::time::Duration,
    ) -> Result<Vec<SagaRecord>, SagaError> {
        let names: Vec<Value> = self.definitions.keys().cloned().map(Value::from).collect();
        let filter = Filter::all()
            .is_in(
                "status",
                vec![
                    SagaStatus::Running.as_str().into(),
                    SagaStatus::Compensating.as_str().into(),
                ],
            )
            .is_in("name", names);
        let pending = self
            .db
            .find(SAGAS, &filter, &crate::db::FindOptions::by_id())
            .await?;
        let Some(idle_since) = chrono::Duration::from_std(idle_for)
            .ok()
            .and_then(|idle| Utc::now().checked_sub_signed(idle))
        else {
            // Nothing can have been idle that long.
            return Ok(Vec::new());
        };
        let mut ended = Vec::with_capacity(pending.len());
        for doc in pending {
            let record: SagaRecord = from_document(doc)?;
            // Timestamps are compared here rather than in the filter: their
            // stored text has a varying number of fraction digits, so it
            // does not sort as time does.
            if record.updated_at > idle_since {
                continue;
            }
            ended.push(self.resume(&record.id).await?);
        }
        Ok(ended)
    }

    /// The instance with this id.
    pub async fn get(&self, saga_id: &str) -> Result<Option<SagaRecord>, SagaError> {
        Ok(self
            .db
            .get(SAGAS, saga_id)
            .await?
            .map(from_document)
            .transpose()?)
    }

    /// One page of instances, oldest first, optionally only those in `status`.
    pub async fn list(
        &self,
        status: Option<SagaStatus>,
        page: &PageQuery,
    ) -> Result<Connection<SagaRecord>, SagaError> {
        let filter = match status {
            Some(status) => Filter::all().eq("status", status.as_str()),
            None => Filter::all(),
        };
        Ok(paginate(&self.db, SAGAS, &filter, ID, Direction::Asc, page)
            .await?
            .try_map(from_document)?)
    }

    fn definition(&self, name: &str) -> Result<Arc<SagaDefinition>, SagaError> {
        self.definitions
            .get(name)
            .cloned()
            .ok_or_else(|| SagaError::UnknownSaga(name.to_owned()))
    }

    /// Runs `record` to its end; the failed step and its error when it failed.
    async fn drive(
        &self,
        definition: &SagaDefinition,
        record: SagaRecord,
    ) -> Result<(SagaRecord, Option<(String, StepError)>), SagaError> {
        let (record, failure) = match &definition.steps {
            Steps::Compensation(steps) => self.drive_compensation(steps, record).await?,
            Steps::Transaction(steps) => self.drive_transaction(steps, record).await?,
        };
        self.metrics.ended(&record.name, record.status);
        Ok((record, failure))
    }

    async fn drive_compensation(
        &self,
        steps: &[Step],
        mut record: SagaRecord,
    ) -> Result<(SagaRecord, Option<(String, StepError)>), SagaError> {
        let mut failure = None;
        if record.status == SagaStatus::Running {
            for (index, step) in steps.iter().enumerate() {
                if record.steps[index].status == StepStatus::Completed {
                    continue;
                }
                let result = self
                    .run_action(&mut record, index, step, StepStatus::Started, &step.execute)
                    .await?;
                let log = &mut record.steps[index];
                match result {
                    Ok(output) => {
                        log.status = StepStatus::Completed;
                        log.output = Some(output);
                        self.save(&mut record).await?;
                    }
                    Err(error) => {
                        log.status = StepStatus::Failed;
                        log.error = Some(error.to_string());
                        record.status = SagaStatus::Compensating;
                        record.error = Some(format!("step {} failed: {error}", step.name));
                        self.save(&mut record).await?;
                        failure = Some((step.name.clone(), error));
                        break;
                    }
                }
            }
            if failure.is_none() {
                record.status = SagaStatus::Completed;
                self.save(&mut record).await?;
                return Ok((record, None));
            }
        }
        // Steps run one at a time, so reverse definition order is reverse
        // order of completion.
        for (index, step) in steps.iter().enumerate().rev() {
            if !matches!(
                record.steps[index].status,
                StepStatus::Completed | StepStatus::Compensating
            ) {
                continue;
            }
            let result = self
                .run_action(
                    &mut record,
                    index,
                    step,
                    StepStatus::Compensating,
                    &step.compensate,
                )
                .await?;
            let log = &mut record.steps[index];
            match result {
                Ok(_) => log.status = StepStatus::Compensated,
                Err(error) => {
                    log.status = StepStatus::CompensationFailed;
                    log.error = Some(error.to_string());
                    record.status = SagaStatus::CompensationFailed;
                    // An undo that keeps failing leaves the business in an
                    // inconsistent state only an operator can settle.
                    tracing::error!(
                        alert = true,
                        saga = %record.name,
                        saga_id = %record.id,
                        step = %step.name,
                        error = %error,
                        "saga compensation failed; manual intervention needed"
                    );
                    self.save(&mut record).await?;
                    return Ok((record, failure));
                }
            }
            self.save(&mut record).await?;
        }
        record.status = SagaStatus::Compensated;
        self.save(&mut record).await?;
        Ok((record, failure))
    }

    async fn drive_transaction(
        &self,
        steps: &[TxStep],
        record: SagaRecord,
    ) -> Result<(SagaRecord, Option<(String, StepError)>), SagaError> {
        let outcome = self
            .db
            .transaction(|tx| {
                // Every run starts from the record as it was before the
                // transaction: a re-run after a conflict must not see the
                // log of the run that was thrown away.
                let mut record = record.clone();
                Box::pin(async move {
                    for (index, step) in steps.iter().enumerate() {
                        begin(&mut record.steps[index], StepStatus::Started);
                        let ctx = context(&record, index);
                        // One attempt: see `TxStep` for why it is not retried.
                        let policy = StepPolicy {
                            retry: RetryPolicy {
                                max_attempts: 1,
                                ..RetryPolicy::fast()
                            },
                            timeout: step.timeout,
                        };
                        let (result, attempts) =
                            attempt(&record.name, &step.name, &policy, tx, |tx| {
                                (step.execute)(tx, ctx.clone())
                            })
                            .await;
                        let log = &mut record.steps[index];
                        log.attempts = attempts;
                        log.finished_at = Some(Utc::now());
                        match result {
                            Ok(output) => {
                                log.status = StepStatus::Completed;
                                log.output = Some(output);
                            }
                            Err(error) => {
                                log.status = StepStatus::Failed;
                                log.error = Some(error.to_string());
                                return Err(TxFailure::Step {
                                    step: step.name.clone(),
                                    record: Box::new(record),
                                    error,
                                });
                            }
                        }
                    }
                    record.status = SagaStatus::Completed;
                    record.updated_at = Utc::now();
                    // Committed with the steps' writes, so "COMPLETED" and
                    // the effects are one atomic fact: an instance found
                    // RUNNING later committed nothing.
                    tx.update_one(SAGAS, &Filter::id(&record.id), &record_update(&record)?)
                        .await?;
                    Ok(record)
                })
            })
            .await;
        match outcome {
            Ok(record) => Ok((record, None)),
            Err(TxFailure::Step {
                mut record,
                step,
                error,
            }) => {
                record.status = SagaStatus::Failed;
                record.error = Some(format!("step {step} failed: {error}"));
                self.save(&mut record).await?;
                Ok((*record, Some((step, error))))
            }
            Err(TxFailure::Store(err)) => Err(err.into()),
        }
    }

    /// Marks step `index` as entering `phase` (persisted first, so a crash
    /// leaves a trace), runs `action` under the step's policy, and records
    /// its attempts and finish time; the caller records the outcome.
    async fn run_action(
        &self,
        record: &mut SagaRecord,
        index: usize,
        step: &Step,
        phase: StepStatus,
        action: &StepFn,
    ) -> Result<StepResult, SagaError> {
        begin(&mut record.steps[index], phase);
        self.save(record).await?;
        let ctx = context(record, index);
        let (result, attempts) = attempt(&record.name, &step.name, &step.policy, &mut (), |()| {
            action(ctx.clone())
        })
        .await;
        let log = &mut record.steps[index];
        log.attempts = attempts;
        log.finished_at = Some(Utc::now());
        Ok(result)
    }

    async fn save(&self, record: &mut SagaRecord) -> Result<(), SagaError> {
        record.updated_at = Utc::now();
        let updated = self
            .db
            .update_one(SAGAS, &Filter::id(&record.id), &record_update(record)?)
            .await?;
        match updated {
            Some(_) => Ok(()),
            None => Err(SagaError::NotFound(record.id.clone())),
        }
    }
}

impl std::fmt::Debug for SagaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaEngine")
            .field("definitions", &self.definitions.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The fields of a record that change while it runs.
fn record_update(record: &SagaRecord) -> Result<Update, StoreError> {
    let mut doc = to_document(record)?;
    let mut update = Update::new();
    for field in ["status", "steps", "error", "updated_at"] {
        update = update.set(field, doc.remove(field).unwrap_or(Value::Null));
    }
    Ok(update)
}

fn begin(log: &mut StepRecord, status: StepStatus) {
    log.status = status;
    log.attempts = 0;
    log.error = None;
    log.started_at = Some(Utc::now());
    log.finished_at = None;
}

fn context(record: &SagaRecord, index: usize) -> StepContext {
    let step = record.steps[index].name.clone();
    let outputs: BTreeMap<String, Value> = record
        .steps
        .iter()
        .filter_map(|s| s.output.clone().map(|output| (s.name.clone(), output)))
        .collect();
    StepContext {
        idempotency_key: format!("{}:{step}", record.id),
        saga_id: record.id.clone(),
        step,
        input: Arc::new(record.input.clone()),
        outputs: Arc::new(outputs),
    }
}

/// Runs one action under its step's timeout and retry policy; the result
/// and how many attempts it took.
#[tracing::instrument(skip_all, fields(saga = %saga, step = %step))]
async fn attempt<S, F>(
    saga: &str,
    step: &str,
    policy: &StepPolicy,
    state: &mut S,
    mut action: F,
) -> (StepResult, u32)
where
    S: Send,
    F: for<'b> FnMut(&'b mut S) -> BoxFuture<'b, StepResult>,
{
    let max_attempts = policy.retry.max_attempts.max(1);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = tokio::time::timeout(policy.timeout, action(state))
            .await
            .unwrap_or(Err(StepError::Timeout(policy.timeout)));
        match result {
            Err(error) if error.is_retryable() && attempts < max_attempts => {
                tracing::debug!(attempts, error = %error, "step failed, retrying");
                tokio::time::sleep(policy.retry.delay_for(attempts)).await;
            }
            Err(error) => {
                tracing::warn!(attempts, error = %error, "step failed");
                return (Err(error), attempts);
            }
            Ok(output) => return (Ok(output), attempts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::SagaMode;

    #[test]
    fn only_transient_failures_and_timeouts_are_retried() {
        assert!(StepError::Transient("blip".into()).is_retryable());
        assert!(StepError::Timeout(std::time::Duration::from_millis(1)).is_retryable());
        assert!(!StepError::Rejected("no".into()).is_retryable());
        assert!(!StepError::Store(StoreError::Conflict).is_retryable());
    }

    #[tokio::test(start_paused = true)]
    async fn every_attempt_is_bounded_by_the_step_timeout() {
        let policy = StepPolicy {
            retry: RetryPolicy {
                max_attempts: 3,
                ..RetryPolicy::fast()
            },
            timeout: std::time::Duration::from_millis(50),
        };
        let mut calls = 0;

        let (result, attempts) = attempt("s", "hang", &policy, &mut calls, |calls| {
            Box::pin(async move {
                *calls += 1;
                std::future::pending::<()>().await;
                Ok(Value::Null)
            })
        })
        .await;

        assert!(matches!(result, Err(StepError::Timeout(_))));
        assert_eq!((attempts, calls), (3, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_not_retried() {
        let policy = StepPolicy {
            retry: RetryPolicy::standard(),
            timeout: std::time::Duration::from_secs(1),
        };
        let (result, attempts) = attempt("s", "refuse", &policy, &mut (), |()| {
            Box::pin(async { Err(StepError::Rejected("no".into())) })
        })
        .await;

        assert!(matches!(result, Err(StepError::Rejected(_))));
        assert_eq!(attempts, 1);
    }

    #[test]
    fn ended_statuses_are_terminal() {
        assert!(!SagaStatus::Running.is_terminal());
        assert!(!SagaStatus::Compensating.is_terminal());
        assert!(SagaStatus::CompensationFailed.is_terminal());
        assert_eq!(
            serde_json::to_value(SagaStatus::CompensationFailed).ok(),
            Some(Value::from(SagaStatus::CompensationFailed.as_str()))
        );
        assert_eq!(
            serde_json::to_value(SagaMode::Transaction).ok(),
            Some(Value::from("TRANSACTION"))
        );
    }
}
