//! Storage: one interface over two engines.
//!
//! Services program against [`Database`]: reads, single-document writes and
//! multi-document [`Database::transaction`]s over JSON documents, with unique
//! indexes, conditional updates and keyset-ordered reads. With `MONGODB_URI`
//! set it talks to MongoDB (the production path); without it, to an embedded
//! engine under the data directory with the same semantics: the in-memory
//! journal store by default (`docs/decisions/0008-journal-store.md`), or a
//! SQLite file (`docs/decisions/0003-embedded-store.md`). The conformance
//! suite in `core/tests/store/` runs the same checks against all three.

mod embedded;
mod journal;
mod model;
mod mongo;
mod naming;
mod pagination;
mod repository;
mod settings;

use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use secrecy::SecretString;
use serde_json::Value;

pub use model::{
    check_field, document_id, Condition, Direction, Document, Filter, FindOptions, IndexSpec, Op,
    SortKey, StoreError, StoreResult, Update, ID,
};
pub use mongo::{PoolSettings, PoolStats, PoolStatus};
pub use naming::NamingStrategy;
pub use pagination::{
    decode_cursor, encode_cursor, paginate, paginate_union, sort_key, Connection, Edge, PageArgs,
    PageInfo, PageQuery, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE,
};
pub use repository::{from_document, to_document, Entity, Repository};

/// How to reach the store.
#[derive(Clone, Debug)]
pub struct DbConfig {
    /// MongoDB connection string; `None` selects the embedded store.
    pub mongodb_uri: Option<SecretString>,
    /// Where the embedded store keeps its files.
    pub data_dir: PathBuf,
    /// Brand, tenant and service, which name the database.
    pub brand: String,
    /// The tenant, for the `per-tenant` strategy.
    pub tenant: String,
    /// The service that owns the database.
    pub service: String,
    /// How the database is named from the above.
    pub naming: NamingStrategy,
    /// The engine used without `mongodb_uri`.
    pub embedded: EmbeddedEngine,
    /// MongoDB pool settings.
    pub pool: PoolSettings,
}

/// Which embedded engine serves a database without `mongodb_uri`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EmbeddedEngine {
    /// Every collection in memory, made durable by a log of commits and
    /// periodic snapshots, in a directory `<database>.journal`: the fastest,
    /// for data that fits in memory.
    #[default]
    Journal,
    /// One SQLite file `<database>.sqlite3`: for data larger than memory.
    Sqlite,
}

impl EmbeddedEngine {
    /// The setting's value naming this engine (`EMBEDDED_ENGINE`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Journal => "journal",
            Self::Sqlite => "sqlite",
        }
    }
}

/// The engine behind a [`Database`].
enum Backend {
    Journal(journal::JournalStore),
    Sqlite(embedded::EmbeddedStore),
    Mongo(mongo::MongoStore),
}

/// The engine behind a [`Transaction`].
enum TxBackend {
    Journal(journal::JournalTx),
    Sqlite(embedded::EmbeddedTx),
    Mongo(mongo::MongoTx),
}

/// Forwards a call to whichever engine is in use.
macro_rules! dispatch {
    ($target:expr, $engine:ident => $call:expr) => {
        match $target {
            Backend::Journal($engine) => $call,
            Backend::Sqlite($engine) => $call,
            Backend::Mongo($engine) => $call,
        }
    };
}

macro_rules! dispatch_tx {
    ($target:expr, $engine:ident => $call:expr) => {
        match $target {
            TxBackend::Journal($engine) => $call,
            TxBackend::Sqlite($engine) => $call,
            TxBackend::Mongo($engine) => $call,
        }
    };
}

/// A service's database.
pub struct Database {
    backend: Backend,
    name: String,
    /// Transactions run again after a write conflict, since opening.
    reruns: AtomicU64,
}

/// Takes an embedded engine's one writer, waiting at most `wait`. Only
/// reached when transactions queue that long, or when code opens a
/// transaction while its own task already holds one (which would otherwise
/// wait forever).
async fn take_writer<T>(
    writer: &std::sync::Arc<tokio::sync::Mutex<T>>,
    wait: Duration,
) -> StoreResult<tokio::sync::OwnedMutexGuard<T>> {
    tokio::time::timeout(wait, writer.clone().lock_owned())
        .await
        .map_err(|_| {
            StoreError::Unavailable(format!(
                "no transaction could start within {wait:?}: the writer stayed busy \
                 (a transaction opened while the same task holds another?)"
            ))
        })
}

