//! What is particular to the embedded engine: the file, the writer's
//! transaction discipline, SQLite's error mapping and SQL building. The
//! semantics shared with MongoDB are checked by `core/tests/store/`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tempfile::TempDir;

use super::{EmbeddedStore, EmbeddedTx, Options};
use crate::db::{Direction, Document, Filter, FindOptions, IndexSpec, SortKey, StoreError, Update};

fn doc(value: Value) -> Document {
    value.as_object().cloned().expect("an object")
}

fn store() -> (TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = EmbeddedStore::open_with(&dir.path().join("db.sqlite3"), &Options::default())
        .expect("store opens");
    (dir, store)
}

async fn insert(store: &EmbeddedStore, collection: &str, value: Value) {
    let mut tx = store.begin().await.unwrap();
    tx.insert(collection, doc(value)).await.unwrap();
    tx.commit().await.unwrap();
}

async fn ids(store: &EmbeddedStore, collection: &str, filter: Filter) -> Vec<String> {
    store
        .find(collection, &filter, &FindOptions::by_id())
        .await
        .unwrap()
        .into_iter()
        .map(|d| d["_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_transaction_can_live_in_a_spawned_task() {
    fn send_and_static<T: Send + 'static>() {}
    send_and_static::<EmbeddedTx>();
    send_and_static::<EmbeddedStore>();
}

#[tokio::test]
async fn data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // A directory that does not exist yet is created.
    let path = dir.path().join("nested/dir/db.sqlite3");
    let store = EmbeddedStore::open(&path).await.unwrap();
    store
        .ensure_indexes(&[IndexSpec::new("users", "email", &["email"]).unique()])
        .await
        .unwrap();
    insert(&store, "users", json!({"_id": "u1", "email": "a@x"})).await;
    drop(store);

    let store = EmbeddedStore::open(&path).await.unwrap();
    assert_eq!(
        store.get("users", "u1").await.unwrap(),
        Some(doc(json!({"_id": "u1", "email": "a@x"})))
    );
    // The unique index came back with the file.
    let mut tx = store.begin().await.unwrap();
    let err = tx
        .insert("users", doc(json!({"_id": "u2", "email": "a@x"})))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::Duplicate {
            collection: "users".to_owned(),
            index: "email".to_owned()
        }
    );
    let stats = store.stats().await.unwrap();
    assert_eq!(stats["engine"], "sqlite");
    assert_eq!(stats["collections"]["users"]["documents"], 1);
}

#[tokio::test]
async fn a_dropped_transaction_rolls_back_and_the_writer_stays_usable() {
    let (_dir, store) = store();
    {
        let mut tx = store.begin().await.unwrap();
        tx.insert("notes", doc(json!({"_id": "n1"}))).await.unwrap();
        // Dropped without commit or abort.
    }
    assert_eq!(store.get("notes", "n1").await.unwrap(), None);
    insert(&store, "notes", json!({"_id": "n2"})).await;
    assert_eq!(ids(&store, "notes", Filter::all()).await, ["n2"]);
}

#[tokio::test]
async fn a_cancelled_transaction_future_rolls_back() {
    let (_dir, store) = store();
    let store = Arc::new(store);
    let work = {
        let store = store.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            tx.insert("notes", doc(json!({"_id": "n1"}))).await.unwrap();
            // Stuck mid-transaction, e.g. awaiting a slow call.
            std::future::pending::<()>().await;
        }
    };
    assert!(tokio::time::timeout(Duration::from_millis(20), work)
        .await
        .is_err());
    assert_eq!(store.get("notes", "n1").await.unwrap(), None);
    let tx = tokio::time::timeout(Duration::from_secs(1), store.begin())
        .await
        .expect("the writer was released")
        .unwrap();
    tx.abort().await;
}

#[tokio::test]
async fn a_panic_inside_a_transaction_rolls_back() {
    let (_dir, store) = store();
    let store = Arc::new(store);
    let task = tokio::spawn({
        let store = store.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            tx.insert("notes", doc(json!({"_id": "n1"}))).await.unwrap();
            panic!("bug in the middle of a transaction");
        }
    });
    assert!(task.await.is_err());
    assert_eq!(store.get("notes", "n1").await.unwrap(), None);
    insert(&store, "notes", json!({"_id": "n2"})).await;
}

