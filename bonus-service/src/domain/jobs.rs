//! The scheduled work, run by the core [`RecoveryJob`](service_core::recovery::RecoveryJob)
//! so that one instance at a time does it (the job's lease):
//!
//! * [`ExpiryHandler`]: ACTIVE bonuses past `expiresAt` with nothing in
//!   flight get a BONUS_DEBIT request and end EXPIRED once it settles.
//! * [`ResendHandler`]: movements whose answer has not come after the
//!   resend delay are requested again under the same request id (a lost
//!   message must not leave a bonus PENDING for ever; the payment service
//!   applies a request id at most once).
//!
//! Both find their work from the bonus records (`find_stuck`), so the
//! tracker's schedule stays empty and a run costs O(due bonuses).

use chrono::Utc;
use futures::future::BoxFuture;
use serde_json::json;
use service_core::db::{from_document, Direction, Entity as _, Filter, FindOptions};
use service_core::recovery::{
    HandlerError, OperationState, RecoveryHandler, RecoveryOutcome, TrackedOperation,
};

use super::BonusService;
use crate::store::{Movement, UserBonus};

/// Operation type of the expiry handler.
pub const EXPIRY_OPERATION: &str = "bonus.expiry";
/// Operation type of the resend handler.
pub const RESEND_OPERATION: &str = "bonus.payment.resend";

fn operation(op_type: &str, bonus: &UserBonus) -> TrackedOperation {
    let now = Utc::now();
    TrackedOperation {
        id: bonus.id.clone(),
        op_type: op_type.to_owned(),
        state: OperationState::InProgress,
        data: json!({ "userId": bonus.user_id }),
        heartbeat_ttl_ms: 0,
        started_at: bonus.updated_at,
        heartbeat_at: now,
        finished_at: None,
        error: None,
        recovered: false,
        stale_at: None,
    }
}

/// Expires ACTIVE bonuses past their `expiresAt`.
pub struct ExpiryHandler(pub BonusService);

impl RecoveryHandler for ExpiryHandler {
    fn op_type(&self) -> &str {
        EXPIRY_OPERATION
    }

    fn recover<'a>(
        &'a self,
        op: &'a TrackedOperation,
    ) -> BoxFuture<'a, Result<RecoveryOutcome, HandlerError>> {
        Box::pin(async move {
            match self.0.start_debit(&op.id, Movement::Expire, true).await? {
                Some(_) => tracing::info!(user_bonus_id = %op.id, "bonus expired, debit requested"),
                None => tracing::debug!(user_bonus_id = %op.id, "bonus no longer due for expiry"),
            }
            Ok(RecoveryOutcome::Recovered)
        })
    }

    fn find_stuck(&self) -> BoxFuture<'_, Result<Vec<TrackedOperation>, HandlerError>> {
        Box::pin(async move {
            let filter = Filter::all()
                .eq("status", "ACTIVE")
                .lt("expires_at_ms", Utc::now().timestamp_millis());
            let options = FindOptions::sorted("expires_at_ms", Direction::Asc)
                .limit(self.0.inner.batch_size.max(1));
            let docs = self
                .0
                .store()
                .db
                .find(UserBonus::COLLECTION, &filter, &options)
                .await?;
            let mut due = Vec::with_capacity(docs.len());
            for doc in docs {
                let bonus: UserBonus = from_document(doc)?;
                if bonus.pending.is_none() {
                    due.push(operation(EXPIRY_OPERATION, &bonus));
                }
            }
            Ok(due)
        })
    }
}

/// Re-sends payment requests whose answer is overdue.
pub struct ResendHandler(pub BonusService);

impl ResendHandler {
    fn cutoff_ms(&self) -> i64 {
        let delay = i64::try_from(self.0.inner.resend_after.as_millis()).unwrap_or(i64::MAX);
        Utc::now().timestamp_millis().saturating_sub(delay)
    }
}

impl RecoveryHandler for ResendHandler {
    fn op_type(&self) -> &str {
        RESEND_OPERATION
    }

    fn recover<'a>(
        &'a self,
        op: &'a TrackedOperation,
    ) -> BoxFuture<'a, Result<RecoveryOutcome, HandlerError>> {
        Box::pin(async move {
            if self.0.resend(&op.id, self.cutoff_ms()).await? {
                tracing::warn!(user_bonus_id = %op.id, "payment answer overdue, request sent again");
            }
            Ok(RecoveryOutcome::Recovered)
        })
    }

    fn find_stuck(&self) -> BoxFuture<'_, Result<Vec<TrackedOperation>, HandlerError>> {
        Box::pin(async move {
            let filter = Filter::all()
                .gt("pending_since_ms", 0)
                .lt("pending_since_ms", self.cutoff_ms());
            let options = FindOptions::sorted("pending_since_ms", Direction::Asc)
                .limit(self.0.inner.batch_size.max(1));
            let docs = self
                .0
                .store()
                .db
                .find(UserBonus::COLLECTION, &filter, &options)
                .await?;
            docs.into_iter()
                .map(|doc| {
                    from_document::<UserBonus>(doc)
                        .map(|bonus| operation(RESEND_OPERATION, &bonus))
                        .map_err(HandlerError::from)
                })
                .collect()
        })
    }
}
