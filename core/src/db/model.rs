//! The vocabulary both storage backends speak: documents, filters, updates,
//! sort keys, index definitions and errors.
//!
//! It is deliberately small: equality and range conditions joined by AND,
//! `$set` and `$inc` style updates, and one sort field with the id as
//! tie-breaker. That is what the repositories need, and it is narrow enough
//! that the embedded engine and MongoDB give identical answers.

use std::fmt;

use serde_json::{Map, Value};

/// A stored document: a JSON object whose `_id` is a string.
pub type Document = Map<String, Value>;

/// The key every document's id is stored under.
pub const ID: &str = "_id";

/// Shorthand for storage results.
pub type StoreResult<T> = Result<T, StoreError>;

/// A storage failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A unique index (or the id) already holds this value.
    #[error("duplicate key in {collection} (index {index})")]
    Duplicate {
        /// The collection written to.
        collection: String,
        /// The unique index that refused the write (`_id` for the id).
        index: String,
    },
    /// Two transactions touched the same data; the losing one may be retried.
    /// [`crate::db::Database::transaction`] retries it by itself.
    #[error("write conflict, retry the transaction")]
    Conflict,
    /// The query is not expressible (a bad field name, a document without a
    /// string `_id`, a non-object value): a bug in the caller, never data.
    #[error("invalid storage request: {0}")]
    Invalid(String),
    /// The store cannot be reached or answered with a transient failure.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Anything else the backend reported.
    #[error("storage error: {0}")]
    Backend(String),
}

impl StoreError {
    /// Whether running the same transaction again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Conflict)
    }
}

/// Checks a field name: letters, digits and `_`, optionally dotted for a
/// nested field. Anything else could be an injection into a JSON path or a
/// MongoDB operator, so it is refused.
pub fn check_field(field: &str) -> StoreResult<()> {
    let ok = !field.is_empty()
        && field.len() <= 128
        && field.split('.').all(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!("bad field name {field:?}")))
    }
}

/// A comparison in a [`Filter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Equal (a missing field equals `null`).
    Eq,
    /// Not equal.
    Ne,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
}

/// One condition on one field.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// `field <op> value`. Range comparisons are defined between integers and
    /// between strings only.
    Compare {
        /// The field.
        field: String,
        /// The comparison.
        op: Op,
        /// The value compared with.
        value: Value,
    },
    /// `field` equals one of the values.
    In {
        /// The field.
        field: String,
        /// The accepted values.
        values: Vec<Value>,
    },
}

/// Conditions that must all hold. The empty filter matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    conditions: Vec<Condition>,
}

impl Filter {
    /// Matches every document.
    pub fn all() -> Self {
        Self::default()
    }

    /// Matches the document with this id.
    pub fn id(id: impl Into<String>) -> Self {
        Self::all().eq(ID, id.into())
    }

    fn compare(mut self, field: &str, op: Op, value: impl Into<Value>) -> Self {
        self.conditions.push(Condition::Compare {
            field: field.to_owned(),
            op,
            value: value.into(),
        });
        self
    }

    /// Adds `field == value`.
    pub fn eq(self, field: &str, value: impl Into<Value>) -> Self {
        self.compare(field, Op::Eq, value)
    }

    /// Adds `field != value`.
    pub fn ne(self, field: &str, value: impl Into<Value>) -> Self {
        self.compare(field, Op::Ne, value)
    }

    /// Adds `field > value`.
    pub fn gt(self, field: &str, value: impl Into<Value>) -> Self {
        self.compare(field, Op::Gt, value)
    }

    /// Adds `field >= value`.
    pub fn gte(self, field: &str, value: impl Into<Value>) -> Self {
        self.compare(field, Op::Gte, value)
    }

    /// Adds `field < value`.
    pub fn lt(self, field: &str, value: impl Into<Value>) -> Self {
        self.compare(field, Op::Lt, value)
    }

    /// Adds `field <= value`.
    pub fn lte(self, field: &str, value: impl Into<Value>) -> Self {
        self.compare(field, Op::Lte, value)
    }

    /// Adds `field` ∈ `values`.
    pub fn is_in(mut self, field: &str, values: Vec<Value>) -> Self {
        self.conditions.push(Condition::In {
            field: field.to_owned(),
            values,
        });
        self
    }

    /// The conditions, for backends.
    pub fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    /// Refuses bad field names before a backend sees them.
    pub fn check(&self) -> StoreResult<()> {
        self.conditions.iter().try_for_each(|c| match c {
            Condition::Compare { field, .. } | Condition::In { field, .. } => check_field(field),
        })
    }
}

/// Changes applied to the matched document, atomically.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Update {
    set: Vec<(String, Value)>,
    inc: Vec<(String, i64)>,
}

impl Update {
    /// No change yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `field` to `value`.
    pub fn set(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.set.push((field.to_owned(), value.into()));
        self
    }

    /// Adds `delta` to the integer `field` (a missing field counts as 0).
    pub fn inc(mut self, field: &str, delta: i64) -> Self {
        self.inc.push((field.to_owned(), delta));
        self
    }

    /// The fields to set.
    pub fn sets(&self) -> &[(String, Value)] {
        &self.set
    }

