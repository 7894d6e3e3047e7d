//! JSON ↔ BSON, written out by hand.
//!
//! The generic serde bridges pick the smallest BSON integer that fits, so
//! one field could hold Int32 in one document and Int64 in the next; `$inc`
//! and range comparisons then behave subtly differently. Here every JSON
//! integer becomes Int64, so stored numbers are uniform, and the way back
//! turns the BSON types other writers may have used into plain JSON.

use mongodb::bson::{Bson, Document as BsonDocument};
use serde_json::{Map, Number, Value};

use crate::db::{Document, StoreError, StoreResult};

/// A JSON value as BSON: integers as Int64, other numbers as Double.
/// Refuses unsigned integers above `i64::MAX`, which BSON cannot hold
/// exactly (silently rounding money to a double is never acceptable).
pub(super) fn to_bson(value: &Value) -> StoreResult<Bson> {
    Ok(match value {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => number_to_bson(n)?,
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(items) => Bson::Array(items.iter().map(to_bson).collect::<StoreResult<_>>()?),
        Value::Object(map) => Bson::Document(to_bson_document(map)?),
    })
}

fn number_to_bson(n: &Number) -> StoreResult<Bson> {
    if let Some(i) = n.as_i64() {
        Ok(Bson::Int64(i))
    } else if n.is_u64() {
        Err(StoreError::Invalid(format!(
            "the integer {n} is too large to store (the limit is {})",
            i64::MAX
        )))
    } else {
        n.as_f64()
            .map(Bson::Double)
            .ok_or_else(|| StoreError::Invalid(format!("the number {n} cannot be stored")))
    }
}

/// A JSON object as a BSON document, keys in the same order.
pub(super) fn to_bson_document(map: &Document) -> StoreResult<BsonDocument> {
    let mut doc = BsonDocument::new();
    for (key, value) in map {
        doc.insert(key.clone(), to_bson(value)?);
    }
    Ok(doc)
}

/// A BSON value as JSON. Types JSON lacks become their usual text form
/// (ObjectId as hex, dates as RFC 3339, decimals as strings); markers
/// with no value (undefined, min/max key) become `null`.
pub(super) fn to_json(value: Bson) -> Value {
    match value {
        Bson::Null | Bson::Undefined | Bson::MinKey | Bson::MaxKey | Bson::DbPointer(_) => {
            Value::Null
        }
        Bson::Boolean(b) => Value::Bool(b),
        Bson::Int32(i) => Value::from(i),
        Bson::Int64(i) => Value::from(i),
        // NaN and the infinities have no JSON form.
        Bson::Double(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        Bson::String(s) | Bson::Symbol(s) | Bson::JavaScriptCode(s) => Value::String(s),
        Bson::Array(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Bson::Document(doc) => Value::Object(to_json_document(doc)),
        Bson::ObjectId(oid) => Value::String(oid.to_hex()),
        Bson::DateTime(at) => match at.try_to_rfc3339_string() {
            Ok(text) => Value::String(text),
            // Outside the years RFC 3339 can write: keep the instant.
            Err(_) => Value::from(at.timestamp_millis()),
        },
        Bson::Decimal128(d) => Value::String(d.to_string()),
        Bson::Timestamp(ts) => Value::from(u64::from(ts.time) << 32 | u64::from(ts.increment)),
        Bson::Binary(bin) => Value::String(hex(&bin.bytes)),
        Bson::RegularExpression(re) => Value::String(format!("/{}/{}", re.pattern, re.options)),
        Bson::JavaScriptCodeWithScope(code) => Value::String(code.code),
    }
}

/// A BSON document as a JSON object, keys in the same order.
pub(super) fn to_json_document(doc: BsonDocument) -> Document {
    doc.into_iter()
        .map(|(key, value)| (key, to_json(value)))
        .collect::<Map<String, Value>>()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            // Writing to a String cannot fail.
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{doc, oid::ObjectId, DateTime};
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Document {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn documents_round_trip_exactly_including_integer_extremes() {
        let original = object(json!({
            "_id": "d1",
            "max": i64::MAX,
            "min": i64::MIN,
            "zero": 0,
            "small": 7,
            "float": 1.5,
            "whole_float": 2.0,
            "text": "üñíçødé \" ' \\ ; --",
            "flag": true,
            "none": null,
            "list": [1, "two", {"three": 3}],
            "nested": {"a": {"b": [true, false]}},
        }));
        let bson = to_bson_document(&original).unwrap();
        assert_eq!(to_json_document(bson), original);
    }

    #[test]
    fn integers_are_always_int64_and_floats_double() {
        let bson =
            to_bson_document(&object(json!({"a": 1, "b": -1, "c": 0.25, "d": [2]}))).unwrap();
        assert_eq!(bson.get("a"), Some(&Bson::Int64(1)));
        assert_eq!(bson.get("b"), Some(&Bson::Int64(-1)));
        assert_eq!(bson.get("c"), Some(&Bson::Double(0.25)));
        assert_eq!(bson.get("d"), Some(&Bson::Array(vec![Bson::Int64(2)])));
        // Key order is kept, so `_id` stays first.
        let keys: Vec<&String> = bson.keys().collect();
        assert_eq!(keys, ["a", "b", "c", "d"]);
    }

    #[test]
    fn integers_beyond_i64_are_refused_not_rounded() {
        let err = to_bson(&json!(u64::MAX)).unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
        assert_eq!(
            to_bson(&json!(i64::MAX as u64)).unwrap(),
            Bson::Int64(i64::MAX)
        );
    }

    #[test]
    fn foreign_bson_types_become_plain_json() {
        let oid = ObjectId::parse_str("5f1d7f3e9b1e8b3a2c4d6e8f").unwrap();
        let at = DateTime::from_millis(1_700_000_000_123);
        let converted = to_json_document(doc! {
            "oid": oid,
            "i32": 5_i32,
            "at": at,
            "nan": f64::NAN,
            "undefined": Bson::Undefined,
        });
        assert_eq!(converted["oid"], json!("5f1d7f3e9b1e8b3a2c4d6e8f"));
        assert_eq!(converted["i32"], json!(5));
        assert_eq!(converted["at"], json!("2023-11-14T22:13:20.123Z"));
        assert_eq!(converted["nan"], Value::Null);
        assert_eq!(converted["undefined"], Value::Null);
    }
}
