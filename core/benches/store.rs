//! Embedded store benchmarks: the payment hot path (a conditional debit and
//! its ledger entry in one transaction) and reads by id, through the public
//! `Database` API on a temporary file.
//!
//! Debits run against 1 000 wallets picked at random and against 4 hot
//! wallets (every transaction queues for the same rows), from one task and
//! from 16 concurrent tasks on a multi-thread runtime. The plain lines
//! (`embedded conditional-debit tx/s ...`) are for `scripts/bench.sh` to
//! read; criterion adds its own per-operation estimates after them.
//! Target: at least 10 000 transactions per second.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::json;
use service_core::db::{
    encode_cursor, paginate, Database, DbConfig, Direction, Document, Filter, IndexSpec,
    NamingStrategy, PageArgs, PoolSettings, SortKey, StoreError, Update,
};
use tokio::runtime::Runtime;

const WALLETS: usize = 1_000;
const HOT: usize = 4;
const TASKS: usize = 16;
const RUN: Duration = Duration::from_secs(3);

/// Unique ledger ids across every run.
static LEDGER_SEQ: AtomicU64 = AtomicU64::new(0);

fn doc(value: serde_json::Value) -> Document {
    value.as_object().cloned().expect("an object")
}

fn wallet_id(n: usize) -> String {
    format!("wallet-{n:06}")
}

async fn open(dir: &std::path::Path) -> Database {
    let config = DbConfig {
        mongodb_uri: None,
        data_dir: dir.to_path_buf(),
        brand: "bench".to_owned(),
        tenant: "default".to_owned(),
        service: "payment".to_owned(),
        naming: NamingStrategy::PerBrandService,
        embedded: service_core::db::EmbeddedEngine::default(),
        pool: PoolSettings::default(),
    };
    let db = Database::open(&config).await.unwrap();
    db.ensure_indexes(&[
        IndexSpec::new("wallets", "wallet_user_currency", &["user_id", "currency"]).unique(),
        IndexSpec::new("ledger", "ledger_wallet_seq", &["wallet_id", "seq"]),
    ])
    .await
    .unwrap();
    db.transaction(|tx| {
        Box::pin(async move {
            for n in 0..WALLETS {
                tx.insert(
                    "wallets",
                    doc(json!({
                        "_id": wallet_id(n),
                        "user_id": format!("user-{n:06}"),
                        "currency": "EUR",
                        "balance": 1_000_000_000_000_i64,
                        "bonus_balance": 0,
                        "locked_balance": 0,
                        "status": "ACTIVE",
                    })),
                )
                .await?;
            }
            Ok::<_, StoreError>(())
        })
    })
    .await
    .unwrap();
    db
}

/// Takes 1 from the wallet if it holds at least 1 and writes the ledger
/// entry, atomically: the transfer service's inner loop.
async fn debit(db: &Database, wallet: &str) {
    let seq = LEDGER_SEQ.fetch_add(1, Ordering::Relaxed);
    db.transaction(|tx| {
        Box::pin(async move {
            let after = tx
                .update_one(
                    "wallets",
                    &Filter::id(wallet).gte("balance", 1),
                    &Update::new().inc("balance", -1),
                )
                .await?
                .expect("the wallet holds enough");
            tx.insert(
                "ledger",
                doc(json!({
                    "_id": format!("ledger-{seq:012}"),
                    "wallet_id": wallet,
                    "direction": "DEBIT",
                    "amount": 1,
                    "balance_after": after["balance"],
                    "seq": seq,
                })),
            )
            .await
        })
    })
    .await
    .unwrap();
}

/// Operations per second and latency percentiles of one scenario.
struct Outcome {
    per_second: f64,
    p50_us: u64,
    p99_us: u64,
}

