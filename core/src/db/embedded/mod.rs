//! The embedded store: the storage interface on one SQLite file, so a
//! service runs on a bare laptop with the semantics it has on MongoDB
//! (atomic multi-document transactions, unique indexes, conditional
//! updates, keyset pagination). Why SQLite, and what differs from MongoDB,
//! is in `docs/decisions/0003-embedded-store.md`.
//!
//! Concurrency model: one writer connection behind an async mutex. A
//! transaction holds the mutex from its start to its commit, so
//! transactions in this process run one at a time and never conflict:
//! they are serialisable by construction, and a conditional debit cannot
//! interleave with another. Transactions that queue for the writer are
//! committed together, each in its own savepoint ([`group`]), so the cost
//! of a commit is paid once per group. Reads outside a transaction go to a small pool
//! of read-only connections; WAL mode lets them read the last committed
//! state while the writer works. SQLite calls are short and synchronous,
//! so they run directly on the async task (no `block_in_place`, which a
//! current-thread runtime forbids).
//!
//! Layout: one table per collection, `"c_<collection>"(id, doc)`, holding
//! each document as JSON text; fields are read with `json_extract`, which
//! indexes can be built on (see [`sql`]).

mod checkpoint;
mod errors;
mod group;
mod ops;
mod sql;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use rusqlite::functions::FunctionFlags;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use tokio::sync::{Mutex, OwnedMutexGuard};

use self::errors::{engine_error, INC_ERROR};
use self::group::{Counts, Ticket, Writer};
use crate::db::{Document, Filter, FindOptions, IndexSpec, StoreError, StoreResult, Update};

/// Knobs of the engine; the defaults suit a service, tests shorten waits.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// How long a lock held by another process (or another store on the
    /// same file) is waited for before the operation fails with
    /// [`StoreError::Conflict`]. Readers wait inside SQLite; a transaction
    /// start polls with async sleeps, so it never blocks its thread.
    pub(crate) busy_timeout: Duration,
    /// How long a transaction waits for this process's writer before giving
    /// up. Only reached when transactions queue that long, or when code
    /// opens a transaction while its own task already holds one (which
    /// would otherwise wait forever).
    pub(crate) writer_wait: Duration,
    /// Read-only connections in the pool.
    pub(crate) readers: usize,
    /// Pause between two background checkpoints; also about how much a
    /// power cut can lose (see `checkpoint`).
    pub(crate) checkpoint_interval: Duration,
    /// Log size (in pages) past which the checkpointer briefly holds the
    /// writer so the log can start over: 64 MiB of 4 KiB pages by default.
    /// Larger means rarer short pauses and a larger log file.
    pub(crate) catch_up_frames: i64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(5),
            writer_wait: Duration::from_secs(30),
            // One per worker thread at least, so a read never waits for
            // another on a multi-thread runtime.
            readers: std::thread::available_parallelism().map_or(4, |n| n.get().clamp(4, 16)),
            checkpoint_interval: Duration::from_millis(100),
            catch_up_frames: 16 * 1024,
        }
    }
}

/// Statements each connection keeps prepared. The services use a few dozen
/// distinct statements; re-preparing costs more than the query itself.
const STATEMENT_CACHE: usize = 256;

/// Scheduler turns a committing transaction waits for others to queue
/// behind it and join its group, when none is queued yet.
const GATHER_TURNS: usize = 4;

/// Page cache per connection, in KiB (SQLite's negative `cache_size`).
const CACHE_KIB: i64 = 16 * 1024;

/// The store on one file; see the module documentation.
pub(crate) struct EmbeddedStore {
    path: PathBuf,
    writer: Arc<Mutex<Writer>>,
    /// Transactions waiting for the writer. While any wait, a committing
    /// transaction leaves its group open for them to join.
    queued: Arc<AtomicUsize>,
    counts: Arc<Counts>,
    readers: Box<[std::sync::Mutex<Connection>]>,
    /// Where the next read starts looking for a free reader, so reads spread
    /// over the pool instead of all trying the first connection.
    next_reader: AtomicUsize,
    writer_wait: Duration,
    /// How long a transaction start waits for another process's write lock.
    busy_timeout: Duration,
    /// Runs the WAL checkpoints off the commit path; stops with the store.
    _checkpointer: checkpoint::Checkpointer,
}

