//! The events services exchange: one type name and one payload shape each.
//!
//! Emitters and consumers live in different crates (often in different
//! processes), so the contract is written down once, here. A payload is a
//! plain serde struct with camelCase fields; amounts are integer minor units.
//! New fields may be added (consumers ignore what they do not know); renaming
//! or removing one is a breaking change for every consumer.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::model::{Event, EventError, HandlerError};

/// A payload with a fixed event type name.
pub trait DomainEvent: Serialize + DeserializeOwned {
    /// The dotted event type this payload travels under.
    const TYPE: &'static str;

    /// Wraps the payload in an [`Event`] with a fresh id.
    fn to_event(&self, tenant_id: &str, user_id: Option<&str>) -> Result<Event, EventError> {
        Event::new(Self::TYPE, tenant_id, user_id, serde_json::to_value(self)?)
    }

    /// Reads the payload back out of `event`; a wrong type or shape is a
    /// handler error (retried, then dead-lettered), never a panic.
    fn from_event(event: &Event) -> Result<Self, HandlerError> {
        if event.event_type != Self::TYPE {
            return Err(HandlerError::new(format!(
                "expected a {} event, got {}",
                Self::TYPE,
                event.event_type
            )));
        }
        serde_json::from_value(event.data.clone())
            .map_err(|err| HandlerError::new(format!("malformed {} payload: {err}", Self::TYPE)))
    }
}

macro_rules! domain_event {
    ($name:ident, $type:literal) => {
        impl DomainEvent for $name {
            const TYPE: &'static str = $type;
        }
    };
}

/// A new account exists (auth). Bonus awards WELCOME templates on it;
/// notifications may greet the user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRegistered {
    /// The new user's id.
    pub user_id: String,
    /// The normalised (lower-case) email.
    pub email: String,
    /// The optional display name.
    pub username: Option<String>,
}
domain_event!(UserRegistered, "user.registered");

/// A one-time code was issued (auth) and must reach the user
/// (notification). The code is the secret itself: consumers never log it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OtpRequested {
    /// Who the code is for.
    pub user_id: String,
    /// Where an email channel delivers it.
    pub email: String,
    /// What the code is for (`login`, `withdrawal`, ...), as the client asked.
    pub purpose: String,
    /// The six digits.
    pub code: String,
    /// When the code stops being accepted.
    pub expires_at: DateTime<Utc>,
}
domain_event!(OtpRequested, "auth.otp.requested");

/// Money arrived in a wallet from outside (payment).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DepositCompleted {
    /// The ledger entry that recorded it.
    pub transaction_id: String,
    /// The credited wallet.
    pub wallet_id: String,
    /// The wallet's owner.
    pub user_id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Minor units, > 0.
    pub amount: i64,
    /// The wallet's balance after the deposit.
    pub balance_after: i64,
}
domain_event!(DepositCompleted, "deposit.completed");

/// Money left a wallet to the outside (payment); a debit of real balance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WithdrawalCompleted {
    /// The ledger entry that settled it.
    pub transaction_id: String,
    /// The debited wallet.
    pub wallet_id: String,
    /// The wallet's owner.
    pub user_id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Minor units, > 0.
    pub amount: i64,
}
domain_event!(WithdrawalCompleted, "withdrawal.completed");

/// Money moved between two users (payment); a debit of the sender's real
/// balance and a credit of the recipient's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferCompleted {
    /// The transfer record.
    pub transfer_id: String,
    /// The sender.
    pub from_user_id: String,
    /// The recipient.
    pub to_user_id: String,
    /// The debited wallet.
    pub from_wallet_id: String,
    /// The credited wallet.
    pub to_wallet_id: String,
    /// Minor units, > 0.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// The sender's note, if any.
    pub description: Option<String>,
}
domain_event!(TransferCompleted, "transfer.completed");

/// A wallet's balances changed (payment); feeds the `walletUpdated`
/// subscription.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WalletUpdated {
    /// The wallet.
    pub wallet_id: String,
    /// Its owner (the only user who may see this event).
    pub user_id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Real balance after the change.
    pub balance: i64,
    /// Bonus balance after the change.
    pub bonus_balance: i64,
    /// Funds held for pending withdrawals.
    pub locked_balance: i64,
    /// When the change committed.
    pub updated_at: DateTime<Utc>,
    /// When the wallet was opened, so subscribers need no lookup. Absent in
    /// events emitted before it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}
