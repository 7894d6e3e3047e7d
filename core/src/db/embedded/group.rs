//! Group commit: many logical transactions in one SQLite transaction.
//!
//! A commit costs far more than a transfer's statements: SQLite writes every
//! page the transaction dirtied as a frame of the log, and a transfer
//! dirties pages of five collections and their indexes. Consecutive
//! transactions mostly dirty the same pages (the tail of each table and
//! index, hot wallets), so committing them together writes each page once.
//!
//! The writer connection therefore runs *groups*. The first logical
//! transaction of a group opens the physical one (`BEGIN IMMEDIATE`); every
//! logical transaction runs inside its own `SAVEPOINT`. Committing a logical
//! transaction releases its savepoint into the group and then waits for the
//! group's `COMMIT`; rolling one back (an error, a panic, a cancelled
//! future) undoes its savepoint only, so its neighbours are untouched. The
//! group is committed by the member that finds no transaction waiting for
//! the writer (or the group full); the next one to arrive starts a new
//! group.
//!
//! What callers keep: logical transactions still run one at a time on the
//! one writer, so they are serialisable; each is atomic (its savepoint goes
//! in whole or not at all); and a commit reports success only after the
//! physical `COMMIT`, so a caller never sees a success that a crash could
//! undo any more than before. If the physical commit fails, every member
//! of the group gets the error and none of their writes persist. A member
//! may have seen the writes of earlier members of its group before they
//! were durable; that is harmless because they share one fate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::watch;

use super::errors::engine_error;
use crate::db::{StoreError, StoreResult};

/// Most logical transactions in one group: bounds how long the first
/// member waits for the commit while others keep arriving.
pub(super) const MAX_GROUP: usize = 64;

/// The savepoint of the running logical transaction. One at a time, so one
/// name serves.
const SAVEPOINT: &str = "SAVEPOINT logical";
const RELEASE: &str = "RELEASE logical";
const ROLLBACK_TO: &str = "ROLLBACK TO logical";

/// What a group's members learn once it ended.
type Outcome = Option<StoreResult<()>>;

/// The writer connection and the group it is running, if any.
pub(super) struct Writer {
    conn: Connection,
    group: Option<Group>,
    counts: Arc<Counts>,
}

/// How well grouping works: `transactions / commits` is the mean group
/// size. Reported by the store's statistics.
#[derive(Debug, Default)]
pub(super) struct Counts {
    /// Physical commits that succeeded.
    pub(super) commits: AtomicU64,
    /// Logical transactions those commits made durable.
    pub(super) transactions: AtomicU64,
}

/// An open physical transaction holding released logical transactions.
struct Group {
    /// Logical transactions released into the group; each waits for its
    /// outcome.
    members: usize,
    outcome: watch::Sender<Outcome>,
}

/// A released logical transaction's claim on its group's outcome.
pub(super) struct Ticket(watch::Receiver<Outcome>);

impl Ticket {
    /// Waits for the group's commit (or failure).
    pub(super) async fn outcome(mut self) -> StoreResult<()> {
        match self.0.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().unwrap_or_else(|| {
                Err(StoreError::Unavailable(
                    "the group commit ended without an outcome".to_owned(),
                ))
            }),
            // The writer was dropped without ending the group (it ends it
            // on drop, so only a panic inside SQLite could get here).
            Err(_) => Err(StoreError::Unavailable(
                "the group commit ended without an outcome".to_owned(),
            )),
        }
    }
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute([]))
        .map(drop)
}

impl Writer {
    pub(super) fn new(conn: Connection, counts: Arc<Counts>) -> Self {
        Self {
            conn,
            group: None,
            counts,
        }
    }

    /// The connection, for the statements of the running logical
    /// transaction.
    pub(super) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Whether the open group (if any) can take another member.
    pub(super) fn has_room(&self) -> bool {
        self.group
            .as_ref()
            .is_none_or(|group| group.members < MAX_GROUP)
    }

