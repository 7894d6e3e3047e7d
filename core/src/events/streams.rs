//! The Redis Streams transport: durable delivery between services.
//!
//! Layout, under the bus accessor's prefix:
//!
//! * `events:{type}`: one stream per event type, capped with `MAXLEN ~`;
//!   each entry has one field, `event`, holding the event as JSON.
//! * `events:{type}:dead`: dead letters of that type (field `letter`).
//! * `events-handled:{group}:{event id}`: set (with a TTL) once a group
//!   handled an event, so a redelivery is acknowledged without running the
//!   handler again.
//!
//! A subscription is a consumer group on each stream it covers. A message is
//! acknowledged only after its handler succeeded or it was dead-lettered, so
//! a consumer that dies mid-message leaves it pending; another consumer of
//! the group claims it (`XAUTOCLAIM`) once it has been idle for the claim
//! timeout. The delivery count Redis keeps for pending messages bounds how
//! often a message that crashes its consumers is tried.
//!
//! Needs Redis 6.2 or later (`XAUTOCLAIM`) over RESP2 (the default). Reads
//! do not block on the server, because the accessor's connection is shared
//! by every command of the service; an idle consumer polls instead.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::{FromRedisValue, Value};
use chrono::Utc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::bus::{BusConfig, StreamsConfig};
use super::delivery::{attempt_delivery, DeadLetter, Outcome, Subscriber};
use super::{Event, EventError, Handler, TypePattern};
use crate::redis::RedisAccessor;

/// Stream keys start with this (before the type name).
const STREAM_PREFIX: &str = "events:";
/// Dead-letter streams end with this.
const DEAD_SUFFIX: &str = ":dead";
/// Keys per SCAN step when looking for streams.
const SCAN_BATCH: usize = 500;

/// A stream entry: its id and its field/value list.
type Entry = (String, Vec<Vec<u8>>);

pub(crate) struct RedisStreams {
    shared: Arc<Shared>,
}

struct Shared {
    redis: RedisAccessor,
    config: StreamsConfig,
}

impl RedisStreams {
    pub(crate) fn new(redis: RedisAccessor, config: StreamsConfig) -> Self {
        Self {
            shared: Arc::new(Shared { redis, config }),
        }
    }

    pub(crate) async fn publish(&self, event: &Event) -> Result<(), EventError> {
        let payload = serde_json::to_vec(event)?;
        let mut cmd = ::redis::cmd("XADD");
        cmd.arg(self.shared.stream_key(&event.event_type))
            .arg("MAXLEN")
            .arg("~")
            .arg(self.shared.config.max_stream_len)
            .arg("*")
            .arg("event")
            .arg(payload);
        let _: String = self.shared.query("XADD", &cmd).await?;
        Ok(())
    }

    /// Creates the consumer groups (so events emitted after this returns are
    /// delivered), then starts the consumer task.
    pub(crate) async fn subscribe(
        &self,
        pattern: TypePattern,
        subscriber: Arc<Subscriber>,
        config: BusConfig,
        cancel: CancellationToken,
    ) -> Result<JoinHandle<()>, EventError> {
        let shared = Arc::clone(&self.shared);
        let types = match pattern.exact() {
            Some(event_type) => {
                shared
                    .create_group(event_type, &subscriber.group, "$", true)
                    .await?;
                vec![event_type.to_owned()]
            }
            None => {
                let types = shared.scan_types(&pattern).await?;
                for event_type in &types {
                    shared
                        .create_group(event_type, &subscriber.group, "$", false)
                        .await?;
                }
                types
            }
        };
        let consumer = Consumer {
            shared,
            pattern,
            subscriber,
            config,
            cancel,
            types,
        };
        Ok(tokio::spawn(consumer.run()))
    }

