//! Progressive lockout and operator status changes.
//!
//! The login throttle stops a burst (5 failures in 15 minutes by default);
//! each time it trips for an email, that trip is itself counted over 24
//! hours. The third trip of an existing account locks it (`LOCKED` with a
//! `locked_until`), for 30 minutes the first time and twice as long each
//! further time, up to a day. A successful sign-in after the lock has run
//! out, or an operator's `setUserStatus(ACTIVE)`, starts the growth again.

use std::sync::Arc;
use std::time::Duration;

use access_engine::Resource;
use chrono::Utc;
use serde_json::Value;
use service_core::db::{Filter, Update};
use service_core::resilience::AttemptCounter;
use service_core::{ApiError, ApiResult, RequestContext};

use super::AuthService;
use crate::codes;
use crate::store::{User, UserStatus};

/// When and for how long repeated bursts of failures lock an account.
#[derive(Clone, Debug)]
pub struct LockoutPolicy {
    /// The login throttle's limit: a failure that brings the count to this
    /// number is a burst.
    pub max_failures: u32,
    /// Counts bursts per email over the burst window (the counter's own
    /// window), shared through Redis like the throttle.
    pub bursts: Arc<AttemptCounter>,
    /// The burst that locks: the third by default.
    pub after_bursts: u32,
    /// The first lock's length.
    pub base: Duration,
    /// The longest lock.
    pub max: Duration,
}

impl LockoutPolicy {
    /// How long the lock number `lock_count + 1` lasts: `base · 2^lock_count`,
    /// at most `max`.
    pub fn lock_length(&self, lock_count: u32) -> Duration {
        let factor = 1u32.checked_shl(lock_count.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

fn status_value(status: UserStatus) -> Value {
    serde_json::to_value(status).unwrap_or(Value::Null)
}

impl AuthService {
    /// The login throttle just tripped for `email`: counts the burst and,
    /// at the configured one, locks the account (if there is one). Unknown
    /// emails are counted the same way, so nothing here depends on whether
    /// the account exists until the very write.
    pub(super) async fn burst_tripped(&self, email: &str, user: Option<&User>) -> ApiResult<()> {
        let bursts = self.lockout.bursts.record_failure(email).await.count;
        if bursts < self.lockout.after_bursts {
            return Ok(());
        }
        let Some(user) = user else { return Ok(()) };
        let now = Utc::now();
        let lockable = match user.status_at(now) {
            UserStatus::Active => true,
            // A running timed lock grows; an operator's lock or a disabled
            // account is left as the operator set it.
            UserStatus::Locked => user.locked_until.is_some(),
            UserStatus::Disabled => false,
        };
        if !lockable {
            return Ok(());
        }
        let length = self.lockout.lock_length(user.lock_count);
        let until = now + chrono::Duration::from_std(length).unwrap_or(chrono::Duration::MAX);
        let update = Update::new()
            .set("status", status_value(UserStatus::Locked))
            .set(
                "locked_until",
                serde_json::to_value(until).unwrap_or(Value::Null),
            )
            .inc("lock_count", 1)
            .inc("version", 1);
        // On the version read, so two instances tripping at once lock once.
        let precondition = Filter::all().eq("version", user.version);
        if self
            .store
            .users
            .update(&user.id, precondition, &update)
            .await?
            .is_some()
        {
            tracing::warn!(
                user_id = %user.id,
                locked_until = %until,
                lock_number = user.lock_count + 1,
                "account locked after repeated bursts of failed sign-ins"
            );
        }
        Ok(())
    }

    /// After a successful sign-in: a lock that ran out is cleared and the
    /// growth starts again.
    pub(super) async fn signed_in_after_lock(&self, user: &User) -> ApiResult<()> {
        if user.status == UserStatus::Active && user.lock_count == 0 {
            return Ok(());
        }
        let update = Update::new()
            .set("status", status_value(UserStatus::Active))
            .set("locked_until", Value::Null)
            .set("lock_count", 0)
            .inc("version", 1);
        let precondition = Filter::all().eq("version", user.version);
        self.store
            .users
            .update(&user.id, precondition, &update)
            .await?;
        self.lockout.bursts.reset(&user.email).await;
        Ok(())
    }

    /// Sets user `user_id`'s status; needs `user:update:*` or
    /// `role:assign:*`. `ACTIVE` lifts any lock and forgets the user's
    /// failed sign-ins; `LOCKED` (until an operator unlocks) and `DISABLED`
    /// end every session of the user at once.
    #[tracing::instrument(skip_all, fields(user_id = %user_id))]
    pub async fn set_user_status(
        &self,
        ctx: &RequestContext,
        user_id: &str,
        status: UserStatus,
    ) -> ApiResult<User> {
        let principal = self.signed_in(ctx).await?;
        let target = Resource {
            id: None,
            owner: None,
            tenant: Some(&principal.tenant_id),
        };
        if !ctx.can("role", "assign", target) {
            ctx.require("user", "update", target)?;
        }
        if user_id == principal.user_id && status != UserStatus::Active {
            return Err(ApiError::validation(
                "userId",
                "you cannot lock or disable your own account",
            ));
        }
        let user = self
            .store
            .users
            .get(user_id)
            .await?
            // Another tenant's user is as good as unknown.
            .filter(|u| ctx.same_tenant(&u.tenant_id))
            .ok_or_else(|| ApiError::new(codes::USER_NOT_FOUND, "User not found"))?;
        let mut update = Update::new()
            .set("status", status_value(status))
            .set("locked_until", Value::Null)
            .inc("version", 1);
        if status == UserStatus::Active {
            update = update.set("lock_count", 0);
        }
        let updated = self
            .store
            .users
            .update(&user.id, Filter::all(), &update)
            .await?
            .ok_or_else(|| ApiError::new(codes::USER_NOT_FOUND, "User not found"))?;
        if status == UserStatus::Active {
            self.throttle.reset(&user.email).await;
            self.lockout.bursts.reset(&user.email).await;
        } else {
            self.sessions.revoke_user_tokens(&user.id).await?;
            let ended = self.sessions.revoke_all(&user.id, None).await?;
            tracing::info!(sessions_ended = ended, "sessions ended by a status change");
        }
        tracing::info!(
            by = %principal.user_id,
            status = ?status,
            "user status set"
        );
        Ok(updated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_double_up_to_the_maximum() {
        let policy = LockoutPolicy {
            max_failures: 5,
            bursts: Arc::new(AttemptCounter::new("t", 3, Duration::from_secs(1), None)),
            after_bursts: 3,
            base: Duration::from_secs(1800),
            max: Duration::from_secs(86_400),
        };
        let lengths: Vec<u64> = (0..8).map(|n| policy.lock_length(n).as_secs()).collect();
        assert_eq!(
            lengths,
            [1800, 3600, 7200, 14_400, 28_800, 57_600, 86_400, 86_400]
        );
        assert_eq!(policy.lock_length(u32::MAX).as_secs(), 86_400);
    }
}
