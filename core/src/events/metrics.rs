//! Counters for the event bus, so a stuck consumer or a growing dead-letter
//! pile shows on a dashboard before anyone asks where an event went.

use prometheus::{IntCounterVec, Opts, Registry};

/// Event counters, labelled by event type (and group for consumption).
#[derive(Clone, Debug)]
pub struct EventMetrics {
    emitted: IntCounterVec,
    handled: IntCounterVec,
    failed: IntCounterVec,
    dead_lettered: IntCounterVec,
}

impl EventMetrics {
    /// Creates the counters and registers them in `registry` (usually
    /// [`crate::telemetry::Metrics::registry`]).
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let counter = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(counter.clone()))?;
            Ok::<_, prometheus::Error>(counter)
        };
        Ok(Self {
            emitted: counter("events_emitted_total", "Events published", &["event_type"])?,
            handled: counter(
                "events_handled_total",
                "Events a handler processed successfully",
                &["event_type", "group"],
            )?,
            failed: counter(
                "events_handler_failures_total",
                "Failed handler attempts (each retry counts)",
                &["event_type", "group"],
            )?,
            dead_lettered: counter(
                "events_dead_lettered_total",
                "Events given up on and dead-lettered",
                &["event_type", "group"],
            )?,
        })
    }

    pub(crate) fn emitted(&self, event_type: &str) {
        self.emitted.with_label_values(&[event_type]).inc();
    }

    pub(crate) fn handled(&self, event_type: &str, group: &str) {
        self.handled.with_label_values(&[event_type, group]).inc();
    }

    pub(crate) fn failed(&self, event_type: &str, group: &str) {
        self.failed.with_label_values(&[event_type, group]).inc();
    }

    pub(crate) fn dead_lettered(&self, event_type: &str, group: &str) {
        self.dead_lettered
            .with_label_values(&[event_type, group])
            .inc();
    }
}