    /// Reads the stream of `event_type` without a consumer group, so every
    /// process calling this sees every event: first what was added in the
    /// last `replay` (before returning), then, in a task, whatever comes
    /// next. A failed read is logged and tried again after the poll interval;
    /// a failed handler is logged (a broadcast has no one to redeliver to).
    pub(crate) async fn tail(
        &self,
        event_type: &str,
        replay: Duration,
        handler: Handler,
        config: BusConfig,
        cancel: CancellationToken,
    ) -> Result<JoinHandle<()>, EventError> {
        let start = u64::try_from(Utc::now().timestamp_millis())
            .unwrap_or(0)
            .saturating_sub(millis(replay));
        let mut tail = Tail {
            shared: Arc::clone(&self.shared),
            key: self.shared.stream_key(event_type),
            event_type: event_type.to_owned(),
            handler,
            handler_timeout: config.handler_timeout,
            cursor: format!("{start}-0"),
            inclusive: true,
        };
        while tail.read_batch().await? == TAIL_PAGE {}
        Ok(tokio::spawn(async move {
            loop {
                let found = match tail.read_batch().await {
                    Ok(found) => found,
                    Err(err) => {
                        tracing::warn!(event_type = %tail.event_type, error = %err, "reading broadcast events failed; retrying");
                        0
                    }
                };
                if found < TAIL_PAGE {
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(tail.shared.config.poll_interval) => {}
                    }
                } else if cancel.is_cancelled() {
                    break;
                }
            }
        }))
    }

    pub(crate) async fn dead_letters(
        &self,
        event_type: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, EventError> {
        let mut cmd = ::redis::cmd("XREVRANGE");
        cmd.arg(self.shared.dead_key(event_type))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(limit.max(1));
        let entries: Vec<Entry> = self.shared.query("XREVRANGE", &cmd).await?;
        let mut letters = Vec::with_capacity(entries.len());
        for (_, fields) in entries.into_iter().rev() {
            if let Some(raw) = field(&fields, "letter") {
                letters.push(serde_json::from_slice(raw)?);
            }
        }
        Ok(letters)
    }
}

impl Shared {
    fn stream_key(&self, event_type: &str) -> String {
        self.redis.key(&format!("{STREAM_PREFIX}{event_type}"))
    }

    fn dead_key(&self, event_type: &str) -> String {
        self.redis
            .key(&format!("{STREAM_PREFIX}{event_type}{DEAD_SUFFIX}"))
    }

    fn handled_key(&self, group: &str, event_id: &str) -> String {
        self.redis
            .key(&format!("events-handled:{group}:{event_id}"))
    }

    fn connection(&self) -> ConnectionManager {
        self.redis.connection()
    }

    async fn query<T: FromRedisValue>(
        &self,
        command: &'static str,
        cmd: &::redis::Cmd,
    ) -> Result<T, EventError> {
        cmd.query_async(&mut self.connection())
            .await
            .map_err(|source| EventError::redis(command, source))
    }

    /// `XGROUP CREATE`, treating "the group exists" as success. `start` is
    /// `$` for streams that exist when subscribing (only new events) and `0`
    /// for streams found later (everything in them came after us).
    async fn create_group(
        &self,
        event_type: &str,
        group: &str,
        start: &str,
        create_stream: bool,
    ) -> Result<(), EventError> {
        let mut cmd = ::redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(self.stream_key(event_type))
            .arg(group)
            .arg(start);
        if create_stream {
            cmd.arg("MKSTREAM");
        }
        match cmd.query_async::<()>(&mut self.connection()).await {
            Ok(()) => Ok(()),
            Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
            Err(source) => Err(EventError::redis("XGROUP CREATE", source)),
        }
    }

    /// The event types with a stream that match `pattern`.
    async fn scan_types(&self, pattern: &TypePattern) -> Result<Vec<String>, EventError> {
        let keys = self
            .redis
            .scan(&format!("{STREAM_PREFIX}*"), SCAN_BATCH)
            .await?;
        let mut types: Vec<String> = keys
            .iter()
            .filter_map(|key| key.strip_prefix(STREAM_PREFIX))
            // Type names have no ':', so this drops the dead-letter streams.
            .filter(|name| !name.contains(':') && pattern.matches(name))
            .map(str::to_owned)
            .collect();
        types.sort();
        types.dedup();
        Ok(types)
    }
}