#[tokio::test]
async fn injection_shaped_values_are_plain_data() {
    let (_dir, store) = store();
    let nasty = "x'); DROP TABLE \"c_notes\"; --";
    insert(&store, "notes", json!({"_id": nasty, "text": nasty})).await;
    insert(&store, "notes", json!({"_id": "plain", "text": "ok"})).await;
    assert_eq!(
        ids(&store, "notes", Filter::all().eq("text", nasty)).await,
        [nasty]
    );
    assert!(
        ids(&store, "notes", Filter::all().eq("text", "' OR '1'='1"))
            .await
            .is_empty()
    );
    let mut tx = store.begin().await.unwrap();
    let after = tx
        .update_one(
            "notes",
            &Filter::id(nasty),
            &Update::new().set("text", "'; DELETE FROM \"c_notes\"; --"),
        )
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(after["text"], "'; DELETE FROM \"c_notes\"; --");
    assert_eq!(store.count("notes", &Filter::all()).await.unwrap(), 2);
}

#[tokio::test]
async fn an_overflowing_increment_is_refused_not_wrapped() {
    let (_dir, store) = store();
    insert(
        &store,
        "wallets",
        json!({"_id": "w", "balance": i64::MAX - 1, "flag": true, "name": "x", "rate": 1.5}),
    )
    .await;
    let mut tx = store.begin().await.unwrap();
    let inc = |field: &str, delta| Update::new().inc(field, delta);
    let after = tx
        .update_one("wallets", &Filter::id("w"), &inc("balance", 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after["balance"], i64::MAX);
    let err = tx
        .update_one("wallets", &Filter::id("w"), &inc("balance", 1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid(m) if m.contains("overflow")),
        "{err:?}"
    );
    for field in ["flag", "name"] {
        assert!(matches!(
            tx.update_one("wallets", &Filter::id("w"), &inc(field, 1))
                .await,
            Err(StoreError::Invalid(_))
        ));
    }
    let after = tx
        .update_one("wallets", &Filter::id("w"), &inc("rate", 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after["rate"], 3.5);
    // The failed statements changed nothing and left the transaction usable.
    tx.commit().await.unwrap();
    let stored = store.get("wallets", "w").await.unwrap().unwrap();
    assert_eq!(stored["balance"], i64::MAX);
    assert_eq!(stored["flag"], true);
}

#[tokio::test]
async fn a_second_store_on_the_same_file_reports_busy_as_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    let first = EmbeddedStore::open_with(&path, &Options::default()).unwrap();
    let second = EmbeddedStore::open_with(
        &path,
        &Options {
            busy_timeout: Duration::from_millis(20),
            ..Options::default()
        },
    )
    .unwrap();
    insert(&first, "notes", json!({"_id": "n1"})).await;

    let mut held = first.begin().await.unwrap();
    held.insert("notes", doc(json!({"_id": "n2"})))
        .await
        .unwrap();
    assert_eq!(second.begin().await.err(), Some(StoreError::Conflict));
    // Readers of the other store are not blocked and see committed data only.
    assert_eq!(ids(&second, "notes", Filter::all()).await, ["n1"]);
    held.commit().await.unwrap();

    let mut tx = second.begin().await.unwrap();
    assert!(tx.get("notes", "n2").await.unwrap().is_some());
    tx.abort().await;
}

#[tokio::test]
async fn missing_collections_are_empty() {
    let (_dir, store) = store();
    assert_eq!(store.get("nothing", "a").await.unwrap(), None);
    assert_eq!(store.count("nothing", &Filter::all()).await.unwrap(), 0);
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.update_one("nothing", &Filter::all(), &Update::new().set("a", 1))
            .await
            .unwrap(),
        None
    );
    assert!(!tx.delete_one("nothing", &Filter::all()).await.unwrap());
    // A table created by a transaction that rolls back is created again.
    tx.insert("later", doc(json!({"_id": "x"}))).await.unwrap();
    tx.abort().await;
    insert(&store, "later", json!({"_id": "y"})).await;
    assert_eq!(ids(&store, "later", Filter::all()).await, ["y"]);
}

