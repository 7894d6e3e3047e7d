//! The saga engine and the recovery job against a real embedded store and a
//! real Redis.
//!
//! Redis tests need `TEST_REDIS_URL` (set by `scripts/test.sh`); each test
//! uses its own key prefix and its own temporary store directory, so the
//! suite runs in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use prometheus::Registry;
use proptest::prelude::*;
use serde_json::{json, Value};
use service_core::db::{
    Database, DbConfig, Filter, NamingStrategy, PageArgs, PageQuery, PoolSettings,
};
use service_core::recovery::{
    HandlerError, OperationState, OperationTracker, RecoveryConfig, RecoveryError, RecoveryHandler,
    RecoveryJob, RecoveryOutcome, TrackedOperation,
};
use service_core::redis::{KeyPrefix, RedisAccessor};
use service_core::resilience::RetryPolicy;
use service_core::saga::{
    SagaDefinition, SagaEngine, SagaError, SagaStatus, Step, StepContext, StepError, StepPolicy,
    StepResult, StepStatus, TxStep,
};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------- helpers

async fn open_db() -> (Arc<Database>, TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = DbConfig {
        mongodb_uri: None,
        data_dir: dir.path().to_path_buf(),
        brand: format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        tenant: "default".to_owned(),
        service: "saga".to_owned(),
        naming: NamingStrategy::PerBrandService,
        embedded: service_core::db::EmbeddedEngine::default(),
        pool: PoolSettings::default(),
    };
    let db = Database::open(&config).await.expect("open embedded store");
    (Arc::new(db), dir)
}

async fn engine(db: &Arc<Database>, definitions: Vec<SagaDefinition>) -> SagaEngine {
    let mut engine = SagaEngine::new(db.clone(), &Registry::new()).await.unwrap();
    for definition in definitions {
        engine.register(definition).unwrap();
    }
    engine
}

/// One attempt, no retry: failures are final at once.
fn once() -> StepPolicy {
    StepPolicy {
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::fast()
        },
        timeout: Duration::from_secs(10),
    }
}

type Journal = Arc<Mutex<Vec<String>>>;

fn noop(_: StepContext) -> BoxFuture<'static, StepResult> {
    Box::pin(async { Ok(Value::Null) })
}

/// A step that writes `exec:<name>` (and `comp:<name>` when undone) to the
/// journal and fails when `fails` says so.
fn journaled(name: &str, journal: &Journal, fails: bool) -> Step {
    let (exec_journal, comp_journal) = (journal.clone(), journal.clone());
    Step::new(
        name,
        move |ctx: StepContext| {
            let journal = exec_journal.clone();
            Box::pin(async move {
                journal.lock().unwrap().push(format!("exec:{}", ctx.step));
                if fails {
                    return Err(StepError::Rejected("refused".into()));
                }
                Ok(json!({ "done": ctx.step }))
            }) as BoxFuture<'static, StepResult>
        },
        move |ctx: StepContext| {
            let journal = comp_journal.clone();
            Box::pin(async move {
                // The undo sees what its step produced.
                assert_eq!(ctx.output(&ctx.step), Some(&json!({ "done": ctx.step })));
                journal.lock().unwrap().push(format!("comp:{}", ctx.step));
                Ok(Value::Null)
            }) as BoxFuture<'static, StepResult>
        },
    )
    .with_policy(once())
}

fn first(n: i32) -> PageQuery {
    PageArgs::forward(Some(n), None).validate().unwrap()
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- saga

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever the number of steps and wherever the failure, the undos run
    /// in exactly the reverse order of the completed executions.
    #[test]
    fn compensation_order_is_the_reverse_of_completion(steps in 1usize..8, fail_at in 0usize..9) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let (db, _dir) = open_db().await;
            let journal: Journal = Arc::default();
            let definition = SagaDefinition::compensation(
                "ordered",
                (0..steps)
                    .map(|i| journaled(&format!("s{i}"), &journal, i == fail_at))
                    .collect(),
            );
            let engine = engine(&db, vec![definition]).await;

            let result = engine.run("ordered", json!({})).await;

            let executed = fail_at.min(steps - 1);
            let mut expected: Vec<String> = (0..=executed).map(|i| format!("exec:s{i}")).collect();
            if fail_at < steps {
                expected.extend((0..fail_at).rev().map(|i| format!("comp:s{i}")));
                match result {
                    Err(SagaError::StepFailed { status, step, .. }) => {
                        assert_eq!(status, SagaStatus::Compensated);
                        assert_eq!(step, format!("s{fail_at}"));
                    }
                    other => panic!("expected a failed saga, got {other:?}"),
                }
            } else {
                assert_eq!(result.unwrap().status, SagaStatus::Completed);
            }
            assert_eq!(*journal.lock().unwrap(), expected);
        });
    }
}

