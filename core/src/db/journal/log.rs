//! The journal engine's durable part: an append-only log of committed
//! transactions, and a snapshot that lets the log start over.
//!
//! Every commit appends one [`Record`] as one frame to the current log
//! segment and returns once the kernel has it; a background thread fsyncs
//! the segment every [`Options::sync_interval`]. So a process crash loses
//! nothing and a power cut at most about one interval, the same trade the
//! embedded SQLite engine makes with `synchronous=NORMAL`.
//!
//! Once a segment passes [`Options::compact_after`] and the size of the last
//! snapshot, the store asks for a snapshot: the journal seals the segment,
//! starts the next one, and a background thread writes the whole state (as
//! of the sealed segment's end) to `snapshot.tmp`, renames it over
//! `snapshot` and deletes the segments it covers. The rename is the commit point: before it, recovery uses the old
//! snapshot and every segment; after it, the new snapshot and the segments
//! past it. Segments the snapshot covers but that survived a crash are
//! deleted on the next open rather than replayed twice.
//!
//! Files in the directory: `LOCK` (held exclusively while open),
//! `snapshot` (optional) and `log-<20-digit segment number>`, numbered from
//! 1 so that names sort like numbers. A frame is `u32` LE payload length,
//! `u32` LE CRC-32 of the payload, then the payload (JSON). Only the end of
//! the last segment may be torn (a crash mid-write); it is cut on open.
//! Damage anywhere else means lost commits, and opening fails rather than
//! serve a state with a hole in it.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod frame;

use self::frame::{encode_frame, scan, Frame, FrameIn};
use crate::db::{Document, IndexSpec, StoreError, StoreResult};

/// One document written by a committed transaction: the document after the
/// commit, or None when it was deleted.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Write {
    pub(super) collection: String,
    pub(super) id: String,
    pub(super) doc: Option<Arc<Document>>,
}

/// What the log holds, in commit order.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Record {
    Writes(Vec<Write>),
    CreateIndex(IndexSpec),
    DropIndex { collection: String, name: String },
}

/// Knobs of the journal; the defaults suit a service, tests shrink them.
#[derive(Clone, Debug)]
pub(super) struct Options {
    /// Pause between two background fsyncs of the current segment: about
    /// what a power cut can lose.
    pub(super) sync_interval: Duration,
    /// Bytes of the current segment past which a snapshot is due. Larger
    /// means rarer snapshots but a longer replay on open.
    pub(super) compact_after: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            sync_interval: Duration::from_millis(100),
            compact_after: 64 * 1024 * 1024,
        }
    }
}

/// What [`Journal::start_snapshot`] runs to emit the state, on its thread.
pub(super) type WriteState =
    Box<dyn FnOnce(&mut dyn FnMut(&Record) -> io::Result<()>) -> io::Result<()> + Send>;

const LOCK: &str = "LOCK";
const SNAPSHOT: &str = "snapshot";
const SNAPSHOT_TMP: &str = "snapshot.tmp";
const SEGMENT_PREFIX: &str = "log-";
/// How often a held `LOCK` is tried again while waiting for it.
const LOCK_POLL: Duration = Duration::from_millis(10);
/// An encode buffer grown past this by one large transaction is dropped
/// after use, so one bulk import does not pin its size forever.
const KEPT_BUFFER: usize = 1024 * 1024;

/// The open journal; see the module documentation.
pub(super) struct Journal {
    dir: PathBuf,
    /// Holds the directory's lock; closing it (on drop) releases the lock.
    _lock: File,
    /// The segment appends go to (opened in append mode), and its number.
    segment: Arc<File>,
    segment_no: u64,
    /// Bytes in the current segment.
    segment_len: u64,
    compact_after: u64,
    /// Reused for every frame, so an append does not allocate.
    buf: Vec<u8>,
    shared: Arc<Shared>,
    syncer: Option<JoinHandle<()>>,
    snapshot: Option<JoinHandle<()>>,
    /// Test hook: the next append writes half its frame and fails.
    #[cfg(test)]
    fail_next_append: bool,
}

