//! Cache statistics: plain atomic counters on the hot path, exported to
//! Prometheus by a collector that reads them at scrape time, so the two views
//! can never disagree.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
    IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Hits and misses of one cache level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LevelStats {
    /// Lookups this level answered.
    pub hits: u64,
    /// Lookups this level could not answer.
    pub misses: u64,
}

impl LevelStats {
    /// `hits / (hits + misses)`, 0 when nothing was looked up.
    pub fn hit_rate(&self) -> f64 {
        ratio(self.hits, self.hits + self.misses)
    }
}

/// A snapshot of a cache's counters since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CacheStats {
    /// The in-process level. Every lookup starts here.
    pub l1: LevelStats,
    /// Redis, asked only after an L1 miss (and not while it is unavailable).
    pub l2: LevelStats,
    /// Entries held in L1 now.
    pub l1_entries: u64,
    /// Keys written by `set`, `set_many`, `warm` and `cached` fills.
    pub writes: u64,
    /// Keys deleted by `delete`/`delete_many`, plus one per `delete_pattern`.
    pub deletes: u64,
    /// Redis calls that failed, timed out, or were skipped while Redis was
    /// considered down: each is a moment the cache ran degraded.
    pub l2_unavailable: u64,
}

impl CacheStats {
    /// Share of lookups answered by either level.
    pub fn hit_rate(&self) -> f64 {
        ratio(self.l1.hits + self.l2.hits, self.l1.hits + self.l1.misses)
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The live counters behind [`CacheStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) l1_hits: AtomicU64,
    pub(crate) l1_misses: AtomicU64,
    pub(crate) l2_hits: AtomicU64,
    pub(crate) l2_misses: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) deletes: AtomicU64,
    pub(crate) l2_unavailable: AtomicU64,
}

impl Counters {
    /// Counters are statistics, not synchronisation: relaxed is enough.
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, l1_entries: u64) -> CacheStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CacheStats {
            l1: LevelStats {
                hits: read(&self.l1_hits),
                misses: read(&self.l1_misses),
            },
            l2: LevelStats {
                hits: read(&self.l2_hits),
                misses: read(&self.l2_misses),
            },
            l1_entries,
            writes: read(&self.writes),
            deletes: read(&self.deletes),
            l2_unavailable: read(&self.l2_unavailable),
        }
    }
}

/// Registers a collector exposing `cache_hits_total{cache,level}`,
/// `cache_misses_total{cache,level}`, `cache_writes_total{cache}`,
/// `cache_deletes_total{cache}`, `cache_l2_unavailable_total{cache}` and
/// `cache_entries{cache,level}`.
pub(crate) fn register(
    registry: &Registry,
    cache: &str,
    read: impl Fn() -> CacheStats + Send + Sync + 'static,
) -> prometheus::Result<()> {
    let template = metrics(cache, &CacheStats::default())?;
    let descs = template
        .iter()
        .flat_map(|metric| metric.desc())
        .cloned()
        .collect();
    registry.register(Box::new(StatsCollector {
        cache: cache.to_owned(),
        descs,
        read: Arc::new(read),
    }))
}

struct StatsCollector {
    cache: String,
    descs: Vec<Desc>,
    read: Arc<dyn Fn() -> CacheStats + Send + Sync>,
}

impl Collector for StatsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // Fresh metric objects per scrape: concurrent scrapes cannot race on
        // shared ones, and construction only fails for invalid names, which
        // `register` has already ruled out.
        match metrics(&self.cache, &(self.read)()) {
            Ok(metrics) => metrics.iter().flat_map(|metric| metric.collect()).collect(),
            Err(error) => {
                tracing::warn!(%error, cache = %self.cache, "cache metrics unavailable");
                Vec::new()
            }
        }
    }
}

fn metrics(cache: &str, stats: &CacheStats) -> prometheus::Result<Vec<Box<dyn Collector>>> {
    let opts = |name: &str, help: &str| Opts::new(name, help).const_label("cache", cache);
    let hits = IntCounterVec::new(
        opts("cache_hits_total", "Cache lookups answered, per level."),
        &["level"],
    )?;
    hits.with_label_values(&["l1"]).inc_by(stats.l1.hits);
    hits.with_label_values(&["l2"]).inc_by(stats.l2.hits);
    let misses = IntCounterVec::new(
        opts(
            "cache_misses_total",
            "Cache lookups not answered, per level.",
        ),
        &["level"],
    )?;
    misses.with_label_values(&["l1"]).inc_by(stats.l1.misses);
    misses.with_label_values(&["l2"]).inc_by(stats.l2.misses);
    let writes = IntCounter::with_opts(opts("cache_writes_total", "Keys written to the cache."))?;
    writes.inc_by(stats.writes);
    let deletes = IntCounter::with_opts(opts(
        "cache_deletes_total",
        "Keys (or patterns) deleted from the cache.",
    ))?;
    deletes.inc_by(stats.deletes);
    let unavailable = IntCounter::with_opts(opts(
        "cache_l2_unavailable_total",
        "Redis calls of the cache that failed or were skipped while Redis was down.",
    ))?;
    unavailable.inc_by(stats.l2_unavailable);
    let entries = IntGauge::with_opts(
        opts("cache_entries", "Entries held in the in-process level.").const_label("level", "l1"),
    )?;
    entries.set(i64::try_from(stats.l1_entries).unwrap_or(i64::MAX));
    Ok(vec![
        Box::new(hits),
        Box::new(misses),
        Box::new(writes),
        Box::new(deletes),
        Box::new(unavailable),
        Box::new(entries),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_rates_handle_zero_and_count_both_levels() {
        assert_eq!(LevelStats::default().hit_rate(), 0.0);
        let stats = CacheStats {
            l1: LevelStats { hits: 6, misses: 4 },
            l2: LevelStats { hits: 2, misses: 2 },
            ..CacheStats::default()
        };
        assert!((stats.l1.hit_rate() - 0.6).abs() < 1e-9);
        assert!((stats.l2.hit_rate() - 0.5).abs() < 1e-9);
        assert!((stats.hit_rate() - 0.8).abs() < 1e-9);
    }

    #[test]
    fn registered_metrics_follow_the_counters() {
        let registry = Registry::new();
        let counters = Arc::new(Counters::default());
        let source = counters.clone();
        register(&registry, "users", move || source.snapshot(7)).unwrap();
        Counters::add(&counters.l1_hits, 3);
        Counters::add(&counters.l2_misses, 1);

        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(
            text.contains(r#"cache_hits_total{cache="users",level="l1"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"cache_misses_total{cache="users",level="l2"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"cache_entries{cache="users",level="l1"} 7"#),
            "{text}"
        );
        // A second cache with another name can share the registry.
        register(&registry, "orders", CacheStats::default).unwrap();
    }
}