#[tokio::test]
async fn updates_keep_values_exact_and_create_nested_fields() {
    let (_dir, store) = store();
    insert(
        &store,
        "docs",
        json!({"_id": "d", "min": i64::MIN, "f": 0.1}),
    )
    .await;
    let mut tx = store.begin().await.unwrap();
    let after = tx
        .update_one(
            "docs",
            &Filter::id("d"),
            &Update::new()
                .set("meta.created.by", "me")
                .set("third", 0.1 + 0.2)
                .set("list", json!([1, {"a": null}]))
                .set("flag", false)
                .set("gone", Value::Null),
        )
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    let expected = doc(json!({
        "_id": "d", "min": i64::MIN, "f": 0.1,
        "meta": {"created": {"by": "me"}},
        "third": 0.1 + 0.2,
        "list": [1, {"a": null}],
        "flag": false,
        "gone": null,
    }));
    assert_eq!(after, expected);
    assert_eq!(store.get("docs", "d").await.unwrap(), Some(expected));
}

#[tokio::test]
async fn comparisons_stay_within_a_type_as_in_mongodb() {
    let (_dir, store) = store();
    for (id, v) in [
        ("a", json!(5)),
        ("b", json!("5")),
        ("c", json!(true)),
        ("d", json!(1)),
        ("e", Value::Null),
        ("f", json!(2.5)),
    ] {
        insert(&store, "t", json!({"_id": id, "v": v})).await;
    }
    insert(&store, "t", json!({"_id": "g"})).await;
    assert_eq!(
        ids(&store, "t", Filter::all().gt("v", 0)).await,
        ["a", "c", "d", "f"]
    );
    assert_eq!(ids(&store, "t", Filter::all().lt("v", "z")).await, ["b"]);
    assert_eq!(ids(&store, "t", Filter::all().eq("v", true)).await, ["c"]);
    assert_eq!(
        ids(&store, "t", Filter::all().ne("v", true)).await,
        ["a", "b", "d", "e", "f", "g"]
    );
    assert_eq!(
        ids(&store, "t", Filter::all().eq("v", Value::Null)).await,
        ["e", "g"]
    );
    assert_eq!(
        ids(
            &store,
            "t",
            Filter::all().is_in("v", vec![json!(5), Value::Null])
        )
        .await,
        ["a", "e", "g"]
    );
    assert!(ids(&store, "t", Filter::all().eq("_id", 5))
        .await
        .is_empty());
    assert!(matches!(
        store
            .find("t", &Filter::all().gt("v", true), &FindOptions::by_id())
            .await,
        Err(StoreError::Invalid(_))
    ));
}

/// Walks a listing page by page and returns the ids in order.
async fn walk(store: &EmbeddedStore, direction: Direction, page: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut options = FindOptions::sorted("seq", direction).limit(page);
    loop {
        let docs = store.find("items", &Filter::all(), &options).await.unwrap();
        let Some(last) = docs.last() else {
            return out;
        };
        options.after = Some(SortKey {
            value: last.get("seq").cloned().unwrap_or(Value::Null),
            id: last["_id"].as_str().unwrap().to_owned(),
        });
        out.extend(docs.iter().map(|d| d["_id"].as_str().unwrap().to_owned()));
    }
}

#[tokio::test]
async fn paging_crosses_missing_sort_values_in_both_directions() {
    let (_dir, store) = store();
    store
        .ensure_indexes(&[IndexSpec::new("items", "seq", &["seq"])])
        .await
        .unwrap();
    // Missing and null sort first ascending, last descending, as in MongoDB.
    let mut expected = Vec::new();
    for i in 0..7 {
        let id = format!("n{i}");
        if i % 2 == 0 {
            insert(&store, "items", json!({"_id": id})).await;
        } else {
            insert(&store, "items", json!({"_id": id, "seq": null})).await;
        }
        expected.push(id);
    }
    for i in 0..9 {
        let id = format!("s{i}");
        insert(&store, "items", json!({"_id": id, "seq": i / 2})).await;
        expected.push(id);
    }
    insert(&store, "items", json!({"_id": "t0", "seq": "text"})).await;
    expected.push("t0".to_owned());
    for page in [1, 2, 3, 5, 100] {
        assert_eq!(
            walk(&store, Direction::Asc, page).await,
            expected,
            "page {page}"
        );
        let mut reversed = expected.clone();
        reversed.reverse();
        assert_eq!(
            walk(&store, Direction::Desc, page).await,
            reversed,
            "page {page}"
        );
    }
}

