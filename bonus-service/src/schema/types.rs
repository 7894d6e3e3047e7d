//! The GraphQL shapes: the `Amount` scalar, `BonusTemplate`, `UserBonus`,
//! the `User` stub and the connection types.

use async_graphql::{
    ComplexObject, InputObject, InputValueError, InputValueResult, Object, Scalar, ScalarType,
    SimpleObject, Value, ID,
};
use chrono::{DateTime, Utc};
use service_core::graphql::PageInfo;

use crate::domain::money::MAX_AMOUNT;
use crate::domain::{BonusPage, NewTemplate};
use crate::store::{BonusKind, BonusStatus, BonusTemplate, Movement, UserBonus};

/// An integer number of minor units within ±(2^53−1); never a float.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Amount(pub i64);

#[Scalar(name = "Amount")]
impl ScalarType for Amount {
    fn parse(value: Value) -> InputValueResult<Self> {
        let Value::Number(n) = &value else {
            return Err(InputValueError::expected_type(value));
        };
        match n.as_i64() {
            Some(v) if (-MAX_AMOUNT..=MAX_AMOUNT).contains(&v) => Ok(Self(v)),
            _ => Err(InputValueError::custom(
                "an Amount is an integer within ±(2^53-1)",
            )),
        }
    }

    fn to_value(&self) -> Value {
        Value::Number(self.0.into())
    }
}

/// `createBonusTemplate`'s input.
#[derive(InputObject)]
#[graphql(name = "BonusTemplateInput")]
pub struct BonusTemplateInput {
    /// Upper-case slug, unique.
    pub code: String,
    /// Display name.
    pub name: String,
    /// WELCOME, DEPOSIT_MATCH or MANUAL.
    pub kind: BonusKind,
    /// ISO 4217 code.
    pub currency: String,
    /// For WELCOME and MANUAL.
    pub fixed_amount: Option<Amount>,
    /// For DEPOSIT_MATCH, 1..1000.
    pub percent: Option<i32>,
    /// Cap on one award.
    pub max_amount: Option<Amount>,
    /// Turnover needed = amount × this (0 converts at once).
    pub wagering_multiplier: i32,
    /// Days until an award expires, at least 1.
    pub valid_days: i32,
    /// Defaults to true.
    pub active: Option<bool>,
}

impl From<BonusTemplateInput> for NewTemplate {
    fn from(input: BonusTemplateInput) -> Self {
        Self {
            code: input.code,
            name: input.name,
            kind: input.kind,
            currency: input.currency,
            fixed_amount: input.fixed_amount.map(|a| a.0),
            percent: input.percent,
            max_amount: input.max_amount.map(|a| a.0),
            wagering_multiplier: input.wagering_multiplier,
            valid_days: input.valid_days,
            active: input.active,
        }
    }
}

/// A bonus definition.
pub struct TemplateView(pub BonusTemplate);

#[Object(name = "BonusTemplate")]
impl TemplateView {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn code(&self) -> &str {
        &self.0.code
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn kind(&self) -> BonusKind {
        self.0.kind
    }
    async fn currency(&self) -> &str {
        &self.0.currency
    }
    /// For WELCOME and MANUAL.
    async fn fixed_amount(&self) -> Option<Amount> {
        self.0.fixed_amount.map(Amount)
    }
    /// For DEPOSIT_MATCH, 1..1000.
    async fn percent(&self) -> Option<i32> {
        self.0.percent
    }
    async fn max_amount(&self) -> Option<Amount> {
        self.0.max_amount.map(Amount)
    }
    /// Turnover needed = amount × this (0 = converts at once).
    async fn wagering_multiplier(&self) -> i32 {
        self.0.wagering_multiplier
    }
    async fn valid_days(&self) -> i32 {
        self.0.valid_days
    }
    async fn active(&self) -> bool {
        self.0.active
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// A user, owned by the auth subgraph; this subgraph only refers to it.
#[derive(SimpleObject)]
#[graphql(name = "User", unresolvable = "id")]
pub struct UserRef {
    /// The user's id.
    pub id: ID,
}

/// A bonus given to one user.
pub struct BonusView(pub UserBonus);

#[Object(name = "UserBonus")]
impl BonusView {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn user_id(&self) -> ID {
        ID(self.0.user_id.clone())
    }
    async fn template_code(&self) -> &str {
        &self.0.template_code
    }
    async fn kind(&self) -> BonusKind {
        self.0.kind
    }
    async fn amount(&self) -> Amount {
        Amount(self.0.amount)
    }
    async fn currency(&self) -> &str {
        &self.0.currency
    }
    /// PENDING until the credit is confirmed; FAILED when it was refused.
    async fn status(&self) -> BonusStatus {
        self.0.status
    }
    async fn wagering_required(&self) -> Amount {
        Amount(self.0.wagering_required)
    }
    async fn wagering_progress(&self) -> Amount {
        Amount(self.0.wagering_progress)
    }
    /// The money movement requested and not yet confirmed, if any.
    async fn pending_movement(&self) -> Option<Movement> {
        self.0.pending
    }
    /// What the last confirmed conversion or debit moved.
    async fn settled_amount(&self) -> Option<Amount> {
        self.0.settled_amount.map(Amount)
    }
    /// Why the last requested movement was refused.
    async fn failure_reason(&self) -> Option<&str> {
        self.0.failure_reason.as_deref()
    }
    async fn expires_at(&self) -> DateTime<Utc> {
        self.0.expires_at
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// The owner (resolved by the auth subgraph).
    async fn user(&self) -> UserRef {
        UserRef {
            id: ID(self.0.user_id.clone()),
        }
    }
}

/// A bonus and its cursor.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct UserBonusEdge {
    cursor: String,
    #[graphql(skip)]
    node: UserBonus,
}

#[ComplexObject]
impl UserBonusEdge {
    async fn node(&self) -> BonusView {
        BonusView(self.node.clone())
    }
}

/// A page of bonuses, newest first.
pub struct UserBonusConnection(pub BonusPage);

#[Object]
impl UserBonusConnection {
    async fn edges(&self) -> Vec<UserBonusEdge> {
        self.0
            .connection
            .edges
            .iter()
            .map(|e| UserBonusEdge {
                cursor: e.cursor.clone(),
                node: e.node.clone(),
            })
            .collect()
    }
    async fn nodes(&self) -> Vec<BonusView> {
        self.0
            .connection
            .edges
            .iter()
            .map(|e| BonusView(e.node.clone()))
            .collect()
    }
    async fn page_info(&self) -> PageInfo {
        PageInfo::from(&self.0.connection.page_info)
    }
    async fn total_count(&self) -> u64 {
        self.0.total_count
    }
}
