//! The saga of bonus money: request a movement from the payment service,
//! finish the bonus's transition when the answer comes.
//!
//! Each step is one local transaction: the bonus's change and the
//! `bonus.payment.requested` (or the outcome event) are staged together, so
//! a request exists if and only if the bonus says it is waiting for it. The
//! answer is matched by `request_id`: a duplicate or stale answer finds no
//! bonus waiting for it and changes nothing. A refused credit is the
//! compensation path: nothing was credited, the bonus ends FAILED and gives
//! its one-per-user slot back.

use chrono::{DateTime, Utc};
use serde_json::Value;
use service_core::db::{
    from_document, to_document, Direction, Entity as _, Filter, FindOptions, StoreError,
    StoreResult, Transaction, ID,
};
use service_core::events::{
    BonusAwarded, BonusConverted, BonusExpired, BonusOperation, BonusPaymentRequested,
    BonusPaymentSettled, DomainEvent, Event,
};

use super::{event_error, save, stage, BonusService};
use crate::store::{BonusStatus, Movement, UserBonus, PROCESSED_EVENTS};

/// Bonuses of one user and currency looked at per wagering event.
const WAGERING_SCAN: usize = 100;

fn operation(movement: Movement) -> BonusOperation {
    match movement {
        Movement::Credit => BonusOperation::Credit,
        Movement::Convert => BonusOperation::Convert,
        Movement::Expire | Movement::Forfeit => BonusOperation::Debit,
    }
}

fn label(movement: Movement) -> &'static str {
    match movement {
        Movement::Credit => "credit",
        Movement::Convert => "convert",
        Movement::Expire => "expire",
        Movement::Forfeit => "forfeit",
    }
}

/// The payment request for the movement `bonus` is waiting for.
pub(super) fn request_event(bonus: &UserBonus) -> StoreResult<Event> {
    let (Some(movement), Some(request_id)) = (bonus.pending, bonus.pending_request_id.clone())
    else {
        return Err(StoreError::Invalid(format!(
            "bonus {} has no movement in flight",
            bonus.id
        )));
    };
    BonusPaymentRequested {
        request_id,
        operation: operation(movement),
        user_bonus_id: bonus.id.clone(),
        user_id: bonus.user_id.clone(),
        currency: bonus.currency.clone(),
        // Exact for a credit; an upper bound for a debit or conversion
        // (the payment service moves what is left of the bonus balance).
        amount: bonus.amount,
    }
    .to_event(&bonus.tenant_id, Some(&bonus.user_id))
    .map(|event| event.with_correlation_id(bonus.id.clone()))
    .map_err(event_error)
}

/// Marks `bonus` as waiting for `movement` under a fresh request id and
/// returns the request to stage with it. The credit's id is fixed
/// (`<id>:credit`): a bonus is credited at most once. A retried convert or
/// debit gets a new id, since the payment service answers a repeated id with
/// its first answer.
pub(super) fn begin(
    bonus: &mut UserBonus,
    movement: Movement,
    now: DateTime<Utc>,
) -> StoreResult<Event> {
    bonus.requests += 1;
    let request_id = match movement {
        Movement::Credit => format!("{}:credit", bonus.id),
        other => format!("{}:{}:{}", bonus.id, label(other), bonus.requests),
    };
    bonus.pending = Some(movement);
    bonus.pending_request_id = Some(request_id);
    bonus.pending_since_ms = Some(now.timestamp_millis());
    request_event(bonus)
}

fn clear_pending(bonus: &mut UserBonus) {
    bonus.pending = None;
    bonus.pending_request_id = None;
    bonus.pending_since_ms = None;
}

/// Records `event_id` as consumed inside `tx`: a second delivery fails with
/// [`StoreError::Duplicate`] on [`PROCESSED_EVENTS`] and changes nothing.
pub(super) async fn mark_processed(tx: &mut Transaction<'_>, event: &Event) -> StoreResult<()> {
    let doc = serde_json::json!({
        ID: format!("{}:{}", event.event_type, event.id),
        "event_type": event.event_type,
        "processed_at": Utc::now().timestamp_millis(),
    });
    let Value::Object(doc) = doc else {
        return Err(StoreError::Invalid("marker is not an object".to_owned()));
    };
    tx.insert(PROCESSED_EVENTS, doc).await
}

/// Whether `err` says the event was consumed before.
pub(super) fn already_processed(err: &StoreError) -> bool {
    matches!(err, StoreError::Duplicate { collection, .. } if collection == PROCESSED_EVENTS)
}

