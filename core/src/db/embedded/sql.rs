//! Translation of the storage vocabulary (filters, orderings, updates,
//! index definitions) into SQL text plus bound parameters.
//!
//! Only names that passed [`check_field`](crate::db::check_field) are ever
//! written into SQL text: a collection becomes a quoted table name and a
//! field a JSON path inside a string literal. Every value is a bound
//! parameter, so nothing a client sends can change what a statement means.
//! Field paths must be literals (not parameters) because SQLite matches a
//! query's `json_extract(doc,'$.f')` against an index on that expression
//! textually; a bound path would never use an index.
//!
//! SQLite orders values as NULL < numbers < text, which is MongoDB's order
//! for the types the services store (null/missing < numbers < strings).
//! Comparisons, however, cross types in SQLite (`'abc' > 5` is true) while
//! MongoDB only compares within a type, so range conditions carry a bound
//! (`< ''`, `>= ''`) that keeps them inside their type bracket.

use std::fmt::Write as _;

use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use serde_json::Value;

use crate::db::{
    Condition, Direction, Filter, FindOptions, IndexSpec, Op, StoreError, StoreResult, Update, ID,
};

/// Name of the SQL function that applies `$inc` with overflow checking;
/// registered on the writer connection by the engine.
pub(super) const INC_FUNCTION: &str = "store_inc";

/// SQL text with the parameters it binds, in order.
pub(super) struct Query<'a> {
    /// The statement; its `?` placeholders match `params` one for one.
    pub(super) sql: String,
    /// Values, borrowed from the request where possible.
    pub(super) params: Vec<ToSqlOutput<'a>>,
}

impl<'a> Query<'a> {
    fn new(sql: String) -> Self {
        Self {
            sql,
            params: Vec::new(),
        }
    }

    fn bind(&mut self, value: Scalar<'a>) {
        self.params.push(match value {
            Scalar::Null => ToSqlOutput::Owned(SqlValue::Null),
            Scalar::Bool(b) => ToSqlOutput::Owned(SqlValue::Integer(i64::from(b))),
            Scalar::Int(i) => ToSqlOutput::Owned(SqlValue::Integer(i)),
            Scalar::Real(f) => ToSqlOutput::Owned(SqlValue::Real(f)),
            Scalar::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        });
    }

    fn bind_text(&mut self, text: &'a str) {
        self.bind(Scalar::Text(text));
    }
}

/// A JSON value as SQLite compares it.
#[derive(Clone, Copy)]
enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Real(f64),
    Text(&'a str),
}

impl<'a> Scalar<'a> {
    /// Objects and arrays have no SQL counterpart that compares like
    /// MongoDB's, so they are refused rather than half-supported.
    fn of(value: &'a Value) -> StoreResult<Self> {
        Ok(match value {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Self::Int(i),
                // Integers beyond i64 (u64) and floats: SQLite compares them as REAL.
                None => Self::Real(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Self::Text(s),
            Value::Array(_) | Value::Object(_) => {
                return Err(StoreError::Invalid(
                    "objects and arrays cannot be compared in a filter".to_owned(),
                ))
            }
        })
    }
}

/// The quoted table holding `collection`.
pub(super) fn table(collection: &str) -> String {
    format!("\"c_{collection}\"")
}

/// The collection a table name belongs to, if it is one of ours.
pub(super) fn collection_of(table: &str) -> Option<&str> {
    table.strip_prefix("c_")
}

/// Appends the SQL expression reading `field`: the id column for `_id`
/// (so the primary key serves it), a JSON extraction otherwise.
fn push_field(sql: &mut String, field: &str) {
    if field == ID {
        sql.push_str("id");
    } else {
        // `field` passed check_field: letters, digits, `_` and dots only.
        let _ = write!(sql, "json_extract(doc,'$.{field}')");
    }
}

fn field_expr(field: &str) -> String {
    let mut sql = String::new();
    push_field(&mut sql, field);
    sql
}

/// Appends ` WHERE ...` for `filter` (nothing for the empty filter).
fn push_where<'a>(query: &mut Query<'a>, filter: &'a Filter) -> StoreResult<()> {
    for (i, condition) in filter.conditions().iter().enumerate() {
        query.sql.push_str(if i == 0 { " WHERE " } else { " AND " });
        push_condition(query, condition)?;
    }
    Ok(())
}

