//! Redis access for services.
//!
//! Every service talks to Redis through one [`RedisAccessor`], so that key
//! prefixing (`{brand}:{service}:{key}`), JSON encoding, time limits and
//! read/write routing are decided once instead of at every call site. Where
//! Redis lives comes from [`RedisUrls`] (per purpose, falling back to
//! `REDIS_URL`) and [`RedisTopology`] (standalone, Sentinel, read replicas);
//! with no URL at all a service runs without Redis.

mod accessor;
mod config;
mod error;
pub(crate) mod glob;
mod live;

pub(crate) use accessor::set_with_ttl;
pub use accessor::{PubSubMessage, RedisAccessor};
pub use config::{KeyPrefix, RedisOptions, RedisTopology, RedisUrl, RedisUrls};
pub use error::RedisError;
pub use live::LiveFeed;