    /// The fields to increment.
    pub fn incs(&self) -> &[(String, i64)] {
        &self.inc
    }

    /// Refuses bad field names, changes to `_id`, a field both set and
    /// incremented, and an empty update.
    pub fn check(&self) -> StoreResult<()> {
        if self.set.is_empty() && self.inc.is_empty() {
            return Err(StoreError::Invalid("empty update".to_owned()));
        }
        for (field, _) in &self.set {
            check_field(field)?;
        }
        for (field, _) in &self.inc {
            check_field(field)?;
            if self.set.iter().any(|(f, _)| f == field) {
                return Err(StoreError::Invalid(format!(
                    "{field} is both set and incremented"
                )));
            }
        }
        if self
            .set
            .iter()
            .map(|(f, _)| f)
            .chain(self.inc.iter().map(|(f, _)| f))
            .any(|f| f == ID)
        {
            return Err(StoreError::Invalid("the id cannot change".to_owned()));
        }
        Ok(())
    }
}

/// Sort order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Direction {
    /// Smallest first.
    #[default]
    Asc,
    /// Largest first.
    Desc,
}

impl Direction {
    /// The other direction.
    pub fn reverse(self) -> Self {
        match self {
            Self::Asc => Self::Desc,
            Self::Desc => Self::Asc,
        }
    }
}

/// A position in an ordered listing: the sort field's value and the id,
/// which breaks ties so every position is unique.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SortKey {
    /// The sort field's value (an integer or a string).
    pub value: Value,
    /// The document's id.
    pub id: String,
}

/// How to read an ordered slice of a collection: documents ordered by
/// `(sort_field, _id)` in `direction`, strictly after `after` when given,
/// at most `limit` of them. A backend answers it with an index seek, so the
/// cost does not grow with how far into the listing `after` is.
#[derive(Clone, Debug, PartialEq)]
pub struct FindOptions {
    /// The field to order by (`_id` alone when it is `_id`).
    pub sort_field: String,
    /// The order.
    pub direction: Direction,
    /// Start strictly after this position.
    pub after: Option<SortKey>,
    /// Most documents returned; `None` for all.
    pub limit: Option<usize>,
}

impl FindOptions {
    /// Everything, ordered by id.
    pub fn by_id() -> Self {
        Self::sorted(ID, Direction::Asc)
    }

    /// Everything, ordered by `field` then id.
    pub fn sorted(field: &str, direction: Direction) -> Self {
        Self {
            sort_field: field.to_owned(),
            direction,
            after: None,
            limit: None,
        }
    }

    /// At most `limit` documents.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Start strictly after `key`.
    pub fn after(mut self, key: SortKey) -> Self {
        self.after = Some(key);
        self
    }
}

/// An index the store must have, created at start-up when missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexSpec {
    /// The collection.
    pub collection: String,
    /// The index name, reported in [`StoreError::Duplicate`].
    pub name: String,
    /// The indexed fields, in order.
    pub fields: Vec<(String, Direction)>,
    /// Whether two documents may share the indexed values.
    pub unique: bool,
}

impl IndexSpec {
    /// An index on `fields` (each ascending).
    pub fn new(collection: &str, name: &str, fields: &[&str]) -> Self {
        Self {
            collection: collection.to_owned(),
            name: name.to_owned(),
            fields: fields
                .iter()
                .map(|f| ((*f).to_owned(), Direction::Asc))
                .collect(),
            unique: false,
        }
    }

    /// Makes the index unique.
    pub fn unique(mut self) -> Self {
        self.unique = true;
        self
    }

    /// Refuses bad collection, index and field names.
    pub fn check(&self) -> StoreResult<()> {
        check_field(&self.collection)?;
        check_field(&self.name)?;
        if self.fields.is_empty() {
            return Err(StoreError::Invalid(format!(
                "index {} has no fields",
                self.name
            )));
        }
        self.fields.iter().try_for_each(|(f, _)| check_field(f))
    }
}

/// Reads a document's id.
pub fn document_id(doc: &Document) -> StoreResult<&str> {
    doc.get(ID)
        .and_then(Value::as_str)
        .ok_or_else(|| StoreError::Invalid("a document needs a string _id".to_owned()))
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Asc => "ascending",
            Self::Desc => "descending",
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn field_names_that_could_inject_are_refused() {
        for bad in [
            "",
            "$where",
            "a b",
            "a'); DROP",
            "a..b",
            "1abc",
            "a.$gt",
            "é",
        ] {
            assert!(check_field(bad).is_err(), "{bad}");
        }
        for good in ["_id", "balance", "meta.created_at", "user_id2"] {
            assert!(check_field(good).is_ok(), "{good}");
        }
        assert!(Filter::all().eq("$ne", 1).check().is_err());
    }

    #[test]
    fn updates_are_checked() {
        assert!(Update::new().check().is_err());
        assert!(Update::new().set(ID, "x").check().is_err());
        assert!(Update::new().set("a", 1).inc("a", 1).check().is_err());
        assert!(Update::new()
            .set("a", json!("x"))
            .inc("b", -5)
            .check()
            .is_ok());
    }
}