fn insert_step(name: &str, fails: bool) -> TxStep {
    TxStep::new(name, move |tx, ctx| {
        Box::pin(async move {
            let doc = json!({ "_id": ctx.idempotency_key, "amount": 10 });
            tx.insert("ledger", doc.as_object().unwrap().clone())
                .await?;
            if fails {
                return Err(StepError::Rejected("insufficient balance".into()));
            }
            Ok(Value::Null)
        })
    })
}

#[tokio::test]
async fn transaction_mode_leaves_no_partial_writes() {
    let (db, _dir) = open_db().await;
    let engine = engine(
        &db,
        vec![
            SagaDefinition::transaction(
                "failing",
                vec![insert_step("debit", false), insert_step("credit", true)],
            ),
            SagaDefinition::transaction(
                "transfer",
                vec![insert_step("debit", false), insert_step("credit", false)],
            ),
        ],
    )
    .await;

    let err = engine.run("failing", json!({})).await.unwrap_err();
    let SagaError::StepFailed {
        saga_id, status, ..
    } = err
    else {
        panic!("expected a step failure, got {err:?}");
    };
    assert_eq!(status, SagaStatus::Failed);
    assert_eq!(db.count("ledger", &Filter::all()).await.unwrap(), 0);
    let stored = engine.get(&saga_id).await.unwrap().unwrap();
    assert_eq!(stored.status, SagaStatus::Failed);
    assert_eq!(stored.steps[1].status, StepStatus::Failed);

    let done = engine.run("transfer", json!({})).await.unwrap();
    assert_eq!(done.status, SagaStatus::Completed);
    assert_eq!(db.count("ledger", &Filter::all()).await.unwrap(), 2);
    for step in ["debit", "credit"] {
        let key = format!("{}:{step}", done.id);
        assert!(db.get("ledger", &key).await.unwrap().is_some(), "{key}");
    }
    let stored = engine.get(&done.id).await.unwrap().unwrap();
    assert_eq!(stored.status, SagaStatus::Completed);
}

#[tokio::test]
async fn a_flaky_step_succeeds_within_its_retry_policy() {
    let (db, _dir) = open_db().await;
    let calls = Arc::new(Mutex::new(0u32));
    let counter = calls.clone();
    let flaky = Step::new(
        "flaky",
        move |_| {
            let counter = counter.clone();
            Box::pin(async move {
                let mut calls = counter.lock().unwrap();
                *calls += 1;
                if *calls < 3 {
                    return Err(StepError::Transient("blip".into()));
                }
                Ok(json!(*calls))
            }) as BoxFuture<'static, StepResult>
        },
        noop,
    )
    .with_policy(StepPolicy {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            multiplier: 2.0,
            jitter: false,
        },
        timeout: Duration::from_secs(5),
    });
    let engine = engine(
        &db,
        vec![SagaDefinition::compensation("flaky", vec![flaky])],
    )
    .await;

    let done = engine.run("flaky", json!({})).await.unwrap();

    assert_eq!(done.status, SagaStatus::Completed);
    assert_eq!(done.steps[0].attempts, 3);
    assert_eq!(*calls.lock().unwrap(), 3);
}