/// Appends `AND` (or `WHERE`) before an extra clause.
fn push_conjunction(query: &mut Query<'_>, filter: &Filter) {
    query.sql.push_str(if filter.conditions().is_empty() {
        " WHERE "
    } else {
        " AND "
    });
}

fn push_condition<'a>(query: &mut Query<'a>, condition: &'a Condition) -> StoreResult<()> {
    match condition {
        Condition::Compare { field, op, value } => push_compare(query, field, *op, value),
        Condition::In { field, values } => push_in(query, field, values),
    }
}

fn push_compare<'a>(
    query: &mut Query<'a>,
    field: &str,
    op: Op,
    value: &'a Value,
) -> StoreResult<()> {
    let scalar = Scalar::of(value)?;
    let e = field_expr(field);
    if field == ID {
        // Ids are always strings: any other value matches only through `Ne`,
        // as in MongoDB, where values of different types never compare equal.
        let Scalar::Text(id) = scalar else {
            query.sql.push_str(if op == Op::Ne { "1" } else { "0" });
            return Ok(());
        };
        let _ = write!(query.sql, "id {} ?", sql_op(op));
        query.bind_text(id);
        return Ok(());
    }
    let sql = &mut query.sql;
    match scalar {
        // A missing field equals null; `$gte: null` matches it too, `$gt: null` nothing.
        Scalar::Null => match op {
            Op::Eq | Op::Gte | Op::Lte => {
                let _ = write!(sql, "{e} IS NULL");
            }
            Op::Ne => {
                let _ = write!(sql, "{e} IS NOT NULL");
            }
            Op::Gt | Op::Lt => sql.push('0'),
        },
        Scalar::Bool(b) => match op {
            Op::Eq => push_bool(sql, field, &e, b),
            Op::Ne => {
                sql.push_str("NOT ");
                push_bool(sql, field, &e, b);
            }
            _ => {
                return Err(StoreError::Invalid(format!(
                    "range comparison of {field} with a boolean"
                )))
            }
        },
        Scalar::Int(_) | Scalar::Real(_) => {
            let _ = match op {
                Op::Eq => write!(sql, "{e} = ?"),
                // `IS NOT` is true for NULL too: MongoDB's `$ne` matches missing fields.
                Op::Ne => write!(sql, "{e} IS NOT ?"),
                // Text sorts above numbers; `< ''` keeps strings out of a numeric range.
                Op::Gt => write!(sql, "({e} > ? AND {e} < '')"),
                Op::Gte => write!(sql, "({e} >= ? AND {e} < '')"),
                // NULL never compares, so only numbers can be below a number.
                Op::Lt => write!(sql, "{e} < ?"),
                Op::Lte => write!(sql, "{e} <= ?"),
            };
            query.bind(scalar);
        }
        Scalar::Text(_) => {
            let _ = match op {
                Op::Eq => write!(sql, "{e} = ?"),
                Op::Ne => write!(sql, "{e} IS NOT ?"),
                Op::Gt => write!(sql, "{e} > ?"),
                Op::Gte => write!(sql, "{e} >= ?"),
                // Numbers sort below text; `>= ''` keeps them out of a string range.
                Op::Lt => write!(sql, "({e} < ? AND {e} >= '')"),
                Op::Lte => write!(sql, "({e} <= ? AND {e} >= '')"),
            };
            query.bind(scalar);
        }
    }
    Ok(())
}

/// `json_extract` reads `true` as 1, indistinguishable from the number 1;
/// `json_type` tells them apart, the extraction keeps an index usable.
fn push_bool(sql: &mut String, field: &str, e: &str, b: bool) {
    let _ = write!(
        sql,
        "({e} IS {} AND json_type(doc,'$.{field}') IS '{b}')",
        i64::from(b)
    );
}

