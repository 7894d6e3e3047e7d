//! Translating the storage vocabulary into MongoDB query documents.
//!
//! Field names arrive checked by `check_field` (letters, digits, `_`, dots),
//! so they can be used as MongoDB paths as they are; values go through the
//! explicit JSON → BSON converter, so integers compare as Int64.

use mongodb::bson::{doc, Bson, Document as BsonDocument};

use super::convert::to_bson;
use crate::db::{
    Condition, Direction, Filter, FindOptions, IndexSpec, Op, SortKey, StoreResult, Update, ID,
};

/// `{}` for no conditions, one condition as itself, several under `$and`.
///
/// `$and` keeps several conditions on one field apart; merging them into
/// one `{field: {...}}` would silently drop repeated operators.
fn all_of(mut parts: Vec<BsonDocument>) -> BsonDocument {
    match parts.len() {
        0 => BsonDocument::new(),
        1 => parts.remove(0),
        _ => doc! { "$and": parts },
    }
}

fn operator(op: Op) -> &'static str {
    match op {
        Op::Eq => "$eq",
        Op::Ne => "$ne",
        Op::Gt => "$gt",
        Op::Gte => "$gte",
        Op::Lt => "$lt",
        Op::Lte => "$lte",
    }
}

fn condition(condition: &Condition) -> StoreResult<BsonDocument> {
    Ok(match condition {
        Condition::Compare { field, op, value } => {
            doc! { field.as_str(): { operator(*op): to_bson(value)? } }
        }
        Condition::In { field, values } => {
            let values = values
                .iter()
                .map(to_bson)
                .collect::<StoreResult<Vec<_>>>()?;
            doc! { field.as_str(): { "$in": values } }
        }
    })
}

fn conditions(filter: &Filter) -> StoreResult<Vec<BsonDocument>> {
    filter.conditions().iter().map(condition).collect()
}

/// The query document for `filter`.
pub(super) fn filter_document(filter: &Filter) -> StoreResult<BsonDocument> {
    Ok(all_of(conditions(filter)?))
}

fn order(direction: Direction) -> i32 {
    match direction {
        Direction::Asc => 1,
        Direction::Desc => -1,
    }
}

/// `{sort_field: ±1, _id: ±1}`, or `{_id: ±1}` when sorting by id.
pub(super) fn sort_document(sort_field: &str, direction: Direction) -> BsonDocument {
    let order = order(direction);
    if sort_field == ID {
        doc! { ID: order }
    } else {
        doc! { sort_field: order, ID: order }
    }
}

/// Positions strictly after `after` in `(sort_field, _id)` order: a range
/// the index on `(sort_field, _id)` answers with one seek.
fn keyset(sort_field: &str, direction: Direction, after: &SortKey) -> StoreResult<BsonDocument> {
    let past = match direction {
        Direction::Asc => "$gt",
        Direction::Desc => "$lt",
    };
    let id = Bson::String(after.id.clone());
    if sort_field == ID {
        return Ok(doc! { ID: { past: id } });
    }
    let value = to_bson(&after.value)?;
    Ok(doc! {
        "$or": [
            { sort_field: { past: value.clone() } },
            { sort_field: { "$eq": value }, ID: { past: id } },
        ]
    })
}

/// The query document for `filter` restricted to what comes after
/// `options.after`.
pub(super) fn find_document(filter: &Filter, options: &FindOptions) -> StoreResult<BsonDocument> {
    let mut parts = conditions(filter)?;
    if let Some(after) = &options.after {
        parts.push(keyset(&options.sort_field, options.direction, after)?);
    }
    Ok(all_of(parts))
}

/// The filter of an update: `filter`, plus for every increment a guard
/// that the result stays within Int64. MongoDB refuses an overflowing
/// `$inc` with an error; the guard makes it a failed precondition (no
/// match) instead, the same answer as any other condition the document
/// does not meet. `$not` keeps documents where the field is missing (it
/// counts as 0) or not a number (the server then reports the bad `$inc`).
pub(super) fn update_filter(filter: &Filter, update: &Update) -> StoreResult<BsonDocument> {
    let mut parts = conditions(filter)?;
    for (field, delta) in update.incs() {
        let guard = match delta.signum() {
            1 => doc! { field.as_str(): { "$not": { "$gt": i64::MAX - delta } } },
            -1 => doc! { field.as_str(): { "$not": { "$lt": i64::MIN - delta } } },
            _ => continue,
        };
        parts.push(guard);
    }
    Ok(all_of(parts))
}

/// `{$set: {...}, $inc: {...}}`, leaving out an empty half.
pub(super) fn update_document(update: &Update) -> StoreResult<BsonDocument> {
    let mut set = BsonDocument::new();
    for (field, value) in update.sets() {
        set.insert(field.clone(), to_bson(value)?);
    }
    let mut inc = BsonDocument::new();
    for (field, delta) in update.incs() {
        inc.insert(field.clone(), Bson::Int64(*delta));
    }
    let mut out = BsonDocument::new();
    if !set.is_empty() {
        out.insert("$set", set);
    }
    if !inc.is_empty() {
        out.insert("$inc", inc);
    }
    Ok(out)
}