#[tokio::test]
async fn an_index_cannot_be_redefined_under_the_same_name() {
    let (_dir, store) = store();
    let spec = IndexSpec::new("users", "by_email", &["email"]);
    store
        .ensure_indexes(std::slice::from_ref(&spec))
        .await
        .unwrap();
    store
        .ensure_indexes(std::slice::from_ref(&spec))
        .await
        .unwrap();
    assert!(matches!(
        store.ensure_indexes(&[spec.unique()]).await,
        Err(StoreError::Invalid(_))
    ));
}

#[tokio::test]
async fn a_set_that_breaks_a_unique_index_is_a_duplicate() {
    let (_dir, store) = store();
    store
        .ensure_indexes(&[IndexSpec::new("users", "email", &["email"]).unique()])
        .await
        .unwrap();
    insert(&store, "users", json!({"_id": "a", "email": "a@x"})).await;
    insert(&store, "users", json!({"_id": "b", "email": "b@x"})).await;
    let mut tx = store.begin().await.unwrap();
    let err = tx
        .update_one(
            "users",
            &Filter::id("b"),
            &Update::new().set("email", "a@x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Duplicate { index, .. } if index == "email"));
}

#[tokio::test]
async fn the_log_starts_over_after_a_catch_up_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    let wal = dir.path().join("db.sqlite3-wal");
    // The background rounds stay out of the way; this test drives one.
    let options = Options {
        checkpoint_interval: Duration::from_secs(3600),
        ..Options::default()
    };
    let store = EmbeddedStore::open_with(&path, &options).unwrap();
    let burst = |from: usize| {
        let store = &store;
        async move {
            for i in from..from + 200 {
                insert(
                    store,
                    "notes",
                    json!({"_id": format!("n{i:05}"), "text": "x".repeat(300)}),
                )
                .await;
            }
        }
    };
    burst(0).await;
    let grown = std::fs::metadata(&wal).unwrap().len();

    let conn = rusqlite::Connection::open(&path).unwrap();
    let writer = store.writer.clone();
    // Blocks on the writer, so it runs off the runtime, as the thread does.
    std::thread::spawn(move || super::checkpoint::pass(&conn, &writer, 0))
        .join()
        .unwrap()
        .unwrap();
    burst(200).await;

    let after = std::fs::metadata(&wal).unwrap().len();
    assert!(
        after <= grown + grown / 10,
        "the log kept growing: {grown} then {after} bytes"
    );
    assert_eq!(store.count("notes", &Filter::all()).await.unwrap(), 400);
}

/// Yields until `n` transactions wait for the writer.
async fn until_queued(store: &EmbeddedStore, n: usize) {
    while store.queued.load(std::sync::atomic::Ordering::SeqCst) < n {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_failing_transaction_in_a_group_leaves_no_trace_while_its_neighbours_commit() {
    let (_dir, store) = store();
    let store = Arc::new(store);
    // The first transaction holds the writer while three more queue behind
    // it, so all four run in one group.
    let mut first = store.begin().await.unwrap();
    first
        .insert("notes", doc(json!({"_id": "first", "n": 1})))
        .await
        .unwrap();

    let failing = tokio::spawn({
        let store = store.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            tx.insert("notes", doc(json!({"_id": "failed"})))
                .await
                .unwrap();
            tx.update_one("notes", &Filter::id("first"), &Update::new().inc("n", 10))
                .await
                .unwrap();
            // It sees the first one's write, released into the group, and
            // collides with it; then it gives up, undoing its own writes.
            let err = tx
                .insert("notes", doc(json!({"_id": "first"})))
                .await
                .unwrap_err();
            drop(tx);
            err
        }
    });
    until_queued(&store, 1).await;
    let committing = |id: &'static str| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tx = store.begin().await?;
            tx.insert("notes", doc(json!({"_id": id}))).await?;
            tx.update_one("notes", &Filter::id("first"), &Update::new().inc("n", 1))
                .await?;
            tx.commit().await
        })
    };
    let second = committing("second");
    until_queued(&store, 2).await;
    let third = committing("third");
    until_queued(&store, 3).await;

    // Returns once the group committed, which the last member does.
    first.commit().await.unwrap();
    second.await.unwrap().unwrap();
    third.await.unwrap().unwrap();
    let err = failing.await.unwrap();
    assert!(matches!(err, StoreError::Duplicate { .. }), "{err:?}");

    assert_eq!(
        ids(&store, "notes", Filter::all()).await,
        ["first", "second", "third"]
    );
    let first = store.get("notes", "first").await.unwrap().unwrap();
    assert_eq!(first["n"], 3, "only the committed increments count");
    let stats = store.stats().await.unwrap();
    assert_eq!(stats["commits"], 1, "one group commit: {stats}");
    assert_eq!(stats["transactions"], 3, "{stats}");
}

