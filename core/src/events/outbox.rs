//! The transactional outbox: publish an event if and only if its database
//! change committed.
//!
//! Publishing straight from business code has two failure modes: the event
//! goes out but the transaction rolls back (subscribers act on something
//! that never happened), or the transaction commits and the process dies
//! before publishing (the event is lost). Instead, [`Outbox::stage`] writes
//! the event into the `outbox` collection inside the caller's transaction,
//! and an [`OutboxRelay`] publishes committed entries afterwards. A
//! transaction that emits several events stages them as one entry
//! ([`Outbox::stage_all`]), so the relay's claim and mark are paid once per
//! transaction rather than once per event.
//!
//! The relay publishes, then marks the entry published. If it dies between
//! the two, the entry is published again on the next run: delivery is at
//! least once, and consumers skip the duplicate because it carries the same
//! event id (see [`super::EventBus`]). Several relays may run at once: each
//! claims an entry with a conditional update of its `claimed_until` lease
//! before publishing it, so two relays never publish the same entry at the
//! same time (a relay that dies holding a lease delays its entries until the
//! lease expires; nothing is lost).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Event, EventBus, EventError};
use crate::db::{
    Database, Direction, Document, Filter, FindOptions, IndexSpec, StoreError, StoreResult,
    Transaction, Update, ID,
};

/// The collection staged events are written to.
pub const OUTBOX_COLLECTION: &str = "outbox";

/// Entries deleted per purge step.
const PURGE_BATCH: usize = 100;

/// Writes events into the outbox as part of a business transaction.
#[derive(Clone, Copy, Debug)]
pub struct Outbox;

impl Outbox {
    /// Inserts `event` into the outbox within `tx`: it exists (and will be
    /// published) iff `tx` commits. Staging the same event id twice fails
    /// with [`StoreError::Duplicate`]. Call [`OutboxWaker::wake`] after the
    /// commit to publish without waiting for the relay's next poll.
    pub async fn stage(tx: &mut Transaction<'_>, event: &Event) -> StoreResult<()> {
        Self::stage_all(tx, std::slice::from_ref(event)).await
    }

    /// Inserts `events` into the outbox within `tx` as one entry, under the
    /// first event's id: the relay publishes them in this order, and claims
    /// and marks them together, so a transaction that emits several events
    /// costs the relay two writes instead of two per event. Staging nothing
    /// writes nothing.
    pub async fn stage_all(tx: &mut Transaction<'_>, events: &[Event]) -> StoreResult<()> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        // One event keeps the original single-event layout, which relays of
        // every version read.
        let (key, payload) = match events {
            [event] => ("event", encode(event)?),
            _ => ("events", encode(events)?),
        };
        let Value::Object(mut doc) = json!({
            ID: first.id,
            "event_type": first.event_type,
            "published": false,
            "staged_at": now_millis(),
            "claimed_until": 0,
            "claimed_by": Value::Null,
            "published_at": Value::Null,
        }) else {
            return Err(StoreError::Invalid(
                "outbox entry is not an object".to_owned(),
            ));
        };
        doc.insert(key.to_owned(), payload);
        tx.insert(OUTBOX_COLLECTION, doc).await
    }

    /// The indexes the relay's queries need; pass to
    /// [`Database::ensure_indexes`] at start-up.
    pub fn indexes() -> Vec<IndexSpec> {
        vec![
            IndexSpec::new(
                OUTBOX_COLLECTION,
                "outbox_pending",
                &["published", "staged_at"],
            ),
            IndexSpec::new(
                OUTBOX_COLLECTION,
                "outbox_published_at",
                &["published", "published_at"],
            ),
        ]
    }
}

/// Tells a relay there is something to publish. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct OutboxWaker {
    notify: Arc<Notify>,
}

