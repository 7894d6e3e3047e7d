//! Bonus templates: validated creation and listing.

use chrono::Utc;
use service_core::db::{Direction, Filter, FindOptions, StoreError, ID};
use service_core::{ApiError, ApiResult, RequestContext};

use super::money::{Amount, Currency};
use super::{any, api_store_error, BonusService};
use crate::store::{BonusKind, BonusTemplate, TEMPLATE_CODE_INDEX};

/// Longest template code and name.
const CODE_MAX: usize = 64;
const NAME_MAX: usize = 200;
/// Bounds of a DEPOSIT_MATCH percentage.
const PERCENT_RANGE: std::ops::RangeInclusive<i32> = 1..=1000;
/// Longest validity (about 100 years; longer is a typo).
const VALID_DAYS_MAX: i32 = 36_500;
/// Largest wagering multiplier accepted.
const MULTIPLIER_MAX: i32 = 10_000;
/// Most templates a listing returns (templates are few by nature).
const LIST_LIMIT: usize = 1_000;

/// `createBonusTemplate`'s input, as the client sent it.
#[derive(Clone, Debug)]
pub struct NewTemplate {
    /// Upper-case slug: `A-Z`, `0-9`, `_` and `-`, starting with a letter or digit.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Kind.
    pub kind: BonusKind,
    /// ISO 4217 code.
    pub currency: String,
    /// Required for WELCOME and MANUAL, refused for DEPOSIT_MATCH.
    pub fixed_amount: Option<i64>,
    /// Required for DEPOSIT_MATCH (1..=1000), refused otherwise.
    pub percent: Option<i32>,
    /// Optional cap on one award.
    pub max_amount: Option<i64>,
    /// At least 0.
    pub wagering_multiplier: i32,
    /// At least 1.
    pub valid_days: i32,
    /// Defaults to active.
    pub active: Option<bool>,
}

fn invalid(field: &str, message: &'static str) -> ApiError {
    ApiError::validation(format!("input.{field}"), message)
}

fn amount(field: &str, value: i64) -> ApiResult<Amount> {
    Amount::new(value).ok_or_else(|| invalid(field, "must be a positive integer of at most 2^53-1"))
}

