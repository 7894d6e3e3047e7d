//! The MongoDB engine: the production store.
//!
//! A [`crate::db::Database::transaction`] runs as a multi-document
//! transaction on a [`ClientSession`] with majority read and write concern
//! (see `transaction`): its writes commit together or not at all, and a
//! concurrent transaction that touched the same document surfaces as
//! [`StoreError::Conflict`] for the runner to retry. Updates are
//! `findAndModify` with the caller's preconditions in the filter, which is
//! what makes a conditional debit atomic.
//!
//! Documents are converted by hand (see `convert`) so that every integer is
//! stored as Int64; queries are built in `query`, errors mapped in `errors`,
//! and pool figures come from driver events (see `pool`).

mod convert;
mod errors;
mod pool;
mod query;
mod transaction;

#[cfg(test)]
mod live_tests;

use std::sync::Arc;

use futures::TryStreamExt as _;
use mongodb::bson::{doc, Document as BsonDocument};
use mongodb::options::{ClientOptions, IndexOptions, ReadConcern, ReturnDocument, WriteConcern};
use mongodb::{Client, ClientSession, Collection, IndexModel};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use self::convert::{to_bson_document, to_json_document};
use self::pool::{Gate, PoolCounters};
pub use self::pool::{PoolSettings, PoolStats, PoolStatus};
pub(crate) use self::transaction::MongoTx;
use crate::db::{Document, Filter, FindOptions, IndexSpec, StoreError, StoreResult, Update, ID};

/// What the store and its transactions share.
struct Shared {
    client: Client,
    db: mongodb::Database,
    gate: Gate,
    counters: Arc<PoolCounters>,
    max_pool_size: u32,
}

/// A query, sort and limit for `find`, or `None` when the answer is empty.
/// The limit is MongoDB's: 0 means none, so a requested limit of 0 must
/// never reach the server.
fn find_plan(
    filter: &Filter,
    options: &FindOptions,
) -> StoreResult<Option<(BsonDocument, BsonDocument, i64)>> {
    let limit = match options.limit {
        Some(0) => return Ok(None),
        Some(n) => i64::try_from(n).unwrap_or(i64::MAX),
        None => 0,
    };
    let query = query::find_document(filter, options)?;
    let sort = query::sort_document(&options.sort_field, options.direction);
    Ok(Some((query, sort, limit)))
}

fn id_order() -> BsonDocument {
    doc! { ID: 1 }
}

/// Runs one driver action: inside `session` when there is one, under the
/// in-flight gate, with errors mapped for `collection`.
macro_rules! run {
    ($gate:expr, $session:expr, $collection:expr, $action:expr) => {{
        let action = $action;
        let _permit = $gate.enter().await?;
        match $session {
            Some(session) => action.session(session).await,
            None => action.await,
        }
        .map_err(|err| errors::store_error($collection, &err))
    }};
}

/// The single-document operations, with a session inside a transaction
/// and without one for the store's own reads and writes. Without a
/// session each is atomic on its document by itself, and the server
/// resolves write conflicts internally instead of reporting them.
impl Shared {
    fn collection(&self, name: &str) -> Collection<BsonDocument> {
        self.db.collection(name)
    }