#[tokio::test]
async fn a_step_timeout_fails_the_step_and_compensates() {
    let (db, _dir) = open_db().await;
    let journal: Journal = Arc::default();
    let slow = Step::new(
        "slow",
        |_| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(Value::Null)
            }) as BoxFuture<'static, StepResult>
        },
        noop,
    )
    .with_policy(StepPolicy {
        timeout: Duration::from_millis(50),
        ..once()
    });
    let engine = engine(
        &db,
        vec![SagaDefinition::compensation(
            "slow",
            vec![journaled("reserve", &journal, false), slow],
        )],
    )
    .await;

    let err = engine.run("slow", json!({})).await.unwrap_err();

    let SagaError::StepFailed {
        saga_id,
        status,
        source,
        ..
    } = err
    else {
        panic!("expected a step failure, got {err:?}");
    };
    assert!(matches!(source, StepError::Timeout(_)), "{source:?}");
    assert_eq!(status, SagaStatus::Compensated);
    assert_eq!(*journal.lock().unwrap(), ["exec:reserve", "comp:reserve"]);
    let stored = engine.get(&saga_id).await.unwrap().unwrap();
    assert_eq!(stored.steps[0].status, StepStatus::Compensated);
    assert_eq!(stored.steps[1].status, StepStatus::Failed);
}

#[tokio::test]
async fn a_failing_compensation_ends_in_compensation_failed() {
    let (db, _dir) = open_db().await;
    let undo_calls = Arc::new(Mutex::new(0u32));
    let counter = undo_calls.clone();
    let stubborn = Step::new("charge", noop, move |_| {
        let counter = counter.clone();
        Box::pin(async move {
            *counter.lock().unwrap() += 1;
            Err(StepError::Transient("provider down".into()))
        }) as BoxFuture<'static, StepResult>
    })
    .with_policy(StepPolicy {
        retry: RetryPolicy {
            max_attempts: 2,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            multiplier: 1.0,
            jitter: false,
        },
        timeout: Duration::from_secs(5),
    });
    let journal: Journal = Arc::default();
    let registry = Registry::new();
    let mut engine = SagaEngine::new(db.clone(), &registry).await.unwrap();
    engine
        .register(SagaDefinition::compensation(
            "payout",
            vec![stubborn, journaled("notify", &journal, true)],
        ))
        .unwrap();

    let err = engine.run("payout", json!({})).await.unwrap_err();

    let SagaError::StepFailed {
        saga_id, status, ..
    } = err
    else {
        panic!("expected a step failure, got {err:?}");
    };
    assert_eq!(status, SagaStatus::CompensationFailed);
    assert_eq!(
        *undo_calls.lock().unwrap(),
        2,
        "the undo is retried by policy"
    );
    let stored = engine.get(&saga_id).await.unwrap().unwrap();
    assert_eq!(stored.status, SagaStatus::CompensationFailed);
    assert_eq!(stored.steps[0].status, StepStatus::CompensationFailed);
    assert_eq!(stored.steps[0].attempts, 2);
    let failed = registry
        .gather()
        .into_iter()
        .find(|family| family.name() == "saga_compensation_failed_total")
        .expect("the counter is registered");
    assert_eq!(failed.get_metric()[0].get_counter().get_value(), 1.0);
    // A terminal instance is left alone by resume.
    let resumed = engine.resume(&saga_id).await.unwrap();
    assert_eq!(resumed.status, SagaStatus::CompensationFailed);
    assert_eq!(*undo_calls.lock().unwrap(), 2);
}

type Counts = Arc<Mutex<HashMap<String, u32>>>;

/// Steps s1..s4 counting their executions; `s3` panics when `crash` is set.
fn crash_saga(counts: &Counts, crash: bool) -> SagaDefinition {
    let steps = (1..=4)
        .map(|i| {
            let counts = counts.clone();
            Step::new(
                &format!("s{i}"),
                move |ctx: StepContext| {
                    let counts = counts.clone();
                    Box::pin(async move {
                        *counts.lock().unwrap().entry(ctx.step.clone()).or_default() += 1;
                        if crash && ctx.step == "s3" {
                            panic!("simulated crash in s3");
                        }
                        Ok(json!(ctx.idempotency_key))
                    }) as BoxFuture<'static, StepResult>
                },
                noop,
            )
            .with_policy(once())
        })
        .collect();
    SagaDefinition::compensation("crashy", steps)
}

