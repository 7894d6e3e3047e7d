//! The shared limiters ([`RateLimiter`], [`AttemptCounter`]) against a real
//! Redis: budgets shared across instances, hashed keys, and the local
//! fallback through a Redis outage and back.
//!
//! Needs `TEST_REDIS_URL` (set by `scripts/test.sh`); tests that stop Redis
//! start their own `redis-server`. Every test uses its own random key prefix,
//! so the suite runs in parallel on one server. Timing is only asserted as
//! "retry-after ≤ bound"; everything else polls with a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{free_port, redis_url, unique_prefix, RedisProcess};

use std::{
    future::Future,
    time::{Duration, Instant},
};

use prometheus::Registry;
use service_core::{
    redis::{KeyPrefix, RedisAccessor, RedisOptions, RedisTopology, RedisUrl},
    resilience::{AttemptCounter, RateLimitMetrics, RateLimiter, RetryAfter, SharedLimitOptions},
};

// ---------------------------------------------------------------- helpers

/// One service instance's Redis handle on `TEST_REDIS_URL`: each call opens
/// its own connections, as a separate process would.
async fn accessor(prefix: &KeyPrefix) -> RedisAccessor {
    RedisAccessor::connect(&redis_url(), prefix.clone())
        .await
        .expect("connect to TEST_REDIS_URL")
}

/// Short limits so an outage is noticed quickly and retried often.
fn fast_redis_options() -> RedisOptions {
    RedisOptions {
        connect_timeout: Duration::from_secs(1),
        command_timeout: Duration::from_millis(500),
        reconnect_attempts: 1,
        reconnect_max_delay: Duration::from_millis(100),
    }
}

async fn accessor_at(url: &str, prefix: &KeyPrefix) -> RedisAccessor {
    let topology = RedisTopology::from(RedisUrl::parse(url).unwrap());
    RedisAccessor::connect_with(&topology, prefix.clone(), fast_redis_options())
        .await
        .expect("connect to the test's own redis-server")
}

fn fast_fallback(metrics: &RateLimitMetrics) -> SharedLimitOptions {
    SharedLimitOptions {
        redis_timeout: Duration::from_millis(300),
        retry_redis_after: Duration::from_millis(100),
        metrics: Some(metrics.clone()),
        ..SharedLimitOptions::default()
    }
}

fn metrics() -> RateLimitMetrics {
    RateLimitMetrics::register(&Registry::new()).unwrap()
}

/// Polls `check` for up to 15 s; what is asserted is the outcome, not the time.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Checks `key` until refused (at most `limit` times); returns how many
/// calls were allowed and the retry-after of the refusal.
async fn exhaust(limiter: &RateLimiter, key: &str, limit: usize) -> (usize, RetryAfter) {
    for allowed in 0..limit {
        if let Err(retry) = limiter.check(key).await {
            return (allowed, retry);
        }
    }
    panic!("{limit} checks of {key} were all allowed");
}

const WINDOW: Duration = Duration::from_secs(15 * 60);

// ---------------------------------------------------------------- RateLimiter

#[tokio::test]
async fn two_instances_share_one_budget() {
    // Arrange: capacity 5, one token a second, two instances on one Redis.
    let prefix = unique_prefix();
    let a = RateLimiter::new("api", 5, 1.0, Some(accessor(&prefix).await));
    let b = RateLimiter::new("api", 5, 1.0, Some(accessor(&prefix).await));
    assert!(a.is_shared() && b.is_shared());

    // Act: five calls spread over both instances.
    for (turn, limiter) in [&a, &b, &a, &b, &a].into_iter().enumerate() {
        assert_eq!(limiter.check("user-1").await, Ok(()), "call {}", turn + 1);
    }

    // Assert: the sixth is refused on either, with a wait within one interval.
    for limiter in [&b, &a] {
        let RetryAfter(wait) = limiter.check("user-1").await.unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }
}

#[tokio::test]
async fn waiting_the_retry_after_lets_the_next_call_through() {
    let prefix = unique_prefix();
    let limiter = RateLimiter::new("refill", 2, 20.0, Some(accessor(&prefix).await));

    let (allowed, RetryAfter(wait)) = exhaust(&limiter, "user-1", 10).await;
    assert!(allowed >= 2, "the burst is allowed, got {allowed}");
    assert!(wait <= Duration::from_millis(50), "{wait:?}");

    tokio::time::sleep(wait).await;
    assert_eq!(limiter.check("user-1").await, Ok(()));
}