domain_event!(WalletUpdated, "wallet.updated");

/// What the bonus service asks the payment service to do with bonus money.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BonusOperation {
    /// Add to `bonusBalance` (BONUS_CREDIT).
    Credit,
    /// Take what remains, up to the amount, from `bonusBalance` (BONUS_DEBIT).
    Debit,
    /// Move up to the amount from `bonusBalance` to `balance` (BONUS_CONVERT).
    Convert,
}

/// A request from the bonus service to move bonus money (bonus → payment).
///
/// `request_id` is the idempotency key: the payment service applies a given
/// request at most once, however often it is delivered, and answers every
/// delivery with the same [`BonusPaymentSettled`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BonusPaymentRequested {
    /// Unique per requested movement.
    pub request_id: String,
    /// What to do.
    pub operation: BonusOperation,
    /// The user bonus the movement belongs to (the ledger's `objectId`).
    pub user_bonus_id: String,
    /// Whose wallet.
    pub user_id: String,
    /// Which of the user's wallets (created on a credit when missing).
    pub currency: String,
    /// Minor units, > 0: exact for a credit, an upper bound for a debit or
    /// a conversion (only what is left of the bonus balance moves).
    pub amount: i64,
}
domain_event!(BonusPaymentRequested, "bonus.payment.requested");

/// The payment service's answer to a [`BonusPaymentRequested`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BonusPaymentSettled {
    /// The request this answers.
    pub request_id: String,
    /// The requested operation.
    pub operation: BonusOperation,
    /// The user bonus it belongs to.
    pub user_bonus_id: String,
    /// Whose wallet.
    pub user_id: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Whether money moved (a debit or conversion of an empty bonus
    /// balance succeeds with `amount_applied = 0`).
    pub succeeded: bool,
    /// Minor units actually moved.
    pub amount_applied: i64,
    /// The ledger entry written, when money moved.
    pub transaction_id: Option<String>,
    /// Why it failed, for the log and the bonus record.
    pub reason: Option<String>,
}
domain_event!(BonusPaymentSettled, "bonus.payment.settled");

/// A bonus was credited to its owner (bonus).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BonusAwarded {
    /// The user bonus.
    pub user_bonus_id: String,
    /// Its owner.
    pub user_id: String,
    /// The template's code.
    pub template_code: String,
    /// Minor units credited.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Turnover still needed before it converts.
    pub wagering_required: i64,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
}
domain_event!(BonusAwarded, "bonus.awarded");

/// A bonus met its wagering and became real money (bonus).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BonusConverted {
    /// The user bonus.
    pub user_bonus_id: String,
    /// Its owner.
    pub user_id: String,
    /// Minor units moved to the real balance.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
}
domain_event!(BonusConverted, "bonus.converted");

/// A bonus ran out of time or was forfeited; what remained was debited (bonus).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BonusExpired {
    /// The user bonus.
    pub user_bonus_id: String,
    /// Its owner.
    pub user_id: String,
    /// Minor units taken back from the bonus balance.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// `EXPIRED` or `FORFEITED`.
    pub status: String,
}
domain_event!(BonusExpired, "bonus.expired");

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn payloads_travel_as_camel_case_json_under_their_type() {
        let payload = UserRegistered {
            user_id: "u1".into(),
            email: "a@example.com".into(),
            username: None,
        };
        let event = payload.to_event("t1", Some("u1")).unwrap();
        assert_eq!(event.event_type, "user.registered");
        assert_eq!(
            event.data,
            json!({"userId": "u1", "email": "a@example.com", "username": null})
        );
        assert_eq!(UserRegistered::from_event(&event).unwrap(), payload);
    }

    #[test]
    fn a_wrong_type_or_shape_is_a_handler_error() {
        let event = Event::new("deposit.completed", "t1", None, json!({"walletId": 1})).unwrap();
        assert!(UserRegistered::from_event(&event).is_err());
        assert!(DepositCompleted::from_event(&event)
            .unwrap_err()
            .message()
            .contains("malformed deposit.completed"));
    }

    #[test]
    fn bonus_operations_are_upper_case() {
        assert_eq!(
            serde_json::to_value(BonusOperation::Convert).unwrap(),
            json!("CONVERT")
        );
    }
}