/// The key pattern of `spec`. A non-unique index gets `_id` as its last
/// key, so listings sorted by `(field, _id)` are served from the index
/// without an in-memory sort.
pub(super) fn index_keys(spec: &IndexSpec) -> BsonDocument {
    let mut keys = BsonDocument::new();
    for (field, direction) in &spec.fields {
        keys.insert(field.clone(), order(*direction));
    }
    if !spec.unique && !keys.contains_key(ID) {
        let last = spec.fields.last().map_or(Direction::Asc, |(_, d)| *d);
        keys.insert(ID, order(last));
    }
    keys
}

/// The document with id `id`.
pub(super) fn by_id(id: &str) -> BsonDocument {
    doc! { ID: { "$eq": id } }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn json(doc: &BsonDocument) -> Value {
        super::super::convert::to_json(Bson::Document(doc.clone()))
    }

    #[test]
    fn filters_become_one_document_per_condition_under_and() {
        assert_eq!(filter_document(&Filter::all()).unwrap(), doc! {});
        assert_eq!(
            json(&filter_document(&Filter::id("a")).unwrap()),
            json!({"_id": {"$eq": "a"}})
        );
        let filter = Filter::all()
            .gte("n", 2)
            .lt("n", 4)
            .ne("tag", "red")
            .is_in("kind", vec![json!("x"), json!(1)]);
        assert_eq!(
            filter_document(&filter).unwrap(),
            doc! { "$and": [
                { "n": { "$gte": 2_i64 } },
                { "n": { "$lt": 4_i64 } },
                { "tag": { "$ne": "red" } },
                { "kind": { "$in": ["x", 1_i64] } },
            ] }
        );
        assert_eq!(
            filter_document(&Filter::all().eq("meta.owner", Value::Null)).unwrap(),
            doc! { "meta.owner": { "$eq": Bson::Null } }
        );
    }

    #[test]
    fn sort_puts_the_id_last_in_the_same_direction() {
        assert_eq!(
            sort_document("seq", Direction::Desc),
            doc! { "seq": -1, "_id": -1 }
        );
        assert_eq!(sort_document(ID, Direction::Asc), doc! { "_id": 1 });
    }

    #[test]
    fn keyset_seeks_strictly_past_the_cursor() {
        let after = SortKey {
            value: json!(5),
            id: "i7".to_owned(),
        };
        let asc = FindOptions::sorted("seq", Direction::Asc).after(after.clone());
        assert_eq!(
            find_document(&Filter::all().eq("kind", "x"), &asc).unwrap(),
            doc! { "$and": [
                { "kind": { "$eq": "x" } },
                { "$or": [
                    { "seq": { "$gt": 5_i64 } },
                    { "seq": { "$eq": 5_i64 }, "_id": { "$gt": "i7" } },
                ] },
            ] }
        );
        let desc = FindOptions::sorted("seq", Direction::Desc).after(after);
        assert_eq!(
            find_document(&Filter::all(), &desc).unwrap(),
            doc! { "$or": [
                { "seq": { "$lt": 5_i64 } },
                { "seq": { "$eq": 5_i64 }, "_id": { "$lt": "i7" } },
            ] }
        );
        let by_id = FindOptions::by_id().after(SortKey {
            value: json!("i7"),
            id: "i7".into(),
        });
        assert_eq!(
            find_document(&Filter::all(), &by_id).unwrap(),
            doc! { "_id": { "$gt": "i7" } }
        );
    }

    #[test]
    fn increments_are_guarded_against_int64_overflow() {
        let update = Update::new()
            .inc("balance", -5)
            .inc("count", 1)
            .set("s", "x");
        assert_eq!(
            update_filter(&Filter::id("w"), &update).unwrap(),
            doc! { "$and": [
                { "_id": { "$eq": "w" } },
                { "balance": { "$not": { "$lt": i64::MIN + 5 } } },
                { "count": { "$not": { "$gt": i64::MAX - 1 } } },
            ] }
        );
        assert_eq!(
            update_document(&update).unwrap(),
            doc! { "$set": { "s": "x" }, "$inc": { "balance": -5_i64, "count": 1_i64 } }
        );
        // The extremes themselves do not overflow the guard's arithmetic.
        let extreme = Update::new()
            .inc("a", i64::MAX)
            .inc("b", i64::MIN)
            .inc("c", 0);
        assert_eq!(
            update_filter(&Filter::all(), &extreme).unwrap(),
            doc! { "$and": [
                { "a": { "$not": { "$gt": 0_i64 } } },
                { "b": { "$not": { "$lt": 0_i64 } } },
            ] }
        );
        assert_eq!(
            update_document(&Update::new().set("a", 1)).unwrap(),
            doc! { "$set": { "a": 1_i64 } }
        );
    }

    #[test]
    fn non_unique_indexes_end_with_the_id() {
        let plain = IndexSpec::new("items", "items_kind_seq", &["kind", "seq"]);
        assert_eq!(index_keys(&plain), doc! { "kind": 1, "seq": 1, "_id": 1 });
        let unique = IndexSpec::new("wallets", "w", &["user_id", "currency"]).unique();
        assert_eq!(index_keys(&unique), doc! { "user_id": 1, "currency": 1 });
    }
}
