//! The fan-out benchmark's figures: every subscriber's inbox compared
//! with the events its user should have seen, counted per transport.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::{Subscriber, Topic};
use crate::feeds::Transport;

/// The figures of one transport.
#[derive(Debug)]
pub struct TransportFigures {
    /// The transport.
    pub transport: Transport,
    /// Subscribers on it.
    pub subscribers: usize,
    /// Expected events received.
    pub delivered: u64,
    /// `delivered` per second, from the producer's start to the last receipt.
    pub events_per_second: f64,
    /// Event timestamp to receipt, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Missed, duplicated or foreign events, and feeds that failed.
    pub errors: u64,
}

impl TransportFigures {
    /// `subscriptions <ws|sse>: subscribers=… delivered=… events_per_s=… p50_ms=… p99_ms=… errors=…`.
    pub fn line(&self) -> String {
        let ms = |quantile: f64| self.latency_us.value_at_quantile(quantile) as f64 / 1000.0;
        format!(
            "subscriptions {}: subscribers={} delivered={} events_per_s={:.0} p50_ms={:.3} p99_ms={:.3} errors={}",
            self.transport.name(),
            self.subscribers,
            self.delivered,
            self.events_per_second,
            ms(0.50),
            ms(0.99),
            self.errors,
        )
    }
}

/// What a run measured.
#[derive(Debug)]
pub struct Figures {
    /// Per transport, WebSocket first.
    pub transports: Vec<TransportFigures>,
    /// Operations the producer ran.
    pub operations: u64,
    /// How long it ran them for.
    pub produced_for: Duration,
    /// A few of the errors, for the log.
    pub error_samples: Vec<String>,
    /// The platform's resident memory with the users signed up and no
    /// subscriber yet.
    pub rss_before_kib: u64,
    /// The same with every subscriber open and delivering.
    pub rss_after_kib: u64,
}

impl Figures {
    /// `subscriptions memory: rss_before_mb=… rss_after_mb=… kib_per_connection=…`.
    pub fn memory_line(&self) -> String {
        let connections: usize = self.transports.iter().map(|t| t.subscribers).sum();
        format!(
            "subscriptions memory: rss_before_mb={:.1} rss_after_mb={:.1} kib_per_connection={:.1}",
            self.rss_before_kib as f64 / 1024.0,
            self.rss_after_kib as f64 / 1024.0,
            self.rss_after_kib.saturating_sub(self.rss_before_kib) as f64
                / connections.max(1) as f64,
        )
    }
}

/// The measured events each user's subscribers should receive.
pub(super) struct Expected {
    pub(super) wallet: Vec<Vec<String>>,
    pub(super) notification: Vec<Vec<String>>,
}

impl Expected {
    pub(super) fn new(users: usize) -> Self {
        Self {
            wallet: vec![Vec::new(); users],
            notification: vec![Vec::new(); users],
        }
    }

    pub(super) fn of(&self, subscriber: &Subscriber) -> &[String] {
        match subscriber.topic {
            Topic::Wallet => &self.wallet[subscriber.user],
            Topic::Notification => &self.notification[subscriber.user],
        }
    }
}

/// Compares every inbox with what its user should have seen.
pub(super) fn tally(
    subscribers: &[Subscriber],
    expected: &Expected,
    started: Instant,
    operations: u64,
    produced_for: Duration,
) -> Figures {
    let mut error_samples = Vec::new();
    let mut transports = Vec::new();
    for transport in [Transport::WebSocket, Transport::Sse] {
        let mut figures = TransportFigures {
            transport,
            subscribers: 0,
            delivered: 0,
            events_per_second: 0.0,
            latency_us: histogram(),
            errors: 0,
        };
        let mut last: Option<Instant> = None;
        for subscriber in subscribers.iter().filter(|s| s.transport == transport) {
            figures.subscribers += 1;
            let Ok(inbox) = subscriber.inbox.lock() else {
                figures.errors += 1;
                continue;
            };
            let mut wanted: BTreeMap<&str, u64> = BTreeMap::new();
            for key in expected.of(subscriber) {
                *wanted.entry(key.as_str()).or_default() += 1;
            }
            for (key, latency) in &inbox.events {
                match wanted.get_mut(key.as_str()) {
                    Some(left) if *left > 0 => {
                        *left -= 1;
                        figures.delivered += 1;
                        figures.latency_us.saturating_record((*latency).max(1));
                    }
                    _ => {
                        figures.errors += 1;
                        sample(&mut error_samples, format!("unexpected or repeated {key}"));
                    }
                }
            }
            let missed: u64 = wanted.values().sum();
            if missed > 0 {
                figures.errors += missed;
                sample(
                    &mut error_samples,
                    format!("a {} subscriber missed {missed} events", transport.name()),
                );
            }
            figures.errors += inbox.faults.len() as u64;
            for fault in &inbox.faults {
                sample(&mut error_samples, fault.clone());
            }
            last = last.max(inbox.last);
        }
        let span = last.map_or(Duration::ZERO, |last| last.duration_since(started));
        figures.events_per_second = figures.delivered as f64 / span.as_secs_f64().max(1e-9);
        transports.push(figures);
    }
    Figures {
        transports,
        operations,
        produced_for,
        error_samples,
        rss_before_kib: 0,
        rss_after_kib: 0,
    }
}

fn sample(samples: &mut Vec<String>, what: String) {
    if samples.len() < 10 {
        samples.push(what);
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min at three significant figures; the bounds are constants.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}