/// Runs `op` from `tasks` concurrent tasks for [`RUN`], each picking one
/// of the first `pool` wallets at random per operation.
fn measure<F, Fut>(runtime: &Runtime, tasks: usize, pool: usize, op: F) -> Outcome
where
    F: Fn(String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    runtime.block_on(async move {
        let started = Instant::now();
        let deadline = started + RUN;
        let handles: Vec<_> = (0..tasks)
            .map(|task| {
                let op = op.clone();
                tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(task as u64);
                    let mut latencies = Vec::with_capacity(1 << 16);
                    while Instant::now() < deadline {
                        let wallet = wallet_id(rng.gen_range(0..pool));
                        let t0 = Instant::now();
                        op(wallet).await;
                        latencies.push(t0.elapsed().as_micros() as u64);
                    }
                    latencies
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for handle in handles {
            latencies.extend(handle.await.unwrap());
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort_unstable();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        Outcome {
            per_second: latencies.len() as f64 / elapsed,
            p50_us: at(0.50),
            p99_us: at(0.99),
        }
    })
}

/// Reads 20-item pages of a 220 000-document listing at pages 1, 2, 100 and
/// 10 000 (through their cursors): a keyset read costs the same at any depth.
/// Page 1 has no cursor, so it is the one cheaper query.
fn page_depth(runtime: &Runtime, db: &Database) {
    const DOCS: i64 = 220_000;
    const PAGE: i32 = 20;
    const READS: u32 = 2_000;
    runtime.block_on(async {
        db.ensure_indexes(&[IndexSpec::new("pages", "pages_seq", &["seq"])])
            .await
            .unwrap();
        db.transaction(|tx| {
            Box::pin(async move {
                for seq in 0..DOCS {
                    tx.insert(
                        "pages",
                        doc(json!({"_id": format!("p{seq:07}"), "seq": seq})),
                    )
                    .await?;
                }
                Ok::<_, StoreError>(())
            })
        })
        .await
        .unwrap();
    });
    // Newest first: page N starts after the document at position (N - 1) × 20.
    let cursor_before_page = |page: i64| {
        let seq = DOCS - (page - 1) * i64::from(PAGE);
        Some(encode_cursor(&SortKey {
            value: json!(seq),
            id: format!("p{seq:07}"),
        }))
    };
    for (label, after) in [
        ("1", None),
        ("2", cursor_before_page(2)),
        ("100", cursor_before_page(100)),
        ("10000", cursor_before_page(10_000)),
    ] {
        let query = PageArgs::forward(Some(PAGE), after).validate().unwrap();
        let started = Instant::now();
        for _ in 0..READS {
            let page = runtime
                .block_on(paginate(
                    db,
                    "pages",
                    &Filter::all(),
                    "seq",
                    Direction::Desc,
                    &query,
                ))
                .unwrap();
            assert_eq!(page.edges.len(), PAGE as usize);
            black_box(page);
        }
        println!(
            "embedded page read page={label}: {:.0} µs",
            started.elapsed().as_secs_f64() * 1e6 / f64::from(READS)
        );
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(runtime.block_on(open(dir.path())));

    for (name, pool) in [("random", WALLETS), ("hot4", HOT)] {
        for tasks in [1, TASKS] {
            let db = db.clone();
            let outcome = measure(&runtime, tasks, pool, move |wallet| {
                let db = db.clone();
                async move { debit(&db, &wallet).await }
            });
            println!(
                "embedded conditional-debit tx/s {name} tasks={tasks}: {:.0}",
                outcome.per_second
            );
            println!(
                "embedded conditional-debit latency {name} tasks={tasks}: p50={} µs p99={} µs",
                outcome.p50_us, outcome.p99_us
            );
        }
    }
    for tasks in [1, TASKS] {
        let db = db.clone();
        let outcome = measure(&runtime, tasks, WALLETS, move |wallet| {
            let db = db.clone();
            async move {
                black_box(db.get("wallets", &wallet).await.unwrap());
            }
        });
        println!(
            "embedded get/s tasks={tasks}: {:.0} (p50={} µs p99={} µs)",
            outcome.per_second, outcome.p50_us, outcome.p99_us
        );
    }

    page_depth(&runtime, &db);

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut rng = StdRng::seed_from_u64(99);
    criterion.bench_function("embedded conditional-debit (one task)", |b| {
        b.iter(|| runtime.block_on(debit(&db, &wallet_id(rng.gen_range(0..WALLETS)))));
    });
    criterion.bench_function("embedded get by id", |b| {
        b.iter(|| {
            runtime.block_on(async {
                black_box(
                    db.get("wallets", &wallet_id(rng.gen_range(0..WALLETS)))
                        .await
                        .unwrap(),
                )
            })
        });
    });
    criterion.final_summary();
}