/// State the journal shares with its sync and snapshot threads.
struct Shared {
    /// The segment the sync thread syncs; swapped when the journal rotates.
    current: Mutex<Arc<File>>,
    /// Set after each append, cleared by the sync thread before it syncs.
    dirty: AtomicBool,
    /// Set after a failed write or sync: what the kernel has may differ from
    /// what callers were told, so nothing more may be appended.
    poisoned: AtomicBool,
    /// Set when the journal is dropped; the condvar wakes the sync thread.
    closing: Mutex<bool>,
    wake: Condvar,
    /// Bytes in the snapshot file and in sealed (not current) segments.
    snapshot_bytes: AtomicU64,
    sealed_bytes: AtomicU64,
}

impl Shared {
    fn closing(&self) -> bool {
        *lock(&self.closing)
    }
}

impl Journal {
    /// Opens (creating when missing) the journal in directory `dir`, waiting
    /// up to `lock_wait` for another holder of its `LOCK`. Returns the
    /// journal and every record to replay, in commit order: the snapshot's,
    /// then each later segment's. A torn or corrupt tail of the last segment
    /// is cut off; damage anywhere else is [`StoreError::Unavailable`].
    pub(super) fn open(
        dir: &Path,
        options: &Options,
        lock_wait: Duration,
    ) -> StoreResult<(Self, Vec<Record>)> {
        fs::create_dir_all(dir).map_err(|err| failed("create", dir, err))?;
        let lock_file = lock_dir(dir, lock_wait)?;
        remove_if_present(&dir.join(SNAPSHOT_TMP))?;
        let mut records = Vec::new();
        let (covers, snapshot_bytes) = read_snapshot(dir, &mut records)?;

        let mut segments = Vec::new();
        for (number, path) in list_segments(dir)? {
            if number <= covers {
                // Left by a crash between the snapshot's rename and the
                // deletion of what it covers.
                remove_if_present(&path)?;
            } else {
                segments.push((number, path));
            }
        }
        for (expected, (number, _)) in (covers + 1..).zip(&segments) {
            if *number != expected {
                return Err(StoreError::Unavailable(format!(
                    "log segment {expected} is missing from {}: commits are lost",
                    dir.display()
                )));
            }
        }

        let mut sealed_bytes = 0;
        let last = segments.pop();
        for (_, path) in &segments {
            let file = File::open(path).map_err(|err| failed("open", path, err))?;
            let scan = scan(path, &file, |frame| push_record(&mut records, frame))?;
            if let Some(why) = scan.problem {
                return Err(corrupt(path, scan.good, &why));
            }
            sealed_bytes += scan.good;
        }
        let (segment_no, segment, segment_len) = match last {
            Some((number, path)) => {
                let (file, len) = open_last_segment(&path, &mut records)?;
                (number, file, len)
            }
            None => (covers + 1, create_segment(dir, covers + 1)?, 0),
        };

        let segment = Arc::new(segment);
        let shared = Arc::new(Shared {
            current: Mutex::new(Arc::clone(&segment)),
            dirty: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            closing: Mutex::new(false),
            wake: Condvar::new(),
            snapshot_bytes: AtomicU64::new(snapshot_bytes),
            sealed_bytes: AtomicU64::new(sealed_bytes),
        });
        let syncer = {
            let (shared, interval) = (Arc::clone(&shared), options.sync_interval);
            std::thread::Builder::new()
                .name("journal-sync".to_owned())
                .spawn(move || sync_loop(&shared, interval))
                .map_err(|err| {
                    StoreError::Unavailable(format!("cannot start the journal sync thread: {err}"))
                })?
        };
        let journal = Self {
            dir: dir.to_owned(),
            _lock: lock_file,
            segment,
            segment_no,
            segment_len,
            compact_after: options.compact_after,
            buf: Vec::new(),
            shared,
            syncer: Some(syncer),
            snapshot: None,
            #[cfg(test)]
            fail_next_append: false,
        };
        Ok((journal, records))
    }

