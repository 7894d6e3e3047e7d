//! The per-service Redis accessor: one place that prefixes keys, encodes JSON,
//! bounds every call in time and routes reads and writes.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use ::redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    sentinel::{SentinelClient, SentinelServerType},
    Client, Cmd, FromRedisValue, Pipeline, Value,
};
use futures::{stream::BoxStream, StreamExt};
use serde::{de::DeserializeOwned, Serialize};

use super::{KeyPrefix, RedisError, RedisOptions, RedisTopology, RedisUrl};

/// Keys per SCAN step (and per UNLINK batch) when deleting by pattern.
const DELETE_BATCH: usize = 500;

/// Redis for one service: every key and channel is `{brand}:{service}:{name}`.
///
/// Cheap to clone; clones share connections. Commands go over a multiplexed
/// connection that reconnects with exponential backoff; each subscription gets
/// its own pub/sub connection. Every call is bounded by
/// [`RedisOptions::command_timeout`], so a Redis outage shows up as an error,
/// never as a hang.
#[derive(Clone)]
pub struct RedisAccessor {
    inner: Arc<Inner>,
}

struct Inner {
    prefix: KeyPrefix,
    primary: ConnectionManager,
    /// Read connections; empty means reads use the primary.
    replicas: Vec<ConnectionManager>,
    next_replica: AtomicUsize,
    /// Opens pub/sub connections, which cannot share the multiplexed one.
    pubsub_client: Client,
    /// Where `primary` points, redacted, for errors and logs.
    endpoint: String,
    options: RedisOptions,
}

impl std::fmt::Debug for RedisAccessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAccessor")
            .field("prefix", &self.inner.prefix.as_str())
            .field("endpoint", &self.inner.endpoint)
            .field("replicas", &self.inner.replicas.len())
            .finish()
    }
}

/// One message received on a subscribed channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubSubMessage {
    /// The channel, without the service prefix.
    pub channel: String,
    /// The raw payload (JSON when published with [`RedisAccessor::publish`]).
    pub payload: Vec<u8>,
}

impl PubSubMessage {
    /// Decodes the payload as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, RedisError> {
        serde_json::from_slice(&self.payload).map_err(|source| RedisError::Decode {
            key: self.channel.clone(),
            source,
        })
    }
}

/// A value read together with its remaining time to live.
pub(crate) type EntryWithTtl = (Vec<u8>, Option<Duration>);

impl RedisAccessor {
    /// Connects to one standalone server with default options.
    pub async fn connect(url: &str, prefix: KeyPrefix) -> Result<Self, RedisError> {
        let topology = RedisTopology::Standalone {
            url: RedisUrl::parse(url)?,
        };
        Self::connect_with(&topology, prefix, RedisOptions::default()).await
    }