fn is_slug(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= CODE_MAX
        && code
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl NewTemplate {
    /// Checks every field, naming the first that is wrong in
    /// `extensions.field` (`input.percent`, ...).
    pub fn validate(self) -> ApiResult<BonusTemplate> {
        if !is_slug(&self.code) {
            return Err(invalid(
                "code",
                "must be an upper-case slug (A-Z, 0-9, _ and -, at most 64 characters)",
            ));
        }
        let name = self.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > NAME_MAX {
            return Err(invalid("name", "must be 1 to 200 characters"));
        }
        let currency = Currency::parse(&self.currency).ok_or_else(|| {
            invalid(
                "currency",
                "must be a three-letter upper-case ISO 4217 code",
            )
        })?;
        let fixed_amount = self
            .fixed_amount
            .map(|v| amount("fixedAmount", v))
            .transpose()?;
        let max_amount = self
            .max_amount
            .map(|v| amount("maxAmount", v))
            .transpose()?;
        match self.kind {
            BonusKind::Welcome | BonusKind::Manual => {
                if fixed_amount.is_none() {
                    return Err(invalid("fixedAmount", "is required for WELCOME and MANUAL"));
                }
                if self.percent.is_some() {
                    return Err(invalid("percent", "is only for DEPOSIT_MATCH"));
                }
            }
            BonusKind::DepositMatch => {
                match self.percent {
                    Some(p) if PERCENT_RANGE.contains(&p) => {}
                    Some(_) => return Err(invalid("percent", "must be between 1 and 1000")),
                    None => return Err(invalid("percent", "is required for DEPOSIT_MATCH")),
                }
                if fixed_amount.is_some() {
                    return Err(invalid("fixedAmount", "is only for WELCOME and MANUAL"));
                }
            }
        }
        if !(0..=MULTIPLIER_MAX).contains(&self.wagering_multiplier) {
            return Err(invalid("wageringMultiplier", "must be between 0 and 10000"));
        }
        if !(1..=VALID_DAYS_MAX).contains(&self.valid_days) {
            return Err(invalid("validDays", "must be between 1 and 36500"));
        }
        Ok(BonusTemplate {
            id: uuid::Uuid::now_v7().to_string(),
            code: self.code,
            name,
            kind: self.kind,
            currency: currency.as_str().to_owned(),
            fixed_amount: fixed_amount.map(Amount::get),
            percent: self.percent,
            max_amount: max_amount.map(Amount::get),
            wagering_multiplier: self.wagering_multiplier,
            valid_days: self.valid_days,
            active: self.active.unwrap_or(true),
            created_at: Utc::now(),
        })
    }
}

impl BonusService {
    /// Creates a template; needs `bonus:create:*`. A taken code is
    /// `MSCoreValidation` on `input.code`.
    #[tracing::instrument(skip_all, fields(code = %input.code), err)]
    pub async fn create_template(
        &self,
        ctx: &RequestContext,
        input: NewTemplate,
    ) -> ApiResult<BonusTemplate> {
        let principal = ctx.user()?;
        ctx.require("bonus", "create", any(principal))?;
        let template = input.validate()?;
        match self.store().templates.create(&template).await {
            Ok(()) => {
                tracing::info!(template_id = %template.id, "bonus template created");
                Ok(template)
            }
            Err(StoreError::Duplicate { index, .. }) if index == TEMPLATE_CODE_INDEX => {
                Err(invalid("code", "is already in use"))
            }
            Err(err) => Err(api_store_error(err)),
        }
    }

    /// The active templates; every template for holders of `bonus:read:*`.
    pub async fn templates(&self, ctx: &RequestContext) -> ApiResult<Vec<BonusTemplate>> {
        let everything = ctx
            .principal()
            .is_some_and(|p| ctx.can("bonus", "read", super::any(p)));
        let filter = if everything {
            Filter::all()
        } else {
            Filter::all().eq("active", true)
        };
        let options = FindOptions::sorted(ID, Direction::Asc).limit(LIST_LIMIT);
        self.store()
            .templates
            .find(&filter, &options)
            .await
            .map_err(api_store_error)
    }

    /// The template with this id, for entity resolution: active ones for
    /// everybody, inactive ones for holders of `bonus:read:*`.
    pub async fn template(
        &self,
        ctx: &RequestContext,
        id: &str,
    ) -> ApiResult<Option<BonusTemplate>> {
        let template = self
            .store()
            .templates
            .get(id)
            .await
            .map_err(api_store_error)?;
        Ok(template.filter(|t| {
            t.active
                || ctx
                    .principal()
                    .is_some_and(|p| ctx.can("bonus", "read", super::any(p)))
        }))
    }

    /// The active templates of `kind` (in `currency` when given).
    pub(crate) async fn active_templates(
        &self,
        kind: BonusKind,
        currency: Option<&str>,
    ) -> Result<Vec<BonusTemplate>, StoreError> {
        let mut filter = Filter::all()
            .eq("kind", serde_json::to_value(kind).unwrap_or_default())
            .eq("active", true);
        if let Some(currency) = currency {
            filter = filter.eq("currency", currency);
        }
        self.store()
            .templates
            .find(
                &filter,
                &FindOptions::sorted(ID, Direction::Asc).limit(LIST_LIMIT),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(kind: BonusKind) -> NewTemplate {
        NewTemplate {
            code: "WELCOME-10".into(),
            name: "Welcome".into(),
            kind,
            currency: "EUR".into(),
            fixed_amount: (kind != BonusKind::DepositMatch).then_some(1_000),
            percent: (kind == BonusKind::DepositMatch).then_some(50),
            max_amount: None,
            wagering_multiplier: 10,
            valid_days: 30,
            active: None,
        }
    }

    fn field(result: ApiResult<BonusTemplate>) -> String {
        let err = result.unwrap_err();
        err.extensions()["field"].as_str().unwrap().to_owned()
    }

    #[test]
    fn good_templates_validate() {
        for kind in [
            BonusKind::Welcome,
            BonusKind::Manual,
            BonusKind::DepositMatch,
        ] {
            let template = input(kind).validate().unwrap();
            assert!(template.active);
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let mut bad = input(BonusKind::DepositMatch);
        bad.percent = Some(0);
        assert_eq!(field(bad.validate()), "input.percent");
        let mut bad = input(BonusKind::DepositMatch);
        bad.percent = Some(1001);
        assert_eq!(field(bad.validate()), "input.percent");
        let mut bad = input(BonusKind::Welcome);
        bad.fixed_amount = Some(-1);
        assert_eq!(field(bad.validate()), "input.fixedAmount");
        let mut bad = input(BonusKind::Welcome);
        bad.currency = "eur".into();
        assert_eq!(field(bad.validate()), "input.currency");
        let mut bad = input(BonusKind::Welcome);
        bad.code = "welcome".into();
        assert_eq!(field(bad.validate()), "input.code");
        let mut bad = input(BonusKind::Welcome);
        bad.valid_days = 0;
        assert_eq!(field(bad.validate()), "input.validDays");
        let mut bad = input(BonusKind::Welcome);
        bad.wagering_multiplier = -1;
        assert_eq!(field(bad.validate()), "input.wageringMultiplier");
        let mut bad = input(BonusKind::Manual);
        bad.max_amount = Some(0);
        assert_eq!(field(bad.validate()), "input.maxAmount");
    }
}
