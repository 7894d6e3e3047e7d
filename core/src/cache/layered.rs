//! The two-level cache: L1 in process (moka), L2 in Redis, then the source.

use std::{
    collections::hash_map::DefaultHasher,
    fmt::Display,
    future::Future,
    hash::{Hash, Hasher},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use moka::{future::Cache, Expiry};
use serde::{de::DeserializeOwned, Serialize};
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use super::{
    invalidation::{self, Invalidation},
    l2::L2,
    single_flight::{self, Role, SingleFlight},
    stats::{self, CacheStats, Counters},
};
use crate::redis::{glob, set_with_ttl, RedisAccessor};

/// How L1 is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L1Capacity {
    /// At most this many entries.
    Entries(u64),
    /// At most about this many bytes of keys and encoded values.
    Bytes(u64),
}

/// Tuning of a [`LayeredCache`].
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Names the cache in metrics (`cache` label), in its Redis keys
    /// (`{brand}:{service}:{name}:{key}`) and in its invalidation channel.
    /// Instances that share entries must use the same name.
    pub name: String,
    /// Bound of the in-process level.
    pub l1_capacity: L1Capacity,
    /// Longest time an entry stays in L1, whatever its TTL: bounds how stale
    /// an instance can be if an invalidation message is lost.
    pub l1_max_ttl: Duration,
    /// Limit for one Redis call of the cache; past it the call counts as failed.
    pub l2_timeout: Duration,
    /// After a Redis failure, how long the cache skips Redis before trying
    /// again, so an outage costs one slow call per period, not one per lookup.
    pub l2_retry_after: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            name: "cache".to_owned(),
            l1_capacity: L1Capacity::Entries(10_000),
            l1_max_ttl: Duration::from_secs(60),
            l2_timeout: Duration::from_millis(500),
            l2_retry_after: Duration::from_secs(1),
        }
    }
}

/// What [`LayeredCache::warm`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarmReport {
    /// Entries fetched and stored.
    pub warmed: usize,
    /// Entries whose fetch failed (or whose value could not be encoded).
    pub failed: usize,
}

/// A cache with an in-process level (L1) in front of Redis (L2), shared by
/// all instances of a service.
///
/// - Lookups go L1 → L2 → source; an L2 hit is copied into L1 for the rest of
///   its Redis lifetime (capped by [`CacheConfig::l1_max_ttl`]).
/// - [`LayeredCache::cached`] loads a missing key once per instance however
///   many callers ask for it at the same time.
/// - Writes and deletes publish an invalidation on Redis pub/sub; the other
///   instances drop their L1 copies.
/// - Redis trouble never reaches callers: it is logged (rate-limited),
///   counted in [`CacheStats::l2_unavailable`], and the cache carries on
///   with L1 and the source. Without Redis it is simply an L1 cache.
///
/// Values are stored as JSON, so one key can be read by any type its JSON
/// fits. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct LayeredCache {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) name: String,
    pub(super) l1: Cache<String, L1Entry>,
    pub(super) l1_max_ttl: Duration,
    pub(super) l2: Option<L2>,
    pub(super) counters: Arc<Counters>,
    pub(super) generations: Generations,
    /// Tells this instance's invalidation messages from the others'.
    pub(super) instance: Uuid,
    flights: SingleFlight,
    /// Stops the invalidation listener when the last handle goes away.
    _listener: Option<DropGuard>,
}

/// An L1 value: the JSON bytes and how long they may live.
#[derive(Clone)]
pub(super) struct L1Entry {
    bytes: Arc<[u8]>,
    ttl: Duration,
}

/// Gives every L1 entry its own lifetime, reset when the entry is replaced.
struct PerEntryTtl;