    #[tracing::instrument(
        skip_all,
        fields(collection = %collection, in_transaction = session.is_some()),
        err(level = "debug")
    )]
    async fn insert(
        &self,
        session: Option<&mut ClientSession>,
        collection: &str,
        doc: &Document,
    ) -> StoreResult<()> {
        let doc = to_bson_document(doc)?;
        let coll = self.collection(collection);
        let action = coll.insert_one(doc);
        run!(self.gate, session, collection, action).map(drop)
    }

    #[tracing::instrument(
        skip_all,
        fields(collection = %collection, in_transaction = session.is_some()),
        err(level = "debug")
    )]
    async fn find_one(
        &self,
        session: Option<&mut ClientSession>,
        collection: &str,
        query: BsonDocument,
    ) -> StoreResult<Option<Document>> {
        let coll = self.collection(collection);
        let action = coll.find_one(query).sort(id_order());
        run!(self.gate, session, collection, action).map(|found| found.map(to_json_document))
    }

    #[tracing::instrument(
        skip_all,
        fields(collection = %collection, in_transaction = session.is_some()),
        err(level = "debug")
    )]
    async fn update_one(
        &self,
        session: Option<&mut ClientSession>,
        collection: &str,
        filter: &Filter,
        update: &Update,
    ) -> StoreResult<Option<Document>> {
        let query = query::update_filter(filter, update)?;
        let change = query::update_document(update)?;
        let coll = self.collection(collection);
        let action = coll
            .find_one_and_update(query, change)
            .sort(id_order())
            .return_document(ReturnDocument::After);
        run!(self.gate, session, collection, action).map(|found| found.map(to_json_document))
    }

    #[tracing::instrument(
        skip_all,
        fields(collection = %collection, in_transaction = session.is_some()),
        err(level = "debug")
    )]
    async fn delete_one(
        &self,
        session: Option<&mut ClientSession>,
        collection: &str,
        filter: &Filter,
    ) -> StoreResult<bool> {
        let query = query::filter_document(filter)?;
        let coll = self.collection(collection);
        let action = coll.find_one_and_delete(query).sort(id_order());
        run!(self.gate, session, collection, action).map(|found| found.is_some())
    }

    #[tracing::instrument(
        skip_all,
        fields(collection = %collection, in_transaction = true),
        err(level = "debug")
    )]
    async fn find_in_session(
        &self,
        session: &mut ClientSession,
        collection: &str,
        (query, sort, limit): (BsonDocument, BsonDocument, i64),
    ) -> StoreResult<Vec<Document>> {
        let fail = |err: mongodb::error::Error| errors::store_error(collection, &err);
        let _permit = self.gate.enter().await?;
        let mut cursor = self
            .collection(collection)
            .find(query)
            .sort(sort)
            .limit(limit)
            .session(&mut *session)
            .await
            .map_err(fail)?;
        let mut found = Vec::new();
        while let Some(doc) = cursor.next(session).await {
            found.push(to_json_document(doc.map_err(fail)?));
        }
        Ok(found)
    }
}

/// A connected MongoDB database.
pub(crate) struct MongoStore {
    shared: Arc<Shared>,
}

impl MongoStore {
    /// Connects to `database` and checks the server answers.
    ///
    /// The connection string is a secret: it is never logged, and errors
    /// show it with credentials and secret options replaced by `***`.
    pub(crate) async fn connect(
        uri: &SecretString,
        database: &str,
        pool: &PoolSettings,
    ) -> StoreResult<Self> {
        let raw = uri.expose_secret();
        let shown = errors::redact_uri(raw);
        let unavailable = |what: &str, err: &mongodb::error::Error| {
            StoreError::Unavailable(format!(
                "{what} MongoDB at {shown}: {}",
                errors::scrub(&err.kind.to_string(), raw)
            ))
        };
        let mut options = ClientOptions::parse(raw)
            .await
            .map_err(|err| unavailable("cannot configure", &err))?;
        if options.app_name.is_none() {
            // Shows in the server's logs and currentOp which service this is.
            options.app_name = Some(database.to_owned());
        }
        let max_pool_size = pool.max_size.max(1);
        options.max_pool_size = Some(max_pool_size);
        options.min_pool_size = Some(pool.min_size.min(max_pool_size));
        options.max_idle_time = Some(pool.max_idle());
        options.server_selection_timeout = Some(pool.server_selection_timeout());
        // Money is stored here: an acknowledged write must survive failover.
        options.write_concern = Some(WriteConcern::majority());
        options.retry_reads = Some(true);
        options.retry_writes = Some(true);
        let counters = Arc::new(PoolCounters::default());
        options.cmap_event_handler = Some(counters.handler());

        let client =
            Client::with_options(options).map_err(|err| unavailable("cannot configure", &err))?;
        let db = client.database(database);
        db.run_command(doc! { "ping": 1 })
            .await
            .map_err(|err| unavailable("cannot reach", &err))?;
        tracing::info!(uri = %shown, database, "connected to MongoDB");
        Ok(Self {
            shared: Arc::new(Shared {
                gate: Gate::new(pool, counters.clone()),
                counters,
                max_pool_size,
                client,
                db,
            }),
        })
    }

    /// The pool as the driver's events describe it now.
    pub(crate) fn pool_stats(&self) -> PoolStats {
        self.shared.counters.snapshot(self.shared.max_pool_size)
    }