    /// Appends `record` as one frame. On `Ok` the kernel has it (a process
    /// crash cannot lose it); the disk has it within about one sync
    /// interval. After a failed write every append fails until the store is
    /// reopened, which cuts whatever part of the frame reached the file.
    pub(super) fn append(&mut self, record: &Record) -> StoreResult<()> {
        self.check_healthy()?;
        encode_frame(&mut self.buf, &Frame::from(record))
            .map_err(|err| StoreError::Invalid(format!("cannot encode a journal record: {err}")))?;
        let written = self.write_frame();
        let len = self.buf.len() as u64;
        if self.buf.capacity() > KEPT_BUFFER {
            self.buf = Vec::new();
        }
        if let Err(err) = written {
            self.shared.poisoned.store(true, Ordering::Release);
            let path = segment_path(&self.dir, self.segment_no);
            tracing::error!(error = %err, path = %path.display(), "journal append failed");
            return Err(failed("append to", &path, err));
        }
        self.segment_len += len;
        self.shared.dirty.store(true, Ordering::Release);
        Ok(())
    }

    fn write_frame(&mut self) -> io::Result<()> {
        #[cfg(test)]
        if std::mem::take(&mut self.fail_next_append) {
            // Half a frame, as a full disk would leave it.
            (&*self.segment).write_all(&self.buf[..self.buf.len() / 2])?;
            return Err(io::Error::other("simulated write failure"));
        }
        // One write(2) for the whole frame in the normal case; `write_all`
        // only loops on a short write, which then usually fails anyway.
        (&*self.segment).write_all(&self.buf)
    }

    /// Whether a snapshot is due: the current segment passed
    /// `compact_after` and the size of the last snapshot, and no snapshot
    /// is being written. Waiting for the log to outgrow the snapshot keeps
    /// the cost of snapshots proportional to what is logged: with a fixed
    /// threshold a growing store would rewrite all of its data ever more
    /// often per byte committed.
    pub(super) fn snapshot_due(&self) -> bool {
        let snapshot = self.shared.snapshot_bytes.load(Ordering::Relaxed);
        self.segment_len >= self.compact_after.max(snapshot) && !self.snapshot_running()
    }

    fn snapshot_running(&self) -> bool {
        self.snapshot
            .as_ref()
            .is_some_and(|thread| !thread.is_finished())
    }

    /// Seals the current segment, starts the next, and writes on a
    /// background thread a snapshot of the state as of the sealed segment's
    /// end: `write_state` must feed the sink every record that rebuilds that
    /// state (each index, then the documents in chunks) and return the
    /// sink's error if it gets one. A failed snapshot is logged and leaves
    /// the old snapshot and segments in place, so recovery stays correct.
    pub(super) fn start_snapshot(&mut self, write_state: WriteState) -> StoreResult<()> {
        self.check_healthy()?;
        if self.snapshot_running() {
            return Err(StoreError::Invalid(
                "a journal snapshot is already being written".to_owned(),
            ));
        }
        if let Some(finished) = self.snapshot.take() {
            join(finished, "snapshot");
        }
        let covers = self.segment_no;
        self.rotate()?;
        let (dir, shared) = (self.dir.clone(), Arc::clone(&self.shared));
        let thread = std::thread::Builder::new()
            .name("journal-snapshot".to_owned())
            .spawn(move || {
                if let Err(err) = write_snapshot(&dir, covers, write_state, &shared) {
                    // A journal being closed cancels its snapshot on purpose.
                    if !shared.closing() {
                        tracing::error!(error = %err, dir = %dir.display(), "journal snapshot failed");
                    }
                    // What is left of the temporary file is removed again
                    // on the next open, so a failure here changes nothing.
                    let _ = fs::remove_file(dir.join(SNAPSHOT_TMP));
                }
            })
            .map_err(|err| {
                StoreError::Unavailable(format!("cannot start the journal snapshot thread: {err}"))
            })?;
        self.snapshot = Some(thread);
        Ok(())
    }

    /// Seals the current segment and makes the next one current.
    fn rotate(&mut self) -> StoreResult<()> {
        let old = segment_path(&self.dir, self.segment_no);
        // The sealed segment must be whole on disk before anything reaches
        // the next one: after a power cut only the last segment may be torn.
        if let Err(err) = self.segment.sync_data() {
            self.shared.poisoned.store(true, Ordering::Release);
            return Err(failed("sync", &old, err));
        }
        let next = create_segment(&self.dir, self.segment_no + 1)?;
        self.segment = Arc::new(next);
        *lock(&self.shared.current) = Arc::clone(&self.segment);
        self.segment_no += 1;
        self.shared
            .sealed_bytes
            .fetch_add(self.segment_len, Ordering::Relaxed);
        self.segment_len = 0;
        Ok(())
    }

