//! The journal store: the storage interface in memory, made durable by a
//! log of committed transactions and periodic snapshots. It is the default
//! embedded engine; why, and what it trades away against the SQLite one,
//! is in `docs/decisions/0008-journal-store.md`.
//!
//! Concurrency model: one writer. A transaction holds the writer (an async
//! mutex owning the [`Journal`]) from its start to its commit and works on
//! its own copy-on-write clone of the committed [`State`], so transactions
//! in a process run one at a time, are serialisable by construction, and
//! never conflict. Committing appends one record of the documents the
//! transaction wrote to the log, then publishes its state; readers outside
//! a transaction take the committed state of the moment and never wait for
//! the writer. Rolling back is dropping the clone.
//!
//! Durability is the SQLite engine's with `synchronous=NORMAL`: a commit
//! returns once its record is in the kernel (a killed process loses
//! nothing), and the log is synced a few times a second (a power cut loses
//! at most that window, never half a transaction). When the log grows
//! past its limit, a snapshot of the state is written beside it on a
//! background thread and the covered log is deleted.
//!
//! The data must fit in memory. Every opener of a directory in this process
//! shares one engine; another process cannot open it while it is open.

mod log;
mod state;
#[cfg(test)]
mod tests;
mod value;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, PoisonError, RwLock, Weak};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use self::log::{Journal, Options as LogOptions, Record, Write, WriteState};
use self::state::State;
use crate::db::{Document, Filter, FindOptions, IndexSpec, StoreError, StoreResult, Update};

/// Knobs of the engine; the defaults suit a service, tests shorten waits.
#[derive(Clone, Debug)]
struct Options {
    /// The log's sync interval and snapshot threshold.
    log: LogOptions,
    /// How long opening waits for another store on the same directory to
    /// close (a restart in the same process, say) before failing.
    lock_wait: Duration,
    /// How long a transaction waits for the writer before giving up. Only
    /// reached when transactions queue that long, or when code opens a
    /// transaction while its own task already holds one (which would
    /// otherwise wait forever).
    writer_wait: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            log: LogOptions::default(),
            lock_wait: Duration::from_secs(5),
            writer_wait: Duration::from_secs(30),
        }
    }
}

/// The committed state, swapped whole by each commit.
type Committed = Arc<RwLock<Arc<State>>>;

/// Stores open in this process, by directory: every opener of a directory
/// shares its engine, as every connection to one SQLite file shares its
/// data. Another process is kept out by the journal's lock.
static OPEN: LazyLock<std::sync::Mutex<HashMap<PathBuf, Weak<Engine>>>> =
    LazyLock::new(Default::default);

/// A handle on the store in one directory; see the module documentation.
/// The engine closes (and releases the directory) with its last handle.
pub(crate) struct JournalStore {
    engine: Arc<Engine>,
}

impl std::ops::Deref for JournalStore {
    type Target = Engine;

    fn deref(&self) -> &Engine {
        &self.engine
    }
}

/// The engine behind every handle on one directory.
pub(crate) struct Engine {
    dir: PathBuf,
    committed: Committed,
    writer: Arc<AsyncMutex<Journal>>,
    writer_wait: Duration,
    /// Transactions that wrote something and committed.
    commits: Arc<AtomicU64>,
}

impl JournalStore {
    /// Opens the store in `dir`, creating it when missing, and rebuilds the
    /// state from its snapshot and log.
    pub(crate) async fn open(dir: &Path) -> StoreResult<Self> {
        Self::open_with(dir, &Options::default())
    }

    /// [`Self::open`] with explicit options: a handle on the engine this
    /// process already has open on `dir`, or a new engine.
    fn open_with(dir: &Path, options: &Options) -> StoreResult<Self> {
        let unavailable = |err: std::io::Error| {
            StoreError::Unavailable(format!("cannot open {}: {err}", dir.display()))
        };
        std::fs::create_dir_all(dir).map_err(unavailable)?;
        let dir = dir.canonicalize().map_err(unavailable)?;
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|_, engine| engine.strong_count() > 0);
        if let Some(engine) = open.get(&dir).and_then(Weak::upgrade) {
            return Ok(Self { engine });
        }
        let engine = Arc::new(Engine::open(&dir, options)?);
        open.insert(dir, Arc::downgrade(&engine));
        Ok(Self { engine })
    }
}

