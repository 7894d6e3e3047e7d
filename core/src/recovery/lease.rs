//! A time-limited lease so that one instance at a time runs the recovery
//! job, without a leader election.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use super::RecoveryError;
use crate::db::{Database, Filter, StoreError, Update};
use crate::redis::RedisAccessor;

/// The collection holding leases in store mode.
pub const LEASES: &str = "leases";

/// Deletes the lease only if this holder still owns it: after an expiry
/// another instance may hold it, and a blind DEL would free theirs.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

/// Extends the lease only if this holder still owns it.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0";

enum Backend {
    Redis(RedisAccessor),
    Store(Arc<Database>),
}

/// One holder's claim on a named lease. The lease expires by itself after
/// its TTL, so a holder that dies frees it without help.
pub(crate) struct Lease {
    backend: Backend,
    name: String,
    /// Unique per holder; only the holder with this token may renew or
    /// release.
    token: String,
    ttl: Duration,
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn redis_failed(command: &'static str) -> impl FnOnce(redis::RedisError) -> RecoveryError {
    move |source| RecoveryError::Redis(crate::redis::RedisError::Command { command, source })
}

impl Lease {
    pub(crate) fn redis(redis: RedisAccessor, name: &str, ttl: Duration) -> Self {
        Self::new(Backend::Redis(redis), name, ttl)
    }

    pub(crate) fn store(db: Arc<Database>, name: &str, ttl: Duration) -> Self {
        Self::new(Backend::Store(db), name, ttl)
    }

    fn new(backend: Backend, name: &str, ttl: Duration) -> Self {
        Self {
            backend,
            name: name.to_owned(),
            token: uuid::Uuid::new_v4().to_string(),
            ttl,
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes the lease if it is free (or expired); whether this holder now
    /// has it.
    pub(crate) async fn acquire(&self) -> Result<bool, RecoveryError> {
        match &self.backend {
            Backend::Redis(redis) => {
                let set: Option<String> = redis::cmd("SET")
                    .arg(redis.key(&self.name))
                    .arg(&self.token)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(self.ttl).max(1))
                    .query_async(&mut redis.connection())
                    .await
                    .map_err(redis_failed("SET NX"))?;
                Ok(set.is_some())
            }
            Backend::Store(db) => {
                let now = Utc::now().timestamp_millis();
                let expires_at = now.saturating_add(millis(self.ttl));
                let doc =
                    json!({ "_id": self.name, "holder": self.token, "expires_at": expires_at });
                let doc = match doc {
                    serde_json::Value::Object(doc) => doc,
                    _ => return Ok(false),
                };
                match db.insert(LEASES, doc).await {
                    Ok(()) => return Ok(true),
                    Err(StoreError::Duplicate { .. }) => {}
                    Err(err) => return Err(err.into()),
                }
                // Taken: only an expired lease may change hands.
                let expired = Filter::id(&self.name).lt("expires_at", now);
                let update = Update::new()
                    .set("holder", self.token.as_str())
                    .set("expires_at", expires_at);
                Ok(db.update_one(LEASES, &expired, &update).await?.is_some())
            }
        }
    }

    /// Extends the lease by its TTL; `false` when it was lost meanwhile.
    pub(crate) async fn renew(&self) -> Result<bool, RecoveryError> {
        match &self.backend {
            Backend::Redis(redis) => {
                let renewed: i64 = redis::cmd("EVAL")
                    .arg(RENEW)
                    .arg(1)
                    .arg(redis.key(&self.name))
                    .arg(&self.token)
                    .arg(millis(self.ttl).max(1))
                    .query_async(&mut redis.connection())
                    .await
                    .map_err(redis_failed("EVAL renew"))?;
                Ok(renewed == 1)
            }
            Backend::Store(db) => {
                let expires_at = Utc::now()
                    .timestamp_millis()
                    .saturating_add(millis(self.ttl));
                let mine = Filter::id(&self.name).eq("holder", self.token.as_str());
                let update = Update::new().set("expires_at", expires_at);
                Ok(db.update_one(LEASES, &mine, &update).await?.is_some())
            }
        }
    }

    /// Frees the lease if this holder still has it.
    pub(crate) async fn release(&self) -> Result<(), RecoveryError> {
        match &self.backend {
            Backend::Redis(redis) => {
                let _: i64 = redis::cmd("EVAL")
                    .arg(RELEASE)
                    .arg(1)
                    .arg(redis.key(&self.name))
                    .arg(&self.token)
                    .query_async(&mut redis.connection())
                    .await
                    .map_err(redis_failed("EVAL release"))?;
            }
            Backend::Store(db) => {
                let mine = Filter::id(&self.name).eq("holder", self.token.as_str());
                db.delete_one(LEASES, &mine).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{DbConfig, NamingStrategy, PoolSettings};

    async fn open() -> (Arc<Database>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let config = DbConfig {
            mongodb_uri: None,
            data_dir: dir.path().to_path_buf(),
            brand: "lease".to_owned(),
            tenant: "default".to_owned(),
            service: "test".to_owned(),
            naming: NamingStrategy::PerBrandService,
            embedded: crate::db::EmbeddedEngine::default(),
            pool: PoolSettings::default(),
        };
        (Arc::new(Database::open(&config).await.unwrap()), dir)
    }

    #[tokio::test]
    async fn one_holder_at_a_time_in_the_store() {
        let (db, _dir) = open().await;
        let a = Lease::store(db.clone(), "job", Duration::from_secs(60));
        let b = Lease::store(db.clone(), "job", Duration::from_secs(60));

        assert!(a.acquire().await.unwrap());
        assert!(!b.acquire().await.unwrap());
        assert!(a.renew().await.unwrap());
        assert!(!b.renew().await.unwrap());
        b.release().await.unwrap();
        assert!(!b.acquire().await.unwrap(), "b cannot free a's lease");
        a.release().await.unwrap();
        assert!(b.acquire().await.unwrap());
    }

    #[tokio::test]
    async fn an_expired_lease_changes_hands() {
        let (db, _dir) = open().await;
        let a = Lease::store(db.clone(), "job", Duration::from_millis(1));
        let b = Lease::store(db.clone(), "job", Duration::from_secs(60));
        assert!(a.acquire().await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;

        assert!(b.acquire().await.unwrap());
        assert!(!a.renew().await.unwrap());
    }
}
