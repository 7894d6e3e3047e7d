//! The Redis accessor and the layered cache against a real Redis.
//!
//! Needs `TEST_REDIS_URL` (set by `scripts/test.sh`); tests that stop Redis,
//! or need Sentinel, start their own `redis-server` processes. Every test uses
//! its own random key prefix, so the suite runs in parallel on one server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{free_port, redis_url, unique_prefix, RedisProcess};

use std::{
    convert::Infallible,
    future::Future,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use service_core::{
    cache::{CacheConfig, CacheKey, LayeredCache, WarmReport},
    redis::{
        KeyPrefix, LiveFeed, RedisAccessor, RedisError, RedisOptions, RedisTopology, RedisUrl,
    },
};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------- helpers

async fn accessor(prefix: &KeyPrefix) -> RedisAccessor {
    RedisAccessor::connect(&redis_url(), prefix.clone())
        .await
        .expect("connect to TEST_REDIS_URL")
}

fn config() -> CacheConfig {
    CacheConfig {
        name: "cache".into(),
        ..CacheConfig::default()
    }
}

async fn cache_on(prefix: &KeyPrefix) -> LayeredCache {
    LayeredCache::new(
        config(),
        Some(accessor(prefix).await),
        CancellationToken::new(),
    )
    .await
}

/// Two instances of one service sharing Redis.
async fn two_instances() -> (KeyPrefix, LayeredCache, LayeredCache) {
    let prefix = unique_prefix();
    let a = cache_on(&prefix).await;
    let b = cache_on(&prefix).await;
    (prefix, a, b)
}

/// Polls `check` for up to 5 s; what is asserted is the outcome, not the time.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Reads `key` through `cache` until one read is served from L1, proving the
/// value was promoted there. (A late invalidation of an earlier write may
/// drop the first promoted copy, hence the loop.)
async fn read_until_in_l1(cache: &LayeredCache, key: &str, expected: i64) {
    eventually("the value is served from L1", || async {
        let before = cache.stats().await.l1.hits;
        let value = cache.get::<i64>(key).await;
        assert_eq!(value, Some(expected));
        cache.stats().await.l1.hits > before
    })
    .await;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Wallet {
    id: String,
    balance: i64,
}

fn wallet(id: &str, balance: i64) -> Wallet {
    Wallet {
        id: id.into(),
        balance,
    }
}

// ---------------------------------------------------------------- accessor

#[tokio::test]
async fn keys_are_prefixed_with_brand_and_service() {
    let prefix = unique_prefix();
    let redis = accessor(&prefix).await;

    redis
        .set_json("tx:1", &wallet("w1", 10), None)
        .await
        .unwrap();

    let full = format!("{}:test:tx:1", prefix.brand());
    assert_eq!(redis.key("tx:1"), full);
    let raw: Option<String> = redis::cmd("GET")
        .arg(&full)
        .query_async(&mut redis.connection())
        .await
        .unwrap();
    assert_eq!(raw.as_deref(), Some(r#"{"id":"w1","balance":10}"#));
    assert_eq!(redis.scan("*", 100).await.unwrap(), vec!["tx:1".to_owned()]);

    let other = accessor(&unique_prefix()).await;
    assert_eq!(other.get_json::<Wallet>("tx:1").await.unwrap(), None);
    assert!(other.scan("*", 100).await.unwrap().is_empty());
}

#[tokio::test]
async fn json_values_round_trip_and_expire_after_their_ttl() {
    let redis = accessor(&unique_prefix()).await;

    redis
        .set_json("forever", &wallet("w1", 1), None)
        .await
        .unwrap();
    redis
        .set_json("short", &wallet("w2", 2), Some(Duration::from_secs(1)))
        .await
        .unwrap();

    assert_eq!(
        redis.get_json::<Wallet>("forever").await.unwrap(),
        Some(wallet("w1", 1))
    );
    assert_eq!(redis.ttl("forever").await.unwrap(), None);
    let ttl = redis.ttl("short").await.unwrap().expect("a TTL");
    assert!(ttl <= Duration::from_secs(1));
    eventually("the short-lived key expires", || async {
        redis.get_json::<Wallet>("short").await.unwrap().is_none()
    })
    .await;
    assert!(redis.get_json::<Wallet>("forever").await.unwrap().is_some());

    let decode = redis.get_json::<Vec<u8>>("forever").await.unwrap_err();
    assert!(matches!(decode, RedisError::Decode { .. }), "{decode}");
    assert_eq!(redis.delete(&["forever", "missing"]).await.unwrap(), 1);
}

#[tokio::test]
async fn mget_and_mset_keep_order_and_apply_ttl() {
    let redis = accessor(&unique_prefix()).await;

    redis.mset_json(&[("a", 1), ("b", 2)], None).await.unwrap();
    redis
        .mset_json(&[("c", 3), ("d", 4)], Some(Duration::from_secs(60)))
        .await
        .unwrap();

    let values: Vec<Option<i64>> = redis
        .mget_json(&["d", "missing", "a", "c", "b"])
        .await
        .unwrap();
    assert_eq!(values, vec![Some(4), None, Some(1), Some(3), Some(2)]);
    assert_eq!(redis.ttl("a").await.unwrap(), None);
    assert!(redis.ttl("c").await.unwrap().is_some());
    assert!(redis.ttl("d").await.unwrap().is_some());
    let none: Vec<Option<i64>> = redis.mget_json::<&str, i64>(&[]).await.unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn pattern_delete_removes_a_thousand_keys_with_scan() {
    let redis = accessor(&unique_prefix()).await;
    let items: Vec<(String, usize)> = (0..1000).map(|i| (format!("item:{i}"), i)).collect();
    let others: Vec<(String, usize)> = (0..10).map(|i| (format!("other:{i}"), i)).collect();
    redis.mset_json(&items, None).await.unwrap();
    redis
        .mset_json(&others, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(redis.scan("item:*", 100).await.unwrap().len(), 1000);

    let deleted = redis.delete_pattern("item:*").await.unwrap();

    assert_eq!(deleted, 1000);
    assert!(redis.scan("item:*", 100).await.unwrap().is_empty());
    let mut left = redis.scan("*", 100).await.unwrap();
    left.sort();
    let mut expected: Vec<String> = others.into_iter().map(|(key, _)| key).collect();
    expected.sort();
    assert_eq!(left, expected);
}

#[tokio::test]
async fn a_live_feed_reaches_the_subscribers_of_every_instance() {
    let prefix = unique_prefix();
    let a: LiveFeed<Wallet> = LiveFeed::new("wallets:live", Some(accessor(&prefix).await));
    let b: LiveFeed<Wallet> = LiveFeed::new("wallets:live", Some(accessor(&prefix).await));
    let stop = CancellationToken::new();
    let relays = [
        a.start_relay(stop.clone()).await.unwrap(),
        b.start_relay(stop.clone()).await.unwrap(),
    ];
    let mut on_a = a.subscribe(|w| w.id == "w1");
    let mut on_b = b.subscribe(|w| w.id == "w1");

    // Published on A, filtered out, then kept: both instances see only w1.
    a.publish(&wallet("w2", 1)).await;
    a.publish(&wallet("w1", 7)).await;
    for feed in [&mut on_a, &mut on_b] {
        let got = tokio::time::timeout(Duration::from_secs(5), feed.next())
            .await
            .expect("a value within 5 s");
        assert_eq!(got, Some(wallet("w1", 7)));
    }
    stop.cancel();
    for relay in relays {
        relay.await.unwrap();
    }
}

#[tokio::test]
async fn pubsub_round_trip_on_a_prefixed_channel() {
    let prefix = unique_prefix();
    let redis = accessor(&prefix).await;
    let mut messages = redis.subscribe("events").await.unwrap();
    let stranger = accessor(&unique_prefix()).await;

    assert_eq!(
        stranger.publish("events", &wallet("x", 0)).await.unwrap(),
        0
    );
    assert_eq!(redis.publish("events", &wallet("w1", 5)).await.unwrap(), 1);

    let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .expect("a message within 5 s")
        .expect("an open subscription");
    assert_eq!(message.channel, "events");
    assert_eq!(message.json::<Wallet>().unwrap(), wallet("w1", 5));
}

#[tokio::test]
async fn health_pings_redis() {
    let redis = accessor(&unique_prefix()).await;
    let latency = redis.health().await.unwrap();
    assert!(latency > Duration::ZERO);
}

#[tokio::test]
async fn an_unreachable_redis_fails_promptly_without_leaking_the_password() {
    let url = format!("redis://app:hunter2@127.0.0.1:{}", free_port());
    let options = RedisOptions {
        connect_timeout: Duration::from_millis(300),
        ..RedisOptions::default()
    };
    let topology = RedisTopology::Standalone {
        url: RedisUrl::parse(url).unwrap(),
    };

    let error = RedisAccessor::connect_with(&topology, unique_prefix(), options)
        .await
        .unwrap_err();

    let shown = format!("{error} {error:?}");
    assert!(
        matches!(
            error,
            RedisError::Connect { .. } | RedisError::ConnectTimeout { .. }
        ),
        "{shown}"
    );
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("***@127.0.0.1"), "{shown}");
}

/// Replica routing, proven with two logical databases of one server: writes
/// land in the primary's database, reads come from the replica's.
#[tokio::test]
async fn read_replica_topology_reads_from_replicas_and_writes_to_the_primary() {
    let base = redis_url();
    let base = match base.rsplit_once('/') {
        Some((head, db)) if !db.is_empty() && db.chars().all(|c| c.is_ascii_digit()) => {
            head.to_owned()
        }
        _ => base,
    };
    let primary = RedisUrl::parse(format!("{base}/0")).unwrap();
    let replica = RedisUrl::parse(format!("{base}/9")).unwrap();
    let prefix = unique_prefix();
    let topology = RedisTopology::ReadReplicas {
        primary: primary.clone(),
        replicas: vec![replica.clone()],
    };
    let routed = RedisAccessor::connect_with(&topology, prefix.clone(), RedisOptions::default())
        .await
        .unwrap();
    let on_primary =
        RedisAccessor::connect_with(&primary.into(), prefix.clone(), RedisOptions::default())
            .await
            .unwrap();
    let on_replica = RedisAccessor::connect_with(&replica.into(), prefix, RedisOptions::default())
        .await
        .unwrap();

    routed.set_json("k", &1, None).await.unwrap();
    assert_eq!(on_primary.get_json::<i64>("k").await.unwrap(), Some(1));
    assert_eq!(routed.get_json::<i64>("k").await.unwrap(), None);

    on_replica.set_json("k", &2, None).await.unwrap();
    assert_eq!(routed.get_json::<i64>("k").await.unwrap(), Some(2));
    assert_eq!(
        routed.mget_json::<_, i64>(&["k"]).await.unwrap(),
        vec![Some(2)]
    );

    routed.delete(&["k"]).await.unwrap();
    on_replica.delete(&["k"]).await.unwrap();
    assert_eq!(on_primary.get_json::<i64>("k").await.unwrap(), None);
}

#[tokio::test]
async fn sentinel_topology_finds_the_master() {
    let mut master = RedisProcess::redis(free_port());
    master.wait_ready().await;
    let sentinel_port = free_port();
    let dir = std::env::temp_dir().join(format!("sentinel-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {sentinel_port}\nbind 127.0.0.1\ndir {}\n\
             sentinel monitor testmaster 127.0.0.1 {} 1\n",
            dir.display(),
            master.port
        ),
    )
    .unwrap();
    let mut sentinel = RedisProcess::spawn(sentinel_port, &[conf.to_str().unwrap(), "--sentinel"]);
    sentinel.wait_ready().await;

    let topology = RedisTopology::Sentinel {
        master_name: "testmaster".into(),
        sentinels: vec![RedisUrl::parse(sentinel.url()).unwrap()],
    };
    let redis = RedisAccessor::connect_with(&topology, unique_prefix(), RedisOptions::default())
        .await
        .unwrap();
    redis.set_json("k", &"via sentinel", None).await.unwrap();
    let direct = RedisAccessor::connect(&master.url(), redis.prefix().clone())
        .await
        .unwrap();
    assert_eq!(
        direct.get_json::<String>("k").await.unwrap().as_deref(),
        Some("via sentinel")
    );

    let unknown = RedisTopology::Sentinel {
        master_name: "nosuchmaster".into(),
        sentinels: vec![RedisUrl::parse(sentinel.url()).unwrap()],
    };
    assert!(
        RedisAccessor::connect_with(&unknown, unique_prefix(), RedisOptions::default())
            .await
            .is_err()
    );
    let empty = RedisTopology::Sentinel {
        master_name: "testmaster".into(),
        sentinels: Vec::new(),
    };
    assert!(matches!(
        RedisAccessor::connect_with(&empty, unique_prefix(), RedisOptions::default()).await,
        Err(RedisError::Config(_))
    ));

    sentinel.stop();
    master.stop();
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------- cache

#[tokio::test]
async fn l1_hit_and_miss_are_counted() {
    let (_, cache, _) = two_instances().await;

    assert_eq!(cache.get::<Wallet>("wallet:1").await, None);
    cache
        .set("wallet:1", &wallet("w1", 7), Duration::from_secs(60))
        .await;
    assert_eq!(cache.get("wallet:1").await, Some(wallet("w1", 7)));

    let stats = cache.stats().await;
    assert_eq!(stats.l1.hits, 1);
    assert_eq!(stats.l1.misses, 1);
    assert_eq!(stats.l2.misses, 1);
    assert_eq!(stats.l2.hits, 0);
}

#[tokio::test]
async fn an_l2_hit_is_promoted_to_l1() {
    let (_, a, b) = two_instances().await;

    a.set("n", &41_i64, Duration::from_secs(60)).await;

    assert_eq!(b.get::<i64>("n").await, Some(41));
    read_until_in_l1(&b, "n", 41).await;
    let stats = b.stats().await;
    assert!(stats.l2.hits >= 1, "{stats:?}");
    assert!(stats.l1.hits >= 1, "{stats:?}");
    assert!(stats.l1_entries >= 1, "{stats:?}");
}

#[tokio::test]
async fn ttl_expiry_applies_at_both_levels() {
    let (prefix, a, b) = two_instances().await;
    let redis = accessor(&prefix).await;

    a.set("brief", &1_i64, Duration::from_secs(1)).await;
    assert_eq!(b.get::<i64>("brief").await, Some(1));
    assert_eq!(a.get::<i64>("brief").await, Some(1));

    eventually(
        "the entry expires in both instances and in Redis",
        || async {
            a.get::<i64>("brief").await.is_none()
                && b.get::<i64>("brief").await.is_none()
                && redis
                    .get_json::<i64>("cache:brief")
                    .await
                    .unwrap()
                    .is_none()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_misses_run_the_fetch_once() {
    let (_, a, b) = two_instances().await;
    let fetches = Arc::new(AtomicUsize::new(0));

    let callers: Vec<_> = (0..100)
        .map(|_| {
            let cache = a.clone();
            let fetches = fetches.clone();
            tokio::spawn(async move {
                cache
                    .cached("hot", Duration::from_secs(60), async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok::<_, Infallible>(wallet("hot", 100))
                    })
                    .await
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap(), wallet("hot", 100));
    }

    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // The fetched value reached Redis: another instance does not fetch.
    let value = b
        .cached("hot", Duration::from_secs(60), async {
            fetches.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Infallible>(wallet("other", 0))
        })
        .await
        .unwrap();
    assert_eq!(value, wallet("hot", 100));
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn failed_fetches_are_not_cached_and_release_waiters() {
    let cache = LayeredCache::l1_only(config());
    let fetches = Arc::new(AtomicUsize::new(0));

    let results = futures::future::join_all((0..10).map(|_| {
        let fetches = fetches.clone();
        cache.cached("flaky", Duration::from_secs(60), async move {
            if fetches.fetch_add(1, Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err("source down")
            } else {
                Ok(5_i64)
            }
        })
    }))
    .await;

    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
    assert_eq!(results.iter().filter(|r| r == &&Ok(5)).count(), 9);
    let again = cache
        .cached("flaky", Duration::from_secs(60), async {
            Err::<i64, _>("must not be called")
        })
        .await;
    assert_eq!(again, Ok(5));
}

#[tokio::test]
async fn batch_operations_use_both_levels() {
    let (_, a, b) = two_instances().await;

    a.set_many(
        [("k1", wallet("1", 1)), ("k2", wallet("2", 2))],
        Duration::from_secs(60),
    )
    .await;

    let got: Vec<Option<Wallet>> = b.get_many(&["k2", "k3", "k1"]).await;
    assert_eq!(got, vec![Some(wallet("2", 2)), None, Some(wallet("1", 1))]);
    let stats = b.stats().await;
    assert_eq!((stats.l2.hits, stats.l2.misses), (2, 1));
    let from_l1: Vec<Option<Wallet>> = a.get_many(&["k1", "k2"]).await;
    assert_eq!(from_l1.iter().flatten().count(), 2);
    assert_eq!(a.stats().await.l1.hits, 2);

    a.delete_many(&["k1", "k2"]).await;

    let gone: Vec<Option<Wallet>> = a.get_many(&["k1", "k2"]).await;
    assert_eq!(gone, vec![None, None]);
    eventually("the other instance sees the batch delete", || async {
        let values: Vec<Option<Wallet>> = b.get_many(&["k1", "k2"]).await;
        values.iter().all(Option::is_none)
    })
    .await;
}

#[tokio::test]
async fn pattern_delete_clears_both_levels_on_every_instance() {
    let (prefix, a, b) = two_instances().await;
    for id in 1..=3 {
        a.set(&CacheKey::one("user", id), &id, Duration::from_secs(60))
            .await;
    }
    a.set(&CacheKey::one("order", 1), &1_i64, Duration::from_secs(60))
        .await;
    read_until_in_l1(&b, &CacheKey::one("user", 1), 1).await;

    a.delete_pattern(&CacheKey::pattern("user")).await;

    for id in 1..=3 {
        assert_eq!(a.get::<i64>(&CacheKey::one("user", id)).await, None);
    }
    eventually("the other instance drops the matching keys", || async {
        b.get::<i64>(&CacheKey::one("user", 1)).await.is_none()
    })
    .await;
    let redis = accessor(&prefix).await;
    assert!(redis.scan("cache:user:*", 100).await.unwrap().is_empty());
    assert_eq!(b.get::<i64>(&CacheKey::one("order", 1)).await, Some(1));
}

#[tokio::test]
async fn invalidation_reaches_other_instances() {
    let (_, a, b) = two_instances().await;
    a.set("balance", &100_i64, Duration::from_secs(60)).await;
    read_until_in_l1(&b, "balance", 100).await;

    a.delete("balance").await;

    eventually("the other instance drops its L1 copy", || async {
        b.get::<i64>("balance").await.is_none()
    })
    .await;

    a.set("balance", &90_i64, Duration::from_secs(60)).await;
    read_until_in_l1(&b, "balance", 90).await;
    a.set("balance", &80_i64, Duration::from_secs(60)).await;
    eventually("the other instance sees the new value", || async {
        b.get::<i64>("balance").await == Some(80)
    })
    .await;
}

#[tokio::test]
async fn an_instance_ignores_its_own_invalidations() {
    let (_, a, _) = two_instances().await;

    a.set("mine", &1_i64, Duration::from_secs(60)).await;
    // Time for the message to come back, were it going to be applied.
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_eq!(a.get::<i64>("mine").await, Some(1));
    let stats = a.stats().await;
    assert_eq!((stats.l1.hits, stats.l2.hits), (1, 0));
}

#[tokio::test]
async fn stats_count_every_operation_and_reach_prometheus() {
    let (_, cache, _) = two_instances().await;
    let registry = prometheus::Registry::new();
    cache.register_metrics(&registry).unwrap();

    assert_eq!(cache.get::<i64>("a").await, None);
    cache.set("a", &1_i64, Duration::from_secs(60)).await;
    cache
        .set_many([("b", 2_i64), ("c", 3)], Duration::from_secs(60))
        .await;
    assert_eq!(cache.get::<i64>("a").await, Some(1));
    cache.delete("c").await;
    cache.delete_pattern("nothing:*").await;

    let stats = cache.stats().await;
    assert_eq!(stats.l1.hits, 1);
    assert_eq!(stats.l1.misses, 1);
    assert_eq!(stats.l2.misses, 1);
    assert_eq!(stats.writes, 3);
    assert_eq!(stats.deletes, 2);
    assert_eq!(stats.l1_entries, 2);
    assert_eq!(stats.l2_unavailable, 0);
    assert!((stats.hit_rate() - 0.5).abs() < 1e-9);

    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert!(
        text.contains(r#"cache_hits_total{cache="cache",level="l1"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"cache_writes_total{cache="cache"} 3"#),
        "{text}"
    );
}

#[tokio::test]
async fn warm_up_stores_what_it_can_fetch() {
    let (_, a, b) = two_instances().await;
    let fetch = |value: Result<i64, &'static str>| async move { value };

    let report = a
        .warm([
            ("w:1".to_owned(), Duration::from_secs(60), fetch(Ok(1))),
            (
                "w:2".to_owned(),
                Duration::from_secs(60),
                fetch(Err("gone")),
            ),
            ("w:3".to_owned(), Duration::from_secs(60), fetch(Ok(3))),
        ])
        .await;

    assert_eq!(
        report,
        WarmReport {
            warmed: 2,
            failed: 1
        }
    );
    assert_eq!(a.get::<i64>("w:1").await, Some(1));
    assert_eq!(a.stats().await.l1.hits, 1);
    assert_eq!(b.get::<i64>("w:3").await, Some(3));
    assert_eq!(b.get::<i64>("w:2").await, None);
}

#[tokio::test]
async fn l1_only_mode_needs_no_redis() {
    let cache = LayeredCache::l1_only(config());
    assert!(!cache.has_l2());
    let fetches = AtomicUsize::new(0);

    cache
        .set("x", &wallet("x", 1), Duration::from_secs(60))
        .await;
    assert_eq!(cache.get("x").await, Some(wallet("x", 1)));
    let loaded = futures::future::join_all((0..20).map(|_| {
        cache.cached("y", Duration::from_secs(60), async {
            fetches.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, Infallible>(2_i64)
        })
    }))
    .await;
    assert!(loaded.iter().all(|value| value == &Ok(2)));
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    cache.set("y:1", &1_i64, Duration::from_secs(60)).await;
    cache.delete_pattern("y*").await;
    assert_eq!(cache.get::<i64>("y").await, None);
    assert_eq!(cache.get::<i64>("y:1").await, None);
    cache.delete("x").await;
    assert_eq!(cache.get::<Wallet>("x").await, None);

    cache.set("short", &1_i64, Duration::from_secs(1)).await;
    eventually("the L1 entry expires", || async {
        cache.get::<i64>("short").await.is_none()
    })
    .await;
    let stats = cache.stats().await;
    assert_eq!(stats.l2, Default::default());
    assert_eq!(stats.l2_unavailable, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_test_degrades_to_l1_and_the_source() {
    let mut server = RedisProcess::redis(free_port());
    server.wait_ready().await;
    let prefix = unique_prefix();
    let config = CacheConfig {
        l2_timeout: Duration::from_millis(200),
        l2_retry_after: Duration::from_millis(300),
        ..config()
    };
    let url = server.url();
    let connect = || RedisAccessor::connect(&url, prefix.clone());
    let a = LayeredCache::new(
        config.clone(),
        Some(connect().await.unwrap()),
        CancellationToken::new(),
    )
    .await;
    let b = LayeredCache::new(
        config,
        Some(connect().await.unwrap()),
        CancellationToken::new(),
    )
    .await;
    a.set("kept", &1_i64, Duration::from_secs(60)).await;
    a.set("only-in-redis", &2_i64, Duration::from_secs(60))
        .await;
    assert_eq!(b.get::<i64>("kept").await, Some(1));

    server.stop();

    // What L1 holds is still served.
    assert_eq!(a.get::<i64>("kept").await, Some(1));
    assert_eq!(b.get::<i64>("kept").await, Some(1));
    // What only Redis held is a miss, not an error; cache-aside asks the source.
    assert_eq!(b.get::<i64>("only-in-redis").await, None);
    let fetches = AtomicUsize::new(0);
    let fetch = || async {
        fetches.fetch_add(1, Ordering::SeqCst);
        Ok::<_, Infallible>(20_i64)
    };
    assert_eq!(
        b.cached("only-in-redis", Duration::from_secs(60), fetch())
            .await,
        Ok(20)
    );
    assert_eq!(
        b.cached("only-in-redis", Duration::from_secs(60), fetch())
            .await,
        Ok(20)
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // Writes, batches and deletes keep working locally.
    a.set("new", &3_i64, Duration::from_secs(60)).await;
    assert_eq!(a.get::<i64>("new").await, Some(3));
    a.set_many([("m1", 1_i64), ("m2", 2)], Duration::from_secs(60))
        .await;
    assert_eq!(
        a.get_many::<_, i64>(&["m1", "m2", "nope"]).await,
        vec![Some(1), Some(2), None]
    );
    a.delete("kept").await;
    assert_eq!(a.get::<i64>("kept").await, None);
    a.delete_pattern("m*").await;
    assert_eq!(a.get::<i64>("m1").await, None);
    assert!(a.stats().await.l2_unavailable > 0);
    assert!(b.stats().await.l2_unavailable > 0);
    // A new connection fails fast instead of hanging.
    let options = RedisOptions {
        connect_timeout: Duration::from_millis(300),
        ..RedisOptions::default()
    };
    let url = RedisUrl::parse(server.url()).unwrap();
    assert!(
        RedisAccessor::connect_with(&url.into(), prefix.clone(), options)
            .await
            .is_err()
    );

    // Redis comes back on the same port: the cache reconnects and writes reach it again.
    let server = RedisProcess::redis(server.port);
    server.wait_ready().await;
    let direct = RedisAccessor::connect(&server.url(), prefix.clone())
        .await
        .unwrap();
    let mut round = 0_i64;
    eventually("writes reach the restarted Redis", || {
        round += 1;
        let (a, direct) = (&a, &direct);
        async move {
            a.set("after", &round, Duration::from_secs(60)).await;
            direct.get_json::<i64>("cache:after").await.unwrap() == Some(round)
        }
    })
    .await;
}