fn push_in<'a>(query: &mut Query<'a>, field: &str, values: &'a [Value]) -> StoreResult<()> {
    let e = field_expr(field);
    // Ids are strings and never null: nothing else in the list can match one.
    let is_id = field == ID;
    let mut listed = 0;
    let mut alternatives = Vec::new();
    for value in values {
        match Scalar::of(value)? {
            Scalar::Null if !is_id => alternatives.push(format!("{e} IS NULL")),
            Scalar::Bool(b) if !is_id => {
                let mut sql = String::new();
                push_bool(&mut sql, field, &e, b);
                alternatives.push(sql);
            }
            scalar @ Scalar::Text(_) => {
                query.bind(scalar);
                listed += 1;
            }
            scalar @ (Scalar::Int(_) | Scalar::Real(_)) if !is_id => {
                query.bind(scalar);
                listed += 1;
            }
            _ => {}
        }
    }
    if listed > 0 {
        // Only the IN list binds parameters, so its place among the
        // alternatives does not shift any.
        let marks = vec!["?"; listed].join(",");
        alternatives.push(format!("{e} IN ({marks})"));
    }
    if alternatives.is_empty() {
        query.sql.push('0');
    } else {
        let _ = write!(query.sql, "({})", alternatives.join(" OR "));
    }
    Ok(())
}

fn sql_op(op: Op) -> &'static str {
    match op {
        Op::Eq => "=",
        Op::Ne => "<>",
        Op::Gt => ">",
        Op::Gte => ">=",
        Op::Lt => "<",
        Op::Lte => "<=",
    }
}

fn sql_direction(direction: Direction) -> &'static str {
    match direction {
        Direction::Asc => "ASC",
        Direction::Desc => "DESC",
    }
}

/// `SELECT doc` of the document with a given id (one parameter).
pub(super) fn get(collection: &str) -> String {
    format!("SELECT doc FROM {} WHERE id = ?", table(collection))
}

/// `INSERT` of an id and a document text (two parameters).
pub(super) fn insert(collection: &str) -> String {
    format!("INSERT INTO {}(id, doc) VALUES (?, ?)", table(collection))
}

/// The collection's table. A rowid table with the id as a unique key keeps
/// documents of any size cheap to store; the id index serves `get`.
pub(super) fn create_table(collection: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}(id TEXT PRIMARY KEY NOT NULL, doc TEXT NOT NULL)",
        table(collection)
    )
}

/// The index's SQLite name: unique in the file, and it carries the spec's
/// name so a unique violation can be reported under it.
pub(super) fn index_name(spec: &IndexSpec) -> String {
    sqlite_index_name(&spec.collection, &spec.name)
}

fn sqlite_index_name(collection: &str, name: &str) -> String {
    format!("{collection}__{name}")
}

/// `DROP INDEX` for the index `name` of `collection`, if it exists.
pub(super) fn drop_index(collection: &str, name: &str) -> String {
    format!(
        "DROP INDEX IF EXISTS \"{}\"",
        sqlite_index_name(collection, name)
    )
}

/// The spec name inside an index name made by [`index_name`].
pub(super) fn spec_name<'n>(collection: &str, index: &'n str) -> &'n str {
    index
        .strip_prefix(collection)
        .and_then(|rest| rest.strip_prefix("__"))
        .unwrap_or(index)
}

/// `CREATE INDEX` for `spec`, in the normal form SQLite stores in
/// `sqlite_master.sql`, so an existing index can be compared with it.
/// A non-unique index ends with the id, which makes every entry distinct and
/// lets a keyset seek on `(field, id)` run entirely inside the index.
pub(super) fn create_index(spec: &IndexSpec) -> String {
    let mut columns: Vec<String> = spec
        .fields
        .iter()
        .map(|(field, direction)| match direction {
            Direction::Asc => field_expr(field),
            Direction::Desc => format!("{} DESC", field_expr(field)),
        })
        .collect();
    if !spec.unique && spec.fields.iter().all(|(field, _)| field != ID) {
        columns.push("id".to_owned());
    }
    format!(
        "CREATE {}INDEX \"{}\" ON {}({})",
        if spec.unique { "UNIQUE " } else { "" },
        index_name(spec),
        table(&spec.collection),
        columns.join(", ")
    )
}