impl EmbeddedStore {
    /// Opens the store at `path`, creating the file (and its directory)
    /// when missing.
    pub(crate) async fn open(path: &Path) -> StoreResult<Self> {
        Self::open_with(path, &Options::default())
    }

    /// [`Self::open`] with explicit options.
    pub(crate) fn open_with(path: &Path, options: &Options) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|err| {
                StoreError::Unavailable(format!("cannot create {}: {err}", dir.display()))
            })?;
        }
        let writer = Connection::open(path).map_err(engine_error)?;
        configure(&writer, options)?;
        // WAL: readers never block the writer nor it them, and a commit is
        // one append to the log. The mode is stored in the file.
        let mode: String = writer
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(engine_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "{} cannot use write-ahead logging (journal mode {mode})",
                path.display()
            )));
        }
        // In WAL mode NORMAL syncs at checkpoints, not at every commit: a
        // crashed process loses nothing committed, a power cut may lose the
        // last commits but never corrupts the file (see the decision record).
        writer
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(engine_error)?;
        // Keeps the log file from staying at its largest size after a burst.
        writer
            .pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
            .map_err(engine_error)?;
        // Checkpoints run on their own thread (see `checkpoint`); the
        // writer's automatic ones remain only as a backstop should that
        // thread fall far behind.
        writer
            .pragma_update(None, "wal_autocheckpoint", 4 * options.catch_up_frames)
            .map_err(engine_error)?;
        register_inc(&writer)?;
        // From here on the writer never waits inside SQLite: its one
        // contended statement, `BEGIN IMMEDIATE`, is retried in `begin`
        // with async sleeps instead. A blocking wait would stall the async
        // thread, and with it, on a current-thread runtime, the group
        // commit of another store on the same file that it waits for.
        writer.busy_timeout(Duration::ZERO).map_err(engine_error)?;

        let readers = (0..options.readers.max(1))
            .map(|_| {
                let reader = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(engine_error)?;
                configure(&reader, options)?;
                // Read-write open plus query_only rather than a read-only
                // open: a read-only connection cannot always attach to the
                // WAL index, while this one can but refuses to write.
                reader
                    .pragma_update(None, "query_only", true)
                    .map_err(engine_error)?;
                Ok(std::sync::Mutex::new(reader))
            })
            .collect::<StoreResult<Box<[_]>>>()?;

        let counts = Arc::new(Counts::default());
        let writer = Arc::new(Mutex::new(Writer::new(writer, counts.clone())));
        let checkpointer = checkpoint::spawn(path, writer.clone(), options)?;
        Ok(Self {
            path: path.to_path_buf(),
            writer,
            queued: Arc::new(AtomicUsize::new(0)),
            counts,
            readers,
            next_reader: AtomicUsize::new(0),
            writer_wait: options.writer_wait,
            busy_timeout: options.busy_timeout,
            _checkpointer: checkpointer,
        })
    }

    /// Runs a read on a pooled connection. Reads are synchronous, so a
    /// connection is held only while one runs; with at least as many
    /// readers as worker threads one is always free, and otherwise the wait
    /// is one short query.
    fn read<T>(&self, read: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let n = self.readers.len();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            match self.readers[(start + i) % n].try_lock() {
                Ok(conn) => return read(&conn),
                // A panic during an earlier read leaves the connection as
                // usable as ever: the statement was reset when it dropped.
                Err(TryLockError::Poisoned(poisoned)) => return read(&poisoned.into_inner()),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let conn = self.readers[start]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        read(&conn)
    }

    /// Creates the missing tables and indexes, in one transaction.
    #[tracing::instrument(level = "debug", skip_all)]
    pub(crate) async fn ensure_indexes(&self, specs: &[IndexSpec]) -> StoreResult<()> {
        let tx = self.begin().await?;
        for spec in specs {
            ops::create_index(tx.live()?, spec)?;
        }
        tx.commit().await
    }

    /// Drops the named indexes where they exist, in one transaction.
    pub(crate) async fn drop_indexes(&self, retired: &[(&str, &str)]) -> StoreResult<()> {
        let tx = self.begin().await?;
        for (collection, name) in retired {
            ops::drop_index(tx.live()?, collection, name)?;
        }
        tx.commit().await
    }

    /// Answers a trivial query.
    pub(crate) async fn health(&self) -> StoreResult<()> {
        self.read(ops::ping)
    }

    /// File size, per-collection document counts and group commits.
    pub(crate) async fn stats(&self) -> StoreResult<Value> {
        let path = self.path.display().to_string();
        let mut stats = self.read(|conn| ops::stats(conn, &path))?;
        if let Value::Object(fields) = &mut stats {
            let commits = self.counts.commits.load(Ordering::Relaxed);
            let transactions = self.counts.transactions.load(Ordering::Relaxed);
            fields.insert("commits".to_owned(), commits.into());
            fields.insert("transactions".to_owned(), transactions.into());
        }
        Ok(stats)
    }

    /// Starts a transaction, waiting for the writer.
    #[tracing::instrument(level = "trace", skip_all)]
    pub(crate) async fn begin(&self) -> StoreResult<EmbeddedTx> {
        let queue = Queued::join(&self.queued, &self.writer);
        let mut writer = crate::db::take_writer(&self.writer, self.writer_wait).await?;
        queue.arrived();
        // Another process (or another store on this file) may hold the
        // write lock for a moment: poll for it, without blocking the thread.
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match writer.begin() {
                Err(StoreError::Conflict) if started.elapsed() < self.busy_timeout => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                result => break result?,
            }
        }
        Ok(EmbeddedTx {
            writer: Some(writer),
            released: false,
            queued: self.queued.clone(),
        })
    }

    /// The document with this id, as last committed.
    #[tracing::instrument(level = "trace", skip_all, fields(collection = collection))]
    pub(crate) async fn get(&self, collection: &str, id: &str) -> StoreResult<Option<Document>> {
        self.read(|conn| ops::get(conn, collection, id))
    }

    /// The first match in id order, as last committed.
    #[tracing::instrument(level = "trace", skip_all, fields(collection = collection))]
    pub(crate) async fn find_one(
        &self,
        collection: &str,
        filter: &Filter,
    ) -> StoreResult<Option<Document>> {
        self.read(|conn| ops::find_one(conn, collection, filter))
    }

    /// The matches, ordered and sliced by `options`, as last committed.
    #[tracing::instrument(level = "trace", skip_all, fields(collection = collection))]
    pub(crate) async fn find(
        &self,
        collection: &str,
        filter: &Filter,
        options: &FindOptions,
    ) -> StoreResult<Vec<Document>> {
        self.read(|conn| ops::find(conn, collection, filter, options))
    }

    /// How many documents match, as last committed.
    #[tracing::instrument(level = "trace", skip_all, fields(collection = collection))]
    pub(crate) async fn count(&self, collection: &str, filter: &Filter) -> StoreResult<u64> {
        self.read(|conn| ops::count(conn, collection, filter))
    }
}

