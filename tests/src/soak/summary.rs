//! What a soak measured, the verdict on it, and the table it prints.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use service_core::db::EmbeddedEngine;

use super::traffic::{Kind, KindStats};
use super::{FeedHandle, SoakConfig, FAULT_CODES};
use crate::Mode;

/// The figures of one kind of operation.
#[derive(Clone, Debug)]
pub struct KindFigures {
    /// The kind (`transfer`, `login`, ...).
    pub kind: &'static str,
    /// Right answers, inside windows or not.
    pub ok: u64,
    /// Right answers inside fault windows.
    pub ok_inside: u64,
    /// Documented refusals (a transfer over the balance).
    pub refused: u64,
    /// Errors outside fault windows, by code.
    pub errors_outside: BTreeMap<String, u64>,
    /// Errors inside fault windows, by code.
    pub errors_inside: BTreeMap<String, u64>,
    /// Median latency in milliseconds, of every answer.
    pub p50_ms: f64,
    /// 99th-percentile latency in milliseconds.
    pub p99_ms: f64,
}

impl KindFigures {
    fn errors_outside(&self) -> u64 {
        self.errors_outside.values().sum()
    }

    fn errors_inside(&self) -> u64 {
        self.errors_inside.values().sum()
    }

    fn operations(&self) -> u64 {
        self.ok + self.refused + self.errors_outside() + self.errors_inside()
    }
}

/// One fault of the run.
#[derive(Clone, Debug)]
pub struct FaultFigures {
    /// What was done (`stop payment`, `kill redis`).
    pub fault: String,
    /// When, from the start of the traffic.
    pub at: Duration,
    /// How long its window stayed open (the fault and the recovery).
    pub window: Duration,
    /// How long after the window every feed delivered again; `None` when
    /// some feed stayed silent.
    pub feeds_back: Option<Duration>,
}

/// One subscriber at the end of the run.
#[derive(Clone, Debug)]
pub struct FeedFigures {
    /// `<member> <topic>/<transport>`.
    pub label: String,
    /// Its owner's events received.
    pub delivered: u64,
    /// Other users' events received (must be zero).
    pub foreign: u64,
    /// Results carrying errors instead of an event.
    pub errored: u64,
    /// Subscriptions opened, the first included.
    pub connects: u64,
    /// Attempts that failed before subscribing.
    pub failed_connects: u64,
}

/// The process's resident set through the run, in MiB.
#[derive(Clone, Debug, Default)]
pub struct MemoryFigures {
    /// At the start of the traffic.
    pub start_mib: f64,
    /// At the end of the warm-up.
    pub warm_mib: f64,
    /// The highest sample.
    pub peak_mib: f64,
    /// The highest sample of the first half of the run after the warm-up.
    pub first_half_high_mib: f64,
    /// At the end of the traffic.
    pub end_mib: f64,
    /// The anonymous part (`RssAnon`: heap, no mapped files) at the end of
    /// the warm-up.
    pub warm_anon_mib: f64,
    /// The anonymous part at the end of the traffic.
    pub end_anon_mib: f64,
    /// `VmRSS` at ten points along the run.
    pub trend_mib: Vec<f64>,
    /// Samples taken (one a second).
    pub samples: usize,
}

impl MemoryFigures {
    pub(super) fn from_samples(samples: &[super::Sample], warm_up: Duration) -> Self {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
            return Self::default();
        };
        let warm = samples
            .iter()
            .find(|(at, _, _)| *at >= warm_up)
            .unwrap_or(last);
        let middle = warm_up + last.0.saturating_sub(warm_up) / 2;
        let first_half_high = samples
            .iter()
            .filter(|(at, _, _)| *at >= warm_up && *at <= middle)
            .map(|(_, kib, _)| *kib)
            .max()
            .unwrap_or(warm.1);
        // Ten points along the run, to tell a plateau from a climb.
        let step = (samples.len() / 10).max(1);
        Self {
            start_mib: mib(first.1),
            warm_mib: mib(warm.1),
            peak_mib: mib(samples.iter().map(|(_, kib, _)| *kib).max().unwrap_or(0)),
            first_half_high_mib: mib(first_half_high),
            end_mib: mib(last.1),
            warm_anon_mib: mib(warm.2),
            end_anon_mib: mib(last.2),
            trend_mib: samples.iter().step_by(step).map(|s| mib(s.1)).collect(),
            samples: samples.len(),
        }
    }

    /// How far the end of the traffic is above the highest level of the
    /// first half after the warm-up. Memory that fills up to a cap and
    /// empties again (the embedded stores' page caches, dropped when a
    /// restarted subgraph reopens its store, refilled as the books grow)
    /// rises and falls within that level; a leak keeps climbing past it.
    pub fn growth_mib(&self) -> f64 {
        self.end_mib - self.first_half_high_mib
    }
}

