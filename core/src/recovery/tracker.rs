//! Where each tracked operation stands, and when it becomes stale.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::lease::Lease;
use super::RecoveryError;
use crate::db::{from_document, to_document, Database, Direction, Filter, FindOptions};
use crate::db::{IndexSpec, StoreError, Update};
use crate::redis::RedisAccessor;

/// The collection holding operations in store mode.
pub const OPERATIONS: &str = "operations";

/// How long a finished operation stays readable in Redis by default.
const DEFAULT_FINISHED_TTL: Duration = Duration::from_secs(24 * 3600);

/// Where an operation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperationState {
    /// Running; stale once its heartbeat is older than its TTL.
    InProgress,
    /// Finished (by its owner, or by recovery when `recovered` is set).
    Completed,
    /// Given up (by its owner, or by recovery when `recovered` is set).
    Failed,
}

impl OperationState {
    fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "IN_PROGRESS",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
        }
    }
}

/// One tracked operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackedOperation {
    /// The operation's id (the business id: a transfer id, say).
    #[serde(rename = "_id")]
    pub id: String,
    /// Which [`super::RecoveryHandler`] repairs it.
    pub op_type: String,
    /// Where it stands.
    pub state: OperationState,
    /// What the handler needs to repair it.
    pub data: Value,
    /// Silence longer than this makes the operation stale.
    pub heartbeat_ttl_ms: u64,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its last sign of life.
    pub heartbeat_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub error: Option<String>,
    /// Whether the recovery job, not its owner, finished it.
    pub recovered: bool,
    /// Milliseconds since the epoch at which it becomes stale; `None` once
    /// finished, which takes it out of the due index.
    pub stale_at: Option<i64>,
}

/// One read of the due schedule.
#[derive(Clone, Debug, Default)]
pub struct DueOperations {
    /// Schedule entries read (the work the read cost).
    pub fetched: usize,
    /// The due operations still in progress, stalest first.
    pub operations: Vec<TrackedOperation>,
}

enum Backend {
    Redis(RedisAccessor),
    Store(Arc<Database>),
}

/// Tracks operations in progress so that the recovery job can find those
/// whose owner went silent.
///
/// With Redis the operation is a hash (`recovery:op:{id}`) and the schedule
/// a sorted set (`recovery:due`) scored by `stale_at`; finished operations
/// expire after a while. Without Redis (embedded mode) both live in the
/// `operations` collection with an index on `stale_at`; finished ones stay as
/// history. Every transition out of `IN_PROGRESS` is conditional on the
/// operation still being in progress, so an owner finishing late and the job
/// recovering cannot both win.
pub struct OperationTracker {
    backend: Backend,
    finished_ttl: Duration,
}

/// Creates the operation and schedules it, unless the id is taken.
const START: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'IN_PROGRESS', 'doc', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1";