impl Expiry<String, L1Entry> for PerEntryTtl {
    fn expire_after_create(&self, _: &String, entry: &L1Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &L1Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

impl LayeredCache {
    /// Builds the cache. With `l2`, it also subscribes to invalidations
    /// before returning (so messages published afterwards are seen) and keeps
    /// listening in a background task until `shutdown` is cancelled or the
    /// last handle is dropped. If Redis is down now, the cache starts
    /// degraded and the task keeps trying.
    pub async fn new(
        config: CacheConfig,
        l2: Option<RedisAccessor>,
        shutdown: CancellationToken,
    ) -> Self {
        let l2 = l2.map(|redis| L2::new(redis, &config));
        let first_subscription = match &l2 {
            Some(l2) => match l2.redis.subscribe(&l2.channel).await {
                Ok(messages) => Some(messages),
                Err(error) => {
                    l2.health
                        .warn(&config.name, "subscribe", &error.to_string());
                    None
                }
            },
            None => None,
        };
        let stop = shutdown.child_token();
        let listen = l2.is_some();
        let inner = Arc::new(Inner {
            l1: build_l1(config.l1_capacity),
            l1_max_ttl: config.l1_max_ttl,
            l2,
            counters: Arc::new(Counters::default()),
            generations: Generations::default(),
            instance: Uuid::new_v4(),
            flights: SingleFlight::default(),
            _listener: listen.then(|| stop.clone().drop_guard()),
            name: config.name,
        });
        if listen {
            tokio::spawn(invalidation::listen(
                Arc::downgrade(&inner),
                first_subscription,
                stop,
            ));
        }
        Self { inner }
    }

    /// An in-process cache only, for running without Redis.
    pub fn l1_only(config: CacheConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                l1: build_l1(config.l1_capacity),
                l1_max_ttl: config.l1_max_ttl,
                l2: None,
                counters: Arc::new(Counters::default()),
                generations: Generations::default(),
                instance: Uuid::new_v4(),
                flights: SingleFlight::default(),
                _listener: None,
                name: config.name,
            }),
        }
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether a Redis level is configured (it may still be unavailable).
    pub fn has_l2(&self) -> bool {
        self.inner.l2.is_some()
    }

