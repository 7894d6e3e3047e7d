//! The checks themselves, written once for both engines.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use service_core::db::{
    Database, Direction, Document, Filter, FindOptions, IndexSpec, PageArgs, StoreError, Update,
};

use crate::harness::{Engine, TestDb};

mod indexes;
mod pagination;
pub(crate) use indexes::*;
pub(crate) use pagination::*;

fn doc(value: Value) -> Document {
    value.as_object().cloned().expect("an object")
}

/// The error a transaction's work returns: a refusal of its own, or storage.
#[derive(Debug)]
enum Failure {
    Refused,
    // Read through `Debug` when an assertion shows the outcome.
    #[allow(dead_code)]
    Store(StoreError),
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        Self::Store(err)
    }
}

async fn wallet(db: &TestDb, id: &str, balance: i64) {
    db.insert(
        "wallets",
        doc(json!({"_id": id, "user_id": id, "currency": "EUR", "balance": balance})),
    )
    .await
    .unwrap();
}

async fn balance(db: &TestDb, id: &str) -> i64 {
    db.get("wallets", id).await.unwrap().unwrap()["balance"]
        .as_i64()
        .unwrap()
}

/// Debits `from` (only if it holds enough), credits `to`, and writes both
/// ledger entries, in one transaction.
async fn transfer(
    db: &Database,
    id: &str,
    from: &str,
    to: &str,
    amount: i64,
) -> Result<(), Failure> {
    db.transaction(|tx| {
        Box::pin(async move {
            let debited = tx
                .update_one(
                    "wallets",
                    &Filter::id(from).gte("balance", amount),
                    &Update::new().inc("balance", -amount),
                )
                .await?;
            let Some(debited) = debited else {
                return Err(Failure::Refused);
            };
            let credited = tx
                .update_one(
                    "wallets",
                    &Filter::id(to),
                    &Update::new().inc("balance", amount),
                )
                .await?
                .ok_or(Failure::Refused)?;
            for (suffix, wallet, direction, after) in [
                ("d", from, "DEBIT", &debited),
                ("c", to, "CREDIT", &credited),
            ] {
                tx.insert(
                    "ledger",
                    doc(json!({
                        "_id": format!("{id}-{suffix}"),
                        "transfer_id": id,
                        "wallet_id": wallet,
                        "direction": direction,
                        "amount": amount,
                        "balance_after": after["balance"],
                    })),
                )
                .await?;
            }
            Ok(())
        })
    })
    .await
}

pub(crate) async fn atomic_transfer_moves_money_and_writes_the_ledger(db: &TestDb) {
    wallet(db, "a", 100).await;
    wallet(db, "b", 5).await;

    transfer(db, "t1", "a", "b", 40).await.unwrap();

    assert_eq!(balance(db, "a").await, 60);
    assert_eq!(balance(db, "b").await, 45);
    let entries = db
        .find(
            "ledger",
            &Filter::all().eq("transfer_id", "t1"),
            &FindOptions::by_id(),
        )
        .await
        .unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["direction"], "CREDIT");
    assert_eq!(entries[0]["balance_after"], 45);
    assert_eq!(entries[1]["direction"], "DEBIT");
    assert_eq!(entries[1]["balance_after"], 60);
}

pub(crate) async fn failing_transaction_rolls_back_every_write(db: &TestDb) {
    wallet(db, "a", 100).await;
    // The credit target does not exist: the debit already made must vanish.
    let outcome = transfer(db, "t1", "a", "missing", 40).await;
    assert!(matches!(outcome, Err(Failure::Refused)), "{outcome:?}");
    assert_eq!(balance(db, "a").await, 100);
    assert_eq!(db.count("ledger", &Filter::all()).await.unwrap(), 0);

    // An insufficient balance is refused and leaves nothing either.
    wallet(db, "b", 0).await;
    assert!(matches!(
        transfer(db, "t2", "b", "a", 1).await,
        Err(Failure::Refused)
    ));
    assert_eq!(balance(db, "b").await, 0);
    assert_eq!(db.count("ledger", &Filter::all()).await.unwrap(), 0);
}

