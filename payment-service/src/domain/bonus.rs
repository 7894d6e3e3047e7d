//! Bonus money requested by the bonus service (`bonus.payment.requested`),
//! answered with `bonus.payment.settled` through the outbox in the same
//! transaction as the movement.
//!
//! A request is applied once: its id is recorded in `bonus_requests` with
//! the answer, in the movement's transaction. A redelivered request moves
//! nothing and is answered again with the stored answer.

use chrono::Utc;
use serde_json::{json, Value};
use service_core::db::{from_document, Filter, StoreError};
use service_core::events::{BonusOperation, BonusPaymentRequested, BonusPaymentSettled};
use service_core::ApiError;

use super::ledger::{self, Cause, Leg};
use super::{event, stage, wallet_updated, Failure, PaymentService};
use crate::domain::money::{Amount, Currency};
use crate::store::{BalanceType, EntryDirection, TransactionType, Wallet, BONUS_REQUESTS, WALLETS};

/// What handling a request did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BonusOutcome {
    /// The answer sent.
    pub settled: BonusPaymentSettled,
    /// Whether this delivery was a replay of an applied request.
    pub replayed: bool,
}

fn refuse(request: &BonusPaymentRequested, reason: &str) -> BonusPaymentSettled {
    BonusPaymentSettled {
        request_id: request.request_id.clone(),
        operation: request.operation,
        user_bonus_id: request.user_bonus_id.clone(),
        user_id: request.user_id.clone(),
        currency: request.currency.clone(),
        succeeded: false,
        amount_applied: 0,
        transaction_id: None,
        reason: Some(reason.to_owned()),
    }
}

impl PaymentService {
    /// Applies a bonus request at most once and answers it (every time).
    #[tracing::instrument(skip_all, fields(request_id = %request.request_id), err)]
    pub async fn handle_bonus_request(
        &self,
        tenant_id: &str,
        request: &BonusPaymentRequested,
    ) -> Result<BonusOutcome, ApiError> {
        let turn = self
            .inner
            .gate
            .enter(&[(&request.user_id, &request.currency)])
            .await?;
        let outcome = self
            .run_tx(|tx| {
                Box::pin(async move {
                    let now = Utc::now();
                    if let Some(doc) = tx.get(BONUS_REQUESTS, &request.request_id).await? {
                        let settled: BonusPaymentSettled = serde_json::from_value(
                            doc.get("settled").cloned().unwrap_or(Value::Null),
                        )
                        .map_err(ApiError::internal)?;
                        stage(tx, &[event(tenant_id, Some(&request.user_id), &settled)?]).await?;
                        return Ok((settled, None, true));
                    }
                    let (settled, wallet) = match (
                        Currency::parse(&request.currency),
                        Amount::positive(request.amount),
                    ) {
                        (Err(_), _) => (refuse(request, "unknown currency"), None),
                        (_, Err(_)) => (refuse(request, "invalid amount"), None),
                        (Ok(currency), Ok(amount)) => {
                            self.apply_bonus(tx, tenant_id, request, currency, amount, now)
                                .await?
                        }
                    };
                    let mut events = Vec::with_capacity(2);
                    if let Some(wallet) = &wallet {
                        let updated = wallet_updated(wallet);
                        events.push(event(&wallet.tenant_id, Some(&wallet.user_id), &updated)?);
                    }
                    events.push(event(tenant_id, Some(&request.user_id), &settled)?);
                    stage(tx, &events).await?;
                    let record = json!({
                        "_id": request.request_id,
                        "settled": settled,
                        "recordedAt": now.timestamp_millis(),
                    });
                    if let Value::Object(record) = record {
                        match tx.insert(BONUS_REQUESTS, record).await {
                            Ok(()) => {}
                            Err(StoreError::Duplicate { .. }) => return Err(Failure::Race),
                            Err(err) => return Err(err.into()),
                        }
                    }
                    Ok((settled, wallet, false))
                })
            })
            .await?;
        drop(turn);
        let (settled, wallet, replayed) = outcome;
        self.committed(wallet.as_slice()).await;
        Ok(BonusOutcome { settled, replayed })
    }

    async fn apply_bonus(
        &self,
        tx: &mut service_core::db::Transaction<'_>,
        tenant_id: &str,
        request: &BonusPaymentRequested,
        currency: Currency,
        amount: Amount,
        now: chrono::DateTime<Utc>,
    ) -> Result<(BonusPaymentSettled, Option<Wallet>), Failure> {
        let owner = ledger::by_owner(&request.user_id, currency);
        let (kind, legs_for): (
            TransactionType,
            Box<dyn Fn(Amount) -> Vec<Leg> + Send + Sync>,
        ) = match request.operation {
            BonusOperation::Credit => (
                TransactionType::BonusCredit,
                Box::new(|a| {
                    vec![Leg {
                        balance_type: BalanceType::Bonus,
                        direction: EntryDirection::Credit,
                        amount: a,
                    }]
                }),
            ),
            BonusOperation::Debit => (
                TransactionType::BonusDebit,
                Box::new(|a| {
                    vec![Leg {
                        balance_type: BalanceType::Bonus,
                        direction: EntryDirection::Debit,
                        amount: a,
                    }]
                }),
            ),
            BonusOperation::Convert => (
                TransactionType::BonusConvert,
                Box::new(|a| {
                    vec![
                        Leg {
                            balance_type: BalanceType::Bonus,
                            direction: EntryDirection::Debit,
                            amount: a,
                        },
                        Leg {
                            balance_type: BalanceType::Balance,
                            direction: EntryDirection::Credit,
                            amount: a,
                        },
                    ]
                }),
            ),
        };
        let applied = match request.operation {
            BonusOperation::Credit => {
                ledger::find_or_create(tx, &request.user_id, tenant_id, currency, now).await?;
                amount
            }
            BonusOperation::Debit | BonusOperation::Convert => {
                let Some(doc) = tx.find_one(WALLETS, &owner).await? else {
                    return Ok((self.settled(request, Amount::ZERO, None), None));
                };
                let wallet: Wallet = from_document(doc)?;
                amount.min(Amount::stored(wallet.bonus_balance).unwrap_or(Amount::ZERO))
            }
        };
        if applied.is_zero() {
            return Ok((self.settled(request, Amount::ZERO, None), None));
        }
        let cause = Cause {
            kind,
            object_id: Some(&request.user_bonus_id),
            object_model: Some("UserBonus"),
            description: None,
        };
        let filter: Filter = owner;
        let Some((wallet, entries)) =
            ledger::apply(tx, filter, &legs_for(applied), &cause, now).await?
        else {
            return Err(Failure::Race);
        };
        let entry_id = entries.first().map(|e| e.id.clone());
        Ok((self.settled(request, applied, entry_id), Some(wallet)))
    }

    fn settled(
        &self,
        request: &BonusPaymentRequested,
        applied: Amount,
        transaction_id: Option<String>,
    ) -> BonusPaymentSettled {
        BonusPaymentSettled {
            request_id: request.request_id.clone(),
            operation: request.operation,
            user_bonus_id: request.user_bonus_id.clone(),
            user_id: request.user_id.clone(),
            currency: request.currency.clone(),
            succeeded: true,
            amount_applied: applied.minor(),
            transaction_id,
            reason: None,
        }
    }
}
