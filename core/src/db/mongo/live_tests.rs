//! Checks against a real MongoDB wire server (`TEST_MONGODB_URI`, started by
//! `scripts/test.sh`) for what only a server can show: real write
//! conflicts, the overflow guard as the server evaluates it, and pool
//! figures moving with traffic. The shared conformance suite in
//! `core/tests/store/` covers the rest.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use secrecy::SecretString;
use serde_json::json;

use super::{MongoStore, PoolSettings, PoolStatus};
use crate::db::{Database, DbConfig, Document, Filter, NamingStrategy, StoreError, Update};

fn uri() -> SecretString {
    SecretString::from(std::env::var("TEST_MONGODB_URI").expect(
        "TEST_MONGODB_URI is not set: run scripts/test.sh, which starts a MongoDB wire server",
    ))
}

/// A database name no other test uses.
fn unique_name() -> String {
    format!("live_{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

fn doc(value: serde_json::Value) -> Document {
    value.as_object().cloned().unwrap()
}

async fn store() -> MongoStore {
    MongoStore::connect(&uri(), &unique_name(), &PoolSettings::default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transactions_on_one_document_conflict() {
    let store = store().await;
    store
        .insert("counters", doc(json!({"_id": "c", "value": 0})))
        .await
        .unwrap();
    let set = |v: i64| Update::new().set("value", v);

    let mut first = store.begin().await.unwrap();
    let mut second = store.begin().await.unwrap();
    let won = first
        .update_one("counters", &Filter::id("c"), &set(1))
        .await
        .unwrap();
    assert_eq!(won.unwrap()["value"], 1);
    let lost = second
        .update_one("counters", &Filter::id("c"), &set(2))
        .await;
    assert_eq!(lost, Err(StoreError::Conflict));
    first.commit().await.unwrap();
    second.abort().await;

    let stored = store.get("counters", "c").await.unwrap().unwrap();
    assert_eq!(stored["value"], 1, "the losing write must leave no trace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_cannot_go_on_after_a_failed_write() {
    let store = store().await;
    store
        .insert("keys", doc(json!({"_id": "k1"})))
        .await
        .unwrap();

    let mut tx = store.begin().await.unwrap();
    tx.insert("keys", doc(json!({"_id": "k2"}))).await.unwrap();
    let duplicate = tx.insert("keys", doc(json!({"_id": "k1"}))).await;
    assert!(
        matches!(duplicate, Err(StoreError::Duplicate { .. })),
        "{duplicate:?}"
    );
    // The server has aborted the transaction: carrying on is refused
    // plainly, not reported as a conflict the runner would retry forever.
    let next = tx.insert("keys", doc(json!({"_id": "k3"}))).await;
    assert!(matches!(next, Err(StoreError::Invalid(_))), "{next:?}");
    let commit = tx.commit().await;
    assert!(matches!(commit, Err(StoreError::Invalid(_))), "{commit:?}");

    assert_eq!(store.count("keys", &Filter::all()).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transaction_runner_retries_a_real_conflict() {
    let config = DbConfig {
        mongodb_uri: Some(uri()),
        data_dir: std::env::temp_dir(),
        brand: unique_name(),
        tenant: "default".to_owned(),
        service: "live".to_owned(),
        naming: NamingStrategy::PerBrandService,
        embedded: crate::db::EmbeddedEngine::default(),
        pool: PoolSettings::default(),
    };
    let db = Arc::new(Database::open(&config).await.unwrap());
    db.insert("counters", doc(json!({"_id": "c", "value": 0})))
        .await
        .unwrap();
    let attempts = AtomicU32::new(0);

    let outcome: Result<i64, StoreError> = db
        .transaction(|tx| {
            let (db, attempts) = (db.clone(), &attempts);
            Box::pin(async move {
                let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
                let read = tx.get("counters", "c").await?.unwrap()["value"]
                    .as_i64()
                    .unwrap();
                if attempt == 1 {
                    // Another writer commits after this transaction's read.
                    db.update_one(
                        "counters",
                        &Filter::id("c"),
                        &Update::new().inc("value", 10),
                    )
                    .await?;
                }
                tx.update_one(
                    "counters",
                    &Filter::id("c"),
                    &Update::new().set("value", read + 1),
                )
                .await?;
                Ok(read + 1)
            })
        })
        .await;

    assert_eq!(
        outcome,
        Ok(11),
        "the re-run must read the other writer's value"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    let stored = db.get("counters", "c").await.unwrap().unwrap();
    assert_eq!(stored["value"], 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_increment_that_would_overflow_matches_nothing() {
    let store = store().await;
    store
        .insert(
            "wallets",
            doc(json!({"_id": "w", "hi": i64::MAX - 1, "lo": i64::MIN + 1})),
        )
        .await
        .unwrap();
    let mut tx = store.begin().await.unwrap();
    for update in [Update::new().inc("hi", 2), Update::new().inc("lo", -2)] {
        let outcome = tx.update_one("wallets", &Filter::id("w"), &update).await;
        assert_eq!(outcome, Ok(None), "{update:?}");
    }
    // Up to the limit itself is fine, and stays an integer.
    let after = tx
        .update_one(
            "wallets",
            &Filter::id("w"),
            &Update::new().inc("hi", 1).inc("lo", -1),
        )
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(after["hi"], json!(i64::MAX));
    assert_eq!(after["lo"], json!(i64::MIN));
    assert_eq!(store.get("wallets", "w").await.unwrap(), Some(after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_document_writes_outside_transactions_never_conflict() {
    let store = Arc::new(store().await);
    store
        .insert("wallets", doc(json!({"_id": "hot", "balance": 100})))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .update_one(
                        "wallets",
                        &Filter::id("hot").gte("balance", 5),
                        &Update::new().inc("balance", -5),
                    )
                    .await
            })
        })
        .collect();
    let mut debited = 0;
    for task in tasks {
        if task.await.unwrap().unwrap().is_some() {
            debited += 1;
        }
    }
    assert_eq!(debited, 20, "exactly the affordable debits succeed");
    let left = store.get("wallets", "hot").await.unwrap().unwrap();
    assert_eq!(left["balance"], 0);
    assert!(store
        .delete_one("wallets", &Filter::id("hot"))
        .await
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_statistics_move_with_traffic() {
    let store = Arc::new(store().await);
    store
        .insert("things", doc(json!({"_id": "t", "n": 1})))
        .await
        .unwrap();
    let busiest = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (store, busiest, done) = (store.clone(), busiest.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                busiest.fetch_max(store.pool_stats().in_use, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        })
    };
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..5 {
                    store.count("things", &Filter::all()).await.unwrap();
                }
            })
        })
        .collect();
    for reader in readers {
        reader.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    sampler.await.unwrap();

    // The driver reports check-ins from its pool task, a moment after the
    // operation returns.
    let mut stats = store.pool_stats();
    for _ in 0..500 {
        if stats.in_use == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        stats = store.pool_stats();
    }
    assert!(
        busiest.load(Ordering::SeqCst) > 0,
        "no connection was ever seen in use"
    );
    assert!(stats.total > 0, "{stats:?}");
    assert_eq!(stats.max, 100);
    assert_eq!(stats.status, PoolStatus::Healthy);
    assert_eq!(stats.waiting, 0, "{stats:?}");
    assert_eq!(stats.in_use, 0, "every connection is back: {stats:?}");
    let db_stats = store.stats().await.unwrap();
    assert_eq!(db_stats["objects"], 1, "{db_stats}");
    store.health().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_server_fails_fast_without_showing_the_password() {
    // Nothing listens on port 1; no test server is needed.
    let settings = PoolSettings {
        server_selection_timeout_ms: 300,
        ..PoolSettings::default()
    };
    let uri = SecretString::from("mongodb://app:hunter2@127.0.0.1:1/?directConnection=true");
    let err = match MongoStore::connect(&uri, "nowhere", &settings).await {
        Ok(_) => panic!("connected to nothing"),
        Err(err) => err,
    };
    let StoreError::Unavailable(message) = &err else {
        panic!("expected unavailable, got {err:?}");
    };
    assert!(!message.contains("hunter2"), "{message}");
    assert!(message.contains("mongodb://***@127.0.0.1:1"), "{message}");
}
