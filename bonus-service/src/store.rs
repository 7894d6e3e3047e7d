//! What the service stores: bonus templates, user bonuses and the ids of
//! the events it has consumed, with the indexes they need.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use service_core::db::{Database, Entity, IndexSpec, Repository, StoreResult};
use service_core::events::Outbox;

/// Unique index on the template code, reported when a code is taken.
pub const TEMPLATE_CODE_INDEX: &str = "bonus_templates_code_unique";
/// Unique index on `(user_id, template_id, source_key)`: one award per
/// source (`once` for one-per-user templates, the deposit for a match).
pub const AWARD_INDEX: &str = "user_bonuses_award_unique";
/// Ids of consumed events, written in the transaction of their effect.
pub const PROCESSED_EVENTS: &str = "bonus_processed_events";
/// The `source_key` of a template a user may receive only once.
pub const ONCE: &str = "once";

/// What kind of bonus a template gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[graphql(name = "BonusKind")]
pub enum BonusKind {
    /// A fixed amount on registration (or claimed by code), once per user.
    Welcome,
    /// A percentage of each deposit in the template's currency, capped.
    DepositMatch,
    /// A fixed amount claimed by code or awarded by an operator, once per user.
    Manual,
}

/// Where a user bonus stands.
///
/// The contract's values are `ACTIVE | CONVERTED | EXPIRED | FORFEITED`;
/// `PENDING` (the credit is requested, not yet confirmed) and `FAILED` (the
/// credit was refused: nothing was credited) are this service's additions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[graphql(name = "BonusStatus")]
pub enum BonusStatus {
    /// Credited; wagering counts toward conversion.
    Active,
    /// Wagering met; the bonus balance moved to the real balance.
    Converted,
    /// Ran out of time; what remained was debited.
    Expired,
    /// Given up (by its owner or an operator); what remained was debited.
    Forfeited,
    /// Awarded, waiting for the payment service to confirm the credit.
    Pending,
    /// The payment service refused the credit; nothing was credited.
    Failed,
}

/// A money movement requested from the payment service and not yet settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[graphql(name = "BonusMovement")]
pub enum Movement {
    /// BONUS_CREDIT of the awarded amount; success makes the bonus ACTIVE.
    Credit,
    /// BONUS_CONVERT after wagering; success makes it CONVERTED.
    Convert,
    /// BONUS_DEBIT of what remains at expiry; success makes it EXPIRED.
    Expire,
    /// BONUS_DEBIT of what remains on forfeit; success makes it FORFEITED.
    Forfeit,
}

/// A bonus definition.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BonusTemplate {
    /// UUID v7.
    #[serde(rename = "_id")]
    pub id: String,
    /// Upper-case slug, unique through [`TEMPLATE_CODE_INDEX`].
    pub code: String,
    /// Display name.
    pub name: String,
    /// What kind of bonus it gives.
    pub kind: BonusKind,
    /// ISO 4217 code.
    pub currency: String,
    /// The amount of a WELCOME or MANUAL bonus (positive, JSON-safe).
    pub fixed_amount: Option<i64>,
    /// The match of a DEPOSIT_MATCH bonus, 1..=1000 percent.
    pub percent: Option<i32>,
    /// The most one award of this template may be.
    pub max_amount: Option<i64>,
    /// Turnover needed = amount × this (0 converts at once).
    pub wagering_multiplier: i32,
    /// Days from the award to expiry, at least 1.
    pub valid_days: i32,
    /// Inactive templates are neither awarded nor listed to users.
    pub active: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl Entity for BonusTemplate {
    const COLLECTION: &'static str = "bonus_templates";
}

/// A bonus given to one user.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserBonus {
    /// UUID v7, so ids sort by creation time (the `myBonuses` order).
    #[serde(rename = "_id")]
    pub id: String,
    /// The owner.
    pub user_id: String,
    /// The owner's tenant.
    pub tenant_id: String,
    /// The template it came from.
    pub template_id: String,
    /// That template's code.
    pub template_code: String,
    /// That template's kind.
    pub kind: BonusKind,
    /// Minor units awarded (> 0).
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Where it stands.
    pub status: BonusStatus,
    /// Turnover needed before it converts.
    pub wagering_required: i64,
    /// Turnover counted so far (never above `wagering_required`).
    pub wagering_progress: i64,
    /// When it expires (if still ACTIVE then).
    pub expires_at: DateTime<Utc>,
    /// `expires_at` in epoch milliseconds, the indexed form the expiry job
    /// compares (date strings do not compare reliably).
    pub expires_at_ms: i64,
    /// When it was awarded.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Why it was awarded: [`ONCE`] for one-per-user templates, the source
    /// event for a deposit match; unique per user and template through
    /// [`AWARD_INDEX`]. A FAILED bonus gives its key up (`failed:<id>`), so
    /// the award may be tried again.
    pub source_key: String,
    /// The movement requested and not yet settled, if any; at most one at a
    /// time.
    pub pending: Option<Movement>,
    /// The id of that request (the payment service's idempotency key).
    pub pending_request_id: Option<String>,
    /// When that request was staged, in epoch milliseconds (for re-sending
    /// requests whose answer never came).
    pub pending_since_ms: Option<i64>,
    /// Requests made so far; a retried convert or debit gets a fresh id.
    pub requests: i64,
    /// What the last settlement moved (the converted or debited amount).
    pub settled_amount: Option<i64>,
    /// Why the last requested movement failed.
    pub failure_reason: Option<String>,
    /// Bumped by every change; the precondition of the next one.
    pub version: i64,
}

impl Entity for UserBonus {
    const COLLECTION: &'static str = "user_bonuses";
}

/// The indexes the service relies on.
pub fn indexes() -> Vec<IndexSpec> {
    let mut specs = vec![
        IndexSpec::new(BonusTemplate::COLLECTION, TEMPLATE_CODE_INDEX, &["code"]).unique(),
        IndexSpec::new(
            BonusTemplate::COLLECTION,
            "bonus_templates_kind",
            &["kind", "active"],
        ),
        IndexSpec::new(
            UserBonus::COLLECTION,
            AWARD_INDEX,
            &["user_id", "template_id", "source_key"],
        )
        .unique(),
        IndexSpec::new(
            UserBonus::COLLECTION,
            "user_bonuses_wagering",
            &["user_id", "currency", "status"],
        ),
        IndexSpec::new(
            UserBonus::COLLECTION,
            "user_bonuses_expiry",
            &["status", "expires_at_ms"],
        ),
        IndexSpec::new(
            UserBonus::COLLECTION,
            "user_bonuses_pending",
            &["pending_since_ms"],
        ),
    ];
    // Payment requests and bonus events are staged with the change they announce.
    specs.extend(Outbox::indexes());
    specs
}

/// The repositories over one database.
#[derive(Clone)]
pub struct Store {
    /// Templates.
    pub templates: Repository<BonusTemplate>,
    /// User bonuses.
    pub bonuses: Repository<UserBonus>,
    /// The database (for transactions).
    pub db: Arc<Database>,
}

impl Store {
    /// Ensures the indexes, then serves the repositories.
    pub async fn open(db: Arc<Database>) -> StoreResult<Self> {
        db.ensure_indexes(&indexes()).await?;
        Ok(Self {
            templates: Repository::new(db.clone()),
            bonuses: Repository::new(db.clone()),
            db,
        })
    }
}
