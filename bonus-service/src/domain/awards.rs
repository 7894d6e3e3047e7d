//! Giving bonuses: claims by code, operator awards, automatic awards, and
//! the owner's view (listing, forfeit).

use chrono::{Duration as Days, Utc};
use service_core::db::{
    from_document, Connection, Direction, Entity as _, Filter, PageArgs, StoreError, StoreResult,
    Transaction, ID,
};
use service_core::events::Event;
use service_core::{ApiError, ApiResult, RequestContext};

use super::money::{wagering_required, Amount, MAX_AMOUNT};
use super::movements::{already_processed, begin, document, mark_processed};
use super::{any, api_store_error, own, stage, BonusService};
use crate::codes;
use crate::store::{BonusKind, BonusStatus, BonusTemplate, Movement, UserBonus, AWARD_INDEX, ONCE};

/// One page of a user's bonuses and how many they have in all.
pub struct BonusPage {
    /// The page, newest first.
    pub connection: Connection<UserBonus>,
    /// The user's bonuses in all.
    pub total_count: u64,
}

/// Longest user id accepted from a client.
const USER_ID_MAX: usize = 128;

fn already_claimed() -> ApiError {
    ApiError::new(
        codes::ALREADY_CLAIMED,
        "This bonus has already been claimed",
    )
}

fn template_not_found() -> ApiError {
    ApiError::new(codes::TEMPLATE_NOT_FOUND, "No active bonus has this code")
}

/// The amount a fixed-amount template awards: its amount, capped by `maxAmount`.
fn fixed_award(template: &BonusTemplate) -> Option<Amount> {
    let amount = template.fixed_amount?;
    let capped = template.max_amount.map_or(amount, |cap| amount.min(cap));
    Amount::new(capped.min(MAX_AMOUNT))
}

/// A new PENDING bonus of `template` for `user_id`, waiting for its credit.
fn new_bonus(
    template: &BonusTemplate,
    user_id: &str,
    tenant_id: &str,
    amount: Amount,
    source_key: String,
) -> StoreResult<(UserBonus, Event)> {
    let now = Utc::now();
    let expires_at = now + Days::days(i64::from(template.valid_days));
    let mut bonus = UserBonus {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: user_id.to_owned(),
        tenant_id: tenant_id.to_owned(),
        template_id: template.id.clone(),
        template_code: template.code.clone(),
        kind: template.kind,
        amount: amount.get(),
        currency: template.currency.clone(),
        status: BonusStatus::Pending,
        wagering_required: wagering_required(amount, template.wagering_multiplier),
        wagering_progress: 0,
        expires_at,
        expires_at_ms: expires_at.timestamp_millis(),
        created_at: now,
        updated_at: now,
        source_key,
        pending: None,
        pending_request_id: None,
        pending_since_ms: None,
        requests: 0,
        settled_amount: None,
        failure_reason: None,
        version: 0,
    };
    let request = begin(&mut bonus, Movement::Credit, now)?;
    Ok((bonus, request))
}

/// Inserts `bonus` and stages its credit request, unless the user already
/// has this template for this source: then `Ok(false)` and nothing changes.
async fn insert_award(
    tx: &mut Transaction<'_>,
    bonus: &UserBonus,
    request: &Event,
) -> StoreResult<bool> {
    let existing = Filter::all()
        .eq("user_id", bonus.user_id.as_str())
        .eq("template_id", bonus.template_id.as_str())
        .eq("source_key", bonus.source_key.as_str());
    if tx
        .find_one(UserBonus::COLLECTION, &existing)
        .await?
        .is_some()
    {
        return Ok(false);
    }
    tx.insert(UserBonus::COLLECTION, document(bonus)?).await?;
    stage(tx, request).await?;
    Ok(true)
}

fn is_award_duplicate(err: &StoreError) -> bool {
    matches!(err, StoreError::Duplicate { index, .. } if index == AWARD_INDEX)
}

impl BonusService {
    /// The caller claims the bonus with `code` for themself (needs
    /// `bonus:claim:own`).
    #[tracing::instrument(skip_all, fields(%code), err)]
    pub async fn claim(&self, ctx: &RequestContext, code: &str) -> ApiResult<UserBonus> {
        let principal = ctx.user()?;
        ctx.require("bonus", "claim", own(principal))?;
        self.award_by_code(&principal.user_id, &principal.tenant_id, code)
            .await
    }

