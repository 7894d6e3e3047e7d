//! Multi-level cache: in-process L1 (moka) → Redis L2 → the source.
//!
//! L1 answers in well under a microsecond but is per instance; L2 is shared
//! by all instances and survives restarts; the source is the truth. The
//! cache keeps the levels consistent enough to be useful (write-through on
//! `set`, L2 hits promoted to L1, cross-instance invalidation over pub/sub)
//! and never lets Redis trouble turn into errors: with Redis down or not
//! configured, it serves from L1 and the source.
//!
//! ```no_run
//! # async fn demo(redis: Option<service_core::redis::RedisAccessor>) -> Result<(), std::io::Error> {
//! use std::time::Duration;
//! use service_core::cache::{CacheConfig, CacheKey, LayeredCache};
//! use tokio_util::sync::CancellationToken;
//!
//! let cache = LayeredCache::new(CacheConfig::default(), redis, CancellationToken::new()).await;
//! let key = CacheKey::one("user", 42);
//! let name: String = cache
//!     .cached(&key, Duration::from_secs(300), async { Ok::<_, std::io::Error>("Ada".to_owned()) })
//!     .await?;
//! cache.delete_pattern(&CacheKey::pattern("user")).await;
//! # Ok(()) }
//! ```

mod invalidation;
mod key;
mod l2;
mod layered;
mod single_flight;
mod stats;

pub use key::CacheKey;
pub use layered::{CacheConfig, L1Capacity, LayeredCache, WarmReport};
pub use stats::{CacheStats, LevelStats};