/// How long a transaction that keeps conflicting is run again before the
/// conflict is reported. A budget of time rather than a count of runs: how
/// many runs fit depends on how long each takes, and a busy server makes
/// each run slower exactly when the collisions are most frequent.
const TRANSACTION_RETRY_BUDGET: Duration = Duration::from_secs(5);

impl Database {
    /// Connects to MongoDB when `config.mongodb_uri` is set, otherwise opens
    /// (creating when missing) the embedded engine's store under
    /// `config.data_dir`.
    pub async fn open(config: &DbConfig) -> StoreResult<Self> {
        let name = config
            .naming
            .database_name(&config.brand, &config.tenant, &config.service);
        let backend = match &config.mongodb_uri {
            Some(uri) => {
                Backend::Mongo(mongo::MongoStore::connect(uri, &name, &config.pool).await?)
            }
            None => match config.embedded {
                EmbeddedEngine::Journal => {
                    let dir = config.data_dir.join(format!("{name}.journal"));
                    Backend::Journal(journal::JournalStore::open(&dir).await?)
                }
                EmbeddedEngine::Sqlite => {
                    let path = config.data_dir.join(format!("{name}.sqlite3"));
                    Backend::Sqlite(embedded::EmbeddedStore::open(&path).await?)
                }
            },
        };
        Ok(Self {
            backend,
            name,
            reruns: AtomicU64::new(0),
        })
    }

