//! What the journal engine promises beyond the conformance suite: its
//! state survives a reopen (from the log, from a snapshot, from both), a
//! transaction that does not commit leaves nothing, one directory has one
//! store, and index plans read exactly what a full scan reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{json, Value};
use tempfile::TempDir;

use super::*;
use crate::db::{Direction, SortKey, ID};

fn doc(value: Value) -> Document {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("test documents are objects"),
    }
}

fn options() -> Options {
    Options {
        lock_wait: Duration::from_millis(50),
        ..Options::default()
    }
}

fn open(dir: &TempDir) -> JournalStore {
    JournalStore::open_with(&dir.path().join("db.journal"), &options()).unwrap()
}

async fn insert(store: &JournalStore, collection: &str, value: Value) {
    let mut tx = store.begin().await.unwrap();
    tx.insert(collection, doc(value)).await.unwrap();
    tx.commit().await.unwrap();
}

async fn ids(
    store: &JournalStore,
    collection: &str,
    filter: &Filter,
    options: &FindOptions,
) -> Vec<String> {
    store
        .find(collection, filter, options)
        .await
        .unwrap()
        .iter()
        .map(|d| d[ID].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_transaction_can_live_in_a_spawned_task() {
    fn send_and_static<T: Send + 'static>() {}
    send_and_static::<JournalTx>();
}

#[tokio::test]
async fn committed_writes_updates_deletes_and_indexes_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir);
        store
            .ensure_indexes(&[IndexSpec::new("wallets", "owner", &["owner"]).unique()])
            .await
            .unwrap();
        insert(
            &store,
            "wallets",
            json!({"_id": "w1", "owner": "u1", "balance": 0}),
        )
        .await;
        insert(
            &store,
            "wallets",
            json!({"_id": "w2", "owner": "u2", "balance": 0}),
        )
        .await;
        let mut tx = store.begin().await.unwrap();
        tx.update_one(
            "wallets",
            &Filter::id("w1"),
            &Update::new().inc("balance", 7),
        )
        .await
        .unwrap();
        assert!(tx.delete_one("wallets", &Filter::id("w2")).await.unwrap());
        tx.commit().await.unwrap();
        // Never committed: gone with the store.
        let mut tx = store.begin().await.unwrap();
        tx.insert("wallets", doc(json!({"_id": "w3", "owner": "u3"})))
            .await
            .unwrap();
        drop(tx);
    }
    let store = open(&dir);
    let w1 = store.get("wallets", "w1").await.unwrap().unwrap();
    assert_eq!(w1["balance"], 7);
    assert!(store.get("wallets", "w2").await.unwrap().is_none());
    assert!(store.get("wallets", "w3").await.unwrap().is_none());
    // The unique index came back with the data.
    let mut tx = store.begin().await.unwrap();
    let again = tx
        .insert("wallets", doc(json!({"_id": "w9", "owner": "u1"})))
        .await;
    assert!(matches!(again, Err(StoreError::Duplicate { index, .. }) if index == "owner"));
}

#[tokio::test]
async fn a_snapshot_and_the_log_after_it_rebuild_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.journal");
    let small = Options {
        log: LogOptions {
            compact_after: 16 * 1024,
            ..LogOptions::default()
        },
        ..options()
    };
    let expected = {
        let store = JournalStore::open_with(&path, &small).unwrap();
        store
            .ensure_indexes(&[IndexSpec::new("items", "items_kind_n", &["kind", "n"])])
            .await
            .unwrap();
        for n in 0..600 {
            insert(
                &store,
                "items",
                json!({"_id": format!("i{n:04}"), "kind": n % 3, "n": n}),
            )
            .await;
        }
        for n in (0..600).step_by(7) {
            let mut tx = store.begin().await.unwrap();
            tx.delete_one("items", &Filter::id(format!("i{n:04}")))
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        let mut journal = store.writer.lock().await;
        journal.wait_for_snapshot();
        let (snapshot_bytes, _) = journal.sizes();
        drop(journal);
        assert!(
            snapshot_bytes > 0,
            "the log passed its limit, so a snapshot was written"
        );
        ids(
            &store,
            "items",
            &Filter::all().eq("kind", 1),
            &FindOptions::sorted("n", Direction::Desc),
        )
        .await
    };
    let store = JournalStore::open_with(&path, &small).unwrap();
    let after = ids(
        &store,
        "items",
        &Filter::all().eq("kind", 1),
        &FindOptions::sorted("n", Direction::Desc),
    )
    .await;
    assert_eq!(after, expected);
    assert_eq!(
        store.count("items", &Filter::all()).await.unwrap(),
        600 - 86
    );
}

#[tokio::test]
async fn a_failing_or_panicking_transaction_leaves_nothing_and_the_writer_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir));
    insert(&store, "notes", json!({"_id": "n1"})).await;

    let mut tx = store.begin().await.unwrap();
    tx.insert("notes", doc(json!({"_id": "n2"}))).await.unwrap();
    let duplicate = tx.insert("notes", doc(json!({"_id": "n1"}))).await;
    assert!(matches!(duplicate, Err(StoreError::Duplicate { .. })));
    tx.abort().await;

    let panicking = store.clone();
    let joined = tokio::spawn(async move {
        let mut tx = panicking.begin().await.unwrap();
        tx.insert("notes", doc(json!({"_id": "n3"}))).await.unwrap();
        panic!("the work failed half-way");
    })
    .await;
    assert!(joined.is_err());

    insert(&store, "notes", json!({"_id": "n4"})).await;
    let all = ids(&store, "notes", &Filter::all(), &FindOptions::by_id()).await;
    assert_eq!(all, ["n1", "n4"]);
}