async fn load(tx: &mut Transaction<'_>, id: &str) -> StoreResult<Option<UserBonus>> {
    tx.get(UserBonus::COLLECTION, id)
        .await?
        .map(from_document)
        .transpose()
}

impl BonusService {
    /// Applies the payment service's answer. Only the bonus waiting for
    /// exactly this `request_id` changes; anything else (a duplicate, a
    /// stale answer, an unknown bonus) is acknowledged and ignored.
    #[tracing::instrument(skip_all, fields(user_bonus_id = %settled.user_bonus_id, request_id = %settled.request_id, succeeded = settled.succeeded), err)]
    pub async fn settle(&self, settled: &BonusPaymentSettled) -> StoreResult<()> {
        let outcome = self
            .transact(|tx| {
                Box::pin(async move {
                    let Some(mut bonus) = load(tx, &settled.user_bonus_id).await? else {
                        return Ok(None);
                    };
                    if bonus.pending_request_id.as_deref() != Some(settled.request_id.as_str()) {
                        return Ok(None);
                    }
                    let Some(movement) = bonus.pending else {
                        return Ok(None);
                    };
                    let now = Utc::now();
                    clear_pending(&mut bonus);
                    let mut events = Vec::new();
                    if settled.succeeded {
                        bonus.failure_reason = None;
                        match movement {
                            Movement::Credit => {
                                bonus.status = BonusStatus::Active;
                                events.push(awarded(&bonus)?);
                                if bonus.wagering_progress >= bonus.wagering_required {
                                    // Multiplier 0: nothing to wager, convert at once.
                                    events.push(begin(&mut bonus, Movement::Convert, now)?);
                                }
                            }
                            Movement::Convert => {
                                bonus.status = BonusStatus::Converted;
                                bonus.settled_amount = Some(settled.amount_applied);
                                events.push(
                                    BonusConverted {
                                        user_bonus_id: bonus.id.clone(),
                                        user_id: bonus.user_id.clone(),
                                        amount: settled.amount_applied,
                                        currency: bonus.currency.clone(),
                                    }
                                    .to_event(&bonus.tenant_id, Some(&bonus.user_id))
                                    .map_err(event_error)?,
                                );
                            }
                            Movement::Expire | Movement::Forfeit => {
                                bonus.status = if movement == Movement::Expire {
                                    BonusStatus::Expired
                                } else {
                                    BonusStatus::Forfeited
                                };
                                bonus.settled_amount = Some(settled.amount_applied);
                                events.push(
                                    BonusExpired {
                                        user_bonus_id: bonus.id.clone(),
                                        user_id: bonus.user_id.clone(),
                                        amount: settled.amount_applied,
                                        currency: bonus.currency.clone(),
                                        status: serde_json::to_value(bonus.status)
                                            .ok()
                                            .and_then(|v| v.as_str().map(str::to_owned))
                                            .unwrap_or_default(),
                                    }
                                    .to_event(&bonus.tenant_id, Some(&bonus.user_id))
                                    .map_err(event_error)?,
                                );
                            }
                        }
                    } else {
                        bonus.failure_reason = Some(
                            settled
                                .reason
                                .clone()
                                .unwrap_or_else(|| "refused by the payment service".to_owned()),
                        );
                        if movement == Movement::Credit {
                            // Compensated: nothing was credited. The slot is
                            // given back so the award may be tried again.
                            bonus.status = BonusStatus::Failed;
                            bonus.source_key = format!("failed:{}", bonus.id);
                        }
                        // A refused convert or debit leaves the bonus ACTIVE;
                        // the next wagering event or expiry run asks again.
                    }
                    save(tx, &mut bonus, now).await?;
                    for event in &events {
                        stage(tx, event).await?;
                    }
                    Ok(Some((movement, bonus.status)))
                })
            })
            .await?;
        match outcome {
            Some((movement, status)) => {
                tracing::info!(
                    movement = label(movement),
                    ?status,
                    "bonus movement settled"
                );
            }
            None => tracing::debug!("settlement matches no waiting bonus; ignored"),
        }
        Ok(())
    }

