//! Cache benchmarks: L1 hit, L2 hit and miss latency, and the L1 hit rate
//! under a Zipf workload.
//!
//! L2 figures need `TEST_REDIS_URL` (a Redis this bench may write to, under a
//! random prefix it deletes afterwards); without it only L1 is measured.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    convert::Infallible,
    hint::black_box,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use criterion::Criterion;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use service_core::{
    cache::{CacheConfig, L1Capacity, LayeredCache},
    redis::{KeyPrefix, RedisAccessor},
};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// About the size of a cached wallet.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Wallet {
    id: String,
    user_id: String,
    currency: String,
    balance: i64,
    bonus_balance: i64,
    locked_balance: i64,
}

fn wallet(n: u64) -> Wallet {
    Wallet {
        id: format!("wallet-{n}"),
        user_id: format!("user-{n}"),
        currency: "EUR".into(),
        balance: 10_000,
        bonus_balance: 500,
        locked_balance: 0,
    }
}

const TTL: Duration = Duration::from_secs(600);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();

    let l1 = LayeredCache::l1_only(CacheConfig::default());
    runtime.block_on(l1.set("hot", &wallet(1), TTL));
    criterion.bench_function("cache/l1_hit", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    black_box(l1.get::<Wallet>("hot").await);
                }
                started.elapsed()
            })
        })
    });
    bench_miss(&mut criterion, &runtime, "cache/miss_l1_only", &l1);

    match std::env::var("TEST_REDIS_URL") {
        Ok(url) => bench_l2(&mut criterion, &runtime, &url),
        Err(_) => println!(
            "TEST_REDIS_URL is not set: L2 hit and L1+L2 miss latencies were not measured (L1 only)"
        ),
    }

    criterion.final_summary();
    zipf_hit_rate(&runtime);
}

/// Cache-aside on a key never seen before, with a source that answers at once.
fn bench_miss(criterion: &mut Criterion, runtime: &Runtime, name: &str, cache: &LayeredCache) {
    let next = AtomicU64::new(0);
    criterion.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let keys: Vec<String> = (0..iters)
                .map(|_| format!("miss:{}", next.fetch_add(1, Ordering::Relaxed)))
                .collect();
            runtime.block_on(async {
                let started = Instant::now();
                for (n, key) in keys.iter().enumerate() {
                    let fetched = cache
                        .cached(key, TTL, async { Ok::<_, Infallible>(wallet(n as u64)) })
                        .await;
                    black_box(fetched.unwrap());
                }
                started.elapsed()
            })
        })
    });
}

fn bench_l2(criterion: &mut Criterion, runtime: &Runtime, url: &str) {
    let prefix =
        KeyPrefix::new(format!("bench{}", uuid::Uuid::new_v4().simple()), "cache").unwrap();
    let redis = runtime
        .block_on(RedisAccessor::connect(url, prefix))
        .expect("TEST_REDIS_URL must point at a running Redis");
    let writer = runtime.block_on(LayeredCache::new(
        CacheConfig::default(),
        Some(redis.clone()),
        CancellationToken::new(),
    ));
    runtime.block_on(writer.set("warm", &wallet(2), TTL));
    // No L1 lifetime: every read misses L1 and is answered by Redis.
    let reader = runtime.block_on(LayeredCache::new(
        CacheConfig {
            l1_max_ttl: Duration::ZERO,
            ..CacheConfig::default()
        },
        Some(redis.clone()),
        CancellationToken::new(),
    ));
    criterion.bench_function("cache/l2_hit", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    black_box(reader.get::<Wallet>("warm").await.unwrap());
                }
                started.elapsed()
            })
        })
    });
    bench_miss(criterion, runtime, "cache/miss_l1_l2", &writer);
    let stats = runtime.block_on(reader.stats());
    assert_eq!(
        stats.l1.hits, 0,
        "the L2 benchmark must not be served by L1"
    );
    assert_eq!(stats.l2_unavailable, 0, "Redis failed during the benchmark");
    runtime.block_on(redis.delete_pattern("*")).unwrap();
}

/// Samples ranks 0..n with probability proportional to 1 / (rank + 1)^s.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(s);
                total
            })
            .collect();
        for p in &mut cdf {
            *p /= total;
        }
        Self { cdf }
    }

    fn sample(&self, rng: &mut impl Rng) -> usize {
        let u: f64 = rng.gen();
        self.cdf.partition_point(|&p| p < u).min(self.cdf.len() - 1)
    }
}

/// 10 000 keys, s = 1.0, L1 holding 1 000 entries: the share of requests
/// served without calling the source, after a warm-up.
fn zipf_hit_rate(runtime: &Runtime) {
    const KEYS: usize = 10_000;
    const CAPACITY: usize = 1_000;
    const WARM_UP: usize = 200_000;
    const REQUESTS: usize = 1_000_000;
    let zipf = Zipf::new(KEYS, 1.0);
    let cache = LayeredCache::l1_only(CacheConfig {
        l1_capacity: L1Capacity::Entries(CAPACITY as u64),
        ..CacheConfig::default()
    });
    let keys: Vec<String> = (0..KEYS).map(|rank| format!("zipf:{rank}")).collect();
    let mut rng = StdRng::seed_from_u64(7);
    let fetches = AtomicU64::new(0);
    let started = Instant::now();
    runtime.block_on(async {
        for request in 0..WARM_UP + REQUESTS {
            if request == WARM_UP {
                fetches.store(0, Ordering::Relaxed);
            }
            let rank = zipf.sample(&mut rng);
            let value = cache
                .cached(&keys[rank], TTL, async {
                    fetches.fetch_add(1, Ordering::Relaxed);
                    Ok::<_, Infallible>(rank)
                })
                .await;
            black_box(value.unwrap());
        }
    });
    let elapsed = started.elapsed();
    let hit_rate = 1.0 - fetches.load(Ordering::Relaxed) as f64 / REQUESTS as f64;
    let ideal = zipf.cdf[CAPACITY - 1];
    println!(
        "cache zipf hit rate: {:.1}% ({KEYS} keys, s = 1.0, L1 capacity {CAPACITY}, {REQUESTS} requests after {WARM_UP} warm-up; \
         ideal top-{CAPACITY} share {:.1}%; {:.0} ns/request)",
        hit_rate * 100.0,
        ideal * 100.0,
        elapsed.as_nanos() as f64 / (WARM_UP + REQUESTS) as f64,
    );
}
