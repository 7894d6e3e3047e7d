//! A closed-loop load driver for the benchmarks and the soak: `concurrency`
//! workers each run one operation after another until the time is up, and
//! every latency goes into an HDR histogram (microsecond resolution, three
//! significant figures).
//!
//! The driver only counts and times; whether an answer was right is the
//! operation's to decide ([`Outcome`]), so a benchmark checks correctness
//! under load instead of counting any 200 as a success.

use std::future::Future;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// What one operation reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The answer was the expected one.
    Ok,
    /// The answer was wrong, an error, or never came.
    Failed,
}

impl From<bool> for Outcome {
    fn from(ok: bool) -> Self {
        if ok {
            Outcome::Ok
        } else {
            Outcome::Failed
        }
    }
}

/// The figures of one run.
#[derive(Clone, Debug)]
pub struct Report {
    /// Operations that answered as expected.
    pub ok: u64,
    /// Operations that did not.
    pub failed: u64,
    /// Wall time from the first start to the last finish.
    pub elapsed: Duration,
    /// Latencies of every operation (successful or not), in microseconds.
    pub latency_us: Histogram<u64>,
}

impl Report {
    /// Successful operations per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// The latency at `quantile` (0.0–1.0) in milliseconds.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// One line for logs and for `scripts/bench.sh` to parse:
    /// `<label>: rps=… p50_ms=… p95_ms=… p99_ms=… ok=… errors=…`.
    pub fn line(&self, label: &str) -> String {
        format!(
            "{label}: rps={:.0} p50_ms={:.3} p95_ms={:.3} p99_ms={:.3} ok={} errors={}",
            self.throughput(),
            self.latency_ms(0.50),
            self.latency_ms(0.95),
            self.latency_ms(0.99),
            self.ok,
            self.failed,
        )
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s at three significant figures; the bounds are constants.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Runs `operation` from `concurrency` workers for `duration`.
///
/// `operation(worker, sequence)` gets the worker's index and a per-worker
/// counter, so workers can pick distinct data without sharing state.
pub async fn closed_loop<F, Fut>(concurrency: usize, duration: Duration, operation: F) -> Report
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Outcome> + Send,
{
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|worker| {
            let operation = operation.clone();
            tokio::spawn(async move {
                let mut latency = histogram();
                let (mut ok, mut failed) = (0_u64, 0_u64);
                let mut sequence = 0_u64;
                while Instant::now() < deadline {
                    let begun = Instant::now();
                    let outcome = operation(worker, sequence).await;
                    let micros = u64::try_from(begun.elapsed().as_micros()).unwrap_or(u64::MAX);
                    latency.saturating_record(micros.max(1));
                    match outcome {
                        Outcome::Ok => ok += 1,
                        Outcome::Failed => failed += 1,
                    }
                    sequence += 1;
                }
                (ok, failed, latency)
            })
        })
        .collect();

    let mut report = Report {
        ok: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latency_us: histogram(),
    };
    for worker in workers {
        // A worker that panicked counts as one failure; its figures are lost.
        match worker.await {
            Ok((ok, failed, latency)) => {
                report.ok += ok;
                report.failed += failed;
                // Both histograms share the bounds above, so adding cannot fail.
                let _ = report.latency_us.add(&latency);
            }
            Err(_) => report.failed += 1,
        }
    }
    report.elapsed = started.elapsed();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_every_outcome_and_records_every_latency() {
        let report = closed_loop(
            4,
            Duration::from_millis(200),
            |worker, sequence| async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                Outcome::from(!(worker == 0 && sequence % 2 == 1))
            },
        )
        .await;
        assert!(report.ok > 0);
        assert!(report.failed > 0);
        assert_eq!(report.latency_us.len(), report.ok + report.failed);
        assert!(report.latency_ms(0.5) >= 2.0);
        let line = report.line("demo");
        assert!(line.starts_with("demo: rps="), "{line}");
        assert!(
            line.contains(&format!("errors={}", report.failed)),
            "{line}"
        );
    }
}