    /// Connects according to `topology`. Fails within
    /// [`RedisOptions::connect_timeout`] per server when Redis is unreachable.
    pub async fn connect_with(
        topology: &RedisTopology,
        prefix: KeyPrefix,
        options: RedisOptions,
    ) -> Result<Self, RedisError> {
        let (primary_client, endpoint, replica_urls) = match topology {
            RedisTopology::Standalone { url } => (open(url)?, url.redacted(), &[][..]),
            RedisTopology::ReadReplicas { primary, replicas } => {
                (open(primary)?, primary.redacted(), replicas.as_slice())
            }
            RedisTopology::Sentinel {
                master_name,
                sentinels,
            } => {
                let client = resolve_sentinel_master(master_name, sentinels, &options).await?;
                let endpoint = format!("sentinel master {master_name}");
                (client, endpoint, &[][..])
            }
        };
        let primary = manager(primary_client.clone(), &endpoint, &options).await?;
        let mut replicas = Vec::with_capacity(replica_urls.len());
        for url in replica_urls {
            replicas.push(manager(open(url)?, &url.redacted(), &options).await?);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                prefix,
                primary,
                replicas,
                next_replica: AtomicUsize::new(0),
                pubsub_client: primary_client,
                endpoint,
                options,
            }),
        })
    }

    /// The namespace of this accessor.
    pub fn prefix(&self) -> &KeyPrefix {
        &self.inner.prefix
    }

    /// The full Redis name of `key` (also used for channels).
    pub fn key(&self, key: &str) -> String {
        self.inner.prefix.key(key)
    }

    /// A handle on the primary for commands this type does not wrap (streams,
    /// sorted sets, scripts). Callers must name keys through [`Self::key`].
    pub fn connection(&self) -> ConnectionManager {
        self.inner.primary.clone()
    }

    /// Reads `key` and decodes it as JSON; `None` when it does not exist.
    #[tracing::instrument(level = "debug", skip_all, fields(key = key))]
    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, RedisError> {
        let raw: Option<Vec<u8>> = self
            .query(self.reader(), "GET", Cmd::get(self.key(key)))
            .await?;
        raw.map(|bytes| decode(key, &bytes)).transpose()
    }

    /// Writes `value` as JSON under `key`, expiring after `ttl` (none = never).
    #[tracing::instrument(level = "debug", skip_all, fields(key = key))]
    pub async fn set_json<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<(), RedisError> {
        let bytes = encode(key, value)?;
        self.query(self.writer(), "SET", set_cmd(self.key(key), &bytes, ttl))
            .await
    }

    /// Deletes `keys` (UNLINK: memory is reclaimed off the main thread);
    /// returns how many existed.
    #[tracing::instrument(level = "debug", skip_all, fields(keys = keys.len()))]
    pub async fn delete<K: AsRef<str>>(&self, keys: &[K]) -> Result<u64, RedisError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut cmd = ::redis::cmd("UNLINK");
        for key in keys {
            cmd.arg(self.key(key.as_ref()));
        }
        self.query(self.writer(), "UNLINK", cmd).await
    }

    /// The remaining time to live of `key`: `Ok(None)` when the key is missing
    /// or never expires.
    pub async fn ttl(&self, key: &str) -> Result<Option<Duration>, RedisError> {
        let millis: i64 = self
            .query(self.reader(), "PTTL", Cmd::pttl(self.key(key)))
            .await?;
        Ok(ttl_from_millis(millis))
    }

    /// Reads many keys in one round trip; the answer follows the order of `keys`.
    #[tracing::instrument(level = "debug", skip_all, fields(keys = keys.len()))]
    pub async fn mget_json<K: AsRef<str>, T: DeserializeOwned>(
        &self,
        keys: &[K],
    ) -> Result<Vec<Option<T>>, RedisError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = ::redis::cmd("MGET");
        for key in keys {
            cmd.arg(self.key(key.as_ref()));
        }
        let raw: Vec<Option<Vec<u8>>> = self.query(self.reader(), "MGET", cmd).await?;
        raw.into_iter()
            .zip(keys)
            .map(|(bytes, key)| bytes.map(|b| decode(key.as_ref(), &b)).transpose())
            .collect()
    }

    /// Writes many keys in one round trip: MSET without a TTL, otherwise one
    /// MULTI/EXEC pipeline of `SET .. PX` so every key gets the same expiry.
    #[tracing::instrument(level = "debug", skip_all, fields(keys = entries.len()))]
    pub async fn mset_json<K: AsRef<str>, T: Serialize>(
        &self,
        entries: &[(K, T)],
        ttl: Option<Duration>,
    ) -> Result<(), RedisError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut encoded = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            encoded.push((self.key(key.as_ref()), encode(key.as_ref(), value)?));
        }
        match ttl {
            None => {
                let mut cmd = ::redis::cmd("MSET");
                for (key, bytes) in &encoded {
                    cmd.arg(key).arg(bytes);
                }
                self.query(self.writer(), "MSET", cmd).await
            }
            Some(ttl) => {
                let mut pipe = ::redis::pipe();
                pipe.atomic();
                for (key, bytes) in &encoded {
                    pipe.add_command(set_cmd(key.clone(), bytes, Some(ttl)))
                        .ignore();
                }
                self.query_pipeline(self.writer(), "MSET(PX)", &pipe).await
            }
        }
    }

    /// Every key matching the glob `pattern` inside this prefix, found with
    /// SCAN (never KEYS, which blocks the server), without the prefix.
    /// `batch` is the COUNT hint per step.
    #[tracing::instrument(level = "debug", skip_all, fields(pattern = pattern))]
    pub async fn scan(&self, pattern: &str, batch: usize) -> Result<Vec<String>, RedisError> {
        let full_pattern = self.inner.prefix.pattern(pattern);
        let connection = self.reader();
        let mut cursor = 0u64;
        let mut keys = Vec::new();
        loop {
            let (next, found) = self
                .scan_step(connection.clone(), cursor, &full_pattern, batch)
                .await?;
            keys.extend(
                found
                    .iter()
                    .filter_map(|key| self.inner.prefix.strip(key))
                    .map(str::to_owned),
            );
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    /// Deletes every key matching `pattern` inside this prefix, SCAN step by
    /// SCAN step (UNLINK per batch), so the server is never blocked; returns
    /// how many keys were removed. Keys written during the sweep may survive.
    #[tracing::instrument(level = "debug", skip_all, fields(pattern = pattern))]
    pub async fn delete_pattern(&self, pattern: &str) -> Result<u64, RedisError> {
        let full_pattern = self.inner.prefix.pattern(pattern);
        let mut cursor = 0u64;
        let mut deleted = 0;
        loop {
            let (next, found) = self
                .scan_step(self.writer(), cursor, &full_pattern, DELETE_BATCH)
                .await?;
            if !found.is_empty() {
                let mut cmd = ::redis::cmd("UNLINK");
                cmd.arg(&found);
                let removed: u64 = self.query(self.writer(), "UNLINK", cmd).await?;
                deleted += removed;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// Publishes `message` as JSON on the prefixed `channel`; returns how many
    /// subscribers received it.
    #[tracing::instrument(level = "debug", skip_all, fields(channel = channel))]
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        message: &T,
    ) -> Result<u64, RedisError> {
        let payload = encode(channel, message)?;
        let mut cmd = ::redis::cmd("PUBLISH");
        cmd.arg(self.key(channel)).arg(payload);
        self.query(self.writer(), "PUBLISH", cmd).await
    }

    /// Subscribes to the prefixed `channel` on a dedicated connection. The
    /// subscription is active when this returns. The stream ends when the
    /// connection is lost: messages published meanwhile are gone, so callers
    /// resubscribe and resynchronise.
    #[tracing::instrument(level = "debug", skip_all, fields(channel = channel))]
    pub async fn subscribe(
        &self,
        channel: &str,
    ) -> Result<BoxStream<'static, PubSubMessage>, RedisError> {
        let full_channel = self.key(channel);
        let prefix = self.inner.prefix.clone();
        let client = self.inner.pubsub_client.clone();
        let connect_timeout = self.inner.options.connect_timeout;
        let mut pubsub = tokio::time::timeout(connect_timeout, client.get_async_pubsub())
            .await
            .map_err(|_| RedisError::ConnectTimeout {
                endpoint: self.inner.endpoint.clone(),
                timeout: connect_timeout,
            })?
            .map_err(|source| RedisError::Connect {
                endpoint: self.inner.endpoint.clone(),
                source,
            })?;
        self.bounded("SUBSCRIBE", pubsub.subscribe(&full_channel))
            .await?;
        let messages = pubsub.into_on_message().map(move |message| {
            let channel = message.get_channel_name();
            PubSubMessage {
                channel: prefix.strip(channel).unwrap_or(channel).to_owned(),
                payload: message.get_payload_bytes().to_vec(),
            }
        });
        Ok(messages.boxed())
    }

    /// Round-trip latency of a PING to the primary.
    pub async fn health(&self) -> Result<Duration, RedisError> {
        let started = Instant::now();
        let _: String = self
            .query(self.writer(), "PING", ::redis::cmd("PING"))
            .await?;
        Ok(started.elapsed())
    }

    /// GET and PTTL for each key in one pipeline, for the cache's L2, which
    /// needs the remaining lifetime to expire a promoted L1 copy on time.
    pub(crate) async fn get_with_ttl(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<EntryWithTtl>>, RedisError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for key in keys {
            let full = self.key(key);
            pipe.add_command(Cmd::get(&full))
                .add_command(Cmd::pttl(full));
        }
        let values: Vec<Value> = self
            .query_pipeline(self.reader(), "GET+PTTL", &pipe)
            .await?;
        let parse_error = |source: ::redis::ParsingError| RedisError::Command {
            command: "GET+PTTL",
            source: source.into(),
        };
        let mut entries = Vec::with_capacity(keys.len());
        let mut values = values.into_iter();
        while let (Some(value), Some(ttl)) = (values.next(), values.next()) {
            let bytes = Option::<Vec<u8>>::from_redis_value(value).map_err(parse_error)?;
            let millis = i64::from_redis_value(ttl).map_err(parse_error)?;
            entries.push(bytes.map(|bytes| (bytes, ttl_from_millis(millis))));
        }
        Ok(entries)
    }

    /// Runs a pipeline the caller built with [`Self::key`]-prefixed names on
    /// the primary, in one round trip.
    pub(crate) async fn write_pipeline(
        &self,
        command: &'static str,
        pipe: &Pipeline,
    ) -> Result<(), RedisError> {
        self.query_pipeline(self.writer(), command, pipe).await
    }

    fn writer(&self) -> ConnectionManager {
        self.inner.primary.clone()
    }

    fn reader(&self) -> ConnectionManager {
        let replicas = &self.inner.replicas;
        if replicas.is_empty() {
            return self.writer();
        }
        let turn = self.inner.next_replica.fetch_add(1, Ordering::Relaxed);
        replicas[turn % replicas.len()].clone()
    }

    async fn scan_step(
        &self,
        connection: ConnectionManager,
        cursor: u64,
        pattern: &str,
        batch: usize,
    ) -> Result<(u64, Vec<String>), RedisError> {
        let mut cmd = ::redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(batch.max(1));
        self.query(connection, "SCAN", cmd).await
    }

    async fn query<T: FromRedisValue>(
        &self,
        mut connection: ConnectionManager,
        command: &'static str,
        cmd: Cmd,
    ) -> Result<T, RedisError> {
        self.bounded(
            command,
            async move { cmd.query_async(&mut connection).await },
        )
        .await
    }

    async fn query_pipeline<T: FromRedisValue>(
        &self,
        mut connection: ConnectionManager,
        command: &'static str,
        pipe: &Pipeline,
    ) -> Result<T, RedisError> {
        self.bounded(command, pipe.query_async(&mut connection))
            .await
    }

    async fn bounded<T>(
        &self,
        command: &'static str,
        call: impl Future<Output = ::redis::RedisResult<T>>,
    ) -> Result<T, RedisError> {
        let timeout = self.inner.options.command_timeout;
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result.map_err(|source| RedisError::Command { command, source }),
            Err(_) => Err(RedisError::Timeout { command, timeout }),
        }
    }
}

fn open(url: &RedisUrl) -> Result<Client, RedisError> {
    Client::open(url.expose()).map_err(|source| {
        // The driver's parse errors never quote the URL, but say which one failed.
        RedisError::Config(format!("{}: {source}", url.redacted()))
    })
}

async fn manager(
    client: Client,
    endpoint: &str,
    options: &RedisOptions,
) -> Result<ConnectionManager, RedisError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(Some(options.command_timeout))
        .set_number_of_retries(options.reconnect_attempts)
        .set_max_delay(options.reconnect_max_delay);
    // The manager retries a refused connection with backoff; the outer limit
    // turns "Redis is down" into a prompt error instead of a long wait.
    match tokio::time::timeout(
        options.connect_timeout,
        ConnectionManager::new_with_config(client, config),
    )
    .await
    {
        Ok(Ok(manager)) => Ok(manager),
        Ok(Err(source)) => Err(RedisError::Connect {
            endpoint: endpoint.to_owned(),
            source,
        }),
        Err(_) => Err(RedisError::ConnectTimeout {
            endpoint: endpoint.to_owned(),
            timeout: options.connect_timeout,
        }),
    }
}

