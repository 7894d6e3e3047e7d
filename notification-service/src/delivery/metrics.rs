//! Delivery series on the service's metrics registry (served at `/metrics`).

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use service_core::resilience::state_gauge;

use super::guard::Guarded;
use crate::store::{AttemptStatus, Channel};

/// Counters of attempts and outcomes per channel, and each channel's
/// breaker state.
#[derive(Clone, Debug)]
pub struct DeliveryMetrics {
    attempts: IntCounterVec,
    outcomes: IntCounterVec,
    breakers: IntGaugeVec,
}

impl DeliveryMetrics {
    /// Registers the series in `registry`; fails if they already are.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let attempts = IntCounterVec::new(
            Opts::new(
                "notification_delivery_attempts_total",
                "Provider attempts by channel and result (SUCCEEDED, FAILED, REJECTED)",
            ),
            &["channel", "status"],
        )?;
        let outcomes = IntCounterVec::new(
            Opts::new(
                "notification_deliveries_total",
                "Notifications settled by channel and final status (SENT, FAILED)",
            ),
            &["channel", "status"],
        )?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(outcomes.clone()))?;
        Ok(Self {
            attempts,
            outcomes,
            breakers: state_gauge(registry)?,
        })
    }

    pub(super) fn attempt(&self, guarded: &Guarded, status: AttemptStatus) {
        let status = match status {
            AttemptStatus::Succeeded => "SUCCEEDED",
            AttemptStatus::Failed => "FAILED",
            AttemptStatus::Rejected => "REJECTED",
        };
        self.attempts
            .with_label_values(&[guarded.channel().as_str(), status])
            .inc();
        guarded.report_breaker(&self.breakers);
    }

    pub(super) fn outcome(&self, channel: Channel, sent: bool) {
        let status = if sent { "SENT" } else { "FAILED" };
        self.outcomes
            .with_label_values(&[channel.as_str(), status])
            .inc();
    }
}