    /// An operator awards the bonus with `code` to `user_id` (needs
    /// `bonus:award:*`).
    #[tracing::instrument(skip_all, fields(%user_id, %code), err)]
    pub async fn award(
        &self,
        ctx: &RequestContext,
        user_id: &str,
        code: &str,
    ) -> ApiResult<UserBonus> {
        let principal = ctx.user()?;
        ctx.require("bonus", "award", any(principal))?;
        let user_id = user_id.trim();
        if user_id.is_empty()
            || user_id.len() > USER_ID_MAX
            || !user_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        {
            return Err(ApiError::validation("userId", "is not a valid user id"));
        }
        self.award_by_code(user_id, &principal.tenant_id, code)
            .await
    }

    /// Awards a WELCOME or MANUAL template by code: one per user.
    async fn award_by_code(
        &self,
        user_id: &str,
        tenant_id: &str,
        code: &str,
    ) -> ApiResult<UserBonus> {
        let code = code.trim().to_ascii_uppercase();
        let template = self
            .store()
            .templates
            .find_one(&Filter::all().eq("code", code.as_str()))
            .await
            .map_err(api_store_error)?
            .filter(|t| t.active)
            .ok_or_else(template_not_found)?;
        if template.kind == BonusKind::DepositMatch {
            return Err(ApiError::new(
                codes::NOT_ELIGIBLE,
                "This bonus is awarded on deposits and cannot be claimed",
            ));
        }
        let amount = fixed_award(&template).ok_or_else(|| {
            ApiError::new(codes::NOT_ELIGIBLE, "This bonus has no amount to award")
        })?;
        let (bonus, request) = new_bonus(&template, user_id, tenant_id, amount, ONCE.to_owned())
            .map_err(api_store_error)?;
        let inserted = self
            .transact(|tx| {
                let (bonus, request) = (&bonus, &request);
                Box::pin(async move { insert_award(tx, bonus, request).await })
            })
            .await;
        match inserted {
            Ok(true) => {
                tracing::info!(user_bonus_id = %bonus.id, "bonus awarded, credit requested");
                Ok(bonus)
            }
            Ok(false) => Err(already_claimed()),
            Err(err) if is_award_duplicate(&err) => Err(already_claimed()),
            Err(err) => Err(api_store_error(err)),
        }
    }