    /// The value under `key`, from L1 or else L2; `None` on a miss or when
    /// the stored JSON does not fit `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let inner = &*self.inner;
        if let Some(entry) = inner.l1.get(key).await {
            Counters::add(&inner.counters.l1_hits, 1);
            return inner.decode(key, &entry.bytes);
        }
        Counters::add(&inner.counters.l1_misses, 1);
        let bytes = inner.l2_get(key).await?;
        inner.decode(key, &bytes)
    }

    /// Stores `value` under `key` for `ttl` in both levels and tells the
    /// other instances to drop their copies. A zero `ttl` deletes the key.
    pub async fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T, ttl: Duration) {
        if let Some(bytes) = self.inner.encode(key, value) {
            self.inner.store(vec![(key.to_owned(), bytes, ttl)]).await;
        }
    }

    /// Removes `key` from both levels, here and on the other instances.
    pub async fn delete(&self, key: &str) {
        self.inner.delete_keys(vec![key.to_owned()]).await;
    }

    /// [`Self::get`] for many keys, with one Redis round trip for all L1
    /// misses. The answer follows the order of `keys`.
    pub async fn get_many<K: AsRef<str>, T: DeserializeOwned>(&self, keys: &[K]) -> Vec<Option<T>> {
        let inner = &*self.inner;
        let mut values: Vec<Option<T>> = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        for (index, key) in keys.iter().enumerate() {
            let key = key.as_ref();
            match inner.l1.get(key).await {
                Some(entry) => {
                    Counters::add(&inner.counters.l1_hits, 1);
                    values.push(inner.decode(key, &entry.bytes));
                }
                None => {
                    Counters::add(&inner.counters.l1_misses, 1);
                    values.push(None);
                    missing.push(index);
                }
            }
        }
        let Some(l2) = inner.l2.as_ref().filter(|_| !missing.is_empty()) else {
            return values;
        };
        let generations: Vec<u64> = missing
            .iter()
            .map(|&index| inner.generations.current(keys[index].as_ref()))
            .collect();
        let l2_keys: Vec<String> = missing
            .iter()
            .map(|&index| l2.key(keys[index].as_ref()))
            .collect();
        let Some(found) = l2
            .call(&inner.counters, "get_many", l2.redis.get_with_ttl(&l2_keys))
            .await
        else {
            return values;
        };
        for ((&index, generation), entry) in missing.iter().zip(generations).zip(found) {
            let key = keys[index].as_ref();
            match entry {
                Some((bytes, ttl)) => {
                    Counters::add(&inner.counters.l2_hits, 1);
                    let bytes: Arc<[u8]> = bytes.into();
                    values[index] = inner.decode(key, &bytes);
                    inner.promote(key, bytes, ttl, generation).await;
                }
                None => Counters::add(&inner.counters.l2_misses, 1),
            }
        }
        values
    }

    /// [`Self::set`] for many entries with one Redis round trip.
    pub async fn set_many<K, T, I>(&self, entries: I, ttl: Duration)
    where
        K: Into<String>,
        T: Serialize,
        I: IntoIterator<Item = (K, T)>,
    {
        let encoded = entries
            .into_iter()
            .filter_map(|(key, value)| {
                let key = key.into();
                let bytes = self.inner.encode(&key, &value)?;
                Some((key, bytes, ttl))
            })
            .collect();
        self.inner.store(encoded).await;
    }

    /// [`Self::delete`] for many keys with one Redis round trip.
    pub async fn delete_many<K: AsRef<str>>(&self, keys: &[K]) {
        let keys = keys.iter().map(|key| key.as_ref().to_owned()).collect();
        self.inner.delete_keys(keys).await;
    }

    /// Removes every key matching the Redis glob `pattern` (see
    /// [`super::CacheKey::pattern`]) from L1 here and on the other instances,
    /// and from Redis with SCAN, batch by batch.
    pub async fn delete_pattern(&self, pattern: &str) {
        let inner = &*self.inner;
        Counters::add(&inner.counters.deletes, 1);
        inner.invalidate_l1_matching(pattern).await;
        let Some(l2) = &inner.l2 else { return };
        let l2_pattern = format!("{}:{pattern}", glob::escape(&inner.name));
        let deleted = l2
            .call(
                &inner.counters,
                "delete_pattern",
                l2.redis.delete_pattern(&l2_pattern),
            )
            .await;
        if deleted.is_some() {
            let message = inner.invalidation(Vec::new(), vec![pattern.to_owned()]);
            l2.call(
                &inner.counters,
                "publish",
                l2.redis.publish(&l2.channel, &message),
            )
            .await;
        }
    }

    /// Cache-aside: the cached value of `key`, or else the result of `fetch`,
    /// which is then stored in both levels for `ttl`.
    ///
    /// Concurrent callers missing the same key share one fetch: the others
    /// wait for it and decode its value, and their own `fetch` futures are
    /// dropped unpolled. If the shared fetch fails, its error goes to the
    /// caller that ran it and each waiter runs its own `fetch` once, so every
    /// caller gets an error of its own and no one waits behind more than one
    /// failed attempt. Errors are never cached.
    pub async fn cached<T, E, Fut>(&self, key: &str, ttl: Duration, fetch: Fut) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        Fut: Future<Output = Result<T, E>>,
    {
        let inner = &*self.inner;
        match inner.l1.get(key).await {
            Some(entry) => {
                Counters::add(&inner.counters.l1_hits, 1);
                if let Some(value) = inner.decode(key, &entry.bytes) {
                    return Ok(value);
                }
            }
            None => Counters::add(&inner.counters.l1_misses, 1),
        }
        match inner.flights.join(key) {
            Role::Waiter(flight) => {
                if let Some(value) = single_flight::wait(flight)
                    .await
                    .and_then(|bytes| inner.decode(key, &bytes))
                {
                    return Ok(value);
                }
                let generation = inner.generations.current(key);
                let value = fetch.await?;
                inner.fill(key, &value, ttl, generation).await;
                Ok(value)
            }
            Role::Leader(leader) => {
                let generation = inner.generations.current(key);
                // The previous flight may have filled L1 between our miss and
                // our join; looking again keeps "one fetch per stampede" exact.
                if let Some(entry) = inner.l1.get(key).await {
                    if let Some(value) = inner.decode(key, &entry.bytes) {
                        leader.finish(Some(entry.bytes));
                        return Ok(value);
                    }
                }
                if let Some(bytes) = inner.l2_get(key).await {
                    if let Some(value) = inner.decode(key, &bytes) {
                        leader.finish(Some(bytes));
                        return Ok(value);
                    }
                }
                let value = fetch.await?;
                let bytes = inner.fill(key, &value, ttl, generation).await;
                leader.finish(bytes);
                Ok(value)
            }
        }
    }

    /// Fetches and stores each entry (up to 16 fetches at a time), writing
    /// all successes to Redis in one round trip. Failures are logged.
    pub async fn warm<T, E, Fut, I>(&self, entries: I) -> WarmReport
    where
        T: Serialize,
        E: Display,
        Fut: Future<Output = Result<T, E>>,
        I: IntoIterator<Item = (String, Duration, Fut)>,
    {
        let fetched: Vec<(String, Duration, Result<T, E>)> = futures::stream::iter(entries)
            .map(|(key, ttl, fetch)| async move { (key, ttl, fetch.await) })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut report = WarmReport::default();
        let mut encoded = Vec::with_capacity(fetched.len());
        for (key, ttl, result) in fetched {
            match result {
                Ok(value) => match self.inner.encode(&key, &value) {
                    Some(bytes) => {
                        report.warmed += 1;
                        encoded.push((key, bytes, ttl));
                    }
                    None => report.failed += 1,
                },
                Err(error) => {
                    report.failed += 1;
                    tracing::warn!(cache = %self.inner.name, %key, %error, "cache warm-up fetch failed");
                }
            }
        }
        self.inner.store(encoded).await;
        report
    }

    /// Counters since creation, with the current L1 size.
    pub async fn stats(&self) -> CacheStats {
        // Pending maintenance would otherwise leave the size a little behind.
        self.inner.l1.run_pending_tasks().await;
        self.inner.snapshot()
    }

    /// Exposes this cache's statistics in `registry` (read at scrape time).
    /// Several caches may share a registry if their names differ.
    pub fn register_metrics(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        let cache = Arc::downgrade(&self.inner);
        stats::register(registry, &self.inner.name, move || {
            cache
                .upgrade()
                .map(|inner| inner.snapshot())
                .unwrap_or_default()
        })
    }
}