    /// Creates each index unless one with its name exists. A non-unique
    /// index gets `_id` as its last key, for keyset listings.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub(crate) async fn ensure_indexes(&self, specs: &[IndexSpec]) -> StoreResult<()> {
        for spec in specs {
            let model = IndexModel::builder()
                .keys(query::index_keys(spec))
                .options(
                    IndexOptions::builder()
                        .name(spec.name.clone())
                        .unique(spec.unique)
                        .build(),
                )
                .build();
            let _permit = self.shared.gate.enter().await?;
            self.shared
                .collection(&spec.collection)
                .create_index(model)
                .await
                .map_err(|err| errors::store_error(&spec.collection, &err))?;
        }
        Ok(())
    }

    /// Drops the named indexes where they exist.
    pub(crate) async fn drop_indexes(&self, retired: &[(&str, &str)]) -> StoreResult<()> {
        for (collection, name) in retired {
            let _permit = self.shared.gate.enter().await?;
            match self.shared.collection(collection).drop_index(*name).await {
                Err(err) if !errors::is_missing_index(&err) => {
                    return Err(errors::store_error(collection, &err));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether the server answers a ping.
    pub(crate) async fn health(&self) -> StoreResult<()> {
        let _permit = self.shared.gate.enter().await?;
        self.shared
            .db
            .run_command(doc! { "ping": 1 })
            .await
            .map(drop)
            .map_err(|err| errors::store_error("", &err))
    }

    /// The server's `dbStats` for this database.
    pub(crate) async fn stats(&self) -> StoreResult<Value> {
        let _permit = self.shared.gate.enter().await?;
        let mut stats = self
            .shared
            .db
            .run_command(doc! { "dbStats": 1 })
            .await
            .map_err(|err| errors::store_error("", &err))?;
        // Replication bookkeeping, not statistics.
        for key in ["$clusterTime", "operationTime", "ok"] {
            stats.remove(key);
        }
        Ok(Value::Object(to_json_document(stats)))
    }

    /// Starts a transaction on a session of its own.
    pub(crate) async fn begin(&self) -> StoreResult<MongoTx> {
        let mut session = self
            .shared
            .client
            .start_session()
            .await
            .map_err(|err| errors::store_error("", &err))?;
        session
            .start_transaction()
            .read_concern(ReadConcern::majority())
            .write_concern(WriteConcern::majority())
            .await
            .map_err(|err| errors::store_error("", &err))?;
        Ok(MongoTx::new(self.shared.clone(), session))
    }

    /// The document with this id.
    pub(crate) async fn get(&self, collection: &str, id: &str) -> StoreResult<Option<Document>> {
        self.shared
            .find_one(None, collection, query::by_id(id))
            .await
    }

    /// The first match in id order.
    pub(crate) async fn find_one(
        &self,
        collection: &str,
        filter: &Filter,
    ) -> StoreResult<Option<Document>> {
        let query = query::filter_document(filter)?;
        self.shared.find_one(None, collection, query).await
    }

    /// The matches in `(sort field, _id)` order, after the cursor, limited.
    #[tracing::instrument(skip_all, fields(collection = %collection), err(level = "debug"))]
    pub(crate) async fn find(
        &self,
        collection: &str,
        filter: &Filter,
        options: &FindOptions,
    ) -> StoreResult<Vec<Document>> {
        let Some((query, sort, limit)) = find_plan(filter, options)? else {
            return Ok(Vec::new());
        };
        let fail = |err: mongodb::error::Error| errors::store_error(collection, &err);
        let _permit = self.shared.gate.enter().await?;
        let cursor = self
            .shared
            .collection(collection)
            .find(query)
            .sort(sort)
            .limit(limit)
            .await
            .map_err(fail)?;
        cursor
            .map_ok(to_json_document)
            .try_collect()
            .await
            .map_err(fail)
    }

    /// How many documents match.
    #[tracing::instrument(skip_all, fields(collection = %collection), err(level = "debug"))]
    pub(crate) async fn count(&self, collection: &str, filter: &Filter) -> StoreResult<u64> {
        let query = query::filter_document(filter)?;
        let _permit = self.shared.gate.enter().await?;
        self.shared
            .collection(collection)
            .count_documents(query)
            .await
            .map_err(|err| errors::store_error(collection, &err))
    }

    /// Inserts one document outside any transaction (atomic by itself).
    pub(crate) async fn insert(&self, collection: &str, doc: Document) -> StoreResult<()> {
        self.shared.insert(None, collection, &doc).await
    }

    /// [`MongoTx::update_one`] outside any transaction. One `findAndModify`
    /// is atomic on its document by itself, and the server retries a write
    /// conflict internally, so many concurrent writers to one hot document
    /// all get through, where as transactions they would keep aborting
    /// each other.
    pub(crate) async fn update_one(
        &self,
        collection: &str,
        filter: &Filter,
        update: &Update,
    ) -> StoreResult<Option<Document>> {
        self.shared
            .update_one(None, collection, filter, update)
            .await
    }

    /// Deletes the first match outside any transaction (atomic by itself).
    pub(crate) async fn delete_one(&self, collection: &str, filter: &Filter) -> StoreResult<bool> {
        self.shared.delete_one(None, collection, filter).await
    }
}
