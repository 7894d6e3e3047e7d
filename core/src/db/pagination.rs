//! Relay-style cursor pagination over `(sort field, _id)`.
//!
//! A cursor is the position of a document (its sort value and id), encoded
//! opaquely. Reading a page is one ordered index seek strictly after (or
//! before) that position, so page 10 000 costs what page 1 costs, and
//! documents inserted meanwhile cause neither gaps nor duplicates.

use std::cmp::Ordering;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

use super::{Database, Direction, Document, Filter, FindOptions, SortKey, StoreResult, ID};
use crate::error::{ApiError, ApiResult};

/// Page size when the client asks for none.
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// Largest page a client may ask for (`first`/`last` above it are refused).
pub const MAX_PAGE_SIZE: usize = 100;

/// The client's pagination arguments, as received.
#[derive(Clone, Debug, Default)]
pub struct PageArgs {
    /// Page forward: at most this many after `after`.
    pub first: Option<i32>,
    /// Forward from this cursor.
    pub after: Option<String>,
    /// Page backward: at most this many before `before`.
    pub last: Option<i32>,
    /// Backward from this cursor.
    pub before: Option<String>,
}

/// Validated arguments: which way to read, from where, how many.
#[derive(Clone, Debug, PartialEq)]
pub struct PageQuery {
    backward: bool,
    from: Option<SortKey>,
    size: usize,
}

impl PageArgs {
    /// Forward paging: `first`/`after`.
    pub fn forward(first: Option<i32>, after: Option<String>) -> Self {
        Self {
            first,
            after,
            ..Self::default()
        }
    }

    /// Checks the arguments: `first`/`last` in 0..=100 and not both, cursors
    /// that decode. Errors are `MSCoreValidation` naming the argument.
    pub fn validate(&self) -> ApiResult<PageQuery> {
        if self.first.is_some() && self.last.is_some() {
            return Err(ApiError::validation(
                "last",
                "use either first or last, not both",
            ));
        }
        let size = |field: &str, n: Option<i32>| -> ApiResult<usize> {
            match n {
                None => Ok(DEFAULT_PAGE_SIZE),
                Some(n) => usize::try_from(n)
                    .ok()
                    .filter(|n| *n <= MAX_PAGE_SIZE)
                    .ok_or_else(|| {
                        ApiError::validation(
                            field,
                            format!("must be between 0 and {MAX_PAGE_SIZE}"),
                        )
                    }),
            }
        };
        let cursor = |field: &str, c: &Option<String>| -> ApiResult<Option<SortKey>> {
            c.as_deref()
                .map(|c| {
                    decode_cursor(c).ok_or_else(|| ApiError::validation(field, "invalid cursor"))
                })
                .transpose()
        };
        if self.last.is_some() || (self.before.is_some() && self.after.is_none()) {
            if self.after.is_some() {
                return Err(ApiError::validation(
                    "after",
                    "use after with first, before with last",
                ));
            }
            Ok(PageQuery {
                backward: true,
                from: cursor("before", &self.before)?,
                size: size("last", self.last)?,
            })
        } else {
            if self.before.is_some() {
                return Err(ApiError::validation(
                    "before",
                    "use after with first, before with last",
                ));
            }
            Ok(PageQuery {
                backward: false,
                from: cursor("after", &self.after)?,
                size: size("first", self.first)?,
            })
        }
    }
}

/// A document (or entity) and its cursor.
#[derive(Clone, Debug, PartialEq)]
pub struct Edge<T> {
    /// Opaque position of `node`.
    pub cursor: String,
    /// The item.
    pub node: T,
}

/// Where a page sits in the whole listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageInfo {
    /// More items follow the last edge.
    pub has_next_page: bool,
    /// Items precede the first edge.
    pub has_previous_page: bool,
    /// Cursor of the first edge.
    pub start_cursor: Option<String>,
    /// Cursor of the last edge.
    pub end_cursor: Option<String>,
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq)]
pub struct Connection<T> {
    /// The items in listing order.
    pub edges: Vec<Edge<T>>,
    /// Position information.
    pub page_info: PageInfo,
}

impl<T> Connection<T> {
    /// Converts every node, keeping cursors and page info.
    pub fn try_map<U, E>(self, mut f: impl FnMut(T) -> Result<U, E>) -> Result<Connection<U>, E> {
        let edges = self
            .edges
            .into_iter()
            .map(|e| {
                Ok(Edge {
                    cursor: e.cursor,
                    node: f(e.node)?,
                })
            })
            .collect::<Result<_, E>>()?;
        Ok(Connection {
            edges,
            page_info: self.page_info,
        })
    }
}

/// Reads one page of `collection` matching `filter`, listed by
/// `(sort_field, _id)` in `direction`.
pub async fn paginate(
    db: &Database,
    collection: &str,
    filter: &Filter,
    sort_field: &str,
    direction: Direction,
    query: &PageQuery,
) -> StoreResult<Connection<Document>> {
    paginate_union(
        db,
        collection,
        std::slice::from_ref(filter),
        sort_field,
        direction,
        query,
    )
    .await
}