impl Inner {
    fn snapshot(&self) -> CacheStats {
        self.counters.snapshot(self.l1.entry_count())
    }

    fn decode<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Option<T> {
        match serde_json::from_slice(bytes) {
            Ok(value) => Some(value),
            Err(error) => {
                tracing::warn!(cache = %self.name, %key, %error, "cached value does not fit the requested type");
                None
            }
        }
    }

    fn encode<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Option<Arc<[u8]>> {
        match serde_json::to_vec(value) {
            Ok(bytes) => Some(bytes.into()),
            Err(error) => {
                tracing::warn!(cache = %self.name, %key, %error, "value cannot be cached as JSON");
                None
            }
        }
    }

    fn l1_ttl(&self, ttl: Option<Duration>) -> Duration {
        ttl.map_or(self.l1_max_ttl, |ttl| ttl.min(self.l1_max_ttl))
    }

    /// Looks `key` up in Redis and copies a hit into L1.
    async fn l2_get(&self, key: &str) -> Option<Arc<[u8]>> {
        let l2 = self.l2.as_ref()?;
        let generation = self.generations.current(key);
        let found = l2
            .call(&self.counters, "get", l2.redis.get_with_ttl(&[l2.key(key)]))
            .await?;
        match found.into_iter().next().flatten() {
            Some((bytes, ttl)) => {
                Counters::add(&self.counters.l2_hits, 1);
                let bytes: Arc<[u8]> = bytes.into();
                self.promote(key, bytes.clone(), ttl, generation).await;
                Some(bytes)
            }
            None => {
                Counters::add(&self.counters.l2_misses, 1);
                None
            }
        }
    }

    /// Copies an L2 value into L1 for the rest of its Redis lifetime.
    async fn promote(&self, key: &str, bytes: Arc<[u8]>, ttl: Option<Duration>, generation: u64) {
        let ttl = self.l1_ttl(ttl);
        if !ttl.is_zero() {
            self.insert_l1(key, bytes, ttl, generation).await;
        }
    }

    /// Inserts into L1 unless `key` was invalidated since `generation` was
    /// read: the value may predate that invalidation. Checking again after
    /// the insert closes the window between check and insert.
    async fn insert_l1(&self, key: &str, bytes: Arc<[u8]>, ttl: Duration, generation: u64) {
        if self.generations.current(key) != generation {
            return;
        }
        self.l1.insert(key.to_owned(), L1Entry { bytes, ttl }).await;
        if self.generations.current(key) != generation {
            self.l1.invalidate(key).await;
        }
    }