/// Settings every connection gets.
fn configure(conn: &Connection, options: &Options) -> StoreResult<()> {
    conn.busy_timeout(options.busy_timeout)
        .map_err(engine_error)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "cache_size", -CACHE_KIB)
        .map_err(engine_error)?;
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(engine_error)
}

/// Registers `store_inc(current, delta)`, the `$inc` of one field.
/// `current` is the field as JSON text (`doc -> '$.f'`), NULL when missing.
/// SQLite's own `+` turns an overflowing integer sum into a float, which
/// would silently corrupt a balance; this refuses it instead, and refuses
/// to increment what is not a number (a boolean, a string, null), as
/// MongoDB's `$inc` does.
fn register_inc(conn: &Connection) -> StoreResult<()> {
    conn.create_scalar_function(
        sql::INC_FUNCTION,
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let delta: i64 = ctx.get(1)?;
            let refuse = |message: String| {
                rusqlite::Error::UserFunctionError(format!("{INC_ERROR} {message}").into())
            };
            let current = match ctx.get_raw(0) {
                ValueRef::Null => return Ok(ToSqlOutput::from(delta)),
                ValueRef::Text(text) => std::str::from_utf8(text)
                    .map_err(|_| refuse("the field is not valid text".to_owned()))?,
                _ => return Err(refuse("the field is not JSON".to_owned())),
            };
            if let Ok(n) = current.parse::<i64>() {
                return n
                    .checked_add(delta)
                    .map(ToSqlOutput::from)
                    .ok_or_else(|| refuse(format!("integer overflow adding {delta} to {n}")));
            }
            let is_number = current.starts_with(|c: char| c == '-' || c.is_ascii_digit());
            match current.parse::<f64>() {
                // A float field stays a float, as in MongoDB.
                Ok(x) if is_number => Ok(ToSqlOutput::from(x + delta as f64)),
                _ => Err(refuse(format!("cannot increment the non-number {current}"))),
            }
        },
    )
    .map_err(engine_error)
}