/// The first match in id order.
pub(super) fn find_one<'a>(collection: &str, filter: &'a Filter) -> StoreResult<Query<'a>> {
    let mut query = Query::new(format!("SELECT doc FROM {}", table(collection)));
    push_where(&mut query, filter)?;
    query.sql.push_str(" ORDER BY id LIMIT 1");
    Ok(query)
}

/// The number of matches.
pub(super) fn count<'a>(collection: &str, filter: &'a Filter) -> StoreResult<Query<'a>> {
    let mut query = Query::new(format!("SELECT count(*) FROM {}", table(collection)));
    push_where(&mut query, filter)?;
    Ok(query)
}

/// The queries answering a [`FindOptions`] read, to run in order until the
/// limit is reached. Each ends with `LIMIT ?`, whose value the caller binds
/// last (negative for no limit).
///
/// A keyset position becomes a range on the sort expression
/// (`e >= v AND (e > v OR id > i)`), which SQLite answers with one index
/// seek; the textbook `e > v OR (e = v AND id > i)` would make it merge two
/// scans and sort. Documents whose sort field is missing (NULL, first in
/// ascending order) fall outside any range, so they get a query of their own.
pub(super) fn find<'a>(
    collection: &str,
    filter: &'a Filter,
    options: &'a FindOptions,
) -> StoreResult<Vec<Query<'a>>> {
    let dir = sql_direction(options.direction);
    let asc = options.direction == Direction::Asc;
    let (cmp, cmp_eq) = if asc { (">", ">=") } else { ("<", "<=") };
    let start = || -> StoreResult<Query<'a>> {
        let mut query = Query::new(format!("SELECT doc FROM {}", table(collection)));
        push_where(&mut query, filter)?;
        Ok(query)
    };

    if options.sort_field == ID {
        let mut query = start()?;
        if let Some(after) = &options.after {
            push_conjunction(&mut query, filter);
            let _ = write!(query.sql, "id {cmp} ?");
            query.bind_text(&after.id);
        }
        let _ = write!(query.sql, " ORDER BY id {dir} LIMIT ?");
        return Ok(vec![query]);
    }

    let e = field_expr(&options.sort_field);
    let order = format!(" ORDER BY {e} {dir}, id {dir} LIMIT ?");
    let Some(after) = &options.after else {
        let mut query = start()?;
        query.sql.push_str(&order);
        return Ok(vec![query]);
    };
    let mut queries = Vec::with_capacity(2);
    match Scalar::of(&after.value)? {
        Scalar::Null => {
            // Still among the NULLs: the rest of them, then (ascending) everything else.
            let mut nulls = start()?;
            push_conjunction(&mut nulls, filter);
            let _ = write!(nulls.sql, "{e} IS NULL AND id {cmp} ?{order}");
            nulls.bind_text(&after.id);
            queries.push(nulls);
            if asc {
                let mut rest = start()?;
                push_conjunction(&mut rest, filter);
                let _ = write!(rest.sql, "{e} IS NOT NULL{order}");
                queries.push(rest);
            }
        }
        value => {
            let mut range = start()?;
            push_conjunction(&mut range, filter);
            let _ = write!(
                range.sql,
                "{e} {cmp_eq} ? AND ({e} {cmp} ? OR id {cmp} ?){order}"
            );
            range.bind(value);
            range.bind(value);
            range.bind_text(&after.id);
            queries.push(range);
            if !asc {
                // Descending, the NULLs come last.
                let mut nulls = start()?;
                push_conjunction(&mut nulls, filter);
                let _ = write!(nulls.sql, "{e} IS NULL{order}");
                queries.push(nulls);
            }
        }
    }
    Ok(queries)
}