pub(crate) async fn unique_index_violation_is_typed_and_rolls_back(db: &TestDb) {
    db.ensure_indexes(&[IndexSpec::new(
        "wallets",
        "wallet_user_currency",
        &["user_id", "currency"],
    )
    .unique()])
        .await
        .unwrap();
    wallet(db, "w1", 0).await;
    let err = db
        .insert(
            "wallets",
            doc(json!({"_id": "w2", "user_id": "w1", "currency": "EUR", "balance": 0})),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::Duplicate {
            collection: "wallets".to_owned(),
            index: "wallet_user_currency".to_owned()
        }
    );
    // Same user, other currency: fine.
    db.insert(
        "wallets",
        doc(json!({"_id": "w3", "user_id": "w1", "currency": "USD", "balance": 0})),
    )
    .await
    .unwrap();

    // Inside a transaction, the violation undoes the writes before it.
    let outcome: Result<(), StoreError> = db
        .transaction(|tx| {
            Box::pin(async move {
                tx.insert("audit", doc(json!({"_id": "x1"}))).await?;
                tx.insert(
                    "wallets",
                    doc(json!({"_id": "w4", "user_id": "w1", "currency": "USD", "balance": 0})),
                )
                .await
            })
        })
        .await;
    assert!(
        matches!(outcome, Err(StoreError::Duplicate { .. })),
        "{outcome:?}"
    );
    assert!(db.get("audit", "x1").await.unwrap().is_none());
    assert!(db.get("wallets", "w4").await.unwrap().is_none());
}

/// Concurrent inserts of one key: one wins, and every loser finds the
/// winner with a plain read as soon as it hears "duplicate" (the usual
/// "create, else read the existing one" idiom depends on it).
pub(crate) async fn a_duplicate_is_reported_once_the_winner_is_readable(db: &TestDb) {
    db.ensure_indexes(&[IndexSpec::new("claims", "claims_key", &["key"]).unique()])
        .await
        .unwrap();
    for round in 0..20 {
        let key = format!("k{round}");
        let mut tasks = Vec::new();
        for task in 0..8 {
            let db = db.db.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                let claim = doc(json!({"_id": format!("{key}-{task}"), "key": key}));
                match db.insert("claims", claim).await {
                    Ok(()) => true,
                    Err(StoreError::Duplicate { .. }) => {
                        let winner = db
                            .find_one("claims", &Filter::all().eq("key", key.clone()))
                            .await
                            .unwrap();
                        assert!(
                            winner.is_some(),
                            "duplicate reported before {key} was readable"
                        );
                        false
                    }
                    Err(err) => panic!("unexpected {err:?}"),
                }
            }));
        }
        let mut won = 0;
        for task in tasks {
            won += usize::from(task.await.unwrap());
        }
        assert_eq!(won, 1, "exactly one insert of {key} wins");
    }
}

