//! WAL checkpoints on a thread of their own.
//!
//! A checkpoint copies committed pages from the write-ahead log into the
//! database file and syncs both; with `synchronous=NORMAL` it is the only
//! place the engine waits for the disk. Left to SQLite, it runs on the
//! committing connection every 1 000 pages, and every few hundred
//! transactions one of them stalls for two fsyncs (milliseconds on a VM
//! disk) while the whole writer queue waits behind it. Here a background
//! connection checkpoints a few times a second instead, concurrently with
//! the writer, so commits never sync.
//!
//! The log can only start over (instead of growing) when a transaction
//! begins with every frame already copied, which never happens while
//! transactions follow each other back to back. So once the log is large,
//! the checkpointer takes the writer for one short catch-up checkpoint of
//! the last few frames; the next transaction then rewinds the log.
//!
//! As a side effect the window a power cut can lose is bounded by time
//! (about [`Options::checkpoint_interval`]) rather than by a page count.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Mutex;

use super::errors::engine_error;
use super::group::Writer;
use super::{configure, Options};
use crate::db::{StoreError, StoreResult};

/// Stops the checkpointer when dropped (it notices within one interval).
pub(super) struct Checkpointer {
    _stop: mpsc::Sender<()>,
}

/// Starts the checkpointer on its own connection to `path`.
pub(super) fn spawn(
    path: &Path,
    writer: Arc<Mutex<Writer>>,
    options: &Options,
) -> StoreResult<Checkpointer> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(engine_error)?;
    configure(&conn, options)?;
    let (stop, stopped) = mpsc::channel();
    let (interval, catch_up_frames) = (options.checkpoint_interval, options.catch_up_frames);
    std::thread::Builder::new()
        .name("sqlite-checkpoint".to_owned())
        .spawn(move || {
            // The sender is never used: its drop (the store's) ends the loop.
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                if let Err(err) = pass(&conn, &writer, catch_up_frames) {
                    // Busy or I/O trouble: the next round tries again;
                    // commits are unaffected, the log just grows meanwhile.
                    tracing::warn!(error = %err, "embedded store checkpoint failed");
                }
            }
        })
        .map_err(|err| {
            StoreError::Unavailable(format!("cannot start the checkpoint thread: {err}"))
        })?;
    Ok(Checkpointer { _stop: stop })
}

/// One round: a checkpoint beside the writer, then, when the log has grown
/// past `catch_up_frames` pages, a catch-up with the writer held. Must run
/// outside any async runtime (it blocks on the writer).
///
/// A round also commits a group left open with nobody to end it (its last
/// expected member gave up waiting for the writer at the wrong moment):
/// an idle writer never holds an open group for longer than an interval.
pub(super) fn pass(
    conn: &Connection,
    writer: &Mutex<Writer>,
    catch_up_frames: i64,
) -> rusqlite::Result<()> {
    if let Ok(mut idle) = writer.try_lock() {
        idle.flush();
    }
    if checkpoint(conn)? >= catch_up_frames {
        // Waits for the running transaction, then holds the next ones back
        // for the few frames written since the first checkpoint; the group
        // it may have left open commits first, so its members do not wait.
        let mut writer = writer.blocking_lock();
        writer.flush();
        checkpoint(conn)?;
    }
    Ok(())
}

/// A passive checkpoint (never waits for readers or the writer); the log's
/// size in pages afterwards.
fn checkpoint(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
}
