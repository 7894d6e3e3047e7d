//! What a filter, a sort and an update mean on a document, in memory.
//!
//! The rules are MongoDB's for the types the services store: a missing
//! field equals `null`; values of different types never compare equal and
//! a range never crosses types; sort order is null < numbers < strings <
//! objects < arrays < booleans. Integers and floats compare by value.
//! Objects and arrays are refused in filters (as on the SQLite engine), so
//! they only ever meet each other in a sort, where they order by their JSON
//! text.

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

use crate::db::{Condition, Document, Filter, Op, StoreError, StoreResult, Update, ID};

/// A field's value as indexes and sorts order it.
#[derive(Clone, Debug)]
pub(super) enum Key {
    Null,
    Number(Number),
    Text(String),
    /// An object or an array, as JSON text; the flag orders objects first.
    Nested(bool, String),
    Bool(bool),
    /// Above every value: the end of a range of index entries.
    Max,
}

impl Key {
    pub(super) fn of(value: Option<&Value>) -> Self {
        match value {
            None | Some(Value::Null) => Self::Null,
            Some(Value::Number(n)) => Self::Number(n.clone()),
            Some(Value::String(s)) => Self::Text(s.clone()),
            Some(Value::Bool(b)) => Self::Bool(*b),
            Some(nested @ Value::Object(_)) => Self::Nested(false, nested.to_string()),
            Some(nested @ Value::Array(_)) => Self::Nested(true, nested.to_string()),
        }
    }

    /// The position of the key's type in the sort order.
    fn bracket(&self) -> u8 {
        match self {
            Self::Null => 0,
            Self::Number(_) => 1,
            Self::Text(_) => 2,
            Self::Nested(false, _) => 3,
            Self::Nested(true, _) => 4,
            Self::Bool(_) => 5,
            Self::Max => 6,
        }
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Number(a), Self::Number(b)) => compare_numbers(a, b),
            (Self::Text(a), Self::Text(b)) => a.cmp(b),
            (Self::Nested(a, x), Self::Nested(b, y)) => (a, x).cmp(&(b, y)),
            (Self::Bool(a), Self::Bool(b)) => a.cmp(b),
            _ => self.bracket().cmp(&other.bracket()),
        }
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Key {}

/// Numeric order across integers and floats: exact between integers, by
/// value otherwise (a NaN sorts below every number, as in MongoDB).
fn compare_numbers(a: &Number, b: &Number) -> Ordering {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x.cmp(&y);
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x.cmp(&y);
    }
    let (x, y) = (
        a.as_f64().unwrap_or(f64::NAN),
        b.as_f64().unwrap_or(f64::NAN),
    );
    match x.partial_cmp(&y) {
        Some(order) => order,
        None => x.is_nan().cmp(&y.is_nan()).reverse(),
    }
}

/// The value at a dotted path, if every step exists.
pub(super) fn field<'d>(doc: &'d Document, path: &str) -> Option<&'d Value> {
    let mut parts = path.split('.');
    let mut value = doc.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// Refuses what no document could be compared with, before any is read:
/// objects and arrays anywhere, booleans in a range.
pub(super) fn check_filter(filter: &Filter) -> StoreResult<()> {
    let scalar = |value: &Value| match value {
        Value::Object(_) | Value::Array(_) => Err(StoreError::Invalid(
            "objects and arrays cannot be compared in a filter".to_owned(),
        )),
        _ => Ok(()),
    };
    for condition in filter.conditions() {
        match condition {
            Condition::Compare { field, op, value } => {
                scalar(value)?;
                if value.is_boolean() && !matches!(op, Op::Eq | Op::Ne) {
                    return Err(StoreError::Invalid(format!(
                        "range comparison of {field} with a boolean"
                    )));
                }
            }
            Condition::In { values, .. } => values.iter().try_for_each(scalar)?,
        }
    }
    Ok(())
}

/// Whether `doc` matches every condition of a filter that passed
/// [`check_filter`].
pub(super) fn matches(doc: &Document, filter: &Filter) -> bool {
    filter.conditions().iter().all(|condition| match condition {
        Condition::Compare {
            field: path,
            op,
            value,
        } => compare(field(doc, path), *op, value),
        Condition::In {
            field: path,
            values,
        } => {
            let actual = field(doc, path);
            values.iter().any(|value| compare(actual, Op::Eq, value))
        }
    })
}

/// One comparison: `$ne` is the negation of `$eq`; a range only holds
/// within the wanted value's type (null's range is null itself).
fn compare(actual: Option<&Value>, op: Op, wanted: &Value) -> bool {
    let actual = Key::of(actual);
    let wanted = Key::of(Some(wanted));
    let same_type = actual.bracket() == wanted.bracket();
    let order = actual.cmp(&wanted);
    match op {
        Op::Eq => order == Ordering::Equal,
        Op::Ne => order != Ordering::Equal,
        Op::Gt => same_type && !matches!(wanted, Key::Null) && order == Ordering::Greater,
        Op::Lt => same_type && !matches!(wanted, Key::Null) && order == Ordering::Less,
        Op::Gte => same_type && order != Ordering::Less,
        Op::Lte => same_type && order != Ordering::Greater,
    }
}

/// `update` applied to a copy of `doc`: `$set` creates missing parents,
/// `$inc` starts a missing field at zero and refuses an overflow or a
/// field that is not a number, as MongoDB does. The id never changes
/// (`Update::check` refuses `_id`).
pub(super) fn apply(doc: &Document, update: &Update) -> StoreResult<Document> {
    let mut doc = doc.clone();
    for (path, value) in update.sets() {
        *slot(&mut doc, path)? = value.clone();
    }
    for (path, delta) in update.incs() {
        let target = slot(&mut doc, path)?;
        *target = increment(target, *delta)
            .map_err(|why| StoreError::Invalid(format!("cannot increment {path}: {why}")))?;
    }
    debug_assert!(doc.contains_key(ID));
    Ok(doc)
}