pub(crate) async fn concurrent_conditional_debits_never_overdraw(db: &TestDb) {
    const START: i64 = 1_000;
    wallet(db, "hot", START).await;
    wallet(db, "sink", 0).await;
    let moved = Arc::new(AtomicI64::new(0));
    let succeeded = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..50 {
        let db = db.db.clone();
        let (moved, succeeded) = (moved.clone(), succeeded.clone());
        tasks.push(tokio::spawn(async move {
            let amount = 1 + (task * 37 % 60);
            let debited = db
                .update_one(
                    "wallets",
                    &Filter::id("hot").gte("balance", amount),
                    &Update::new().inc("balance", -amount),
                )
                .await
                .unwrap();
            if let Some(after) = debited {
                assert!(after["balance"].as_i64().unwrap() >= 0);
                moved.fetch_add(amount, Ordering::SeqCst);
                succeeded.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let left = balance(db, "hot").await;
    assert!(left >= 0);
    assert_eq!(left, START - moved.load(Ordering::SeqCst));
    // Some debits must have been refused: the amounts add up to more than START.
    assert!(succeeded.load(Ordering::SeqCst) < 50);
}

pub(crate) async fn write_conflicts_are_retried_transparently(db: &TestDb) {
    db.insert("counters", doc(json!({"_id": "c", "value": 0})))
        .await
        .unwrap();
    let writers = match db.engine {
        Engine::Journal | Engine::Sqlite => 40,
        Engine::Mongo => 12,
    };
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let db = db.db.clone();
        tasks.push(tokio::spawn(async move {
            // Read, then write what was read plus one: only correct if a
            // conflicting transaction makes this one run again.
            db.transaction(|tx| {
                Box::pin(async move {
                    let current = tx.get("counters", "c").await?.unwrap()["value"]
                        .as_i64()
                        .unwrap();
                    tx.update_one(
                        "counters",
                        &Filter::id("c"),
                        &Update::new().set("value", current + 1),
                    )
                    .await?;
                    Ok::<_, StoreError>(())
                })
            })
            .await
            .unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let value = db.get("counters", "c").await.unwrap().unwrap()["value"].clone();
    assert_eq!(value, json!(writers));
}

pub(crate) async fn insert_by_key_is_idempotent(db: &TestDb) {
    let first = doc(json!({"_id": "user1:key-42", "request": "transfer 10", "result": "t-1"}));
    db.insert("idempotency_keys", first.clone()).await.unwrap();
    let replay = doc(json!({"_id": "user1:key-42", "request": "transfer 10", "result": "t-2"}));
    let err = db.insert("idempotency_keys", replay).await.unwrap_err();
    assert_eq!(
        err,
        StoreError::Duplicate {
            collection: "idempotency_keys".to_owned(),
            index: "_id".to_owned()
        }
    );
    assert_eq!(
        db.get("idempotency_keys", "user1:key-42").await.unwrap(),
        Some(first)
    );
}

pub(crate) async fn updates_return_the_document_after_the_change(db: &TestDb) {
    wallet(db, "a", 10).await;
    let after = db
        .update_one(
            "wallets",
            &Filter::id("a"),
            &Update::new().inc("balance", 5).set("status", "ACTIVE"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after["balance"], 15);
    assert_eq!(after["status"], "ACTIVE");
    // A failed precondition and an unknown id both match nothing.
    let refused = db
        .update_one(
            "wallets",
            &Filter::id("a").gte("balance", 16),
            &Update::new().inc("balance", -16),
        )
        .await
        .unwrap();
    assert!(refused.is_none());
    assert!(db
        .update_one(
            "wallets",
            &Filter::id("zzz"),
            &Update::new().inc("balance", 1)
        )
        .await
        .unwrap()
        .is_none());
    // An increment of a missing field starts from zero.
    let after = db
        .update_one("wallets", &Filter::id("a"), &Update::new().inc("locked", 3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after["locked"], 3);
    assert!(db.delete_one("wallets", &Filter::id("a")).await.unwrap());
    assert!(!db.delete_one("wallets", &Filter::id("a")).await.unwrap());
}

pub(crate) async fn filters_mean_the_same_on_every_engine(db: &TestDb) {
    for (id, n, tag) in [
        ("a", 1, Some("red")),
        ("b", 2, None),
        ("c", 3, Some("blue")),
        ("d", 4, Some("red")),
    ] {
        let mut d = doc(json!({"_id": id, "n": n}));
        if let Some(tag) = tag {
            d.insert("tag".to_owned(), json!(tag));
        }
        db.insert("things", d).await.unwrap();
    }
    let ids = |docs: Vec<Document>| {
        docs.into_iter()
            .map(|d| d["_id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let find = |filter: Filter| async move {
        ids(db
            .find("things", &filter, &FindOptions::by_id())
            .await
            .unwrap())
    };
    assert_eq!(find(Filter::all().eq("tag", "red")).await, ["a", "d"]);
    assert_eq!(
        find(Filter::all().ne("tag", "red")).await,
        ["b", "c"],
        "ne matches missing fields"
    );
    assert_eq!(
        find(Filter::all().eq("tag", Value::Null)).await,
        ["b"],
        "missing equals null"
    );
    assert_eq!(find(Filter::all().gt("n", 2)).await, ["c", "d"]);
    assert_eq!(find(Filter::all().gte("n", 2).lt("n", 4)).await, ["b", "c"]);
    assert_eq!(find(Filter::all().lte("n", 1)).await, ["a"]);
    assert_eq!(
        find(Filter::all().is_in("tag", vec![json!("blue"), json!("red")])).await,
        ["a", "c", "d"]
    );
    assert_eq!(
        find(Filter::all().eq("tag", "red' OR '1'='1")).await,
        Vec::<String>::new()
    );
    assert_eq!(
        db.count("things", &Filter::all().gte("n", 2))
            .await
            .unwrap(),
        3
    );
    let first_red = db
        .find_one("things", &Filter::all().eq("tag", "red"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first_red["_id"], "a");
    let sorted = db
        .find(
            "things",
            &Filter::all(),
            &FindOptions::sorted("n", Direction::Desc).limit(2),
        )
        .await
        .unwrap();
    assert_eq!(ids(sorted), ["d", "c"]);
    // Names that could inject are refused before any engine sees them.
    assert!(matches!(
        db.find(
            "things",
            &Filter::all().eq("$where", 1),
            &FindOptions::by_id()
        )
        .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        db.get("things; DROP TABLE x", "a").await,
        Err(StoreError::Invalid(_))
    ));
}

pub(crate) async fn uncommitted_writes_are_invisible_outside_the_transaction(db: &TestDb) {
    let outside = db.db.clone();
    db.transaction(|tx| {
        let outside = outside.clone();
        Box::pin(async move {
            tx.insert("notes", doc(json!({"_id": "n1", "text": "draft"})))
                .await?;
            assert!(
                tx.get("notes", "n1").await?.is_some(),
                "own writes are visible inside"
            );
            assert!(
                outside.get("notes", "n1").await?.is_none(),
                "uncommitted writes leaked"
            );
            Ok::<_, StoreError>(())
        })
    })
    .await
    .unwrap();
    assert!(db.get("notes", "n1").await.unwrap().is_some());
}

pub(crate) async fn documents_round_trip_exactly(db: &TestDb) {
    let original = doc(json!({
        "_id": "d1",
        "max": i64::MAX,
        "min": i64::MIN,
        "big": 9_007_199_254_740_991_i64,
        "text": "üñíçødé \" ' \\ ; --",
        "flag": true,
        "none": null,
        "list": [1, "two", {"three": 3}],
        "nested": {"a": {"b": [true, false]}},
    }));
    db.insert("docs", original.clone()).await.unwrap();
    assert_eq!(db.get("docs", "d1").await.unwrap(), Some(original));
}

pub(crate) async fn config_store_sits_between_defaults_and_environment(db: &TestDb) {
    use service_core::config::{ConfigSpec, ConfigStore, LayeredConfig, Origin};

    let store = ConfigStore::new(db.db.clone());
    store
        .set("demo", "limit", json!(20), Some("admin-1"))
        .await
        .unwrap();
    store
        .set("demo", "limit", json!(25), Some("admin-2"))
        .await
        .unwrap();
    store
        .set("demo", "mode", json!("fast"), None)
        .await
        .unwrap();
    store.set("other", "limit", json!(99), None).await.unwrap();

    let stored = store.load("demo").await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].key, "limit");
    assert_eq!(stored[0].updated_by.as_deref(), Some("admin-2"));

    let spec = ConfigSpec {
        service: "demo",
        env_prefix: Some("DEMO"),
        defaults: doc(json!({"limit": 10, "mode": "safe"})),
        sensitive: &[],
    };
    let config = LayeredConfig::new(spec)
        .with_stored(stored)
        .unwrap()
        .with_env([("DEMO_MODE".to_owned(), "strict".to_owned())])
        .unwrap();
    let entries = config.entries();
    assert_eq!(entries[0].value, json!(25));
    assert_eq!(entries[0].origin, Origin::Store);
    assert_eq!(entries[1].value, json!("strict"));
    assert_eq!(entries[1].origin, Origin::Env);
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Account {
    #[serde(rename = "_id")]
    id: String,
    owner: String,
    balance: i64,
}

impl service_core::db::Entity for Account {
    const COLLECTION: &'static str = "accounts";
}

pub(crate) async fn repository_caches_reads_and_stays_coherent(db: &TestDb) {
    use std::time::Duration;

    use service_core::cache::{CacheConfig, LayeredCache};
    use service_core::db::Repository;

    let cache = Arc::new(LayeredCache::l1_only(CacheConfig::default()));
    let repo: Repository<Account> =
        Repository::new(db.db.clone()).with_cache(cache.clone(), Duration::from_secs(60));
    // A miss before the entity exists must not hide it once created.
    assert_eq!(repo.get("acc1").await.unwrap(), None);
    let account = Account {
        id: "acc1".into(),
        owner: "u1".into(),
        balance: 10,
    };
    repo.create(&account).await.unwrap();
    assert_eq!(repo.get("acc1").await.unwrap(), Some(account.clone()));
    assert!(matches!(
        repo.create(&account).await,
        Err(StoreError::Duplicate { .. })
    ));

    // Updates write through; a failed precondition changes nothing.
    let after = repo
        .update(
            "acc1",
            Filter::all().gte("balance", 5),
            &Update::new().inc("balance", -5),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.balance, 5);
    assert_eq!(repo.get("acc1").await.unwrap().unwrap().balance, 5);
    assert!(repo
        .update(
            "acc1",
            Filter::all().gte("balance", 6),
            &Update::new().inc("balance", -6)
        )
        .await
        .unwrap()
        .is_none());

    // A write behind the repository's back is seen once forgotten.
    db.update_one(
        "accounts",
        &Filter::id("acc1"),
        &Update::new().set("owner", "u2"),
    )
    .await
    .unwrap();
    assert_eq!(
        repo.get("acc1").await.unwrap().unwrap().owner,
        "u1",
        "served from cache"
    );
    repo.forget("acc1").await;
    assert_eq!(repo.get("acc1").await.unwrap().unwrap().owner, "u2");

    let page = repo
        .page(
            &Filter::all(),
            "balance",
            Direction::Asc,
            &PageArgs::default().validate().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(page.edges.len(), 1);
    assert!(repo.delete("acc1").await.unwrap());
    assert_eq!(repo.get("acc1").await.unwrap(), None);
    assert_eq!(repo.count(&Filter::all()).await.unwrap(), 0);
}

/// Many transfers at once over a few wallets, a third of them failing
/// after their debit: the failures leave nothing behind, the others all
/// land, and every balance equals its ledger. On the embedded store the
/// concurrent transactions share group commits, so this is also where a
/// failing member next to committing neighbours is exercised under load.
pub(crate) async fn concurrent_transactions_with_failures_keep_the_books(db: &TestDb) {
    const START: i64 = 10_000;
    const WALLETS: [&str; 4] = ["w0", "w1", "w2", "w3"];
    let (tasks, per_task) = match db.engine {
        Engine::Journal | Engine::Sqlite => (32, 25),
        Engine::Mongo => (16, 6),
    };
    for id in WALLETS {
        wallet(db, id, START).await;
    }
    let mut handles = Vec::new();
    for task in 0..tasks {
        let db = db.db.clone();
        handles.push(tokio::spawn(async move {
            let mut landed = 0;
            for i in 0..per_task {
                let n = task * per_task + i;
                let from = WALLETS[n % 4];
                // Every third transfer credits a wallet that does not exist,
                // so it fails after its debit was written.
                let to = if n % 3 == 0 {
                    "missing"
                } else {
                    WALLETS[(n + 1 + n / 4 % 3) % 4]
                };
                let amount = 1 + (n as i64 * 7919) % 500;
                match transfer(&db, &format!("t{n}"), from, to, amount).await {
                    Ok(()) => landed += 1,
                    Err(Failure::Refused) => {}
                    Err(err) => panic!("transfer t{n}: {err:?}"),
                }
            }
            landed
        }));
    }
    let mut landed = 0;
    for handle in handles {
        landed += handle.await.unwrap();
    }
    assert!(landed > 0);

    let ledger = db
        .find("ledger", &Filter::all(), &FindOptions::by_id())
        .await
        .unwrap();
    assert_eq!(ledger.len(), 2 * landed, "two entries per landed transfer");
    assert!(
        ledger.iter().all(|e| e["wallet_id"] != "missing"),
        "a failed transfer left an entry"
    );
    let mut total = 0;
    for id in WALLETS {
        let held = balance(db, id).await;
        assert!(held >= 0, "{id} overdrawn");
        let moved: i64 = ledger
            .iter()
            .filter(|e| e["wallet_id"] == id)
            .map(|e| {
                let amount = e["amount"].as_i64().unwrap();
                if e["direction"] == "DEBIT" {
                    -amount
                } else {
                    amount
                }
            })
            .sum();
        assert_eq!(held, START + moved, "{id} differs from its ledger");
        total += held;
    }
    assert_eq!(
        total,
        START * WALLETS.len() as i64,
        "money was made or lost"
    );
}