#[tokio::test]
async fn a_group_is_committed_when_the_transaction_it_waited_for_gives_up() {
    let (_dir, store) = store();
    let store = Arc::new(store);
    let mut first = store.begin().await.unwrap();
    first
        .insert("notes", doc(json!({"_id": "first"})))
        .await
        .unwrap();
    // A transaction that queues for the writer, then is cancelled (a
    // client went away) while the first one leaves the group open for it.
    let waiter = tokio::spawn({
        let store = store.clone();
        async move {
            let tx = store.begin().await;
            std::future::pending::<()>().await;
            drop(tx);
        }
    });
    until_queued(&store, 1).await;
    let committer = tokio::spawn(first.commit());
    tokio::task::yield_now().await;
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());

    // Bounded only so a regression fails instead of hanging.
    tokio::time::timeout(Duration::from_secs(10), committer)
        .await
        .expect("the group was committed")
        .unwrap()
        .unwrap();
    assert_eq!(ids(&store, "notes", Filter::all()).await, ["first"]);
    insert(&store, "notes", json!({"_id": "next"})).await;
    assert_eq!(ids(&store, "notes", Filter::all()).await, ["first", "next"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transactions_see_every_earlier_commit() {
    let (_dir, store) = store();
    let store = Arc::new(store);
    insert(&store, "counters", json!({"_id": "c", "value": 0})).await;
    let mut tasks = Vec::new();
    for task in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                // Read-modify-write without a condition: correct only if
                // each transaction sees every one serialised before it,
                // including those still waiting for their group's commit.
                let mut tx = store.begin().await.unwrap();
                let current = tx.get("counters", "c").await.unwrap().unwrap()["value"]
                    .as_i64()
                    .unwrap();
                tx.update_one(
                    "counters",
                    &Filter::id("c"),
                    &Update::new().set("value", current + 1),
                )
                .await
                .unwrap();
                tx.insert(
                    "log",
                    doc(json!({"_id": format!("{task}-{i}"), "seen": current})),
                )
                .await
                .unwrap();
                if i % 5 == 4 {
                    // Every fifth one rolls back: its increment never counts.
                    tx.abort().await;
                } else {
                    tx.commit().await.unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let committed = 16 * 40;
    let value = store.get("counters", "c").await.unwrap().unwrap()["value"].clone();
    assert_eq!(value, json!(committed));
    // Every committed transaction saw a distinct predecessor count.
    let seen: std::collections::BTreeSet<i64> = store
        .find("log", &Filter::all(), &FindOptions::by_id())
        .await
        .unwrap()
        .iter()
        .map(|d| d["seen"].as_i64().unwrap())
        .collect();
    assert_eq!(seen, (0..committed).collect());
    let stats = store.stats().await.unwrap();
    assert_eq!(stats["transactions"], committed + 1, "{stats}");
}
