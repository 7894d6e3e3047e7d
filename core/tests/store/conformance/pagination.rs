//! Cursor pagination: one filter, and the union of several.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use service_core::db::{
    paginate_union, Direction, Document, Filter, IndexSpec, PageArgs, StoreError,
};

use super::doc;
use crate::harness::TestDb;

/// Walks every page in one direction and returns the ids in the order
/// visited: listing order forward, reverse listing order backward.
async fn walk(
    db: &TestDb,
    filters: &[Filter],
    backward: bool,
    mut between_pages: impl FnMut(usize) -> Option<Document>,
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for page_number in 0.. {
        let args = if backward {
            PageArgs {
                last: Some(37),
                before: cursor.clone(),
                ..PageArgs::default()
            }
        } else {
            PageArgs::forward(Some(37), cursor.clone())
        };
        let query = args.validate().unwrap();
        let page = paginate_union(db, "items", filters, "seq", Direction::Desc, &query)
            .await
            .unwrap();
        let mut page_ids: Vec<String> = page
            .edges
            .iter()
            .map(|e| e.node["_id"].as_str().unwrap().to_owned())
            .collect();
        if backward {
            page_ids.reverse();
        }
        ids.extend(page_ids);
        if let Some(extra) = between_pages(page_number) {
            db.insert("items", extra).await.unwrap();
        }
        let (more, next) = if backward {
            (
                page.page_info.has_previous_page,
                page.page_info.start_cursor,
            )
        } else {
            (page.page_info.has_next_page, page.page_info.end_cursor)
        };
        if !more {
            break;
        }
        cursor = next;
    }
    ids
}

pub(crate) async fn pagination_has_no_gaps_or_duplicates_while_inserting(db: &TestDb) {
    db.ensure_indexes(&[IndexSpec::new("items", "items_kind_seq", &["kind", "seq"])])
        .await
        .unwrap();
    const N: usize = 1_000;
    // Three documents share each `seq`, so the id must break ties.
    db.transaction(|tx| {
        Box::pin(async move {
            for i in 0..N {
                tx.insert(
                    "items",
                    doc(json!({"_id": format!("i{i:04}"), "kind": "x", "seq": (i / 3) as i64})),
                )
                .await?;
            }
            Ok::<_, StoreError>(())
        })
    })
    .await
    .unwrap();
    let original: BTreeSet<String> = (0..N).map(|i| format!("i{i:04}")).collect();

    // Newest first; documents inserted while paging are newer than
    // everything, so they land before the walk's start: no duplicates, no gaps.
    let kind_x = [Filter::all().eq("kind", "x")];
    let forward = walk(db, &kind_x, false, |page| {
        Some(doc(
            json!({"_id": format!("new{page:03}"), "kind": "x", "seq": 10_000 + page as i64}),
        ))
    })
    .await;
    let unique: BTreeSet<String> = forward.iter().cloned().collect();
    assert_eq!(unique.len(), forward.len(), "a document was listed twice");
    assert_eq!(
        unique, original,
        "the forward walk missed or added documents"
    );

    // Backward from the oldest reaches everything, the new ones included.
    let backward = walk(db, &kind_x, true, |_| None).await;
    let expected = db
        .count("items", &Filter::all().eq("kind", "x"))
        .await
        .unwrap();
    let unique: BTreeSet<String> = backward.iter().cloned().collect();
    assert_eq!(unique.len(), backward.len());
    assert_eq!(unique.len() as u64, expected);
    assert!(unique.is_superset(&original));
    // Walking backward visits the original set in exactly the reverse order.
    let mut backward_original: Vec<String> = backward
        .into_iter()
        .filter(|id| original.contains(id))
        .collect();
    backward_original.reverse();
    assert_eq!(backward_original, forward);
}

pub(crate) async fn union_pagination_merges_its_filters_in_order(db: &TestDb) {
    db.ensure_indexes(&[
        IndexSpec::new("items", "items_kind_seq", &["kind", "seq"]),
        IndexSpec::new("items", "items_tag_seq", &["tag", "seq"]),
    ])
    .await
    .unwrap();
    // Kinds a, b and c in turn, two documents per `seq`; every fifth one is
    // tagged, so some documents match both filters below.
    let items: Vec<Value> = (0..300)
        .map(|i| {
            let kind = ["a", "b", "c"][i % 3];
            let tag = if i % 5 == 0 { "t" } else { "u" };
            json!({"_id": format!("i{i:03}"), "kind": kind, "tag": tag, "seq": (i / 2) as i64})
        })
        .collect();
    db.transaction(|tx| {
        let items = items.clone();
        Box::pin(async move {
            for item in items {
                tx.insert("items", doc(item)).await?;
            }
            Ok::<_, StoreError>(())
        })
    })
    .await
    .unwrap();
    // Newest first: seq descending, then id descending.
    let mut expected: Vec<&Value> = items
        .iter()
        .filter(|item| item["kind"] == "a" || item["tag"] == "t")
        .collect();
    expected.sort_by(|x, y| {
        (y["seq"].as_i64(), y["_id"].as_str()).cmp(&(x["seq"].as_i64(), x["_id"].as_str()))
    });
    let expected: Vec<String> = expected
        .iter()
        .map(|item| item["_id"].as_str().unwrap().to_owned())
        .collect();
    let filters = [Filter::all().eq("kind", "a"), Filter::all().eq("tag", "t")];
    let forward = walk(db, &filters, false, |_| None).await;
    assert_eq!(
        forward, expected,
        "forward pages out of order, or a gap or a repeat"
    );
    let mut backward = walk(db, &filters, true, |_| None).await;
    backward.reverse();
    assert_eq!(
        backward, expected,
        "backward pages out of order, or a gap or a repeat"
    );
}