impl Engine {
    /// Rebuilds the state from the snapshot and log in `dir`, waiting up to
    /// `options.lock_wait` for an engine that is closing to let go of it.
    fn open(dir: &Path, options: &Options) -> StoreResult<Self> {
        let (journal, records) = Journal::open(dir, &options.log, options.lock_wait)?;
        let mut state = State::default();
        for record in records {
            state.replay(record)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            committed: Arc::new(RwLock::new(Arc::new(state))),
            writer: Arc::new(AsyncMutex::new(journal)),
            writer_wait: options.writer_wait,
            commits: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The state as last committed.
    fn snapshot(&self) -> Arc<State> {
        self.committed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Creates the missing indexes, in one transaction.
    pub(crate) async fn ensure_indexes(&self, specs: &[IndexSpec]) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        for spec in specs {
            if tx.state.create_index(spec)? {
                tx.log.push(Record::CreateIndex(spec.clone()));
            }
        }
        tx.commit().await
    }

    /// Drops the named indexes where they exist, in one transaction.
    pub(crate) async fn drop_indexes(&self, retired: &[(&str, &str)]) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        for (collection, name) in retired {
            if tx.state.drop_index(collection, name) {
                tx.log.push(Record::DropIndex {
                    collection: (*collection).to_owned(),
                    name: (*name).to_owned(),
                });
            }
        }
        tx.commit().await
    }

    /// Healthy unless a failed log write stopped the store from accepting
    /// writes; the writer is not waited for.
    pub(crate) async fn health(&self) -> StoreResult<()> {
        match self.writer.try_lock() {
            Ok(journal) if journal.poisoned() => Err(poisoned()),
            _ => Ok(()),
        }
    }

    /// Per-collection counts, file sizes and commits.
    pub(crate) async fn stats(&self) -> StoreResult<Value> {
        let collections = self.snapshot().stats();
        let (snapshot_bytes, log_bytes) = self.writer.lock().await.sizes();
        Ok(json!({
            "engine": "journal",
            "path": self.dir.display().to_string(),
            "snapshot_bytes": snapshot_bytes,
            "log_bytes": log_bytes,
            "commits": self.commits.load(Ordering::Relaxed),
            "collections": collections,
        }))
    }

    /// Starts a transaction, waiting for the writer.
    #[tracing::instrument(level = "trace", skip_all)]
    pub(crate) async fn begin(&self) -> StoreResult<JournalTx> {
        let journal = crate::db::take_writer(&self.writer, self.writer_wait).await?;
        if journal.poisoned() {
            return Err(poisoned());
        }
        Ok(JournalTx {
            state: (*self.snapshot()).clone(),
            journal,
            committed: self.committed.clone(),
            commits: self.commits.clone(),
            written: Vec::new(),
            seen: HashSet::new(),
            log: Vec::new(),
        })
    }

    /// The document with this id, as last committed.
    pub(crate) async fn get(&self, collection: &str, id: &str) -> StoreResult<Option<Document>> {
        Ok(owned(self.snapshot().get(collection, id)))
    }

    /// The first match in id order, as last committed.
    pub(crate) async fn find_one(
        &self,
        collection: &str,
        filter: &Filter,
    ) -> StoreResult<Option<Document>> {
        Ok(owned(self.snapshot().find_one(collection, filter)?))
    }

    /// The matches, ordered and sliced by `options`, as last committed.
    pub(crate) async fn find(
        &self,
        collection: &str,
        filter: &Filter,
        options: &FindOptions,
    ) -> StoreResult<Vec<Document>> {
        let docs = self.snapshot().find(collection, filter, options)?;
        Ok(docs.into_iter().map(unshare).collect())
    }

    /// How many documents match, as last committed.
    pub(crate) async fn count(&self, collection: &str, filter: &Filter) -> StoreResult<u64> {
        self.snapshot().count(collection, filter)
    }
}

fn poisoned() -> StoreError {
    StoreError::Unavailable(
        "a write to the journal failed; the store accepts no writes until it is reopened"
            .to_owned(),
    )
}

fn unshare(doc: Arc<Document>) -> Document {
    Arc::unwrap_or_clone(doc)
}

fn owned(doc: Option<Arc<Document>>) -> Option<Document> {
    doc.map(unshare)
}

/// An open transaction: the writer, and the state it is changing. Dropping
/// it without [`JournalTx::commit`] (an early return, a panic, a cancelled
/// future) discards the state, which is the whole rollback.
pub(crate) struct JournalTx {
    state: State,
    journal: OwnedMutexGuard<Journal>,
    committed: Committed,
    commits: Arc<AtomicU64>,
    /// The documents written, each once, in the order first written.
    written: Vec<(String, String)>,
    seen: HashSet<(String, String)>,
    /// Index changes, logged before the documents.
    log: Vec<Record>,
}

impl JournalTx {
    fn wrote(&mut self, collection: &str, id: &str) {
        let key = (collection.to_owned(), id.to_owned());
        if self.seen.insert(key.clone()) {
            self.written.push(key);
        }
    }