    /// Counts a debit of `amount` of the user's real balance toward the
    /// wagering of their ACTIVE bonuses in `currency`, oldest first (each
    /// takes what it still needs, the rest flows to the next). Bonuses whose
    /// requirement is met start converting; one whose conversion was refused
    /// earlier is asked again. Idempotent by `event`'s id.
    #[tracing::instrument(skip_all, fields(event_id = %event.id, %user_id, %currency, amount), err)]
    pub async fn wager(
        &self,
        event: &Event,
        user_id: &str,
        currency: &str,
        amount: i64,
    ) -> StoreResult<()> {
        let result = self
            .transact(|tx| {
                Box::pin(async move {
                    mark_processed(tx, event).await?;
                    let filter = Filter::all()
                        .eq("user_id", user_id)
                        .eq("currency", currency)
                        .eq("status", "ACTIVE");
                    let docs = tx
                        .find(
                            UserBonus::COLLECTION,
                            &filter,
                            &FindOptions::sorted(ID, Direction::Asc).limit(WAGERING_SCAN),
                        )
                        .await?;
                    let now = Utc::now();
                    let mut remaining = amount.max(0);
                    let mut converting = 0;
                    for doc in docs {
                        let mut bonus: UserBonus = from_document(doc)?;
                        if bonus.pending.is_some() {
                            continue;
                        }
                        let need = bonus
                            .wagering_required
                            .saturating_sub(bonus.wagering_progress);
                        let take = need.clamp(0, remaining);
                        bonus.wagering_progress += take;
                        remaining -= take;
                        let request = if bonus.wagering_progress >= bonus.wagering_required {
                            converting += 1;
                            Some(begin(&mut bonus, Movement::Convert, now)?)
                        } else {
                            None
                        };
                        if take == 0 && request.is_none() {
                            continue;
                        }
                        save(tx, &mut bonus, now).await?;
                        if let Some(request) = request {
                            stage(tx, &request).await?;
                        }
                    }
                    Ok(converting)
                })
            })
            .await;
        match result {
            Ok(converting) => {
                tracing::debug!(converting, "wagering counted");
                Ok(())
            }
            Err(err) if already_processed(&err) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Starts `movement` (expire or forfeit) on an ACTIVE bonus with
    /// nothing in flight; `Ok(None)` when the bonus is not in that state
    /// (anymore). Returns the bonus as stored after the change.
    pub(super) async fn start_debit(
        &self,
        id: &str,
        movement: Movement,
        only_if_expired: bool,
    ) -> StoreResult<Option<UserBonus>> {
        self.transact(|tx| {
            Box::pin(async move {
                let Some(mut bonus) = load(tx, id).await? else {
                    return Ok(None);
                };
                let now = Utc::now();
                if bonus.status != BonusStatus::Active
                    || bonus.pending.is_some()
                    || (only_if_expired && bonus.expires_at_ms > now.timestamp_millis())
                {
                    return Ok(None);
                }
                let request = begin(&mut bonus, movement, now)?;
                save(tx, &mut bonus, now).await?;
                stage(tx, &request).await?;
                Ok(Some(bonus))
            })
        })
        .await
    }

    /// Stages the request `id` is waiting for once more when it has waited
    /// since before `cutoff_ms` (its answer was lost); same request id, so
    /// the payment service applies it at most once. Whether it re-sent.
    pub(super) async fn resend(&self, id: &str, cutoff_ms: i64) -> StoreResult<bool> {
        self.transact(|tx| {
            Box::pin(async move {
                let Some(mut bonus) = load(tx, id).await? else {
                    return Ok(false);
                };
                if bonus.pending.is_none() || bonus.pending_since_ms.is_none_or(|t| t >= cutoff_ms)
                {
                    return Ok(false);
                }
                let now = Utc::now();
                let request = request_event(&bonus)?;
                bonus.pending_since_ms = Some(now.timestamp_millis());
                save(tx, &mut bonus, now).await?;
                stage(tx, &request).await?;
                Ok(true)
            })
        })
        .await
    }
}

/// The `bonus.awarded` event of a bonus just credited.
fn awarded(bonus: &UserBonus) -> StoreResult<Event> {
    BonusAwarded {
        user_bonus_id: bonus.id.clone(),
        user_id: bonus.user_id.clone(),
        template_code: bonus.template_code.clone(),
        amount: bonus.amount,
        currency: bonus.currency.clone(),
        wagering_required: bonus.wagering_required,
        expires_at: bonus.expires_at,
    }
    .to_event(&bonus.tenant_id, Some(&bonus.user_id))
    .map_err(event_error)
}

/// A stored document for a new bonus (used by the award path).
pub(super) fn document(bonus: &UserBonus) -> StoreResult<service_core::db::Document> {
    to_document(bonus)
}
