//! The domain events that become notifications, read through the core
//! event catalog. Each handler is idempotent by event id twice over: the
//! bus skips ids its group has handled, and the store refuses a second
//! notification for the same `(event, kind, channel)`.

use serde_json::json;
use service_core::events::{
    handler, BonusAwarded, DepositCompleted, DomainEvent, Event, EventBus, EventError,
    HandlerError, OtpRequested, TransferCompleted, UserRegistered,
};

use super::{NewNotification, NotificationService};
use crate::store::Channel;

/// The consumer group of this service on the domain-event bus.
pub const CONSUMER_GROUP: &str = "notification";

/// `1234` minor units as `12.34`.
fn money(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// Subscribes the handlers of every consumed event to `bus`.
pub async fn subscribe(bus: &EventBus, service: &NotificationService) -> Result<(), EventError> {
    for event_type in [
        TransferCompleted::TYPE,
        DepositCompleted::TYPE,
        BonusAwarded::TYPE,
        OtpRequested::TYPE,
        UserRegistered::TYPE,
    ] {
        let service = service.clone();
        bus.on(
            event_type,
            CONSUMER_GROUP,
            handler(move |event| {
                let service = service.clone();
                async move { service.consume(&event).await }
            }),
        )
        .await?;
    }
    Ok(())
}

impl NotificationService {
    /// Turns one domain event into notifications. Unknown types are
    /// ignored; a malformed payload is an error (retried, then
    /// dead-lettered by the bus).
    pub async fn consume(&self, event: &Event) -> Result<(), HandlerError> {
        let base = |user_id: &str, kind: &str, title: &str, body: String, data| NewNotification {
            user_id: user_id.to_owned(),
            tenant_id: event.tenant_id.clone(),
            kind: kind.to_owned(),
            title: title.to_owned(),
            body,
            data: Some(data),
            cause: event.id.clone(),
            channels: None,
            allowed: None,
            email: None,
        };
        match event.event_type.as_str() {
            TransferCompleted::TYPE => {
                let t = TransferCompleted::from_event(event)?;
                let amount = format!("{} {}", money(t.amount), t.currency);
                let data = json!({
                    "transferId": t.transfer_id,
                    "amount": t.amount,
                    "currency": t.currency,
                    "fromUserId": t.from_user_id,
                    "toUserId": t.to_user_id,
                    "description": t.description,
                });
                self.notify(base(
                    &t.from_user_id,
                    "transfer.sent",
                    "Transfer sent",
                    format!("You sent {amount}."),
                    data.clone(),
                ))
                .await?;
                self.notify(base(
                    &t.to_user_id,
                    "transfer.received",
                    "Transfer received",
                    format!("You received {amount}."),
                    data,
                ))
                .await?;
            }
            DepositCompleted::TYPE => {
                let d = DepositCompleted::from_event(event)?;
                let data = json!({
                    "transactionId": d.transaction_id,
                    "walletId": d.wallet_id,
                    "amount": d.amount,
                    "currency": d.currency,
                    "balanceAfter": d.balance_after,
                });
                self.notify(base(
                    &d.user_id,
                    "deposit.completed",
                    "Deposit received",
                    format!(
                        "{} {} was added to your wallet.",
                        money(d.amount),
                        d.currency
                    ),
                    data,
                ))
                .await?;
            }
            BonusAwarded::TYPE => {
                let b = BonusAwarded::from_event(event)?;
                let data = json!({
                    "userBonusId": b.user_bonus_id,
                    "templateCode": b.template_code,
                    "amount": b.amount,
                    "currency": b.currency,
                    "wageringRequired": b.wagering_required,
                    "expiresAt": b.expires_at,
                });
                self.notify(base(
                    &b.user_id,
                    "bonus.awarded",
                    "Bonus awarded",
                    format!(
                        "You received a {} bonus of {} {}.",
                        b.template_code,
                        money(b.amount),
                        b.currency
                    ),
                    data,
                ))
                .await?;
            }
            OtpRequested::TYPE => {
                let o = OtpRequested::from_event(event)?;
                self.remember_email(&o.user_id, &o.email).await?;
                // The code is in the body only: `data` and logs never see it.
                let mut new = base(
                    &o.user_id,
                    "auth.otp",
                    "Your verification code",
                    format!(
                        "Your {} code is {}. It expires at {} UTC.",
                        o.purpose,
                        o.code,
                        o.expires_at.format("%H:%M")
                    ),
                    json!({ "purpose": o.purpose, "expiresAt": o.expires_at }),
                );
                new.allowed = Some(vec![Channel::Email]);
                new.email = Some(o.email);
                self.notify(new).await?;
            }
            UserRegistered::TYPE => {
                let u = UserRegistered::from_event(event)?;
                self.remember_email(&u.user_id, &u.email).await?;
            }
            other => tracing::debug!(event_type = other, "not an event this service consumes"),
        }
        Ok(())
    }

    /// Keeps the address email goes to, unless the user set one already.
    async fn remember_email(&self, user_id: &str, email: &str) -> Result<(), HandlerError> {
        let prefs = self.preferences_of(user_id).await?;
        if prefs.email.is_none() {
            let email = email.to_owned();
            self.modify_preferences(user_id, move |p| {
                if p.email.is_none() {
                    p.email = Some(email.clone());
                }
            })
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::money;

    #[test]
    fn minor_units_read_as_decimals() {
        assert_eq!(money(1234), "12.34");
        assert_eq!(money(5), "0.05");
        assert_eq!(money(-250), "-2.50");
        assert_eq!(money(i64::MIN), "-92233720368547758.08");
    }
}