#[tokio::test]
async fn a_resumed_saga_does_not_repeat_completed_steps() {
    let (db, _dir) = open_db().await;
    let counts: Counts = Arc::default();
    let crashing = Arc::new(engine(&db, vec![crash_saga(&counts, true)]).await);

    let runner = crashing.clone();
    let crashed = tokio::spawn(async move { runner.run("crashy", json!({"n": 1})).await }).await;
    assert!(crashed.unwrap_err().is_panic());
    drop(crashing);

    let restarted = engine(&db, vec![crash_saga(&counts, false)]).await;
    let running = restarted
        .list(Some(SagaStatus::Running), &first(10))
        .await
        .unwrap();
    assert_eq!(running.edges.len(), 1);
    let before = &running.edges[0].node;
    assert_eq!(before.steps[1].status, StepStatus::Completed);
    assert_eq!(before.steps[2].status, StepStatus::Started);

    let busy = restarted
        .resume_incomplete(Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(busy.is_empty(), "a recently active instance is left alone");
    let resumed = restarted.resume_incomplete(Duration::ZERO).await.unwrap();

    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].status, SagaStatus::Completed);
    assert_eq!(resumed[0].id, before.id);
    let counts = counts.lock().unwrap();
    assert_eq!(counts["s1"], 1);
    assert_eq!(counts["s2"], 1);
    assert_eq!(counts["s3"], 2, "the step found STARTED runs again");
    assert_eq!(counts["s4"], 1);
    let key = format!("{}:s2", before.id);
    assert_eq!(resumed[0].steps[1].output, Some(json!(key)));
}

#[tokio::test]
async fn sagas_are_listed_by_status() {
    let (db, _dir) = open_db().await;
    let journal: Journal = Arc::default();
    let engine = engine(
        &db,
        vec![
            SagaDefinition::compensation("ok", vec![journaled("a", &journal, false)]),
            SagaDefinition::compensation(
                "ko",
                vec![
                    journaled("a", &journal, false),
                    journaled("b", &journal, true),
                ],
            ),
        ],
    )
    .await;
    for _ in 0..2 {
        engine.run("ok", json!({})).await.unwrap();
    }
    engine.run("ko", json!({})).await.unwrap_err();

    let completed = engine
        .list(Some(SagaStatus::Completed), &first(10))
        .await
        .unwrap();
    let compensated = engine
        .list(Some(SagaStatus::Compensated), &first(10))
        .await
        .unwrap();
    let page = engine.list(None, &first(2)).await.unwrap();

    assert_eq!(completed.edges.len(), 2);
    assert!(completed.edges.iter().all(|e| e.node.name == "ok"));
    assert_eq!(compensated.edges.len(), 1);
    assert_eq!(compensated.edges[0].node.name, "ko");
    assert_eq!(page.edges.len(), 2);
    assert!(page.page_info.has_next_page);
    assert!(engine
        .list(Some(SagaStatus::Running), &first(10))
        .await
        .unwrap()
        .edges
        .is_empty());
}

// ---------------------------------------------------------------- recovery

fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "TEST_REDIS_URL is not set: the recovery tests need a real Redis. Run \
             scripts/test.sh, or start `redis-server --port <free> --save \"\" --appendonly no \
             --daemonize yes` and export TEST_REDIS_URL=redis://127.0.0.1:<port>"
        )
    })
}

fn unique_prefix() -> KeyPrefix {
    KeyPrefix::new(uuid::Uuid::new_v4().simple().to_string(), "recovery").unwrap()
}

async fn redis_tracker(prefix: &KeyPrefix) -> Arc<OperationTracker> {
    let redis = RedisAccessor::connect(&redis_url(), prefix.clone())
        .await
        .expect("connect to TEST_REDIS_URL");
    Arc::new(OperationTracker::redis(redis))
}

async fn store_tracker(db: &Arc<Database>) -> Arc<OperationTracker> {
    Arc::new(OperationTracker::store(db.clone()).await.unwrap())
}

/// Counts its calls per operation id; recovers everything.
#[derive(Default)]
struct CountingHandler {
    calls: Mutex<HashMap<String, u32>>,
    /// Lengthens each call, so concurrent jobs overlap.
    pause: Duration,
}

impl CountingHandler {
    fn calls(&self, id: &str) -> u32 {
        self.calls.lock().unwrap().get(id).copied().unwrap_or(0)
    }