/// A place in the writer's queue, counted in [`EmbeddedStore::queued`]
/// until the writer is ours.
struct Queued<'a> {
    queued: &'a AtomicUsize,
    writer: &'a Mutex<Writer>,
    waiting: bool,
}

impl<'a> Queued<'a> {
    fn join(queued: &'a AtomicUsize, writer: &'a Mutex<Writer>) -> Self {
        queued.fetch_add(1, Ordering::SeqCst);
        Self {
            queued,
            writer,
            waiting: true,
        }
    }

    /// The writer is ours: no longer waiting.
    fn arrived(mut self) {
        self.waiting = false;
        self.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Queued<'_> {
    /// Giving up the wait (a timeout, a cancelled future): a transaction
    /// may have left its group open for this one, so end the group if
    /// nobody else is coming. Should the writer be busy, its holder ends
    /// the group, or the checkpointer does on its next round.
    fn drop(&mut self) {
        if !self.waiting {
            return;
        }
        if self.queued.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Ok(mut writer) = self.writer.try_lock() {
                writer.settle(false);
            }
        }
    }
}

/// An open transaction on the writer connection: a savepoint inside the
/// writer's current group (see [`group`]). It owns the writer until it
/// ends; dropping it without [`EmbeddedTx::commit`] (an early return, a
/// panic, a cancelled future) rolls it back, so the writer is never left
/// inside it.
pub(crate) struct EmbeddedTx {
    /// The writer while the transaction runs; `None` once it ended.
    writer: Option<OwnedMutexGuard<Writer>>,
    /// Whether its savepoint was released into the group: from then on its
    /// writes are the group's to commit, and ending it no longer undoes them.
    released: bool,
    queued: Arc<AtomicUsize>,
}

impl EmbeddedTx {
    /// The connection, provided the transaction is still running. SQLite
    /// rolls a transaction back by itself after some failures (I/O, a full
    /// disk); without this check later statements would run in autocommit
    /// mode and commit one by one.
    fn live(&self) -> StoreResult<&Connection> {
        match self.writer.as_deref().map(Writer::conn) {
            Some(conn) if !conn.is_autocommit() => Ok(conn),
            _ => Err(StoreError::Unavailable(
                "the transaction was rolled back by the engine after an earlier failure".to_owned(),
            )),
        }
    }

    /// Whether a transaction is waiting to continue the group.
    fn more_coming(&self) -> bool {
        self.queued.load(Ordering::SeqCst) > 0
    }
    /// Inserts a document.
    #[tracing::instrument(level = "trace", skip_all, fields(collection = collection))]
    pub(crate) async fn insert(&mut self, collection: &str, doc: Document) -> StoreResult<()> {
        ops::insert(self.live()?, collection, &doc)
    }