/// Asks the sentinels for the current master. The answer is fixed for the
/// accessor's lifetime: after a failover, reconnect by building a new accessor.
async fn resolve_sentinel_master(
    master_name: &str,
    sentinels: &[RedisUrl],
    options: &RedisOptions,
) -> Result<Client, RedisError> {
    if sentinels.is_empty() {
        return Err(RedisError::Config(
            "a Sentinel topology needs at least one sentinel URL".into(),
        ));
    }
    let endpoint = format!(
        "sentinel master {master_name} via {}",
        sentinels
            .iter()
            .map(RedisUrl::redacted)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let urls: Vec<&str> = sentinels.iter().map(RedisUrl::expose).collect();
    let mut client = SentinelClient::build(
        urls,
        master_name.to_owned(),
        None,
        SentinelServerType::Master,
    )
    .map_err(|source| RedisError::Config(format!("{endpoint}: {source}")))?;
    match tokio::time::timeout(options.connect_timeout, client.async_get_client()).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(source)) => Err(RedisError::Connect { endpoint, source }),
        Err(_) => Err(RedisError::ConnectTimeout {
            endpoint,
            timeout: options.connect_timeout,
        }),
    }
}

fn set_cmd(key: String, bytes: &[u8], ttl: Option<Duration>) -> Cmd {
    let mut cmd = ::redis::cmd("SET");
    cmd.arg(key).arg(bytes);
    if let Some(ttl) = ttl {
        // PX 0 is rejected by Redis; a sub-millisecond TTL still means "expire".
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        cmd.arg("PX").arg(millis);
    }
    cmd
}

pub(crate) fn set_with_ttl(key: String, bytes: &[u8], ttl: Duration) -> Cmd {
    set_cmd(key, bytes, Some(ttl))
}

/// PTTL answers -2 (missing) or -1 (no expiry) besides a positive lifetime.
fn ttl_from_millis(millis: i64) -> Option<Duration> {
    u64::try_from(millis).ok().map(Duration::from_millis)
}

fn encode<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>, RedisError> {
    serde_json::to_vec(value).map_err(|source| RedisError::Encode {
        key: key.to_owned(),
        source,
    })
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, RedisError> {
    serde_json::from_slice(bytes).map_err(|source| RedisError::Decode {
        key: key.to_owned(),
        source,
    })
}