    fn total(&self) -> u32 {
        self.calls.lock().unwrap().values().sum()
    }
}

impl RecoveryHandler for CountingHandler {
    fn op_type(&self) -> &str {
        "transfer"
    }

    fn recover<'a>(
        &'a self,
        op: &'a TrackedOperation,
    ) -> BoxFuture<'a, Result<RecoveryOutcome, HandlerError>> {
        Box::pin(async move {
            *self.calls.lock().unwrap().entry(op.id.clone()).or_default() += 1;
            tokio::time::sleep(self.pause).await;
            Ok(RecoveryOutcome::Recovered)
        })
    }
}

fn quick() -> RecoveryConfig {
    RecoveryConfig {
        interval: Duration::from_millis(10),
        batch_size: 100,
        lease_ttl: Duration::from_secs(5),
    }
}

fn job(tracker: &Arc<OperationTracker>, handler: &Arc<CountingHandler>) -> Arc<RecoveryJob> {
    let mut job = RecoveryJob::new(tracker.clone(), quick(), &Registry::new()).unwrap();
    job.register(handler.clone());
    Arc::new(job)
}

const SILENT: Duration = Duration::from_millis(1);
const HEALTHY: Duration = Duration::from_secs(3600);

async fn state_of(tracker: &OperationTracker, id: &str) -> Option<OperationState> {
    tracker.get(id).await.unwrap().map(|op| op.state)
}

async fn wait_until_stale() {
    // Past a 1 ms heartbeat TTL, on the millisecond clock the schedule uses.
    tokio::time::sleep(Duration::from_millis(20)).await;
}

#[tokio::test]
async fn a_silent_operation_is_recovered_once() {
    let tracker = redis_tracker(&unique_prefix()).await;
    let handler = Arc::new(CountingHandler::default());
    let job = job(&tracker, &handler);
    tracker
        .start("transfer", "t-1", json!({"amount": 5}), SILENT)
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let (job, cancel) = (job.clone(), cancel.clone());
        async move { job.run(cancel).await }
    });

    eventually("the operation to be recovered", || async {
        state_of(&tracker, "t-1").await == Some(OperationState::Completed)
    })
    .await;
    let runs = job.stats().runs_with_lease;
    eventually("a few more runs", || async {
        job.stats().runs_with_lease >= runs + 3
    })
    .await;
    cancel.cancel();
    running.await.unwrap();

    assert_eq!(handler.calls("t-1"), 1);
    let op = tracker.get("t-1").await.unwrap().unwrap();
    assert!(op.recovered);
    assert!(op.finished_at.is_some());
    assert_eq!(job.stats().recovered, 1);
}

async fn completed_operations_are_never_touched(tracker: Arc<OperationTracker>) {
    let handler = Arc::new(CountingHandler::default());
    let job = job(&tracker, &handler);
    tracker
        .start("transfer", "done", json!({}), SILENT)
        .await
        .unwrap();
    assert!(tracker.complete("done").await.unwrap());
    tracker
        .start("transfer", "stuck", json!({}), SILENT)
        .await
        .unwrap();
    wait_until_stale().await;

    assert!(job.run_once().await.unwrap());

    assert_eq!(handler.calls("done"), 0);
    assert_eq!(handler.calls("stuck"), 1);
    assert_eq!(job.stats().fetched, 1);
    let done = tracker.get("done").await.unwrap().unwrap();
    assert_eq!(done.state, OperationState::Completed);
    assert!(!done.recovered);
    let stuck = tracker.get("stuck").await.unwrap().unwrap();
    assert_eq!(stuck.state, OperationState::Completed);
    assert!(stuck.recovered);
}

#[tokio::test]
async fn completed_operations_are_never_touched_in_redis() {
    completed_operations_are_never_touched(redis_tracker(&unique_prefix()).await).await;
}

#[tokio::test]
async fn completed_operations_are_never_touched_in_the_store() {
    let (db, _dir) = open_db().await;
    completed_operations_are_never_touched(store_tracker(&db).await).await;
}