    /// The document with this id, including this transaction's writes.
    #[tracing::instrument(level = "trace", skip_all, fields(collection = collection))]
    pub(crate) async fn get(
        &mut self,
        collection: &str,
        id: &str,
    ) -> StoreResult<Option<Document>> {
        ops::get(self.live()?, collection, id)
    }

    /// The first match in id order, including this transaction's writes.
    #[tracing::instrument(level = "trace", skip_all, fields(collection = collection))]
    pub(crate) async fn find_one(
        &mut self,
        collection: &str,
        filter: &Filter,
    ) -> StoreResult<Option<Document>> {
        ops::find_one(self.live()?, collection, filter)
    }

    /// The matches, including this transaction's writes.
    #[tracing::instrument(level = "trace", skip_all, fields(collection = collection))]
    pub(crate) async fn find(
        &mut self,
        collection: &str,
        filter: &Filter,
        options: &FindOptions,
    ) -> StoreResult<Vec<Document>> {
        ops::find(self.live()?, collection, filter, options)
    }

    /// Updates the first match in id order; the document afterwards.
    #[tracing::instrument(level = "trace", skip_all, fields(collection = collection))]
    pub(crate) async fn update_one(
        &mut self,
        collection: &str,
        filter: &Filter,
        update: &Update,
    ) -> StoreResult<Option<Document>> {
        ops::update_one(self.live()?, collection, filter, update)
    }

    /// Deletes the first match in id order; whether there was one.
    #[tracing::instrument(level = "trace", skip_all, fields(collection = collection))]
    pub(crate) async fn delete_one(
        &mut self,
        collection: &str,
        filter: &Filter,
    ) -> StoreResult<bool> {
        ops::delete_one(self.live()?, collection, filter)
    }

    /// Makes every write of the transaction durable (see the module docs for
    /// what durable means with `synchronous=NORMAL`): its savepoint joins
    /// the group, which commits when no other transaction is waiting to
    /// join it; this returns once that commit is done.
    pub(crate) async fn commit(mut self) -> StoreResult<()> {
        self.live()?;
        let Some(writer) = self.writer.as_mut() else {
            return Err(StoreError::Unavailable(
                "the transaction already ended".to_owned(),
            ));
        };
        // On failure the savepoint is still there: dropping `self` undoes it.
        let ticket = writer.release()?;
        self.released = true;
        // The members of the last group were woken by its commit and are
        // about to queue again; a few turns of the scheduler let them
        // arrive and join this group instead of each starting its own.
        // Alone, a transaction pays a few yields, a microsecond or so.
        for _ in 0..GATHER_TURNS {
            let has_room = self.writer.as_ref().is_some_and(|w| w.has_room());
            if self.more_coming() || !has_room {
                break;
            }
            tokio::task::yield_now().await;
        }
        self.end();
        ticket.outcome().await
    }

    /// Discards every write of the transaction, returning once the writes
    /// of the earlier members of its group it may have seen are committed
    /// (or have failed), so a caller that saw "duplicate key" finds the
    /// existing document with a plain read.
    pub(crate) async fn abort(mut self) {
        if let Some(ticket) = self.end() {
            // Their outcome is theirs to report; this transaction failed
            // either way.
            let _ = ticket.outcome().await;
        }
    }

    /// Gives the writer back: undoes the transaction unless it was
    /// released into the group, then ends the group if nobody is coming to
    /// continue it. Returns the group's ticket when an undone transaction
    /// shared its group with waiting members.
    fn end(&mut self) -> Option<Ticket> {
        let mut writer = self.writer.take()?;
        let ticket = if self.released {
            None
        } else {
            writer.rollback()
        };
        writer.settle(self.more_coming());
        ticket
    }
}

impl Drop for EmbeddedTx {
    fn drop(&mut self) {
        self.end();
    }
}