    /// The database's name (from the naming strategy).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `"mongodb"` or `"embedded"`, for health reports.
    pub fn engine(&self) -> &'static str {
        match self.backend {
            Backend::Journal(_) | Backend::Sqlite(_) => "embedded",
            Backend::Mongo(_) => "mongodb",
        }
    }

    /// Creates the indexes that are missing; run at start-up.
    pub async fn ensure_indexes(&self, specs: &[IndexSpec]) -> StoreResult<()> {
        specs.iter().try_for_each(IndexSpec::check)?;
        dispatch!(&self.backend, s => s.ensure_indexes(specs).await)
    }

    /// Drops indexes a release no longer uses, given as `(collection, name)`;
    /// one that does not exist is skipped. Run at start-up, after
    /// [`Self::ensure_indexes`], so an upgraded store stops paying for them
    /// on every write.
    pub async fn drop_indexes(&self, retired: &[(&str, &str)]) -> StoreResult<()> {
        for (collection, name) in retired {
            check_field(collection)?;
            check_field(name)?;
        }
        dispatch!(&self.backend, s => s.drop_indexes(retired).await)
    }

    /// Round-trip latency to the store, or why it is unusable.
    pub async fn check_health(&self) -> StoreResult<Duration> {
        let started = Instant::now();
        dispatch!(&self.backend, s => s.health().await)?;
        Ok(started.elapsed())
    }

    /// Store statistics (collections, documents, sizes) as the engine
    /// reports them, with `transaction_reruns`.
    pub async fn stats(&self) -> StoreResult<Value> {
        let mut stats = dispatch!(&self.backend, s => s.stats().await)?;
        if let Value::Object(fields) = &mut stats {
            fields.insert("transaction_reruns".to_owned(), self.reruns().into());
        }
        Ok(stats)
    }

    /// How many transactions were run again after a write conflict (or an
    /// unknown commit result) since the store was opened: what contention
    /// costs on MongoDB. The embedded store runs a process's transactions
    /// one at a time, so they do not conflict there.
    pub fn reruns(&self) -> u64 {
        self.reruns.load(Ordering::Relaxed)
    }

    /// Connection-pool statistics (MongoDB only).
    pub fn pool_stats(&self) -> Option<PoolStats> {
        match &self.backend {
            Backend::Mongo(s) => Some(s.pool_stats()),
            Backend::Journal(_) | Backend::Sqlite(_) => None,
        }
    }

    /// The document with this id.
    pub async fn get(&self, collection: &str, id: &str) -> StoreResult<Option<Document>> {
        check_field(collection)?;
        dispatch!(&self.backend, s => s.get(collection, id).await)
    }

    /// The first document matching `filter` (in id order).
    pub async fn find_one(
        &self,
        collection: &str,
        filter: &Filter,
    ) -> StoreResult<Option<Document>> {
        check_field(collection)?;
        filter.check()?;
        dispatch!(&self.backend, s => s.find_one(collection, filter).await)
    }

    /// The documents matching `filter`, ordered and sliced by `options`.
    pub async fn find(
        &self,
        collection: &str,
        filter: &Filter,
        options: &FindOptions,
    ) -> StoreResult<Vec<Document>> {
        check_field(collection)?;
        filter.check()?;
        check_field(&options.sort_field)?;
        dispatch!(&self.backend, s => s.find(collection, filter, options).await)
    }

    /// How many documents match `filter`.
    pub async fn count(&self, collection: &str, filter: &Filter) -> StoreResult<u64> {
        check_field(collection)?;
        filter.check()?;
        dispatch!(&self.backend, s => s.count(collection, filter).await)
    }

    /// Inserts one document; [`StoreError::Duplicate`] when its id or a
    /// unique index value is taken.
    pub async fn insert(&self, collection: &str, doc: Document) -> StoreResult<()> {
        // A single-document write is atomic on its own in MongoDB, and the
        // server resolves conflicts between such writes itself; wrapping it
        // in a transaction would only let concurrent writers abort each other.
        if let Backend::Mongo(s) = &self.backend {
            check_field(collection)?;
            document_id(&doc)?;
            return s.insert(collection, doc).await;
        }
        self.transaction(|tx| {
            let doc = doc.clone();
            Box::pin(async move { tx.insert(collection, doc).await })
        })
        .await
    }

    /// Applies `update` to the first document matching `filter` and returns
    /// it as it is after the change; `None` when nothing matched (which is
    /// how a failed precondition such as `balance >= amount` is reported).
    pub async fn update_one(
        &self,
        collection: &str,
        filter: &Filter,
        update: &Update,
    ) -> StoreResult<Option<Document>> {
        if let Backend::Mongo(s) = &self.backend {
            check_field(collection)?;
            filter.check()?;
            update.check()?;
            return s.update_one(collection, filter, update).await;
        }
        self.transaction(|tx| {
            Box::pin(async move { tx.update_one(collection, filter, update).await })
        })
        .await
    }

    /// Deletes the first document matching `filter`; whether one was deleted.
    pub async fn delete_one(&self, collection: &str, filter: &Filter) -> StoreResult<bool> {
        if let Backend::Mongo(s) = &self.backend {
            check_field(collection)?;
            filter.check()?;
            return s.delete_one(collection, filter).await;
        }
        self.transaction(|tx| Box::pin(async move { tx.delete_one(collection, filter).await }))
            .await
    }

    /// Runs `work` in one atomic transaction: every write it makes commits
    /// together or none does. Returning `Err` rolls back. When the engine
    /// reports a write conflict (or an unknown commit result) the whole of
    /// `work` runs again on a fresh transaction, with backoff, so `work`
    /// must be safe to re-run: it should only touch the store through `tx`.
    /// A commit whose outcome stays unknown after the engine's own retries is
    /// reported as [`StoreError::Unavailable`], never re-run, since it may
    /// have taken effect. On MongoDB a failed operation ends the transaction:
    /// `work` should return the error rather than carry on.
    ///
    /// The `'a` on [`Transaction`] only ties it to this call, which lets the
    /// future returned by `work` borrow from the caller's scope.
    pub async fn transaction<'a, T, E, F>(&'a self, mut work: F) -> Result<T, E>
    where
        F: for<'t> FnMut(&'t mut Transaction<'a>) -> BoxFuture<'t, Result<T, E>>,
        E: From<StoreError>,
    {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let may_retry = started.elapsed() < TRANSACTION_RETRY_BUDGET;
            let begun = match &self.backend {
                Backend::Journal(s) => s.begin().await.map(TxBackend::Journal),
                Backend::Sqlite(s) => s.begin().await.map(TxBackend::Sqlite),
                Backend::Mongo(s) => s.begin().await.map(TxBackend::Mongo),
            };
            let backend = match begun {
                Ok(backend) => backend,
                // Another holder of the store (a second process on the same
                // embedded file) may release it in a moment.
                Err(err) if err.is_transient() && may_retry => {
                    tokio::time::sleep(conflict_backoff(attempt)).await;
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            let mut tx = Transaction {
                backend,
                transient: false,
                _scope: PhantomData,
            };
            let outcome = work(&mut tx).await;
            let retry = match outcome {
                Ok(value) => match tx.commit().await {
                    Ok(()) => return Ok(value),
                    Err(err) if err.is_transient() && may_retry => true,
                    Err(err) => return Err(err.into()),
                },
                Err(err) => {
                    let transient = tx.transient;
                    tx.abort().await;
                    if !transient || !may_retry {
                        return Err(err);
                    }
                    true
                }
            };
            if retry {
                self.reruns.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(attempt, "transaction conflicted, running it again");
                tokio::time::sleep(conflict_backoff(attempt)).await;
            }
        }
    }
}