impl OutboxWaker {
    /// Makes the relay run now (or right after its current run).
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

/// Relay settings.
#[derive(Clone, Debug)]
pub struct OutboxConfig {
    /// Pause between runs when nothing woke the relay.
    pub poll_interval: Duration,
    /// Entries claimed per run.
    pub batch_size: usize,
    /// How long a claim keeps other relays off an entry; must exceed the time
    /// to publish a batch.
    pub lease: Duration,
    /// Published entries older than this are deleted.
    pub retention: Duration,
    /// How often old published entries are purged.
    pub purge_interval: Duration,
}

impl Default for OutboxConfig {
    /// Polls every second, 100 per batch, 30 s lease, keeps published
    /// entries for 7 days, purges hourly.
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            batch_size: 100,
            lease: Duration::from_secs(30),
            retention: Duration::from_secs(7 * 24 * 60 * 60),
            purge_interval: Duration::from_secs(60 * 60),
        }
    }
}

/// Publishes committed outbox entries through an [`EventBus`].
#[derive(Clone)]
pub struct OutboxRelay {
    db: Arc<Database>,
    bus: EventBus,
    config: OutboxConfig,
    waker: OutboxWaker,
    /// Names this relay in `claimed_by`, so it only marks what it claimed.
    instance: String,
}

impl std::fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("instance", &self.instance)
            .field("config", &self.config)
            .finish()
    }
}