/// The books after the run.
#[derive(Clone, Debug, Default)]
pub struct BooksFigures {
    /// Wallets checked.
    pub wallets: usize,
    /// The sum of every balance.
    pub total: i64,
    /// What the run deposited (no withdrawals are made).
    pub net_deposits: i64,
    /// Ledger entries reconciled.
    pub entries: i64,
    /// Transfers the ledger holds.
    pub booked_transfers: usize,
    /// Transfers answered `COMPLETED` to the traffic.
    pub acknowledged_transfers: usize,
    /// Transfers that failed without a definite answer.
    pub uncertain_transfers: u64,
}

/// Everything a soak measured, and what it found wrong.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The stores.
    pub mode: Mode,
    /// The embedded engine (embedded mode only).
    pub engine: EmbeddedEngine,
    /// How long the traffic ran.
    pub duration: Duration,
    /// Its workers.
    pub concurrency: usize,
    /// The traffic as a whole, as [`crate::load::Report::line`] prints it.
    pub total: String,
    /// Per kind of operation.
    pub kinds: Vec<KindFigures>,
    /// Per fault, in order.
    pub faults: Vec<FaultFigures>,
    /// Per subscriber.
    pub feeds: Vec<FeedFigures>,
    /// Resident memory.
    pub memory: MemoryFigures,
    /// The books.
    pub books: BooksFigures,
    /// Every check that failed, in words; empty when the run passed.
    pub violations: Vec<String>,
}

impl Summary {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Adds the verdicts on errors, feeds and memory to the ones the run
    /// already found (books, feed recovery).
    pub(super) fn judged(mut self, config: &SoakConfig) -> Self {
        let outside_ops: u64 = self
            .kinds
            .iter()
            .map(|k| k.ok - k.ok_inside + k.refused + k.errors_outside())
            .sum();
        let outside_errors: u64 = self.kinds.iter().map(KindFigures::errors_outside).sum();
        if outside_ops == 0 {
            self.violations
                .push("no operation ran outside the fault windows".to_owned());
        } else if outside_errors as f64 > config.error_budget * outside_ops as f64 {
            self.violations.push(format!(
                "{outside_errors} errors outside fault windows out of {outside_ops} operations, \
                 over the budget of {:.3} %",
                config.error_budget * 100.0
            ));
        }
        for kind in &self.kinds {
            for (code, count) in &kind.errors_inside {
                if !FAULT_CODES.contains(&code.as_str()) {
                    self.violations.push(format!(
                        "{count} {} errors inside fault windows answered `{code}`, not one of {FAULT_CODES:?}",
                        kind.kind
                    ));
                }
            }
        }
        for feed in &self.feeds {
            if feed.foreign > 0 {
                self.violations.push(format!(
                    "{} received {} events of another user",
                    feed.label, feed.foreign
                ));
            }
        }
        if self.memory.samples == 0 {
            self.violations
                .push("the resident set could not be read (/proc/self/status)".to_owned());
        } else if self.memory.growth_mib() > config.max_rss_growth_mib {
            self.violations.push(format!(
                "resident memory ended {:.1} MiB above its high in the first half after the warm-up, over the bound of {:.1} MiB",
                self.memory.growth_mib(),
                config.max_rss_growth_mib
            ));
        }
        self
    }
}

/// The figures of every kind, in the order of [`Kind::ALL`].
pub(super) fn kinds(stats: &BTreeMap<Kind, Mutex<KindStats>>) -> Vec<KindFigures> {
    stats
        .iter()
        .filter_map(|(kind, stats)| {
            let stats = stats.lock().ok()?;
            Some(KindFigures {
                kind: kind.label(),
                ok: stats.ok,
                ok_inside: stats.ok_inside,
                refused: stats.refused,
                errors_outside: stats.errors_outside.clone(),
                errors_inside: stats.errors_inside.clone(),
                p50_ms: stats.latency_us.value_at_quantile(0.50) as f64 / 1000.0,
                p99_ms: stats.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
            })
        })
        .collect()
}