/// Applies `update` to the first match in id order and returns the new
/// document, in one statement: the read of the precondition and the write
/// cannot be separated by anything.
pub(super) fn update_one<'a>(
    collection: &str,
    filter: &'a Filter,
    update: &'a Update,
) -> StoreResult<Query<'a>> {
    let table = table(collection);
    let mut query = Query::new(format!("UPDATE {table} SET doc = json_set(doc"));
    for (field, value) in update.sets() {
        let _ = write!(query.sql, ", '$.{field}', ");
        match value {
            // Bound as they are: json_set stores SQL text as a JSON string
            // and an SQL integer as a JSON integer.
            Value::String(s) => {
                query.sql.push('?');
                query.bind_text(s);
            }
            Value::Number(n) if n.is_i64() => {
                query.sql.push('?');
                query.bind(Scalar::of(value)?);
            }
            // Everything else as JSON text, which keeps booleans, nested
            // values and floats exactly as serde_json wrote them.
            _ => {
                query.sql.push_str("json(?)");
                let text = serde_json::to_string(value)
                    .map_err(|err| StoreError::Invalid(format!("unencodable value: {err}")))?;
                query.params.push(ToSqlOutput::Owned(SqlValue::Text(text)));
            }
        }
    }
    for (field, delta) in update.incs() {
        let _ = write!(
            query.sql,
            ", '$.{field}', {INC_FUNCTION}(doc -> '$.{field}', ?)"
        );
        query.bind(Scalar::Int(*delta));
    }
    let _ = write!(query.sql, ") WHERE id = (SELECT id FROM {table}");
    push_where(&mut query, filter)?;
    query.sql.push_str(" ORDER BY id LIMIT 1) RETURNING doc");
    Ok(query)
}

/// Deletes the first match in id order.
pub(super) fn delete_one<'a>(collection: &str, filter: &'a Filter) -> StoreResult<Query<'a>> {
    let table = table(collection);
    let mut query = Query::new(format!(
        "DELETE FROM {table} WHERE id = (SELECT id FROM {table}"
    ));
    push_where(&mut query, filter)?;
    query.sql.push_str(" ORDER BY id LIMIT 1)");
    Ok(query)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_are_bound_and_names_become_literal_paths() {
        let filter = Filter::id("w1")
            .gte("balance", 5)
            .eq("meta.kind", "x' OR 1=1 --");
        let query = find_one("wallets", &filter).unwrap();
        assert_eq!(
            query.sql,
            "SELECT doc FROM \"c_wallets\" WHERE id = ? AND \
             (json_extract(doc,'$.balance') >= ? AND json_extract(doc,'$.balance') < '') AND \
             json_extract(doc,'$.meta.kind') = ? ORDER BY id LIMIT 1"
        );
        assert_eq!(query.params.len(), 3);
    }

    #[test]
    fn non_unique_indexes_end_with_the_id() {
        let spec = IndexSpec::new("items", "items_kind_seq", &["kind", "seq"]);
        assert_eq!(
            create_index(&spec),
            "CREATE INDEX \"items__items_kind_seq\" ON \"c_items\"\
             (json_extract(doc,'$.kind'), json_extract(doc,'$.seq'), id)"
        );
        let unique = IndexSpec::new("users", "email", &["email"]).unique();
        assert_eq!(
            create_index(&unique),
            "CREATE UNIQUE INDEX \"users__email\" ON \"c_users\"(json_extract(doc,'$.email'))"
        );
        assert_eq!(spec_name("users", "users__email"), "email");
    }

    #[test]
    fn objects_in_filters_are_refused() {
        let filter = Filter::all().eq("a", json!({"$gt": 1}));
        assert!(matches!(
            find_one("c", &filter),
            Err(StoreError::Invalid(_))
        ));
        let filter = Filter::all().is_in("a", vec![json!([1])]);
        assert!(matches!(count("c", &filter), Err(StoreError::Invalid(_))));
    }

    #[test]
    fn a_keyset_position_is_a_range() {
        let options = FindOptions::sorted("seq", Direction::Desc).after(crate::db::SortKey {
            value: json!(7),
            id: "i9".to_owned(),
        });
        let filter = Filter::all();
        let queries = find("items", &filter, &options).unwrap();
        assert_eq!(queries.len(), 2, "the NULLs follow in descending order");
        assert!(queries[0].sql.contains(
            "json_extract(doc,'$.seq') <= ? AND (json_extract(doc,'$.seq') < ? OR id < ?)"
        ));
        assert!(queries[1].sql.contains("IS NULL"));
    }
}