impl OutboxRelay {
    /// A relay over `db`'s outbox publishing to `bus`.
    pub fn new(db: Arc<Database>, bus: EventBus, config: OutboxConfig) -> Self {
        Self {
            db,
            bus,
            config,
            waker: OutboxWaker::default(),
            instance: format!("relay-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// A handle that wakes this relay, for code that stages events.
    pub fn waker(&self) -> OutboxWaker {
        self.waker.clone()
    }

    /// Wakes this relay.
    pub fn wake(&self) {
        self.waker.wake();
    }

    /// Claims, publishes and marks one batch of unpublished entries, oldest
    /// first; returns how many entries were published. Stops at the first entry that
    /// cannot be published and releases its claim, so the next run retries
    /// it first and later entries do not overtake it.
    #[tracing::instrument(level = "debug", skip_all, fields(relay = %self.instance), err)]
    pub async fn relay_once(&self) -> Result<usize, EventError> {
        let now = now_millis();
        let pending = Filter::all()
            .eq("published", false)
            .lt("claimed_until", now);
        let options =
            FindOptions::sorted("staged_at", Direction::Asc).limit(self.config.batch_size.max(1));
        let candidates = self.db.find(OUTBOX_COLLECTION, &pending, &options).await?;
        let lease_end =
            now.saturating_add(i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX));
        let mut published = 0;
        for doc in candidates {
            let Some(id) = doc.get(ID).and_then(Value::as_str) else {
                continue;
            };
            let claim = Update::new()
                .set("claimed_until", lease_end)
                .set("claimed_by", self.instance.as_str());
            let claimed = self
                .db
                .update_one(OUTBOX_COLLECTION, &pending.clone().eq(ID, id), &claim)
                .await?;
            let Some(doc) = claimed else {
                // Another relay claimed it first.
                continue;
            };
            match decode(&doc) {
                Ok(events) => {
                    if let Err(err) = self.publish(&events).await {
                        tracing::warn!(entry = %id, error = %err, "publishing an outbox entry failed; retrying it at the next run");
                        // Keeping the lease would hold the entry back for a
                        // whole lease after the bus is back, and let later
                        // entries overtake it.
                        self.release(id).await?;
                        break;
                    }
                    self.mark(id, None).await?;
                    published += 1;
                }
                Err(err) => {
                    // Retrying cannot fix a malformed entry; set it aside.
                    tracing::error!(entry = %id, error = %err, "unreadable outbox entry, not publishing it");
                    self.mark(id, Some(err.to_string())).await?;
                }
            }
        }
        Ok(published)
    }

    /// Publishes an entry's events in order. After a failure part way, the
    /// whole entry is published again later: the events already out become
    /// duplicates, which consumers skip by id.
    async fn publish(&self, events: &[Event]) -> Result<(), EventError> {
        for event in events {
            self.bus.emit_event(event).await?;
        }
        Ok(())
    }

    /// Gives up this relay's claim on entry `id`, so the next run (of any
    /// relay) retries it first.
    async fn release(&self, id: &str) -> Result<(), EventError> {
        let mine = Filter::id(id).eq("claimed_by", self.instance.as_str());
        let release = Update::new()
            .set("claimed_until", 0)
            .set("claimed_by", Value::Null);
        self.db
            .update_one(OUTBOX_COLLECTION, &mine, &release)
            .await?;
        Ok(())
    }

    async fn mark(&self, id: &str, error: Option<String>) -> Result<(), EventError> {
        let mut update = Update::new()
            .set("published", true)
            .set("published_at", now_millis());
        if let Some(error) = error {
            update = update.set("error", error);
        }
        let mine = Filter::id(id).eq("claimed_by", self.instance.as_str());
        if self
            .db
            .update_one(OUTBOX_COLLECTION, &mine, &update)
            .await?
            .is_none()
        {
            // Our lease ran out and another relay took the entry over; it
            // will publish (a duplicate consumers skip) and mark it.
            tracing::warn!(entry = %id, "outbox entry was reclaimed before it was marked");
        }
        Ok(())
    }

    /// Deletes published entries older than the retention period; how many.
    pub async fn purge_published(&self) -> Result<usize, EventError> {
        let retention = i64::try_from(self.config.retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_millis().saturating_sub(retention);
        let old = Filter::all()
            .eq("published", true)
            .lt("published_at", cutoff);
        let mut deleted = 0;
        loop {
            let batch = self
                .db
                .find(
                    OUTBOX_COLLECTION,
                    &old,
                    &FindOptions::by_id().limit(PURGE_BATCH),
                )
                .await?;
            for doc in &batch {
                if let Some(id) = doc.get(ID).and_then(Value::as_str) {
                    if self
                        .db
                        .delete_one(OUTBOX_COLLECTION, &Filter::id(id))
                        .await?
                    {
                        deleted += 1;
                    }
                }
            }
            if batch.len() < PURGE_BATCH {
                return Ok(deleted);
            }
        }
    }

    /// Relays until `cancel` fires: after each wake-up or poll interval, and
    /// at once again while batches come back full. Purges periodically.
    pub async fn run(self, cancel: CancellationToken) {
        let mut next_purge = tokio::time::Instant::now();
        while !cancel.is_cancelled() {
            let full = match self.relay_once().await {
                Ok(published) => published >= self.config.batch_size.max(1),
                Err(err) => {
                    tracing::warn!(error = %err, "outbox relay run failed");
                    false
                }
            };
            if tokio::time::Instant::now() >= next_purge {
                if let Err(err) = self.purge_published().await {
                    tracing::warn!(error = %err, "purging the outbox failed");
                }
                next_purge = tokio::time::Instant::now() + self.config.purge_interval;
            }
            if full {
                continue;
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = self.waker.notify.notified() => {}
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
    }

    /// Runs the relay on a task of its own; it stops when `cancel` fires.
    pub fn spawn(self, cancel: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(self.run(cancel))
    }
}

/// The events of an entry: `events` when several were staged together,
/// otherwise the single `event`.
fn decode(doc: &Document) -> Result<Vec<Event>, serde_json::Error> {
    match doc.get("events") {
        Some(events) => serde_json::from_value(events.clone()),
        None => serde_json::from_value(doc.get("event").cloned().unwrap_or(Value::Null))
            .map(|event| vec![event]),
    }
}

fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

/// An event, or the events of one entry, as stored.
fn encode<T: serde::Serialize + ?Sized>(value: &T) -> StoreResult<Value> {
    serde_json::to_value(value)
        .map_err(|err| StoreError::Invalid(format!("event cannot be encoded: {err}")))
}