    /// Stores a freshly fetched value in both levels, unless the key was
    /// invalidated while it was being fetched. Returns the encoded value.
    async fn fill<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
        generation: u64,
    ) -> Option<Arc<[u8]>> {
        let bytes = self.encode(key, value)?;
        if ttl.is_zero() || self.generations.current(key) != generation {
            return Some(bytes);
        }
        Counters::add(&self.counters.writes, 1);
        self.insert_l1(key, bytes.clone(), self.l1_ttl(Some(ttl)), generation)
            .await;
        if let Some(l2) = &self.l2 {
            let mut pipe = ::redis::pipe();
            pipe.add_command(set_with_ttl(l2.full_key(key), &bytes, ttl))
                .ignore();
            l2.call(&self.counters, "set", l2.redis.write_pipeline("SET", &pipe))
                .await;
        }
        Some(bytes)
    }

    /// Writes entries to both levels and publishes one invalidation for them,
    /// all in one Redis round trip.
    async fn store(&self, entries: Vec<(String, Arc<[u8]>, Duration)>) {
        let (live, expired): (Vec<_>, Vec<_>) =
            entries.into_iter().partition(|(_, _, ttl)| !ttl.is_zero());
        if !expired.is_empty() {
            self.delete_keys(expired.into_iter().map(|(key, _, _)| key).collect())
                .await;
        }
        if live.is_empty() {
            return;
        }
        Counters::add(&self.counters.writes, live.len());
        for (key, bytes, ttl) in &live {
            // Bumping first keeps a concurrent fetch of the old value out of L1.
            self.generations.bump(key);
            let entry = L1Entry {
                bytes: bytes.clone(),
                ttl: self.l1_ttl(Some(*ttl)),
            };
            self.l1.insert(key.clone(), entry).await;
        }
        let Some(l2) = &self.l2 else { return };
        let mut pipe = ::redis::pipe();
        for (key, bytes, ttl) in &live {
            pipe.add_command(set_with_ttl(l2.full_key(key), bytes, *ttl))
                .ignore();
        }
        let keys = live.into_iter().map(|(key, _, _)| key).collect();
        if let Some(publish) = l2.publish_cmd(&self.invalidation(keys, Vec::new())) {
            pipe.add_command(publish).ignore();
        }
        l2.call(
            &self.counters,
            "set",
            l2.redis.write_pipeline("SET+PUBLISH", &pipe),
        )
        .await;
    }

    async fn delete_keys(&self, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        Counters::add(&self.counters.deletes, keys.len());
        for key in &keys {
            self.generations.bump(key);
            self.l1.invalidate(key.as_str()).await;
        }
        let Some(l2) = &self.l2 else { return };
        let mut unlink = ::redis::cmd("UNLINK");
        for key in &keys {
            unlink.arg(l2.full_key(key));
        }
        let mut pipe = ::redis::pipe();
        pipe.add_command(unlink).ignore();
        if let Some(publish) = l2.publish_cmd(&self.invalidation(keys, Vec::new())) {
            pipe.add_command(publish).ignore();
        }
        l2.call(
            &self.counters,
            "delete",
            l2.redis.write_pipeline("UNLINK+PUBLISH", &pipe),
        )
        .await;
    }

    pub(super) async fn invalidate_l1_matching(&self, pattern: &str) {
        self.generations.bump_all();
        // Collected first: moka's iterator must not be held across an await.
        let doomed: Vec<Arc<String>> = self
            .l1
            .iter()
            .map(|(key, _)| key)
            .filter(|key| glob::matches(pattern, key))
            .collect();
        for key in doomed {
            self.l1.invalidate(key.as_str()).await;
        }
    }

    fn invalidation(&self, keys: Vec<String>, patterns: Vec<String>) -> Invalidation {
        Invalidation {
            origin: self.instance,
            keys,
            patterns,
        }
    }
}

const GENERATION_SLOTS: usize = 64;

/// Invalidation counters per key slot. A fetch or promotion that started
/// before an invalidation of its slot must not land in L1 afterwards. Slots
/// (rather than one global counter) keep unrelated writes from spoiling it.
pub(super) struct Generations([AtomicU64; GENERATION_SLOTS]);

impl Default for Generations {
    fn default() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl Generations {
    fn slot(&self, key: &str) -> &AtomicU64 {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        // The remainder is below GENERATION_SLOTS, so it fits in usize.
        let index = (hasher.finish() % GENERATION_SLOTS as u64) as usize;
        &self.0[index]
    }

    fn current(&self, key: &str) -> u64 {
        self.slot(key).load(Ordering::SeqCst)
    }

    pub(super) fn bump(&self, key: &str) {
        self.slot(key).fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn bump_all(&self) {
        for slot in &self.0 {
            slot.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn build_l1(capacity: L1Capacity) -> Cache<String, L1Entry> {
    let builder = Cache::builder().expire_after(PerEntryTtl);
    match capacity {
        L1Capacity::Entries(entries) => builder.max_capacity(entries).build(),
        L1Capacity::Bytes(bytes) => builder
            .weigher(|key: &String, entry: &L1Entry| {
                u32::try_from(key.len() + entry.bytes.len()).unwrap_or(u32::MAX)
            })
            .max_capacity(bytes)
            .build(),
    }
}
