//! Transfers per second at the service level on the embedded store.
//!
//! Two scenarios, 16 concurrent tasks each: transfers between random
//! wallets (1 000 of them) and between 4 hot wallets (every transfer
//! contends). Prints throughput, p50/p99 latency and, on SQLite, the mean
//! number of transfers per group commit as a Markdown table, then checks
//! the money invariants (sum of balances, every wallet equal to its
//! ledger).
//!
//! `cargo bench -p payment-service --bench transfers` (`TRANSFERS=n` sets
//! the transfers per scenario, `TASKS=n` the tasks, `EMBEDDED_ENGINE=sqlite`
//! the engine; the default is the journal engine).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use payment_service::domain::{
    Amount, Currency, PaymentPolicy, PayoutGateway, TransferCommand, WalletCommand,
};
use payment_service::PaymentService;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use service_core::cache::{CacheConfig, LayeredCache};
use service_core::db::{
    Database, DbConfig, EmbeddedEngine, Filter, FindOptions, NamingStrategy, PoolSettings,
};
use service_core::events::OutboxWaker;
use service_core::{Principal, RequestContext, RequestId};

fn tasks() -> usize {
    std::env::var("TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}
fn engine() -> EmbeddedEngine {
    match std::env::var("EMBEDDED_ENGINE").as_deref() {
        Ok("sqlite") => EmbeddedEngine::Sqlite,
        _ => EmbeddedEngine::Journal,
    }
}

const START: i64 = 1_000_000_000;

fn ctx(
    user: &str,
    roles: &[&str],
    access: &Arc<service_core::access_engine::AccessEngine>,
) -> RequestContext {
    RequestContext::new(
        RequestId::generate(),
        Some(Principal {
            user_id: user.to_owned(),
            tenant_id: "default".to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            permissions: vec![],
            session_id: "bench".to_owned(),
        }),
        access.clone(),
    )
}

struct Outcome {
    name: &'static str,
    wallets: usize,
    completed: usize,
    refused: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    /// Transfers per group commit (SQLite's statistics; none elsewhere).
    per_commit: Option<f64>,
}

/// Physical commits and the logical transactions they carried so far.
async fn commit_counts(db: &Database) -> (u64, u64) {
    let stats = db.stats().await.unwrap();
    let read = |field: &str| stats[field].as_u64().unwrap_or(0);
    (read("commits"), read("transactions"))
}

async fn scenario(name: &'static str, wallets: usize, transfers: usize) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let config = DbConfig {
        mongodb_uri: None,
        data_dir: dir.path().to_path_buf(),
        brand: "bench".to_owned(),
        tenant: "default".to_owned(),
        service: "payment".to_owned(),
        naming: NamingStrategy::PerService,
        embedded: engine(),
        pool: PoolSettings::default(),
    };
    let db = Arc::new(Database::open(&config).await.unwrap());
    payment_service::store::prepare(&db).await.unwrap();
    let service = PaymentService::new(
        db.clone(),
        Arc::new(LayeredCache::l1_only(CacheConfig::default())),
        OutboxWaker::default(),
        PayoutGateway::manual(),
        PaymentPolicy::default(),
    );
    let access = Arc::new(service_core::access_engine::default_policy());
    let eur = Currency::parse("EUR").unwrap();
    let mut users = Vec::new();
    for i in 0..wallets {
        let user = format!("user-{i:05}");
        service.remember_user(&user, "default", "bench").await;
        let wallet = service
            .create_wallet(&ctx(&user, &["user"], &access), eur)
            .await
            .unwrap();
        service
            .deposit(
                &ctx("admin", &["admin"], &access),
                WalletCommand {
                    wallet_id: wallet.id,
                    amount: Amount::positive(START).unwrap(),
                    idempotency_key: None,
                    description: None,
                },
            )
            .await
            .unwrap();
        users.push(user);
    }
    let users = Arc::new(users);
    let counts_before = commit_counts(&db).await;
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks() {
        let (service, users, access) = (service.clone(), users.clone(), access.clone());
        handles.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(task as u64);
            let mut latencies = Vec::with_capacity(transfers / tasks());
            let (mut ok, mut refused) = (0, 0);
            for _ in 0..transfers / tasks() {
                let from = rng.gen_range(0..users.len());
                let mut to = rng.gen_range(0..users.len() - 1);
                if to >= from {
                    to += 1;
                }
                let amount = Amount::positive(rng.gen_range(1..=1_000)).unwrap();
                let caller = ctx(&users[from], &["user"], &access);
                let t0 = Instant::now();
                let result = service
                    .transfer(
                        &caller,
                        TransferCommand {
                            to_user_id: users[to].clone(),
                            amount,
                            currency: eur,
                            idempotency_key: Some(format!("{task}-{}", ok + refused)),
                            description: None,
                        },
                    )
                    .await;
                latencies.push(t0.elapsed());
                match result {
                    Ok(_) => ok += 1,
                    Err(_) => refused += 1,
                }
            }
            (latencies, ok, refused)
        }));
    }
    let mut latencies = Vec::new();
    let (mut completed, mut refused) = (0, 0);
    for handle in handles {
        let (l, ok, no) = handle.await.unwrap();
        latencies.extend(l);
        completed += ok;
        refused += no;
    }
    let elapsed = started.elapsed();
    let counts_after = commit_counts(&db).await;
    let per_commit = (counts_after.1 > counts_before.1).then(|| {
        (counts_after.1 - counts_before.1) as f64 / (counts_after.0 - counts_before.0).max(1) as f64
    });
    latencies.sort();
    let pick = |q: f64| {
        // Integer index of the quantile (no float arithmetic on money).
        let idx = ((latencies.len() as f64 - 1.0) * q) as usize;
        latencies[idx]
    };
    let (p50, p99) = (pick(0.50), pick(0.99));

    // Invariants.
    let docs = db
        .find("wallets", &Filter::all(), &FindOptions::by_id())
        .await
        .unwrap();
    let sum: i64 = docs.iter().map(|d| d["balance"].as_i64().unwrap()).sum();
    assert!(
        docs.iter().all(|d| d["balance"].as_i64().unwrap() >= 0),
        "negative balance"
    );
    assert_eq!(
        sum,
        START * wallets as i64,
        "{name}: the sum of balances changed"
    );
    let report = service.reconcile().await.unwrap();
    assert!(
        report.mismatches.is_empty(),
        "{name}: {:?}",
        report.mismatches
    );
    let recorded = db.count("transfers", &Filter::all()).await.unwrap();
    assert_eq!(recorded as usize, completed, "{name}: transfer records");
    let entries = db.count("transactions", &Filter::all()).await.unwrap();
    assert_eq!(
        entries as usize,
        wallets + 2 * completed,
        "{name}: ledger entries"
    );
    Outcome {
        name,
        wallets,
        completed,
        refused,
        elapsed,
        p50,
        p99,
        per_commit,
    }
}

fn main() {
    let transfers: usize = std::env::var("TRANSFERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcomes = runtime.block_on(async {
        vec![
            scenario("random wallets", 1_000, transfers).await,
            scenario("4 hot wallets", 4, transfers).await,
        ]
    });
    println!(
        "\nTransfers at the service level, embedded store ({:?}), {} tasks, {} CPUs, idempotency key on every transfer\n",
        engine(),
        tasks(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| scenario | wallets | transfers | refused | transfers/s | p50 | p99 | per commit | invariants |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for o in outcomes {
        let per_second = (o.completed + o.refused) as f64 / o.elapsed.as_secs_f64();
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.2} ms | {:.2} ms | {} | hold |",
            o.name,
            o.wallets,
            o.completed,
            o.refused,
            per_second,
            o.p50.as_secs_f64() * 1e3,
            o.p99.as_secs_f64() * 1e3,
            o.per_commit.map_or("—".to_owned(), |n| format!("{n:.1}")),
        );
    }
}