    /// Bytes in the snapshot and in all log segments, for statistics.
    pub(super) fn sizes(&self) -> (u64, u64) {
        let sealed = self.shared.sealed_bytes.load(Ordering::Relaxed);
        (
            self.shared.snapshot_bytes.load(Ordering::Relaxed),
            sealed + self.segment_len,
        )
    }

    /// Whether a write or sync failed: the store must be reopened.
    pub(super) fn poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::Acquire)
    }

    fn check_healthy(&self) -> StoreResult<()> {
        if self.poisoned() {
            return Err(StoreError::Unavailable(format!(
                "the journal in {} failed to write; the store must be reopened",
                self.dir.display()
            )));
        }
        Ok(())
    }

    /// Waits for the running snapshot, if any, to finish.
    #[cfg(test)]
    pub(super) fn wait_for_snapshot(&mut self) {
        if let Some(thread) = self.snapshot.take() {
            join(thread, "snapshot");
        }
    }
}

impl Drop for Journal {
    /// Cancels a running snapshot (its sink fails at the next record), syncs
    /// the segment a last time, and waits for both threads, so the directory
    /// can be reopened as soon as this returns.
    fn drop(&mut self) {
        *lock(&self.shared.closing) = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.snapshot.take() {
            join(thread, "snapshot");
        }
        if let Some(thread) = self.syncer.take() {
            join(thread, "sync");
        }
    }
}

/// Every `interval`, and once more when the journal closes, fsyncs the
/// current segment if it was written since the last sync.
fn sync_loop(shared: &Shared, interval: Duration) {
    loop {
        let closing = {
            let guard = lock(&shared.closing);
            let (guard, _) = shared
                .wake
                .wait_timeout_while(guard, interval, |closing| !*closing)
                .unwrap_or_else(PoisonError::into_inner);
            *guard
        };
        if shared.dirty.swap(false, Ordering::AcqRel) {
            let file = Arc::clone(&lock(&shared.current));
            if let Err(err) = file.sync_data() {
                // After a failed fsync the kernel may have dropped the dirty
                // pages: what was acknowledged may not be on disk.
                tracing::error!(error = %err, "journal sync failed");
                shared.poisoned.store(true, Ordering::Release);
            }
        }
        if closing {
            return;
        }
    }
}

/// Writes `snapshot.tmp`, renames it to `snapshot` and deletes the segments
/// numbered up to `covers`.
fn write_snapshot(
    dir: &Path,
    covers: u64,
    write_state: WriteState,
    shared: &Shared,
) -> io::Result<()> {
    let tmp = dir.join(SNAPSHOT_TMP);
    let mut out = BufWriter::with_capacity(1024 * 1024, File::create(&tmp)?);
    let mut buf = Vec::new();
    encode_frame(&mut buf, &Frame::Snapshot { covers })?;
    out.write_all(&buf)?;
    let mut sink = |record: &Record| -> io::Result<()> {
        if shared.closing() {
            return Err(io::Error::other("the journal was closed"));
        }
        encode_frame(&mut buf, &Frame::from(record))?;
        out.write_all(&buf)
    };
    write_state(&mut sink)?;
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()?;
    let size = file.metadata()?.len();
    drop(file);
    fs::rename(&tmp, dir.join(SNAPSHOT))?;
    sync_dir(dir)?;
    shared.snapshot_bytes.store(size, Ordering::Relaxed);

    let mut freed = 0;
    for (number, path) in list_segments(dir).map_err(io::Error::other)? {
        if number > covers {
            continue;
        }
        let len = fs::metadata(&path).map_or(0, |meta| meta.len());
        match fs::remove_file(&path) {
            Ok(()) => freed += len,
            // The next open deletes it; replay stays correct meanwhile.
            Err(err) => {
                tracing::warn!(error = %err, path = %path.display(), "cannot delete a log segment")
            }
        }
    }
    let _ = shared
        .sealed_bytes
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(n.saturating_sub(freed))
        });
    Ok(())
}

/// Adds a segment frame's record to `records`; a segment holds no header.
fn push_record(records: &mut Vec<Record>, frame: FrameIn) -> Result<(), String> {
    let record = frame
        .into_record()
        .ok_or_else(|| "a snapshot header in a log segment".to_owned())?;
    records.push(record);
    Ok(())
}