    /// Awards every active WELCOME template to a newly registered user,
    /// once per user however often `event` is delivered.
    pub async fn award_welcome(&self, event: &Event, user_id: &str) -> StoreResult<usize> {
        let templates = self.active_templates(BonusKind::Welcome, None).await?;
        let awards = templates
            .iter()
            .filter_map(|t| {
                fixed_award(t)
                    .map(|amount| new_bonus(t, user_id, &event.tenant_id, amount, ONCE.to_owned()))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        self.award_for_event(event, awards).await
    }

    /// Awards every active DEPOSIT_MATCH template in the deposit's currency:
    /// `percent` of the deposit, rounded down, capped by `maxAmount`
    /// (nothing when that is 0). Once per deposit.
    pub async fn award_deposit_match(
        &self,
        event: &Event,
        user_id: &str,
        currency: &str,
        deposit: i64,
        transaction_id: &str,
    ) -> StoreResult<usize> {
        let templates = self
            .active_templates(BonusKind::DepositMatch, Some(currency))
            .await?;
        let awards = templates
            .iter()
            .filter_map(|t| {
                let percent = i64::from(t.percent?);
                super::money::percent_of(deposit, percent, t.max_amount).map(|amount| {
                    new_bonus(
                        t,
                        user_id,
                        &event.tenant_id,
                        amount,
                        format!("deposit:{transaction_id}"),
                    )
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        self.award_for_event(event, awards).await
    }

    /// Inserts `awards` with the event's processed marker in one
    /// transaction; how many were new.
    async fn award_for_event(
        &self,
        event: &Event,
        awards: Vec<(UserBonus, Event)>,
    ) -> StoreResult<usize> {
        let result = self
            .transact(|tx| {
                let awards = &awards;
                Box::pin(async move {
                    mark_processed(tx, event).await?;
                    let mut inserted = 0;
                    for (bonus, request) in awards {
                        if insert_award(tx, bonus, request).await? {
                            inserted += 1;
                        }
                    }
                    Ok(inserted)
                })
            })
            .await;
        match result {
            Ok(inserted) => {
                tracing::info!(event_id = %event.id, inserted, "automatic bonuses awarded");
                Ok(inserted)
            }
            Err(err) if already_processed(&err) || is_award_duplicate(&err) => Ok(0),
            Err(err) => Err(err),
        }
    }

    /// Gives up an ACTIVE bonus: what remains of it is debited (BONUS_DEBIT)
    /// and, once the payment service confirms, it is FORFEITED. For its
    /// owner or a holder of `bonus:award:*`. Forfeiting twice returns the
    /// bonus as it stands; a bonus not ACTIVE, or busy converting, is
    /// `MSBonusNotEligible`.
    #[tracing::instrument(skip_all, fields(user_bonus_id = %id), err)]
    pub async fn forfeit(&self, ctx: &RequestContext, id: &str) -> ApiResult<UserBonus> {
        let principal = ctx.user()?;
        let bonus = self
            .store()
            .bonuses
            .get(id)
            .await
            .map_err(api_store_error)?;
        let Some(bonus) = bonus else {
            return Err(ApiError::not_found("bonus"));
        };
        // Someone else's bonus is "not found" unless the caller may award
        // (and so forfeit) anyone's: no answer tells that an id exists.
        if !ctx.is_owner(&bonus.user_id)
            && (!ctx.same_tenant(&bonus.tenant_id) || !ctx.can("bonus", "award", any(principal)))
        {
            return Err(ApiError::not_found("bonus"));
        }
        if bonus.status == BonusStatus::Forfeited || bonus.pending == Some(Movement::Forfeit) {
            return Ok(bonus);
        }
        match self
            .start_debit(id, Movement::Forfeit, false)
            .await
            .map_err(api_store_error)?
        {
            Some(bonus) => {
                tracing::info!("bonus forfeit requested");
                Ok(bonus)
            }
            None => Err(ApiError::new(
                codes::NOT_ELIGIBLE,
                "Only an active bonus with nothing in progress can be forfeited",
            )),
        }
    }

    /// The caller's bonuses, newest first (needs `bonus:read:own`).
    pub async fn my_bonuses(&self, ctx: &RequestContext, args: PageArgs) -> ApiResult<BonusPage> {
        let principal = ctx.user()?;
        ctx.require("bonus", "read", own(principal))?;
        let query = args.validate()?;
        let filter = Filter::all().eq("user_id", principal.user_id.as_str());
        let connection = self
            .store()
            .bonuses
            .page(&filter, ID, Direction::Desc, &query)
            .await
            .map_err(api_store_error)?;
        let total_count = self
            .store()
            .bonuses
            .count(&filter)
            .await
            .map_err(api_store_error)?;
        Ok(BonusPage {
            connection,
            total_count,
        })
    }

    /// One bonus, for its owner or a holder of `bonus:read:*` in its tenant;
    /// `None` when it does not exist, belongs to another tenant, or is
    /// someone else's and the caller may not read it: the answer never
    /// tells a caller that another user's id exists.
    pub async fn bonus(&self, ctx: &RequestContext, id: &str) -> ApiResult<Option<UserBonus>> {
        let principal = ctx.user()?;
        let Some(bonus) = self
            .store()
            .bonuses
            .get(id)
            .await
            .map_err(api_store_error)?
        else {
            return Ok(None);
        };
        if ctx.is_owner(&bonus.user_id) {
            ctx.require("bonus", "read", own(principal))?;
            return Ok(Some(bonus));
        }
        if !ctx.same_tenant(&bonus.tenant_id) {
            return Ok(None);
        }
        Ok(ctx.can("bonus", "read", any(principal)).then_some(bonus))
    }

    /// Every bonus of `user_id` (newest first, at most 100), for tests and
    /// operators' tools that work below the API.
    pub async fn bonuses_of(&self, user_id: &str) -> StoreResult<Vec<UserBonus>> {
        let docs = self
            .store()
            .db
            .find(
                UserBonus::COLLECTION,
                &Filter::all().eq("user_id", user_id),
                &service_core::db::FindOptions::sorted(ID, Direction::Desc).limit(100),
            )
            .await?;
        docs.into_iter().map(from_document).collect()
    }
}