/// Rewrites an operation in progress and moves its schedule entry.
const RESCHEDULE: &str = r"
if redis.call('HGET', KEYS[1], 'state') ~= 'IN_PROGRESS' then return 0 end
redis.call('HSET', KEYS[1], 'doc', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1";

/// Ends an operation in progress, unschedules it and lets it expire.
const FINISH: &str = r"
if redis.call('HGET', KEYS[1], 'state') ~= 'IN_PROGRESS' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'doc', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1";

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn redis_failed(command: &'static str) -> impl FnOnce(redis::RedisError) -> RecoveryError {
    move |source| RecoveryError::Redis(crate::redis::RedisError::Command { command, source })
}

fn encode(op: &TrackedOperation) -> Result<String, RecoveryError> {
    serde_json::to_string(op).map_err(|err| RecoveryError::Corrupt(err.to_string()))
}

impl OperationTracker {
    /// Tracks operations in Redis, under `redis`'s key prefix.
    pub fn redis(redis: RedisAccessor) -> Self {
        Self {
            backend: Backend::Redis(redis),
            finished_ttl: DEFAULT_FINISHED_TTL,
        }
    }

    /// Tracks operations in the store (embedded mode, no Redis); creates the
    /// `stale_at` index the job reads by.
    pub async fn store(db: Arc<Database>) -> Result<Self, RecoveryError> {
        db.ensure_indexes(&[IndexSpec::new(
            OPERATIONS,
            "operations_stale_at",
            &["stale_at"],
        )])
        .await?;
        Ok(Self {
            backend: Backend::Store(db),
            finished_ttl: DEFAULT_FINISHED_TTL,
        })
    }

    /// How long finished operations stay readable in Redis (24 h by default).
    pub fn with_finished_ttl(mut self, ttl: Duration) -> Self {
        self.finished_ttl = ttl;
        self
    }

    /// The recovery job's lease, kept where the operations are.
    pub(crate) fn lease(&self, ttl: Duration) -> Lease {
        match &self.backend {
            Backend::Redis(redis) => Lease::redis(redis.clone(), "recovery:lease", ttl),
            Backend::Store(db) => Lease::store(db.clone(), "recovery", ttl),
        }
    }

    /// Starts tracking `op_id`; it becomes due for recovery if no heartbeat
    /// arrives within `heartbeat_ttl`. Fails with
    /// [`RecoveryError::AlreadyTracked`] when the id is tracked already.
    pub async fn start(
        &self,
        op_type: &str,
        op_id: &str,
        data: Value,
        heartbeat_ttl: Duration,
    ) -> Result<TrackedOperation, RecoveryError> {
        let now = Utc::now();
        let op = TrackedOperation {
            id: op_id.to_owned(),
            op_type: op_type.to_owned(),
            state: OperationState::InProgress,
            data,
            heartbeat_ttl_ms: u64::try_from(heartbeat_ttl.as_millis()).unwrap_or(u64::MAX),
            started_at: now,
            heartbeat_at: now,
            finished_at: None,
            error: None,
            recovered: false,
            stale_at: Some(now.timestamp_millis().saturating_add(millis(heartbeat_ttl))),
        };
        let started = match &self.backend {
            Backend::Redis(redis) => {
                let started: i64 = redis::cmd("EVAL")
                    .arg(START)
                    .arg(2)
                    .arg(self.op_key(redis, op_id))
                    .arg(redis.key("recovery:due"))
                    .arg(op_id)
                    .arg(encode(&op)?)
                    .arg(op.stale_at)
                    .query_async(&mut redis.connection())
                    .await
                    .map_err(redis_failed("EVAL start"))?;
                started == 1
            }
            Backend::Store(db) => match db.insert(OPERATIONS, to_document(&op)?).await {
                Ok(()) => true,
                Err(StoreError::Duplicate { .. }) => false,
                Err(err) => return Err(err.into()),
            },
        };
        if started {
            Ok(op)
        } else {
            Err(RecoveryError::AlreadyTracked(op_id.to_owned()))
        }
    }

    /// Records a sign of life: the operation is due again only after another
    /// full TTL of silence. `false` when it is not in progress.
    pub async fn heartbeat(&self, op_id: &str) -> Result<bool, RecoveryError> {
        let Some(mut op) = self.get(op_id).await? else {
            return Ok(false);
        };
        if op.state != OperationState::InProgress {
            return Ok(false);
        }
        let now = Utc::now();
        op.heartbeat_at = now;
        let ttl = i64::try_from(op.heartbeat_ttl_ms).unwrap_or(i64::MAX);
        op.stale_at = Some(now.timestamp_millis().saturating_add(ttl));
        self.reschedule_to(&op).await
    }

    /// The owner finished the operation. `false` when it was not in
    /// progress (recovery got there first, say).
    pub async fn complete(&self, op_id: &str) -> Result<bool, RecoveryError> {
        self.finish(op_id, OperationState::Completed, None, false)
            .await
    }

    /// The owner gave the operation up. `false` when it was not in progress.
    pub async fn fail(&self, op_id: &str, error: &str) -> Result<bool, RecoveryError> {
        self.finish(op_id, OperationState::Failed, Some(error), false)
            .await
    }

    /// The operation as tracked; `None` when unknown (or expired).
    pub async fn get(&self, op_id: &str) -> Result<Option<TrackedOperation>, RecoveryError> {
        match &self.backend {
            Backend::Redis(redis) => {
                let doc: Option<String> = redis::cmd("HGET")
                    .arg(self.op_key(redis, op_id))
                    .arg("doc")
                    .query_async(&mut redis.connection())
                    .await
                    .map_err(redis_failed("HGET"))?;
                doc.map(|doc| {
                    serde_json::from_str(&doc)
                        .map_err(|err| RecoveryError::Corrupt(err.to_string()))
                })
                .transpose()
            }
            Backend::Store(db) => Ok(db
                .get(OPERATIONS, op_id)
                .await?
                .map(from_document)
                .transpose()?),
        }
    }

    /// At most `limit` operations whose heartbeat is stale now, stalest
    /// first. Reads only schedule entries that are due, so its cost follows
    /// the number of stuck operations, not of tracked ones.
    pub async fn due(&self, limit: usize) -> Result<DueOperations, RecoveryError> {
        let now = Utc::now().timestamp_millis();
        match &self.backend {
            Backend::Redis(redis) => {
                let mut connection = redis.connection();
                let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                    .arg(redis.key("recovery:due"))
                    .arg("-inf")
                    .arg(now)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .query_async(&mut connection)
                    .await
                    .map_err(redis_failed("ZRANGEBYSCORE"))?;
                let mut due = DueOperations {
                    fetched: ids.len(),
                    operations: Vec::with_capacity(ids.len()),
                };
                for id in ids {
                    match self.get(&id).await? {
                        Some(op) if op.state == OperationState::InProgress => {
                            due.operations.push(op);
                        }
                        // The hash expired or was removed: the entry points
                        // at nothing and would be read on every run.
                        _ => {
                            let _: i64 = redis::cmd("ZREM")
                                .arg(redis.key("recovery:due"))
                                .arg(&id)
                                .query_async(&mut connection)
                                .await
                                .map_err(redis_failed("ZREM"))?;
                        }
                    }
                }
                Ok(due)
            }
            Backend::Store(db) => {
                let filter = Filter::all()
                    .lte("stale_at", now)
                    .eq("state", OperationState::InProgress.as_str());
                let docs = db
                    .find(
                        OPERATIONS,
                        &filter,
                        &FindOptions::sorted("stale_at", Direction::Asc).limit(limit),
                    )
                    .await?;
                let operations = docs
                    .into_iter()
                    .map(from_document)
                    .collect::<Result<Vec<TrackedOperation>, _>>()?;
                Ok(DueOperations {
                    fetched: operations.len(),
                    operations,
                })
            }
        }
    }

    /// Postpones a due operation by `delay` (a handler said it is still
    /// running, or failed and should be tried later).
    pub(crate) async fn postpone(
        &self,
        op: &TrackedOperation,
        delay: Duration,
    ) -> Result<bool, RecoveryError> {
        let mut op = op.clone();
        op.stale_at = Some(Utc::now().timestamp_millis().saturating_add(millis(delay)));
        self.reschedule_to(&op).await
    }

    async fn reschedule_to(&self, op: &TrackedOperation) -> Result<bool, RecoveryError> {
        match &self.backend {
            Backend::Redis(redis) => {
                let done: i64 = redis::cmd("EVAL")
                    .arg(RESCHEDULE)
                    .arg(2)
                    .arg(self.op_key(redis, &op.id))
                    .arg(redis.key("recovery:due"))
                    .arg(&op.id)
                    .arg(encode(op)?)
                    .arg(op.stale_at)
                    .query_async(&mut redis.connection())
                    .await
                    .map_err(redis_failed("EVAL reschedule"))?;
                Ok(done == 1)
            }
            Backend::Store(db) => {
                let update = Update::new()
                    .set("heartbeat_at", to_value(&op.heartbeat_at)?)
                    .set("stale_at", op.stale_at);
                Ok(db
                    .update_one(OPERATIONS, &in_progress(&op.id), &update)
                    .await?
                    .is_some())
            }
        }
    }

    /// Moves an operation in progress to `state`; `false` when it was not
    /// in progress any more.
    pub(crate) async fn finish(
        &self,
        op_id: &str,
        state: OperationState,
        error: Option<&str>,
        recovered: bool,
    ) -> Result<bool, RecoveryError> {
        let now = Utc::now();
        match &self.backend {
            Backend::Redis(redis) => {
                let Some(mut op) = self.get(op_id).await? else {
                    return Ok(false);
                };
                op.state = state;
                op.finished_at = Some(now);
                op.error = error.map(str::to_owned);
                op.recovered = recovered;
                op.stale_at = None;
                let done: i64 = redis::cmd("EVAL")
                    .arg(FINISH)
                    .arg(2)
                    .arg(self.op_key(redis, op_id))
                    .arg(redis.key("recovery:due"))
                    .arg(op_id)
                    .arg(encode(&op)?)
                    .arg(state.as_str())
                    .arg(millis(self.finished_ttl).max(1))
                    .query_async(&mut redis.connection())
                    .await
                    .map_err(redis_failed("EVAL finish"))?;
                Ok(done == 1)
            }
            Backend::Store(db) => {
                let update = Update::new()
                    .set("state", state.as_str())
                    .set("finished_at", to_value(&now)?)
                    .set("error", error)
                    .set("recovered", recovered)
                    .set("stale_at", Value::Null);
                Ok(db
                    .update_one(OPERATIONS, &in_progress(op_id), &update)
                    .await?
                    .is_some())
            }
        }
    }

    fn op_key(&self, redis: &RedisAccessor, op_id: &str) -> String {
        redis.key(&format!("recovery:op:{op_id}"))
    }
}

impl std::fmt::Debug for OperationTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match self.backend {
            Backend::Redis(_) => "redis",
            Backend::Store(_) => "store",
        };
        f.debug_struct("OperationTracker")
            .field("backend", &backend)
            .field("finished_ttl", &self.finished_ttl)
            .finish()
    }
}

fn in_progress(op_id: &str) -> Filter {
    Filter::id(op_id).eq("state", OperationState::InProgress.as_str())
}

fn to_value<T: Serialize>(value: &T) -> Result<Value, RecoveryError> {
    serde_json::to_value(value).map_err(|err| RecoveryError::Corrupt(err.to_string()))
}