/// The figures of every feed.
pub(super) fn feeds(handles: &[FeedHandle]) -> Vec<FeedFigures> {
    handles
        .iter()
        .map(|(label, _, _, stats)| FeedFigures {
            label: label.clone(),
            delivered: stats.delivered.load(Ordering::SeqCst),
            foreign: stats.foreign.load(Ordering::SeqCst),
            errored: stats.errored.load(Ordering::SeqCst),
            connects: stats.connects.load(Ordering::SeqCst),
            failed_connects: stats.failed_connects.load(Ordering::SeqCst),
        })
        .collect()
}

fn codes(errors: &BTreeMap<String, u64>) -> String {
    errors
        .iter()
        .map(|(code, count)| format!("{code}={count}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "soak: mode={:?}{} duration={:?} concurrency={}",
            self.mode,
            match self.mode {
                Mode::Embedded => format!(" engine={}", self.engine.name()),
                Mode::RedisMongo => String::new(),
            },
            self.duration,
            self.concurrency
        )?;
        writeln!(
            f,
            "{:<14} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9}",
            "kind", "ops", "ok", "refused", "err-out", "err-in", "p50_ms", "p99_ms"
        )?;
        for kind in &self.kinds {
            writeln!(
                f,
                "{:<14} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9.2} {:>9.2}",
                kind.kind,
                kind.operations(),
                kind.ok,
                kind.refused,
                kind.errors_outside(),
                kind.errors_inside(),
                kind.p50_ms,
                kind.p99_ms
            )?;
        }
        writeln!(f, "{}", self.total)?;
        for kind in &self.kinds {
            if !kind.errors_outside.is_empty() {
                writeln!(
                    f,
                    "  {} errors outside windows: {}",
                    kind.kind,
                    codes(&kind.errors_outside)
                )?;
            }
            if !kind.errors_inside.is_empty() {
                writeln!(
                    f,
                    "  {} errors inside windows: {}",
                    kind.kind,
                    codes(&kind.errors_inside)
                )?;
            }
        }
        writeln!(f, "faults:")?;
        if self.faults.is_empty() {
            writeln!(f, "  none")?;
        }
        for fault in &self.faults {
            let back = fault.feeds_back.map_or_else(
                || "NO".to_owned(),
                |after| format!("yes, after {:.1} s", after.as_secs_f64()),
            );
            writeln!(
                f,
                "  {:<20} at {:>7.1} s, window {:>5.1} s, feeds delivering again: {back}",
                fault.fault,
                fault.at.as_secs_f64(),
                fault.window.as_secs_f64()
            )?;
        }
        writeln!(
            f,
            "{:<38} {:>9} {:>7} {:>7} {:>8} {:>8}",
            "subscriber", "events", "foreign", "errored", "connects", "refused"
        )?;
        for feed in &self.feeds {
            writeln!(
                f,
                "{:<38} {:>9} {:>7} {:>7} {:>8} {:>8}",
                feed.label,
                feed.delivered,
                feed.foreign,
                feed.errored,
                feed.connects,
                feed.failed_connects
            )?;
        }
        let memory = &self.memory;
        writeln!(
            f,
            "memory (VmRSS, MiB): start={:.1} after-warm-up={:.1} first-half-high={:.1} peak={:.1} end={:.1} growth={:.1} ({} samples)",
            memory.start_mib, memory.warm_mib, memory.first_half_high_mib, memory.peak_mib, memory.end_mib, memory.growth_mib(), memory.samples
        )?;
        let trend: Vec<String> = memory
            .trend_mib
            .iter()
            .map(|mib| format!("{mib:.0}"))
            .collect();
        writeln!(
            f,
            "memory (RssAnon, MiB): after-warm-up={:.1} end={:.1}; VmRSS along the run: {}",
            memory.warm_anon_mib,
            memory.end_anon_mib,
            trend.join(" ")
        )?;
        let books = &self.books;
        writeln!(
            f,
            "books: wallets={} total={} net-deposits={} entries={} transfers booked={} acknowledged={} uncertain={}",
            books.wallets,
            books.total,
            books.net_deposits,
            books.entries,
            books.booked_transfers,
            books.acknowledged_transfers,
            books.uncertain_transfers
        )?;
        if self.passed() {
            write!(f, "verdict: PASS")
        } else {
            writeln!(f, "verdict: FAIL")?;
            for violation in &self.violations {
                writeln!(f, "  - {violation}")?;
            }
            Ok(())
        }
    }
}