/// Reads the snapshot's records into `records`; which segment it covers up
/// to (0 without a snapshot) and its size.
fn read_snapshot(dir: &Path, records: &mut Vec<Record>) -> StoreResult<(u64, u64)> {
    let path = dir.join(SNAPSHOT);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(err) => return Err(failed("open", &path, err)),
    };
    let mut covers = None;
    let scan = scan(&path, &file, |frame| match (covers, frame) {
        (None, FrameIn::Snapshot { covers: n }) => {
            covers = Some(n);
            Ok(())
        }
        (None, _) => Err("it does not start with a snapshot header".to_owned()),
        (Some(_), frame) => frame
            .into_record()
            .map(|record| records.push(record))
            .ok_or_else(|| "a second snapshot header".to_owned()),
    })?;
    if let Some(why) = scan.problem {
        return Err(corrupt(&path, scan.good, &why));
    }
    let covers = covers.ok_or_else(|| corrupt(&path, 0, "the file is empty"))?;
    Ok((covers, scan.good))
}

/// Opens the last segment for appending after reading its records into
/// `records`, cutting a torn or corrupt tail; the file and its length.
fn open_last_segment(path: &Path, records: &mut Vec<Record>) -> StoreResult<(File, u64)> {
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(|err| failed("open", path, err))?;
    let scan = scan(path, &file, |frame| push_record(records, frame))?;
    if let Some(why) = scan.problem {
        tracing::warn!(
            path = %path.display(),
            at = scan.good,
            problem = %why,
            "cutting the torn end of the journal (a commit interrupted by a crash)"
        );
        file.set_len(scan.good)
            .and_then(|()| file.sync_all())
            .map_err(|err| failed("truncate", path, err))?;
    }
    Ok((file, scan.good))
}

/// Creates segment `number` for appending and makes its name durable.
fn create_segment(dir: &Path, number: u64) -> StoreResult<File> {
    let path = segment_path(dir, number);
    let file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(|err| failed("create", &path, err))?;
    if let Err(err) = sync_dir(dir) {
        // Otherwise the next rotation would find the name taken.
        let _ = fs::remove_file(&path);
        return Err(failed("sync", dir, err));
    }
    Ok(file)
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{number:020}"))
}

/// The log segments in `dir`, in order.
fn list_segments(dir: &Path) -> StoreResult<Vec<(u64, PathBuf)>> {
    let entries = fs::read_dir(dir).map_err(|err| failed("list", dir, err))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|err| failed("list", dir, err))?;
        let name = entry.file_name();
        let number = name
            .to_str()
            .and_then(|name| name.strip_prefix(SEGMENT_PREFIX))
            .filter(|digits| digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u64>().ok());
        if let Some(number) = number {
            segments.push((number, entry.path()));
        }
    }
    segments.sort_unstable();
    Ok(segments)
}

/// Takes `dir/LOCK`, retrying for up to `wait` while someone else holds it.
fn lock_dir(dir: &Path, wait: Duration) -> StoreResult<File> {
    let path = dir.join(LOCK);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|err| failed("open", &path, err))?;
    let deadline = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(LOCK_POLL);
            }
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Unavailable(format!(
                    "{} is in use by another process or store",
                    dir.display()
                )));
            }
            Err(TryLockError::Error(err)) => return Err(failed("lock", &path, err)),
        }
    }
}

/// Makes creations, renames and deletions in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    // Only Unix can open and fsync a directory; elsewhere the rename's own
    // durability is all there is.
    if cfg!(unix) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> StoreResult<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(failed("delete", path, err)),
    }
}

fn join(thread: JoinHandle<()>, name: &str) {
    if thread.join().is_err() {
        tracing::error!(thread = name, "a journal thread panicked");
    }
}

/// Locks `mutex`, going on after a panic elsewhere: the guarded values stay
/// valid whatever point a holder stopped at.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn failed(what: &str, path: &Path, err: io::Error) -> StoreError {
    StoreError::Unavailable(format!("cannot {what} {}: {err}", path.display()))
}

fn corrupt(path: &Path, at: u64, why: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "{} is corrupt at byte {at}: {why}; commits after that point cannot be recovered",
        path.display()
    ))
}

#[cfg(test)]
mod tests;
