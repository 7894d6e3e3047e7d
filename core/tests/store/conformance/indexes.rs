//! Index management: creating what is missing, dropping what is retired.

use service_core::db::IndexSpec;

use crate::harness::TestDb;

pub(crate) async fn retired_indexes_are_dropped_and_missing_ones_skipped(db: &TestDb) {
    let old = IndexSpec::new("items", "items_by_owner", &["owner", "_id"]);
    db.ensure_indexes(std::slice::from_ref(&old)).await.unwrap();
    // While it exists, another definition under its name is refused.
    let redefined = IndexSpec::new("items", "items_by_owner", &["kind"]);
    assert!(db
        .ensure_indexes(std::slice::from_ref(&redefined))
        .await
        .is_err());

    db.drop_indexes(&[
        ("items", "items_by_owner"),
        ("items", "never_created"),
        ("no_such_collection", "items_by_owner"),
    ])
    .await
    .unwrap();
    // Gone: the name is free again. Dropping twice is no error.
    db.ensure_indexes(&[redefined]).await.unwrap();
    db.drop_indexes(&[("items", "items_by_owner")])
        .await
        .unwrap();
    db.drop_indexes(&[("items", "items_by_owner")])
        .await
        .unwrap();

    assert!(db.drop_indexes(&[("items", "bad name")]).await.is_err());
}