/// The task behind one subscription.
struct Consumer {
    shared: Arc<Shared>,
    pattern: TypePattern,
    subscriber: Arc<Subscriber>,
    config: BusConfig,
    cancel: CancellationToken,
    /// Event types whose streams this consumer reads.
    types: Vec<String>,
}

impl Consumer {
    async fn run(mut self) {
        let settings = self.shared.config.clone();
        let claim_every = (settings.claim_timeout / 2).max(settings.poll_interval);
        let mut next_scan = Instant::now() + settings.rescan_interval;
        // Claim at start: a restarted service picks up what its predecessor
        // left pending without waiting a whole interval.
        let mut next_claim = Instant::now();
        while !self.cancel.is_cancelled() {
            if self.pattern.exact().is_none() && Instant::now() >= next_scan {
                self.rescan().await;
                next_scan = Instant::now() + settings.rescan_interval;
            }
            if Instant::now() >= next_claim {
                self.claim_abandoned().await;
                next_claim = Instant::now() + claim_every;
            }
            let found = match self.read_new().await {
                Ok(found) => found,
                Err(err) => {
                    tracing::warn!(group = %self.subscriber.group, error = %err, "reading events failed");
                    self.recreate_groups().await;
                    0
                }
            };
            if found == 0 {
                tokio::select! {
                    () = self.cancel.cancelled() => break,
                    () = tokio::time::sleep(settings.poll_interval) => {}
                }
            }
        }
    }

    /// Picks up streams created since the last scan.
    async fn rescan(&mut self) {
        let types = match self.shared.scan_types(&self.pattern).await {
            Ok(types) => types,
            Err(err) => {
                tracing::warn!(pattern = self.pattern.as_str(), error = %err, "scanning event streams failed");
                return;
            }
        };
        for event_type in types {
            if self.types.contains(&event_type) {
                continue;
            }
            match self
                .shared
                .create_group(&event_type, &self.subscriber.group, "0", false)
                .await
            {
                Ok(()) => self.types.push(event_type),
                Err(err) => {
                    tracing::warn!(%event_type, error = %err, "cannot join a new event stream");
                }
            }
        }
    }

    /// After a read error: a stream (and its group) may have been deleted.
    async fn recreate_groups(&self) {
        let exact = self.pattern.exact().is_some();
        for event_type in &self.types {
            let _ = self
                .shared
                .create_group(event_type, &self.subscriber.group, "0", exact)
                .await;
        }
    }

