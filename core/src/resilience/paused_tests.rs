//! The resilience policies on tokio's paused clock, through their public API.
//!
//! NOT COMPILED YET: `tokio::test(start_paused = true)` needs tokio's
//! `test-util` feature, which `core/Cargo.toml` does not enable. To turn
//! these tests on, add to `[dev-dependencies]` of `core/Cargo.toml`
//!
//! ```toml
//! tokio = { workspace = true, features = ["test-util"] }
//! ```
//!
//! and declare the module in `resilience/mod.rs`:
//! `#[cfg(test)] mod paused_tests;`. The unit tests next to each policy
//! already cover the same behaviour with explicit instants; these add the
//! real-clock paths (`Instant::now()`, `tokio::time::sleep`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::resilience::*;
use crate::ApiError;

#[tokio::test(start_paused = true)]
async fn retry_sleeps_the_documented_schedule() {
    let policy = RetryPolicy::standard().with_jitter(false);
    let start = Instant::now();
    let times = std::sync::Mutex::new(Vec::new());
    let r: Result<(), ApiError> = policy
        .run(|_| {
            times.lock().unwrap().push(start.elapsed());
            async { Err(ApiError::unavailable("x")) }
        })
        .await;
    assert!(r.is_err());
    let ms = Duration::from_millis;
    assert_eq!(
        *times.lock().unwrap(),
        [ms(0), ms(200), ms(600), ms(1400), ms(3000)]
    );
}

#[tokio::test(start_paused = true)]
async fn retry_with_jitter_is_bounded() {
    let policy = RetryPolicy::fast();
    let start = Instant::now();
    let _: Result<(), ApiError> = policy
        .run(|_| async { Err(ApiError::unavailable("x")) })
        .await;
    let total = start.elapsed();
    // fast: pauses 50 and 100 ms, each in [d/2, d]
    assert!(
        total >= Duration::from_millis(75) && total <= Duration::from_millis(150),
        "{total:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn breaker_full_cycle_on_the_real_clock() {
    let b = CircuitBreaker::new(
        "dep",
        BreakerConfig {
            failure_threshold: 2,
            rolling_window: Duration::from_secs(10),
            reset_timeout: Duration::from_secs(5),
            half_open_max_probes: 1,
        },
    );
    let _ = b.call(async { Err::<(), _>("e") }).await;
    tokio::time::advance(Duration::from_secs(11)).await;
    let _ = b.call(async { Err::<(), _>("e") }).await;
    assert_eq!(b.state(), BreakerState::Closed, "first failure aged out");
    let _ = b.call(async { Err::<(), _>("e") }).await;
    assert_eq!(b.state(), BreakerState::Open);
    let calls = AtomicU32::new(0);
    let r = b
        .call(async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, &str>(())
        })
        .await;
    assert!(matches!(r, Err(BreakerError::Open { .. })));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(b.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
    // probe that takes 1 s; concurrent caller rejected
    let b2 = b.clone();
    let probe = tokio::spawn(async move {
        b2.call(async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Err::<(), _>("still down")
        })
        .await
    });
    tokio::task::yield_now().await;
    assert!(matches!(
        b.call(async { Ok::<_, &str>(()) }).await,
        Err(BreakerError::Open { .. })
    ));
    assert!(matches!(
        probe.await.unwrap(),
        Err(BreakerError::Inner("still down"))
    ));
    assert_eq!(b.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(b.call(async { Ok::<_, &str>(()) }).await.is_ok());
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn bulkhead_waits_up_to_max_wait_then_rejects() {
    let bh = Bulkhead::new("dep", 1, Some(Duration::from_millis(100)));
    let h = bh.clone();
    let holder =
        tokio::spawn(async move { h.run(tokio::time::sleep(Duration::from_secs(1))).await });
    tokio::task::yield_now().await;
    let start = Instant::now();
    assert!(bh.run(async {}).await.is_err());
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    holder.await.unwrap().unwrap();
    // a slot that frees within the budget is taken
    let h = bh.clone();
    let holder =
        tokio::spawn(async move { h.run(tokio::time::sleep(Duration::from_millis(50))).await });
    tokio::task::yield_now().await;
    assert_eq!(bh.run(async { 3 }).await, Ok(3));
    holder.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn bulkhead_100_tasks_with_time() {
    let bh = Bulkhead::new("dep", 5, Some(Duration::from_secs(60)));
    let peak = Arc::new(AtomicU32::new(0));
    let cur = Arc::new(AtomicU32::new(0));
    let mut tasks = vec![];
    for _ in 0..100 {
        let (bh, peak, cur) = (bh.clone(), peak.clone(), cur.clone());
        tasks.push(tokio::spawn(async move {
            bh.run(async {
                let n = cur.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                cur.fetch_sub(1, Ordering::SeqCst);
            })
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn timeout_fires_at_its_deadline() {
    let start = Instant::now();
    let r = with_timeout(
        Duration::from_secs(2),
        tokio::time::sleep(Duration::from_secs(3)),
    )
    .await;
    assert_eq!(
        r,
        Err(TimeoutError {
            after: Duration::from_secs(2)
        })
    );
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(
        with_timeout(
            Duration::from_secs(2),
            tokio::time::sleep(Duration::from_secs(1))
        )
        .await,
        Ok(())
    );
}

#[tokio::test(start_paused = true)]
async fn rate_limiter_on_the_real_clock() {
    let l = KeyedRateLimiter::new(2, 1.0);
    assert!(l.check("a").is_ok());
    assert!(l.check("a").is_ok());
    assert_eq!(l.check("a"), Err(RetryAfter(Duration::from_secs(1))));
    assert!(l.check("b").is_ok());
    tokio::time::advance(Duration::from_millis(999)).await;
    assert_eq!(l.check("a"), Err(RetryAfter(Duration::from_millis(1))));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(l.check("a").is_ok());
    let mut bucket = TokenBucket::new(1, 2.0);
    assert!(bucket.try_take().is_ok());
    assert_eq!(
        bucket.try_take(),
        Err(RetryAfter(Duration::from_millis(500)))
    );
    tokio::time::advance(Duration::from_millis(500)).await;
    assert!(bucket.try_take().is_ok());
}
