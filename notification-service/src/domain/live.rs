//! The live feed behind `notificationReceived`: every IN_APP notification,
//! fanned out to the subscribers of every instance (core's
//! [`LiveFeed`](service_core::redis::LiveFeed), over Redis pub/sub when
//! `REDIS_PUBSUB_URL`/`REDIS_URL` is set).

use service_core::redis::RedisAccessor;

use crate::store::Notification;

/// Fan-out of new notifications. Cheap to clone.
pub type LiveFeed = service_core::redis::LiveFeed<Notification>;

/// The Redis channel (under the service prefix) notifications cross on.
const CHANNEL: &str = "notifications:live";

/// The feed, across instances when `redis` is given.
pub fn live_feed(redis: Option<RedisAccessor>) -> LiveFeed {
    LiveFeed::new(CHANNEL, redis)
}
