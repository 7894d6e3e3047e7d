//! The operations themselves, on one connection. The same functions serve
//! reads from the pool (latest committed state) and every step of a
//! transaction on the writer (which sees its own writes), so both paths
//! mean exactly the same thing.
//!
//! A collection's table is created by its first insert (or index); until
//! then reads find nothing and conditional writes match nothing, which is
//! what an empty collection answers. Creating on a "no such table" error
//! instead of remembering which tables exist keeps no state that a
//! rolled-back `CREATE TABLE` could make stale.

use rusqlite::{params_from_iter, types::ToSqlOutput, Connection, OptionalExtension};
use serde_json::{json, Map, Value};

use super::errors::{engine_error, is_missing_table, store_error};
use super::sql::{self, Query};
use crate::db::{
    document_id, Document, Filter, FindOptions, IndexSpec, StoreError, StoreResult, Update,
};

/// Runs `read` and answers `empty` when the collection has no table yet.
fn or_empty<T>(result: rusqlite::Result<T>, empty: T, collection: &str) -> StoreResult<T> {
    match result {
        Ok(value) => Ok(value),
        Err(err) if is_missing_table(&err) => Ok(empty),
        Err(err) => Err(store_error(err, collection)),
    }
}

/// Parses a stored document. The text was written by serde_json (or
/// rewritten by SQLite's `json_set`), so a failure means a damaged file.
fn parse(text: &str) -> rusqlite::Result<Document> {
    serde_json::from_str(text).map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(err))
    })
}

fn document(row: &rusqlite::Row<'_>) -> rusqlite::Result<Document> {
    parse(row.get_ref(0)?.as_str()?)
}

/// The document with this id.
pub(super) fn get(conn: &Connection, collection: &str, id: &str) -> StoreResult<Option<Document>> {
    let result = conn
        .prepare_cached(&sql::get(collection))
        .and_then(|mut stmt| stmt.query_row([id], document).optional());
    or_empty(result, None, collection)
}

/// The first match in id order.
pub(super) fn find_one(
    conn: &Connection,
    collection: &str,
    filter: &Filter,
) -> StoreResult<Option<Document>> {
    let query = sql::find_one(collection, filter)?;
    let result = conn.prepare_cached(&query.sql).and_then(|mut stmt| {
        stmt.query_row(params_from_iter(&query.params), document)
            .optional()
    });
    or_empty(result, None, collection)
}

/// The matches, ordered and sliced by `options`.
pub(super) fn find(
    conn: &Connection,
    collection: &str,
    filter: &Filter,
    options: &FindOptions,
) -> StoreResult<Vec<Document>> {
    let queries = sql::find(collection, filter, options)?;
    // Outside a transaction each statement reads its own snapshot; a
    // listing split over two queries must not see a commit in between.
    let _snapshot = if queries.len() > 1 && conn.is_autocommit() {
        Some(
            conn.unchecked_transaction()
                .map_err(|err| store_error(err, collection))?,
        )
    } else {
        None
    };
    let mut docs = Vec::new();
    for query in &queries {
        let limit = match options.limit {
            Some(limit) if docs.len() >= limit => break,
            Some(limit) => i64::try_from(limit - docs.len()).unwrap_or(i64::MAX),
            None => -1,
        };
        let limit = ToSqlOutput::from(limit);
        let result = conn.prepare_cached(&query.sql).and_then(|mut stmt| {
            let mut rows = stmt.query(params_from_iter(
                query.params.iter().chain(std::iter::once(&limit)),
            ))?;
            while let Some(row) = rows.next()? {
                docs.push(document(row)?);
            }
            Ok(())
        });
        or_empty(result, (), collection)?;
    }
    Ok(docs)
}

/// How many documents match.
pub(super) fn count(conn: &Connection, collection: &str, filter: &Filter) -> StoreResult<u64> {
    let query = sql::count(collection, filter)?;
    let result = conn.prepare_cached(&query.sql).and_then(|mut stmt| {
        stmt.query_row(params_from_iter(&query.params), |row| row.get::<_, i64>(0))
    });
    let n = or_empty(result, 0, collection)?;
    Ok(u64::try_from(n).unwrap_or_default())
}

/// Runs a statement that changes data, creating the collection's table
/// first when it does not exist yet.
fn write<T>(
    conn: &Connection,
    collection: &str,
    mut run: impl FnMut(&Connection) -> rusqlite::Result<T>,
) -> StoreResult<T> {
    match run(conn) {
        Err(err) if is_missing_table(&err) => {
            create_table(conn, collection)?;
            run(conn).map_err(|err| store_error(err, collection))
        }
        result => result.map_err(|err| store_error(err, collection)),
    }
}