/// The place of a dotted path, creating missing objects on the way (a new
/// leaf starts as `null`). A step through a non-object is refused.
fn slot<'d>(doc: &'d mut Document, path: &str) -> StoreResult<&'d mut Value> {
    let (parents, leaf) = match path.rsplit_once('.') {
        Some((parents, leaf)) => (Some(parents), leaf),
        None => (None, path),
    };
    let mut object: &mut Map<String, Value> = doc;
    for part in parents.into_iter().flat_map(|p| p.split('.')) {
        let next = object
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        object = next.as_object_mut().ok_or_else(|| {
            StoreError::Invalid(format!("cannot set {path}: {part} is not an object"))
        })?;
    }
    Ok(object.entry(leaf.to_owned()).or_insert(Value::Null))
}

fn increment(current: &Value, delta: i64) -> Result<Value, String> {
    match current {
        Value::Null => Ok(delta.into()),
        Value::Number(n) => {
            if let Some(n) = n.as_i64() {
                n.checked_add(delta)
                    .map(Value::from)
                    .ok_or_else(|| format!("integer overflow adding {delta} to {n}"))
            } else if let Some(x) = n.as_f64().filter(|_| !n.is_u64()) {
                // A float stays a float, as in MongoDB.
                Ok(Value::from(x + delta as f64))
            } else {
                Err(format!("integer overflow adding {delta} to {n}"))
            }
        }
        other => Err(format!("{other} is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn doc(value: Value) -> Document {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test documents are objects"),
        }
    }

    #[test]
    fn sort_order_is_mongodbs_across_types() {
        let mut keys = [
            json!(true),
            json!([1]),
            json!({"a": 1}),
            json!("b"),
            json!("a"),
            json!(2.5),
            json!(2),
            json!(-7),
            json!(null),
        ]
        .map(|v| Key::of(Some(&v)));
        keys.sort();
        let texts: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
        assert_eq!(
            texts,
            [
                "Null",
                "Number(Number(-7))",
                "Number(Number(2))",
                "Number(Number(2.5))",
                "Text(\"a\")",
                "Text(\"b\")",
                "Nested(false, \"{\\\"a\\\":1}\")",
                "Nested(true, \"[1]\")",
                "Bool(true)",
            ]
        );
        assert_eq!(Key::of(Some(&json!(3))), Key::of(Some(&json!(3.0))));
        assert_eq!(Key::of(None), Key::of(Some(&json!(null))));
    }

    #[test]
    fn comparisons_stay_within_a_type() {
        let d = doc(json!({"_id": "a", "n": 5, "s": "x", "b": true, "z": null}));
        let check = |filter: Filter| matches(&d, &filter);
        assert!(check(Filter::all().gt("n", 4).lt("n", 6)));
        assert!(
            !check(Filter::all().gt("s", 4)),
            "a string is not above a number"
        );
        assert!(
            !check(Filter::all().lt("n", "a")),
            "a number is not below a string"
        );
        assert!(check(Filter::all().eq("b", true)));
        assert!(
            !check(Filter::all().eq("b", 1)),
            "a boolean is not a number"
        );
        assert!(check(Filter::all().eq("missing", Value::Null)));
        assert!(check(Filter::all().eq("z", Value::Null)));
        assert!(check(Filter::all().gte("missing", Value::Null)));
        assert!(!check(Filter::all().gt("missing", Value::Null)));
        assert!(
            check(Filter::all().ne("missing", 1)),
            "ne matches missing fields"
        );
        assert!(!check(Filter::all().ne("z", Value::Null)));
        assert!(check(Filter::all().is_in("s", vec![json!(1), json!("x")])));
        assert!(check(Filter::all().is_in("missing", vec![json!(null)])));
        assert!(check(Filter::all().eq("n", 5.0)));
    }

    #[test]
    fn objects_arrays_and_boolean_ranges_are_refused() {
        assert!(check_filter(&Filter::all().eq("a", json!({"$gt": 1}))).is_err());
        assert!(check_filter(&Filter::all().is_in("a", vec![json!([1])])).is_err());
        assert!(check_filter(&Filter::all().gt("a", true)).is_err());
        assert!(check_filter(&Filter::all().ne("a", true)).is_ok());
    }

    #[test]
    fn updates_create_parents_and_keep_numbers_exact() {
        let d = doc(json!({"_id": "a", "n": 9_007_199_254_740_993_i64, "f": 1.5}));
        let update = Update::new()
            .set("meta.kind", "x")
            .inc("n", 1)
            .inc("f", 1)
            .inc("fresh", -3);
        let after = apply(&d, &update).unwrap();
        assert_eq!(
            Value::Object(after),
            json!({"_id": "a", "n": 9_007_199_254_740_994_i64, "f": 2.5,
                   "fresh": -3, "meta": {"kind": "x"}})
        );
        let overflow = apply(
            &doc(json!({"_id": "a", "n": i64::MAX})),
            &Update::new().inc("n", 1),
        );
        assert!(matches!(overflow, Err(StoreError::Invalid(_))));
        let text = apply(
            &doc(json!({"_id": "a", "n": "5"})),
            &Update::new().inc("n", 1),
        );
        assert!(matches!(text, Err(StoreError::Invalid(_))));
        let through = apply(
            &doc(json!({"_id": "a", "n": 5})),
            &Update::new().set("n.x", 1),
        );
        assert!(matches!(through, Err(StoreError::Invalid(_))));
    }
}