#[tokio::test]
async fn uncommitted_writes_are_invisible_to_readers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut tx = store.begin().await.unwrap();
    tx.insert("notes", doc(json!({"_id": "n1"}))).await.unwrap();
    assert!(tx.get("notes", "n1").await.unwrap().is_some());
    assert!(store.get("notes", "n1").await.unwrap().is_none());
    tx.commit().await.unwrap();
    assert!(store.get("notes", "n1").await.unwrap().is_some());
}

#[tokio::test]
async fn openers_in_one_process_share_the_engine_until_the_last_closes() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(&dir);
    let second = open(&dir);
    insert(&first, "notes", json!({"_id": "n1"})).await;
    assert!(second.get("notes", "n1").await.unwrap().is_some());
    drop(first);
    insert(&second, "notes", json!({"_id": "n2"})).await;
    drop(second);
    // Closed with its last handle: a new engine reads it back from disk.
    let third = open(&dir);
    assert_eq!(third.count("notes", &Filter::all()).await.unwrap(), 2);
}

#[tokio::test]
async fn a_refused_update_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store
        .ensure_indexes(&[IndexSpec::new("users", "email", &["email"]).unique()])
        .await
        .unwrap();
    insert(
        &store,
        "users",
        json!({"_id": "a", "email": "a@x", "n": i64::MAX}),
    )
    .await;
    insert(&store, "users", json!({"_id": "b", "email": "b@x"})).await;
    let mut tx = store.begin().await.unwrap();
    let taken = tx
        .update_one(
            "users",
            &Filter::id("b"),
            &Update::new().set("email", "a@x"),
        )
        .await;
    assert!(matches!(taken, Err(StoreError::Duplicate { .. })));
    let overflow = tx
        .update_one("users", &Filter::id("a"), &Update::new().inc("n", 1))
        .await;
    assert!(matches!(overflow, Err(StoreError::Invalid(_))));
    // The transaction goes on after the refusals, unchanged by them.
    let b = tx.get("users", "b").await.unwrap().unwrap();
    assert_eq!(b["email"], "b@x");
    let by_email = tx
        .find_one("users", &Filter::all().eq("email", "b@x"))
        .await
        .unwrap();
    assert_eq!(by_email.unwrap()[ID], "b");
    tx.commit().await.unwrap();
}

/// Every read through an index plan returns what filtering and sorting the
/// whole collection returns, page by page, both ways.
#[tokio::test]
async fn index_plans_read_exactly_what_a_scan_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store
        .ensure_indexes(&[
            IndexSpec::new("t", "t_a_n", &["a", "n"]),
            IndexSpec::new("t", "t_n", &["n"]),
            IndexSpec::new("t", "t_a_b", &["a", "b"]),
            IndexSpec::new("t", "t_b_id", &["b", "_id"]),
        ])
        .await
        .unwrap();
    let mut all = Vec::new();
    for i in 0..240_u32 {
        let mut d = json!({"_id": format!("d{:03}", (i * 37) % 240), "a": i % 4});
        // Some fields missing, some null, mixed numbers and strings.
        if i % 5 != 0 {
            d["n"] = if i % 11 == 0 {
                json!(format!("s{}", i % 7))
            } else {
                json!(i % 13)
            };
        }
        if i % 3 == 0 {
            d["b"] = if i % 2 == 0 {
                json!(null)
            } else {
                json!(i % 2 == 1)
            };
        }
        all.push(doc(d.clone()));
        insert(&store, "t", d).await;
    }
    let filters = [
        Filter::all(),
        Filter::all().eq("a", 2),
        Filter::all().eq("a", 1).gt("n", 3),
        Filter::all().eq("a", 3).eq("b", Value::Null),
        Filter::all().eq("a", 0).eq("b", true),
        Filter::all().eq("n", 5),
        Filter::all().lt("n", 6).ne("a", 1),
        Filter::all().is_in("a", vec![json!(1), json!(3)]),
        Filter::all().eq("a", 2).eq(ID, "d010"),
        Filter::all().eq("b", true),
        Filter::all().eq("b", Value::Null).gt("n", 2),
    ];
    for filter in &filters {
        for sort in [ID, "n", "b"] {
            for direction in [Direction::Asc, Direction::Desc] {
                let mut expected: Vec<&Document> =
                    all.iter().filter(|d| value::matches(d, filter)).collect();
                expected.sort_by(|x, y| {
                    let key = |d: &Document| {
                        let sort_value = if sort == ID {
                            None
                        } else {
                            value::field(d, sort)
                        };
                        (
                            value::Key::of(sort_value),
                            d[ID].as_str().unwrap().to_owned(),
                        )
                    };
                    key(x).cmp(&key(y))
                });
                if direction == Direction::Desc {
                    expected.reverse();
                }
                let expected: Vec<String> = expected
                    .iter()
                    .map(|d| d[ID].as_str().unwrap().to_owned())
                    .collect();

                let mut paged = Vec::new();
                let mut after: Option<SortKey> = None;
                loop {
                    let mut page_options = FindOptions::sorted(sort, direction).limit(7);
                    if let Some(after) = after.take() {
                        page_options = page_options.after(after);
                    }
                    let page = store.find("t", filter, &page_options).await.unwrap();
                    let Some(last) = page.last() else { break };
                    after = Some(SortKey {
                        value: if sort == ID {
                            last[ID].clone()
                        } else {
                            value::field(last, sort).cloned().unwrap_or(Value::Null)
                        },
                        id: last[ID].as_str().unwrap().to_owned(),
                    });
                    paged.extend(page.iter().map(|d| d[ID].as_str().unwrap().to_owned()));
                }
                assert_eq!(paged, expected, "{filter:?} by {sort} {direction}");
                let counted = store.count("t", filter).await.unwrap();
                assert_eq!(counted as usize, expected.len(), "count of {filter:?}");
            }
        }
    }
}