/// Stores a new document under its `_id`.
pub(super) fn insert(conn: &Connection, collection: &str, doc: &Document) -> StoreResult<()> {
    let id = document_id(doc)?;
    let text = serde_json::to_string(doc)
        .map_err(|err| StoreError::Invalid(format!("unencodable document: {err}")))?;
    let sql = sql::insert(collection);
    write(conn, collection, |conn| {
        conn.prepare_cached(&sql)?.execute((id, &text)).map(drop)
    })
}

/// Updates the first match and returns it as it is afterwards.
pub(super) fn update_one(
    conn: &Connection,
    collection: &str,
    filter: &Filter,
    update: &Update,
) -> StoreResult<Option<Document>> {
    let query = sql::update_one(collection, filter, update)?;
    let result = run_returning(conn, &query);
    or_empty(result, None, collection)
}

fn run_returning(conn: &Connection, query: &Query<'_>) -> rusqlite::Result<Option<Document>> {
    let mut stmt = conn.prepare_cached(&query.sql)?;
    // SQLite makes the whole change on the first step; the row it returns
    // is the document after it.
    stmt.query_row(params_from_iter(&query.params), document)
        .optional()
}

/// Deletes the first match; whether there was one.
pub(super) fn delete_one(
    conn: &Connection,
    collection: &str,
    filter: &Filter,
) -> StoreResult<bool> {
    let query = sql::delete_one(collection, filter)?;
    let result = conn
        .prepare_cached(&query.sql)
        .and_then(|mut stmt| stmt.execute(params_from_iter(&query.params)));
    Ok(or_empty(result, 0, collection)? > 0)
}

/// Creates the collection's table if it is missing.
pub(super) fn create_table(conn: &Connection, collection: &str) -> StoreResult<()> {
    conn.execute_batch(&sql::create_table(collection))
        .map_err(|err| store_error(err, collection))
}

/// Creates the index of `spec` unless it exists; an existing index with the
/// same name but another definition is refused, as MongoDB refuses it,
/// rather than silently kept.
pub(super) fn create_index(conn: &Connection, spec: &IndexSpec) -> StoreResult<()> {
    let wanted = sql::create_index(spec);
    let existing: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?",
            [sql::index_name(spec)],
            |row| row.get(0),
        )
        .optional()
        .map_err(engine_error)?;
    match existing {
        Some(sql) if sql == wanted => Ok(()),
        Some(sql) => Err(StoreError::Invalid(format!(
            "index {} of {} already exists with another definition: {sql}",
            spec.name, spec.collection
        ))),
        None => {
            create_table(conn, &spec.collection)?;
            conn.execute_batch(&wanted)
                .map_err(|err| store_error(err, &spec.collection))
        }
    }
}

/// Drops the index `name` of `collection` if it exists.
pub(super) fn drop_index(conn: &Connection, collection: &str, name: &str) -> StoreResult<()> {
    conn.execute_batch(&sql::drop_index(collection, name))
        .map_err(|err| store_error(err, collection))
}

/// A trivial query: the file is open and readable.
pub(super) fn ping(conn: &Connection) -> StoreResult<()> {
    conn.prepare_cached("SELECT 1")
        .and_then(|mut stmt| stmt.query_row([], |_| Ok(())))
        .map_err(engine_error)
}

/// File size and per-collection document counts.
pub(super) fn stats(conn: &Connection, path: &str) -> StoreResult<Value> {
    let pragma = |name: &str| -> StoreResult<i64> {
        conn.pragma_query_value(None, name, |row| row.get(0))
            .map_err(engine_error)
    };
    let page_size = pragma("page_size")?;
    let page_count = pragma("page_count")?;
    let freelist_count = pragma("freelist_count")?;
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(engine_error)?;
    let mut collections = Map::new();
    for table in &tables {
        let Some(collection) = sql::collection_of(table) else {
            continue;
        };
        let documents = count(conn, collection, &Filter::all())?;
        collections.insert(collection.to_owned(), json!({ "documents": documents }));
    }
    Ok(json!({
        "engine": "sqlite",
        "sqlite_version": rusqlite::version(),
        "path": path,
        "page_size": page_size,
        "page_count": page_count,
        "free_pages": freelist_count,
        "size_bytes": page_size * page_count,
        "collections": collections,
    }))
}