/// [`paginate`] over the documents matching any of `filters`: one keyset
/// read per filter, each as long as the page, merged by position. A page
/// still costs the same at any depth, and each filter can be served by an
/// index of its own (a user's wallets, the sender and the recipient of a
/// transfer) where one index over all of them would cost every write.
pub async fn paginate_union(
    db: &Database,
    collection: &str,
    filters: &[Filter],
    sort_field: &str,
    direction: Direction,
    query: &PageQuery,
) -> StoreResult<Connection<Document>> {
    let read_direction = if query.backward {
        direction.reverse()
    } else {
        direction
    };
    let mut options = FindOptions::sorted(sort_field, read_direction).limit(query.size + 1);
    options.after = query.from.clone();
    let mut keyed = Vec::new();
    for filter in filters {
        for doc in db.find(collection, filter, &options).await? {
            keyed.push((sort_key(&doc, sort_field), doc));
        }
    }
    if filters.len() > 1 {
        keyed.sort_by(|(a, _), (b, _)| match read_direction {
            Direction::Asc => compare_keys(a, b),
            Direction::Desc => compare_keys(b, a),
        });
        keyed.dedup_by(|(a, _), (b, _)| a.id == b.id);
    }
    let more = keyed.len() > query.size;
    keyed.truncate(query.size);
    if query.backward {
        keyed.reverse();
    }
    let edges: Vec<Edge<Document>> = keyed
        .into_iter()
        .map(|(key, doc)| Edge {
            cursor: encode_cursor(&key),
            node: doc,
        })
        .collect();
    let (has_next_page, has_previous_page) = if query.backward {
        (query.from.is_some(), more)
    } else {
        (more, query.from.is_some())
    };
    Ok(Connection {
        page_info: PageInfo {
            has_next_page,
            has_previous_page,
            start_cursor: edges.first().map(|e| e.cursor.clone()),
            end_cursor: edges.last().map(|e| e.cursor.clone()),
        },
        edges,
    })
}

/// Two positions in ascending order, as the stores order them: missing
/// values first, then numbers, then strings; ties broken by id.
fn compare_keys(a: &SortKey, b: &SortKey) -> Ordering {
    fn rank(value: &Value) -> u8 {
        match value {
            Value::Number(_) => 1,
            Value::String(_) => 2,
            _ => 0,
        }
    }
    let values = match (&a.value, &b.value) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => x
                .as_f64()
                .unwrap_or(f64::NAN)
                .total_cmp(&y.as_f64().unwrap_or(f64::NAN)),
        },
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (x, y) => rank(x).cmp(&rank(y)),
    };
    values.then_with(|| a.id.cmp(&b.id))
}

/// The position of `doc` in a listing by `sort_field`.
pub fn sort_key(doc: &Document, sort_field: &str) -> SortKey {
    let id = doc
        .get(ID)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let value = if sort_field == ID {
        Value::String(id.clone())
    } else {
        let mut parts = sort_field.split('.');
        let first = parts.next().and_then(|p| doc.get(p));
        parts
            .try_fold(first, |v, p| Some(v.and_then(|v| v.get(p))))
            .flatten()
            .cloned()
            .unwrap_or(Value::Null)
    };
    SortKey { value, id }
}

/// Encodes a position as an opaque, URL-safe cursor.
pub fn encode_cursor(key: &SortKey) -> String {
    let json = serde_json::to_vec(&(&key.value, &key.id)).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// Decodes a cursor; `None` for anything this module did not produce.
pub fn decode_cursor(cursor: &str) -> Option<SortKey> {
    if cursor.len() > 1024 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let (value, id): (Value, String) = serde_json::from_slice(&bytes).ok()?;
    matches!(value, Value::Number(_) | Value::String(_)).then_some(SortKey { value, id })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::codes;

    #[test]
    fn arguments_are_validated() {
        let err = |args: PageArgs| args.validate().unwrap_err().extensions()["field"].clone();
        assert_eq!(err(PageArgs::forward(Some(101), None)), "first");
        assert_eq!(err(PageArgs::forward(Some(-1), None)), "first");
        assert_eq!(
            err(PageArgs::forward(None, Some("garbage".into()))),
            "after"
        );
        assert_eq!(
            err(PageArgs {
                first: Some(1),
                last: Some(1),
                ..Default::default()
            }),
            "last"
        );
        let ok = PageArgs::default().validate().unwrap();
        assert_eq!(ok.size, DEFAULT_PAGE_SIZE);
        assert_eq!(
            PageArgs::forward(Some(500), None)
                .validate()
                .unwrap_err()
                .code(),
            codes::VALIDATION
        );
    }

    #[test]
    fn sort_keys_read_nested_fields() {
        let doc = json!({"_id": "a", "meta": {"at": 5}, "n": "x"});
        let doc = doc.as_object().unwrap();
        assert_eq!(sort_key(doc, "meta.at").value, json!(5));
        assert_eq!(sort_key(doc, "n").value, json!("x"));
        assert_eq!(sort_key(doc, ID).value, json!("a"));
        assert_eq!(sort_key(doc, "missing").value, Value::Null);
    }

    proptest! {
        #[test]
        fn cursors_round_trip(n in any::<i64>(), s in ".{0,40}", id in "[a-z0-9-]{1,36}") {
            for value in [json!(n), json!(s)] {
                let key = SortKey { value, id: id.clone() };
                prop_assert_eq!(decode_cursor(&encode_cursor(&key)), Some(key));
            }
        }

        #[test]
        fn arbitrary_text_never_panics_the_decoder(s in ".{0,200}") {
            let _ = decode_cursor(&s);
        }
    }
}