async fn two_jobs_recover_each_operation_once(
    first: Arc<OperationTracker>,
    second: Arc<OperationTracker>,
) {
    let handler = Arc::new(CountingHandler {
        pause: Duration::from_millis(5),
        ..CountingHandler::default()
    });
    let ids: Vec<String> = (0..5).map(|i| format!("op-{i}")).collect();
    for id in &ids {
        first
            .start("transfer", id, json!({}), SILENT)
            .await
            .unwrap();
    }
    wait_until_stale().await;
    let jobs = [job(&first, &handler), job(&second, &handler)];
    let cancel = CancellationToken::new();
    let running: Vec<_> = jobs
        .iter()
        .map(|job| {
            let (job, cancel) = (job.clone(), cancel.clone());
            tokio::spawn(async move { job.run(cancel).await })
        })
        .collect();

    eventually("every operation to be recovered", || async {
        for id in &ids {
            if state_of(&first, id).await != Some(OperationState::Completed) {
                return false;
            }
        }
        true
    })
    .await;
    let runs: Vec<u64> = jobs.iter().map(|j| j.stats().runs).collect();
    eventually("both jobs to run again", || async {
        jobs.iter().zip(&runs).all(|(j, r)| j.stats().runs >= r + 3)
    })
    .await;
    cancel.cancel();
    for task in running {
        task.await.unwrap();
    }

    for id in &ids {
        assert_eq!(handler.calls(id), 1, "{id}");
    }
    let recovered: u64 = jobs.iter().map(|j| j.stats().recovered).sum();
    assert_eq!(recovered, 5);
}

#[tokio::test]
async fn two_jobs_recover_each_operation_once_with_redis() {
    let prefix = unique_prefix();
    two_jobs_recover_each_operation_once(
        redis_tracker(&prefix).await,
        redis_tracker(&prefix).await,
    )
    .await;
}

#[tokio::test]
async fn two_jobs_recover_each_operation_once_with_the_store() {
    let (db, _dir) = open_db().await;
    two_jobs_recover_each_operation_once(store_tracker(&db).await, store_tracker(&db).await).await;
}

async fn recovery_reads_only_due_entries(tracker: Arc<OperationTracker>, healthy: usize) {
    let handler = Arc::new(CountingHandler::default());
    let job = job(&tracker, &handler);
    for i in 0..healthy {
        tracker
            .start("transfer", &format!("healthy-{i}"), json!({}), HEALTHY)
            .await
            .unwrap();
    }
    for i in 0..3 {
        tracker
            .start("transfer", &format!("stuck-{i}"), json!({}), SILENT)
            .await
            .unwrap();
    }
    wait_until_stale().await;

    assert!(job.run_once().await.unwrap());
    assert!(job.run_once().await.unwrap());

    assert_eq!(handler.total(), 3);
    let stats = job.stats();
    assert_eq!(stats.fetched, 3, "only due entries are read: {stats:?}");
    assert_eq!(stats.recovered, 3);
    assert_eq!(
        state_of(&tracker, "healthy-0").await,
        Some(OperationState::InProgress)
    );
}

#[tokio::test]
async fn recovery_cost_follows_stuck_operations_in_redis() {
    recovery_reads_only_due_entries(redis_tracker(&unique_prefix()).await, 1000).await;
}

#[tokio::test]
async fn recovery_cost_follows_stuck_operations_in_the_store() {
    let (db, _dir) = open_db().await;
    recovery_reads_only_due_entries(store_tracker(&db).await, 200).await;
}