    /// Starts a logical transaction: joins the open group or opens one.
    pub(super) fn begin(&mut self) -> StoreResult<()> {
        if self.group.is_some() && self.conn.is_autocommit() {
            // SQLite rolled the physical transaction back by itself (I/O,
            // a full disk): the released members are lost.
            self.fail(rolled_back());
        }
        if self.group.is_none() {
            if !self.conn.is_autocommit() {
                // Cannot happen while every path ends its group; if it ever
                // does, the left-over transaction must not absorb this one.
                tracing::warn!("embedded writer was left inside a transaction; rolling it back");
                exec(&self.conn, "ROLLBACK").map_err(engine_error)?;
            }
            exec(&self.conn, "BEGIN IMMEDIATE").map_err(engine_error)?;
            let (outcome, _) = watch::channel(None);
            self.group = Some(Group {
                members: 0,
                outcome,
            });
        }
        if let Err(err) = exec(&self.conn, SAVEPOINT) {
            self.settle(false);
            return Err(engine_error(err));
        }
        Ok(())
    }

    /// Merges the running logical transaction into the group; its writes
    /// persist when the group commits.
    pub(super) fn release(&mut self) -> StoreResult<Ticket> {
        if self.conn.is_autocommit() {
            return Err(rolled_back());
        }
        exec(&self.conn, RELEASE).map_err(engine_error)?;
        let group = self.group.as_mut().ok_or_else(rolled_back)?;
        group.members += 1;
        Ok(Ticket(group.outcome.subscribe()))
    }

    /// Undoes the running logical transaction, and only it. When earlier
    /// members of the group are still waiting for their commit, the undone
    /// transaction may have seen their writes (a duplicate key, a failed
    /// precondition): the ticket lets its caller report that outcome only
    /// once those writes are committed, and so readable, as before groups.
    pub(super) fn rollback(&mut self) -> Option<Ticket> {
        if self.conn.is_autocommit() {
            self.fail(rolled_back());
            return None;
        }
        let undone = exec(&self.conn, ROLLBACK_TO).and_then(|()| exec(&self.conn, RELEASE));
        if let Err(err) = undone {
            // The savepoint cannot be undone alone: undo the whole group
            // rather than let a partial transaction commit.
            tracing::error!(error = %err, "embedded savepoint rollback failed");
            self.fail(engine_error(err));
            return None;
        }
        self.group
            .as_ref()
            .filter(|group| group.members > 0)
            .map(|group| Ticket(group.outcome.subscribe()))
    }

    /// Ends the group unless a transaction waiting for the writer will
    /// continue it (`more_coming`) and there is room for it.
    pub(super) fn settle(&mut self, more_coming: bool) {
        let Some(members) = self.group.as_ref().map(|group| group.members) else {
            return;
        };
        if members == 0 {
            // Nothing to commit: end the empty transaction, so an idle
            // writer never keeps the log's write lock.
            self.fail(rolled_back());
        } else if !more_coming || members >= MAX_GROUP {
            self.flush();
        }
    }

    /// Commits the open group, if any, and tells its members.
    pub(super) fn flush(&mut self) {
        let Some(group) = self.group.take() else {
            return;
        };
        let result = if self.conn.is_autocommit() {
            Err(rolled_back())
        } else {
            exec(&self.conn, "COMMIT").map_err(engine_error)
        };
        self.end(group, result);
    }

    /// Rolls the whole group back and gives its members `err`.
    fn fail(&mut self, err: StoreError) {
        if let Some(group) = self.group.take() {
            self.end(group, Err(err));
        }
    }

    fn end(&mut self, group: Group, result: StoreResult<()>) {
        // A failed COMMIT may leave the transaction open.
        if !self.conn.is_autocommit() {
            if let Err(err) = exec(&self.conn, "ROLLBACK") {
                // The next `begin` sees the open transaction and retries.
                tracing::error!(error = %err, "embedded rollback failed");
            }
        }
        if result.is_ok() {
            self.counts.commits.fetch_add(1, Ordering::Relaxed);
            self.counts
                .transactions
                .fetch_add(group.members as u64, Ordering::Relaxed);
        }
        if let Err(err) = &result {
            if group.members > 0 {
                tracing::warn!(error = %err, members = group.members, "embedded group commit failed");
            }
        }
        group.outcome.send_replace(Some(result));
    }
}

impl Drop for Writer {
    /// A store closing with members waiting commits them rather than
    /// leaving them to SQLite's rollback on close.
    fn drop(&mut self) {
        self.flush();
    }
}

fn rolled_back() -> StoreError {
    StoreError::Unavailable(
        "the transaction was rolled back by the engine after an earlier failure".to_owned(),
    )
}