    /// Reads and handles one batch of new messages; how many there were.
    async fn read_new(&self) -> Result<usize, EventError> {
        if self.types.is_empty() {
            return Ok(0);
        }
        let keys: HashMap<String, &str> = self
            .types
            .iter()
            .map(|t| (self.shared.stream_key(t), t.as_str()))
            .collect();
        let mut cmd = ::redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.subscriber.group)
            .arg(&self.shared.config.consumer_name)
            .arg("COUNT")
            .arg(self.shared.config.read_batch.max(1))
            .arg("STREAMS");
        for event_type in &self.types {
            cmd.arg(self.shared.stream_key(event_type));
        }
        for _ in &self.types {
            cmd.arg(">");
        }
        let reply: Option<Vec<(String, Vec<Entry>)>> =
            self.shared.query("XREADGROUP", &cmd).await?;
        let mut found = 0;
        for (key, entries) in reply.unwrap_or_default() {
            let Some(event_type) = keys.get(&key) else {
                continue;
            };
            for (id, fields) in entries {
                found += 1;
                if self.cancel.is_cancelled() {
                    // Left pending: claimed by another consumer later.
                    continue;
                }
                self.process(event_type, &id, &fields, 1).await;
            }
        }
        Ok(found)
    }

    /// Takes over messages other consumers left pending too long.
    async fn claim_abandoned(&self) {
        let min_idle = millis(self.shared.config.claim_timeout);
        for event_type in &self.types {
            if self.cancel.is_cancelled() {
                return;
            }
            let key = self.shared.stream_key(event_type);
            let mut cmd = ::redis::cmd("XAUTOCLAIM");
            cmd.arg(&key)
                .arg(&self.subscriber.group)
                .arg(&self.shared.config.consumer_name)
                .arg(min_idle)
                .arg("0-0")
                .arg("COUNT")
                .arg(self.shared.config.read_batch.max(1));
            let claimed = match self.shared.query::<Vec<Value>>("XAUTOCLAIM", &cmd).await {
                Ok(reply) => reply
                    .into_iter()
                    .nth(1)
                    .map(Vec::<Entry>::from_redis_value)
                    .transpose(),
                Err(err) => {
                    tracing::warn!(%event_type, error = %err, "claiming abandoned events failed");
                    continue;
                }
            };
            let entries = match claimed {
                Ok(entries) => entries.unwrap_or_default(),
                Err(err) => {
                    tracing::warn!(%event_type, error = %err, "unexpected XAUTOCLAIM reply");
                    continue;
                }
            };
            for (id, fields) in entries {
                if self.cancel.is_cancelled() {
                    return;
                }
                let deliveries = self.delivery_count(&key, &id).await;
                tracing::info!(%event_type, message_id = %id, deliveries, group = %self.subscriber.group, "claimed an abandoned event");
                self.process(event_type, &id, &fields, deliveries).await;
            }
        }
    }

    /// How often Redis has delivered message `id` (1 when it cannot tell).
    async fn delivery_count(&self, key: &str, id: &str) -> u32 {
        let mut cmd = ::redis::cmd("XPENDING");
        cmd.arg(key)
            .arg(&self.subscriber.group)
            .arg(id)
            .arg(id)
            .arg(1);
        match self
            .shared
            .query::<Vec<(String, String, u64, u64)>>("XPENDING", &cmd)
            .await
        {
            Ok(rows) => rows
                .first()
                .map_or(1, |row| u32::try_from(row.3).unwrap_or(u32::MAX)),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read a delivery count");
                1
            }
        }
    }

    /// Handles one message and acknowledges it unless the bus is stopping
    /// between attempts or Redis fails (it is then redelivered).
    async fn process(&self, event_type: &str, id: &str, fields: &[Vec<u8>], deliveries: u32) {
        let group = &self.subscriber.group;
        let event = match field(fields, "event").map(serde_json::from_slice::<Event>) {
            Some(Ok(event)) => event,
            Some(Err(err)) => {
                let error = format!("unreadable event: {err}");
                self.finish(event_type, id, None, Some((error, deliveries)))
                    .await;
                return;
            }
            None => {
                let error = "stream entry without an event field".to_owned();
                self.finish(event_type, id, None, Some((error, deliveries)))
                    .await;
                return;
            }
        };
        let max_attempts = self.config.retry.max_attempts.max(1);
        if deliveries > max_attempts {
            let error = format!("delivered {deliveries} times without acknowledgement");
            self.finish(event_type, id, Some(event), Some((error, deliveries)))
                .await;
            return;
        }
        let handled_key = self.shared.handled_key(group, &event.id);
        let seen: Result<bool, EventError> = self
            .shared
            .query("EXISTS", ::redis::cmd("EXISTS").arg(&handled_key))
            .await;
        match seen {
            Ok(true) => {
                tracing::debug!(event_id = %event.id, %group, "already handled, acknowledging");
                self.finish(event_type, id, Some(event), None).await;
                return;
            }
            Ok(false) => {}
            Err(err) => {
                // Without the answer, handling could repeat work; leave the
                // message pending for a later claim instead.
                tracing::warn!(error = %err, "cannot check whether an event was handled");
                return;
            }
        }
        match attempt_delivery(&self.subscriber, &event, &self.config, &self.cancel).await {
            Outcome::Handled => self.finish(event_type, id, Some(event), None).await,
            Outcome::Failed { error, attempts } => {
                self.finish(event_type, id, Some(event), Some((error, attempts)))
                    .await;
            }
            Outcome::Abandoned => {}
        }
    }

    /// Acknowledges message `id` in one atomic step with either remembering
    /// the event as handled or (with `failure`) writing its dead letter.
    async fn finish(
        &self,
        event_type: &str,
        id: &str,
        event: Option<Event>,
        failure: Option<(String, u32)>,
    ) {
        let group = &self.subscriber.group;
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        match (failure, &event) {
            (None, Some(event)) => {
                pipe.cmd("SET")
                    .arg(self.shared.handled_key(group, &event.id))
                    .arg(1)
                    .arg("PX")
                    .arg(millis(self.config.idempotency_ttl).max(1))
                    .ignore();
            }
            (None, None) => {}
            (Some((error, attempts)), _) => {
                if let Some(metrics) = &self.config.metrics {
                    metrics.dead_lettered(event_type, group);
                }
                let letter = DeadLetter {
                    event,
                    group: group.clone(),
                    error,
                    attempts,
                    failed_at: Utc::now(),
                };
                let payload = match serde_json::to_vec(&letter) {
                    Ok(payload) => payload,
                    Err(err) => {
                        tracing::error!(error = %err, "cannot encode a dead letter");
                        return;
                    }
                };
                pipe.cmd("XADD")
                    .arg(self.shared.dead_key(event_type))
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(self.shared.config.max_dead_letter_len)
                    .arg("*")
                    .arg("letter")
                    .arg(payload)
                    .ignore();
            }
        }
        pipe.cmd("XACK")
            .arg(self.shared.stream_key(event_type))
            .arg(group)
            .arg(id)
            .ignore();
        if let Err(err) = pipe.query_async::<()>(&mut self.shared.connection()).await {
            tracing::warn!(%event_type, message_id = %id, error = %err, "cannot acknowledge an event; it will be redelivered");
        }
    }
}