async fn tracker_semantics(tracker: Arc<OperationTracker>) {
    // Long enough that a loaded CI machine still reads back within it.
    let ttl = Duration::from_secs(2);
    let started = tracker
        .start("payout", "p-1", json!({"n": 1}), ttl)
        .await
        .unwrap();
    assert_eq!(started.state, OperationState::InProgress);
    assert!(matches!(
        tracker.start("payout", "p-1", json!({}), ttl).await,
        Err(RecoveryError::AlreadyTracked(_))
    ));
    assert!(tracker.due(10).await.unwrap().operations.is_empty());

    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let due = tracker.due(10).await.unwrap();
    assert_eq!(due.operations.len(), 1);
    assert_eq!(due.operations[0].data, json!({"n": 1}));

    // A heartbeat moves the operation out of the due range.
    assert!(tracker.heartbeat("p-1").await.unwrap());
    assert_eq!(tracker.due(10).await.unwrap().fetched, 0);

    assert!(tracker.complete("p-1").await.unwrap());
    assert!(!tracker.complete("p-1").await.unwrap());
    assert!(!tracker.heartbeat("p-1").await.unwrap());
    assert!(!tracker.fail("p-1", "late").await.unwrap());
    let done = tracker.get("p-1").await.unwrap().unwrap();
    assert_eq!(done.state, OperationState::Completed);
    assert!(done.finished_at.is_some());
    assert_eq!(done.stale_at, None);

    tracker
        .start("payout", "p-2", json!({}), SILENT)
        .await
        .unwrap();
    assert!(tracker.fail("p-2", "provider refused").await.unwrap());
    wait_until_stale().await;
    let failed = tracker.get("p-2").await.unwrap().unwrap();
    assert_eq!(failed.state, OperationState::Failed);
    assert_eq!(failed.error.as_deref(), Some("provider refused"));
    assert_eq!(tracker.due(10).await.unwrap().fetched, 0);
    assert!(!tracker.heartbeat("unknown").await.unwrap());
    assert!(tracker.get("unknown").await.unwrap().is_none());
}

#[tokio::test]
async fn tracker_semantics_in_redis() {
    tracker_semantics(redis_tracker(&unique_prefix()).await).await;
}

#[tokio::test]
async fn tracker_semantics_in_the_store() {
    let (db, _dir) = open_db().await;
    tracker_semantics(store_tracker(&db).await).await;
}

#[tokio::test]
async fn finished_operations_expire_in_redis() {
    let prefix = unique_prefix();
    let redis = RedisAccessor::connect(&redis_url(), prefix.clone())
        .await
        .unwrap();
    let tracker = OperationTracker::redis(redis.clone()).with_finished_ttl(HEALTHY);
    tracker
        .start("payout", "x", json!({}), HEALTHY)
        .await
        .unwrap();
    assert_eq!(redis.ttl("recovery:op:x").await.unwrap(), None);

    tracker.complete("x").await.unwrap();

    let ttl = redis.ttl("recovery:op:x").await.unwrap().expect("a TTL");
    assert!(ttl <= HEALTHY && ttl > Duration::ZERO);
}

/// Finds one untracked stuck operation from "business records".
struct FindingHandler {
    recovered: Mutex<Vec<String>>,
}

impl RecoveryHandler for FindingHandler {
    fn op_type(&self) -> &str {
        "legacy"
    }

    fn recover<'a>(
        &'a self,
        op: &'a TrackedOperation,
    ) -> BoxFuture<'a, Result<RecoveryOutcome, HandlerError>> {
        Box::pin(async move {
            self.recovered.lock().unwrap().push(op.id.clone());
            Ok(RecoveryOutcome::Recovered)
        })
    }

    fn find_stuck(&self) -> BoxFuture<'_, Result<Vec<TrackedOperation>, HandlerError>> {
        Box::pin(async move {
            let already = !self.recovered.lock().unwrap().is_empty();
            if already {
                return Ok(Vec::new());
            }
            let now = chrono::Utc::now();
            Ok(vec![TrackedOperation {
                id: "legacy-1".into(),
                op_type: "legacy".into(),
                state: OperationState::InProgress,
                data: json!({}),
                heartbeat_ttl_ms: 0,
                started_at: now,
                heartbeat_at: now,
                finished_at: None,
                error: None,
                recovered: false,
                stale_at: None,
            }])
        })
    }
}

#[tokio::test]
async fn handlers_can_add_untracked_stuck_operations() {
    let (db, _dir) = open_db().await;
    let tracker = store_tracker(&db).await;
    let handler = Arc::new(FindingHandler {
        recovered: Mutex::default(),
    });
    let mut job = RecoveryJob::new(tracker, quick(), &Registry::new()).unwrap();
    job.register(handler.clone());

    job.run_once().await.unwrap();
    job.run_once().await.unwrap();

    assert_eq!(*handler.recovered.lock().unwrap(), ["legacy-1"]);
    assert_eq!(job.stats().recovered, 1);
    assert_eq!(job.stats().fetched, 0);
}