    /// Inserts a document.
    pub(crate) async fn insert(&mut self, collection: &str, doc: Document) -> StoreResult<()> {
        let id = crate::db::document_id(&doc)?.to_owned();
        self.state.insert(collection, doc)?;
        self.wrote(collection, &id);
        Ok(())
    }

    /// The document with this id, including this transaction's writes.
    pub(crate) async fn get(
        &mut self,
        collection: &str,
        id: &str,
    ) -> StoreResult<Option<Document>> {
        Ok(owned(self.state.get(collection, id)))
    }

    /// The first match in id order, including this transaction's writes.
    pub(crate) async fn find_one(
        &mut self,
        collection: &str,
        filter: &Filter,
    ) -> StoreResult<Option<Document>> {
        Ok(owned(self.state.find_one(collection, filter)?))
    }

    /// The matches, including this transaction's writes.
    pub(crate) async fn find(
        &mut self,
        collection: &str,
        filter: &Filter,
        options: &FindOptions,
    ) -> StoreResult<Vec<Document>> {
        let docs = self.state.find(collection, filter, options)?;
        Ok(docs.into_iter().map(unshare).collect())
    }

    /// Updates the first match in id order; the document afterwards.
    pub(crate) async fn update_one(
        &mut self,
        collection: &str,
        filter: &Filter,
        update: &Update,
    ) -> StoreResult<Option<Document>> {
        let Some(doc) = self.state.update_one(collection, filter, update)? else {
            return Ok(None);
        };
        let id = crate::db::document_id(&doc)?.to_owned();
        self.wrote(collection, &id);
        Ok(Some(unshare(doc)))
    }

    /// Deletes the first match in id order; whether there was one.
    pub(crate) async fn delete_one(
        &mut self,
        collection: &str,
        filter: &Filter,
    ) -> StoreResult<bool> {
        let Some(id) = self.state.delete_one(collection, filter)? else {
            return Ok(false);
        };
        self.wrote(collection, &id);
        Ok(true)
    }

    /// Logs the transaction's writes and publishes its state. On failure
    /// nothing was published and the store refuses further writes (see
    /// [`Journal::append`]).
    pub(crate) async fn commit(mut self) -> StoreResult<()> {
        let result = self.publish();
        // Gives the writer back, then yields: the runtime runs the task
        // woken for the writer (queued on this worker) next, instead of
        // after whatever this task does before its next await. Without the
        // yield the writer sat idle about a quarter of the time under load.
        drop(self);
        tokio::task::yield_now().await;
        result
    }

    fn publish(&mut self) -> StoreResult<()> {
        let mut records = std::mem::take(&mut self.log);
        if !self.written.is_empty() {
            let writes = self
                .written
                .iter()
                .map(|(collection, id)| Write {
                    collection: collection.clone(),
                    id: id.clone(),
                    doc: self.state.get(collection, id),
                })
                .collect();
            records.push(Record::Writes(writes));
        }
        if records.is_empty() {
            return Ok(());
        }
        for record in &records {
            self.journal.append(record)?;
        }
        let state = Arc::new(std::mem::take(&mut self.state));
        *self
            .committed
            .write()
            .unwrap_or_else(PoisonError::into_inner) = state.clone();
        self.commits.fetch_add(1, Ordering::Relaxed);
        if self.journal.snapshot_due() {
            // The transaction is committed whatever happens here: a snapshot
            // that cannot start leaves the log to grow and is tried again
            // on a later commit.
            let snapshot: WriteState = Box::new(move |sink| state.write_snapshot(sink));
            if let Err(err) = self.journal.start_snapshot(snapshot) {
                tracing::error!(error = %err, "cannot start a snapshot of the journal");
            }
        }
        Ok(())
    }

    /// Discards every write of the transaction.
    pub(crate) async fn abort(self) {}
}