/// Entries read per `XRANGE` by a [`Tail`].
const TAIL_PAGE: usize = 256;

/// A group-less reader of one stream (see [`RedisStreams::tail`]).
struct Tail {
    shared: Arc<Shared>,
    key: String,
    event_type: String,
    handler: Handler,
    handler_timeout: Duration,
    /// The id to read from: inclusive for the first read, then the last id
    /// handled (exclusive).
    cursor: String,
    inclusive: bool,
}

impl Tail {
    /// Reads and handles the next page; how many entries it held.
    async fn read_batch(&mut self) -> Result<usize, EventError> {
        let start = if self.inclusive {
            self.cursor.clone()
        } else {
            format!("({}", self.cursor)
        };
        let mut cmd = ::redis::cmd("XRANGE");
        cmd.arg(&self.key)
            .arg(start)
            .arg("+")
            .arg("COUNT")
            .arg(TAIL_PAGE);
        let entries: Vec<Entry> = self.shared.query("XRANGE", &cmd).await?;
        let found = entries.len();
        for (id, fields) in entries {
            self.handle(&id, &fields).await;
            self.cursor = id;
            self.inclusive = false;
        }
        Ok(found)
    }

    async fn handle(&self, id: &str, fields: &[Vec<u8>]) {
        let event = match field(fields, "event").map(serde_json::from_slice::<Event>) {
            Some(Ok(event)) => event,
            Some(Err(err)) => {
                tracing::error!(event_type = %self.event_type, message_id = %id, error = %err, "unreadable broadcast event skipped");
                return;
            }
            None => {
                tracing::error!(event_type = %self.event_type, message_id = %id, "broadcast entry without an event skipped");
                return;
            }
        };
        let event_id = event.id.clone();
        match tokio::time::timeout(self.handler_timeout, (self.handler)(event)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::error!(event_type = %self.event_type, %event_id, error = %err, "broadcast event handler failed");
            }
            Err(_) => {
                tracing::error!(event_type = %self.event_type, %event_id, "broadcast event handler timed out");
            }
        }
    }
}

/// The value of `name` in a stream entry's field/value list.
fn field<'a>(fields: &'a [Vec<u8>], name: &str) -> Option<&'a [u8]> {
    fields
        .chunks_exact(2)
        .find(|pair| pair[0] == name.as_bytes())
        .map(|pair| pair[1].as_slice())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