#[tokio::test]
async fn keys_are_independent_and_stored_hashed() {
    let prefix = unique_prefix();
    let redis = accessor(&prefix).await;
    let limiter = RateLimiter::new("login-ip", 1, 0.01, Some(redis.clone()));
    let attempts = AttemptCounter::new("login", 5, WINDOW, Some(redis.clone()));

    assert_eq!(limiter.check("alice@example.com").await, Ok(()));
    assert!(limiter.check("alice@example.com").await.is_err());
    assert_eq!(limiter.check("bob@example.com").await, Ok(()));
    attempts.record_failure("alice@example.com").await;

    let mut keys = redis.scan("*", 100).await.unwrap();
    keys.sort();
    assert_eq!(keys.len(), 3, "{keys:?}");
    for key in &keys {
        assert!(
            !key.contains("alice") && !key.contains("example"),
            "raw key in Redis: {key}"
        );
        let (namespace, hash) = key.rsplit_once(':').unwrap();
        assert!(
            namespace == "ratelimit:login-ip" || namespace == "attempts:login",
            "{key}"
        );
        assert_eq!(hash.len(), 64, "{key}");
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{key}");
    }
}

#[tokio::test]
async fn idle_keys_expire_from_redis() {
    let prefix = unique_prefix();
    let redis = accessor(&prefix).await;
    let limiter = RateLimiter::new("idle", 3, 20.0, Some(redis.clone()));

    assert_eq!(limiter.check("user-1").await, Ok(()));
    let keys = redis.scan("ratelimit:idle:*", 100).await.unwrap();
    assert_eq!(keys.len(), 1);
    let ttl = redis.ttl(&keys[0]).await.unwrap().expect("a lifetime");
    assert!(ttl <= Duration::from_millis(51), "{ttl:?}");

    eventually("the full bucket's key expires", || async {
        redis
            .scan("ratelimit:idle:*", 100)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_redis_outage_falls_back_to_local_limits_and_recovers() {
    // Arrange: a Redis of our own, and a limiter of capacity 3 refilling
    // once every 100 s, so nothing refills during the test.
    let port = free_port();
    let mut server = RedisProcess::start(port).await;
    let prefix = unique_prefix();
    let metrics = metrics();
    let limiter = RateLimiter::with_options(
        "outage",
        3,
        0.01,
        Some(accessor_at(&server.url(), &prefix).await),
        fast_fallback(&metrics),
    );
    assert_eq!(limiter.check("before").await, Ok(()));
    assert_eq!(metrics.fallbacks("outage"), 0, "Redis answered");

    // Act: Redis goes away.
    server.stop();

    // Assert: checks still answer, from this instance's own buckets.
    let (allowed, RetryAfter(wait)) = exhaust(&limiter, "during", 10).await;
    assert_eq!(allowed, 3, "the local fallback applies the same capacity");
    assert!(wait <= Duration::from_secs(100), "{wait:?}");
    assert!(
        limiter.check("other").await.is_ok(),
        "keys stay independent"
    );
    assert!(metrics.fallbacks("outage") >= 5, "fallbacks are counted");

    // Act: Redis comes back on the same port (empty: no data, no scripts).
    let _server = RedisProcess::start(port).await;
    let witness = RateLimiter::new(
        "outage",
        3,
        0.01,
        Some(accessor_at(&format!("redis://127.0.0.1:{port}"), &prefix).await),
    );

    // Assert: the limiter shares its buckets again. A key used up through
    // `limiter` is refused to another instance only if it went through Redis.
    let mut round = 0;
    eventually("the limiter uses Redis again", || {
        round += 1;
        let key = format!("after-{round}");
        let (limiter, witness) = (&limiter, &witness);
        async move {
            for _ in 0..3 {
                let _ = limiter.check(&key).await;
            }
            witness.check(&key).await.is_err()
        }
    })
    .await;
}

#[tokio::test]
async fn a_hung_redis_times_out_into_the_local_fallback() {
    let port = free_port();
    let server = RedisProcess::start(port).await;
    let prefix = unique_prefix();
    let metrics = metrics();
    let limiter = RateLimiter::with_options(
        "hung",
        2,
        0.01,
        Some(accessor_at(&server.url(), &prefix).await),
        fast_fallback(&metrics),
    );
    assert_eq!(limiter.check("before").await, Ok(()));

    server.signal("STOP");
    let outcome =
        tokio::time::timeout(Duration::from_secs(10), exhaust(&limiter, "during", 10)).await;
    server.signal("CONT");

    let (allowed, RetryAfter(wait)) = outcome.expect("checks answer while Redis hangs");
    assert_eq!(allowed, 2, "the local fallback applies the same capacity");
    assert!(wait <= Duration::from_secs(100), "{wait:?}");
    assert!(metrics.fallbacks("hung") >= 3);
}

#[tokio::test]
async fn a_forgotten_script_is_sent_again() {
    let port = free_port();
    let server = RedisProcess::start(port).await;
    let prefix = unique_prefix();
    let metrics = metrics();
    let limiter = RateLimiter::with_options(
        "noscript",
        2,
        0.01,
        Some(accessor_at(&server.url(), &prefix).await),
        fast_fallback(&metrics),
    );
    assert_eq!(limiter.check("user-1").await, Ok(()));

    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: String = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut connection)
        .await
        .unwrap();

    assert_eq!(limiter.check("user-1").await, Ok(()));
    assert!(limiter.check("user-1").await.is_err());
    assert_eq!(metrics.fallbacks("noscript"), 0, "every check used Redis");
}

// ------------------------------------------------------------- AttemptCounter

#[tokio::test]
async fn failures_lock_across_instances_until_reset() {
    // Arrange: two instances of the sign-in limit: 5 failures per 15 minutes.
    let prefix = unique_prefix();
    let a = AttemptCounter::new("login", 5, WINDOW, Some(accessor(&prefix).await));
    let b = AttemptCounter::new("login", 5, WINDOW, Some(accessor(&prefix).await));
    let email = "carol@example.com";

    // Act: five failures, spread over both.
    for (expected, counter) in (1..=5).zip([&a, &b, &a, &b, &a]) {
        assert_eq!(
            counter.is_locked(email).await,
            None,
            "before failure {expected}"
        );
        let attempts = counter.record_failure(email).await;
        assert_eq!(attempts.count, expected);
        assert!(attempts.window_resets_in <= WINDOW);
    }

    // Assert: the sixth try is locked out on both, for at most the window.
    for counter in [&b, &a] {
        let RetryAfter(wait) = counter.is_locked(email).await.expect("locked");
        assert!(wait > Duration::ZERO && wait <= WINDOW, "{wait:?}");
    }
    assert_eq!(a.is_locked("dave@example.com").await, None);

    // A success anywhere unlocks everywhere.
    b.reset(email).await;
    assert_eq!(a.is_locked(email).await, None);
    assert_eq!(a.record_failure(email).await.count, 1, "a new window");
}

#[tokio::test]
async fn the_window_ends_by_itself() {
    let prefix = unique_prefix();
    let window = Duration::from_millis(200);
    let counter = AttemptCounter::new("short", 1, window, Some(accessor(&prefix).await));

    let attempts = counter.record_failure("erin@example.com").await;
    assert!(attempts.window_resets_in <= window);
    let RetryAfter(wait) = counter.is_locked("erin@example.com").await.expect("locked");
    assert!(wait <= window, "{wait:?}");

    eventually("the window ends", || async {
        counter.is_locked("erin@example.com").await.is_none()
    })
    .await;
}

#[tokio::test]
async fn failures_are_counted_locally_while_redis_is_down() {
    let port = free_port();
    let mut server = RedisProcess::start(port).await;
    let prefix = unique_prefix();
    let metrics = metrics();
    let counter = AttemptCounter::with_options(
        "login-outage",
        3,
        WINDOW,
        Some(accessor_at(&server.url(), &prefix).await),
        fast_fallback(&metrics),
    );
    assert_eq!(counter.record_failure("frank@example.com").await.count, 1);

    server.stop();

    for expected in 1..=3 {
        let attempts = counter.record_failure("grace@example.com").await;
        assert_eq!(attempts.count, expected, "counted by this instance");
        assert!(attempts.window_resets_in <= WINDOW);
    }
    let RetryAfter(wait) = counter
        .is_locked("grace@example.com")
        .await
        .expect("locked locally");
    assert!(wait <= WINDOW, "{wait:?}");
    counter.reset("grace@example.com").await;
    assert_eq!(counter.is_locked("grace@example.com").await, None);
    assert!(metrics.fallbacks("login-outage") >= 5);
}