/// Short, growing, jittered pauses, at most about 50 ms: conflicting
/// transactions are usually racing for the same document and need only a
/// moment to stop colliding.
fn conflict_backoff(attempt: u32) -> Duration {
    let base_us = 200u64 << attempt.min(8);
    let jitter = rand::random::<u64>() % base_us.max(1);
    Duration::from_micros(base_us / 2 + jitter / 2)
}

/// An open transaction; see [`Database::transaction`].
pub struct Transaction<'a> {
    backend: TxBackend,
    /// Set when an operation failed in a way that re-running may fix, so the
    /// runner knows to retry even though `work` returned its own error type.
    transient: bool,
    _scope: PhantomData<&'a Database>,
}

impl Transaction<'_> {
    fn note<T>(&mut self, result: StoreResult<T>) -> StoreResult<T> {
        if let Err(err) = &result {
            self.transient |= err.is_transient();
        }
        result
    }

    /// Inserts a document; see [`Database::insert`].
    pub async fn insert(&mut self, collection: &str, doc: Document) -> StoreResult<()> {
        check_field(collection)?;
        document_id(&doc)?;
        let result = dispatch_tx!(&mut self.backend, t => t.insert(collection, doc).await);
        self.note(result)
    }

    /// The document with this id, as this transaction sees it.
    pub async fn get(&mut self, collection: &str, id: &str) -> StoreResult<Option<Document>> {
        check_field(collection)?;
        let result = dispatch_tx!(&mut self.backend, t => t.get(collection, id).await);
        self.note(result)
    }

    /// The first document matching `filter`, as this transaction sees it.
    pub async fn find_one(
        &mut self,
        collection: &str,
        filter: &Filter,
    ) -> StoreResult<Option<Document>> {
        check_field(collection)?;
        filter.check()?;
        let result = dispatch_tx!(&mut self.backend, t => t.find_one(collection, filter).await);
        self.note(result)
    }

    /// Matching documents, ordered and sliced by `options`.
    pub async fn find(
        &mut self,
        collection: &str,
        filter: &Filter,
        options: &FindOptions,
    ) -> StoreResult<Vec<Document>> {
        check_field(collection)?;
        filter.check()?;
        check_field(&options.sort_field)?;
        let result =
            dispatch_tx!(&mut self.backend, t => t.find(collection, filter, options).await);
        self.note(result)
    }

    /// Applies `update` to the first match; see [`Database::update_one`].
    pub async fn update_one(
        &mut self,
        collection: &str,
        filter: &Filter,
        update: &Update,
    ) -> StoreResult<Option<Document>> {
        check_field(collection)?;
        filter.check()?;
        update.check()?;
        let result =
            dispatch_tx!(&mut self.backend, t => t.update_one(collection, filter, update).await);
        self.note(result)
    }

    /// Deletes the first match; whether one was deleted.
    pub async fn delete_one(&mut self, collection: &str, filter: &Filter) -> StoreResult<bool> {
        check_field(collection)?;
        filter.check()?;
        let result = dispatch_tx!(&mut self.backend, t => t.delete_one(collection, filter).await);
        self.note(result)
    }

    async fn commit(self) -> StoreResult<()> {
        dispatch_tx!(self.backend, t => t.commit().await)
    }

    async fn abort(self) {
        dispatch_tx!(self.backend, t => t.abort().await)
    }
}

impl From<StoreError> for crate::ApiError {
    /// Storage failures that reach a client say only that the database is
    /// unavailable or that something went wrong; the detail goes to the log.
    /// Callers map the failures they expect (a duplicate email) themselves.
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(_) | StoreError::Conflict => {
                crate::ApiError::unavailable("the database").with_cause(err)
            }
            _ => crate::ApiError::internal(err),
        }
    }
}

/// The database as a readiness dependency of the server kit.
pub struct DatabaseHealth(pub std::sync::Arc<Database>);

impl crate::server::HealthCheck for DatabaseHealth {
    fn name(&self) -> &str {
        "database"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.0
                .check_health()
                .await
                .map(drop)
                .map_err(|err| err.to_string())
        })
    }
}
