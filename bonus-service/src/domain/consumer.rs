//! The events the service consumes, each handled idempotently by event id.

use service_core::events::{
    handler, BonusPaymentSettled, DepositCompleted, DomainEvent, Event, EventBus, EventError,
    HandlerError, TransferCompleted, UserRegistered, WithdrawalCompleted,
};

use super::BonusService;

/// The consumer group the service subscribes under.
pub const EVENT_GROUP: &str = "bonus";

/// The event types consumed.
const CONSUMED: [&str; 5] = [
    UserRegistered::TYPE,
    DepositCompleted::TYPE,
    TransferCompleted::TYPE,
    WithdrawalCompleted::TYPE,
    BonusPaymentSettled::TYPE,
];

impl BonusService {
    /// Subscribes the service to every event it consumes on `bus`.
    pub async fn subscribe(&self, bus: &EventBus) -> Result<(), EventError> {
        for event_type in CONSUMED {
            let service = self.clone();
            bus.on(
                event_type,
                EVENT_GROUP,
                handler(move |event| {
                    let service = service.clone();
                    async move { service.handle_event(&event).await }
                }),
            )
            .await?;
        }
        Ok(())
    }

    /// Handles one delivery of a consumed event. Safe to call again with the
    /// same event: awards and wagering record the event id in the same
    /// transaction as their effect, and settlements only match the bonus
    /// still waiting for them. A failure is returned for the bus to retry.
    #[tracing::instrument(skip_all, fields(event_type = %event.event_type, event_id = %event.id), err)]
    pub async fn handle_event(&self, event: &Event) -> Result<(), HandlerError> {
        match event.event_type.as_str() {
            UserRegistered::TYPE => {
                let payload = UserRegistered::from_event(event)?;
                self.award_welcome(event, &payload.user_id).await?;
            }
            DepositCompleted::TYPE => {
                let payload = DepositCompleted::from_event(event)?;
                self.award_deposit_match(
                    event,
                    &payload.user_id,
                    &payload.currency,
                    payload.amount,
                    &payload.transaction_id,
                )
                .await?;
            }
            TransferCompleted::TYPE => {
                // Only the sender's real balance was debited.
                let payload = TransferCompleted::from_event(event)?;
                self.wager(
                    event,
                    &payload.from_user_id,
                    &payload.currency,
                    payload.amount,
                )
                .await?;
            }
            WithdrawalCompleted::TYPE => {
                let payload = WithdrawalCompleted::from_event(event)?;
                self.wager(event, &payload.user_id, &payload.currency, payload.amount)
                    .await?;
            }
            BonusPaymentSettled::TYPE => {
                let payload = BonusPaymentSettled::from_event(event)?;
                self.settle(&payload).await?;
            }
            other => {
                tracing::debug!(
                    event_type = other,
                    "event not consumed by the bonus service"
                );
            }
        }
        Ok(())
    }
}
