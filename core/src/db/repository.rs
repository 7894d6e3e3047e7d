//! A typed repository over one collection.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::pagination::{paginate, Connection, PageQuery};
use super::{Database, Direction, Document, Filter, FindOptions, StoreError, StoreResult, Update};
use crate::cache::{CacheKey, LayeredCache};

/// A type stored as one document per value. Serialise the id as `_id`
/// (`#[serde(rename = "_id")]`).
pub trait Entity: Serialize + DeserializeOwned + Send + Sync {
    /// The collection holding this type.
    const COLLECTION: &'static str;
}

/// CRUD and paging for one [`Entity`] type, optionally caching `get` by id.
///
/// With a cache, the repository's own writes keep it coherent (write-through
/// on update, invalidation on create and delete). Writes made elsewhere, in a
/// [`Database::transaction`] for example, must call [`Repository::forget`]
/// after they commit.
pub struct Repository<T> {
    db: Arc<Database>,
    cache: Option<(Arc<LayeredCache>, Duration)>,
    _entity: PhantomData<fn() -> T>,
}

impl<T> Clone for Repository<T> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            cache: self.cache.clone(),
            _entity: PhantomData,
        }
    }
}

/// Serialises an entity as a stored document.
pub fn to_document<T: Serialize>(value: &T) -> StoreResult<Document> {
    match serde_json::to_value(value) {
        Ok(Value::Object(doc)) => Ok(doc),
        Ok(_) => Err(StoreError::Invalid(
            "an entity must serialise to an object".to_owned(),
        )),
        Err(err) => Err(StoreError::Invalid(format!(
            "cannot serialise entity: {err}"
        ))),
    }
}

/// Reads a stored document back as an entity.
pub fn from_document<T: DeserializeOwned>(doc: Document) -> StoreResult<T> {
    serde_json::from_value(Value::Object(doc))
        .map_err(|err| StoreError::Backend(format!("stored document does not fit its type: {err}")))
}

impl<T: Entity> Repository<T> {
    /// A repository over `db`.
    pub fn new(db: Arc<Database>) -> Self {
        Self {
            db,
            cache: None,
            _entity: PhantomData,
        }
    }

    /// Caches `get` results in `cache` for `ttl`.
    pub fn with_cache(mut self, cache: Arc<LayeredCache>, ttl: Duration) -> Self {
        self.cache = Some((cache, ttl));
        self
    }

    fn cache_key(id: &str) -> String {
        CacheKey::one(T::COLLECTION, id)
    }

    /// Drops entity `id` from the cache after a write made outside the
    /// repository.
    pub async fn forget(&self, id: &str) {
        if let Some((cache, _)) = &self.cache {
            cache.delete(&Self::cache_key(id)).await;
        }
    }

    /// The database underneath.
    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    /// Stores a new entity; [`StoreError::Duplicate`] if its id or a unique
    /// field is taken.
    pub async fn create(&self, entity: &T) -> StoreResult<()> {
        let doc = to_document(entity)?;
        let id = super::document_id(&doc)?.to_owned();
        self.db.insert(T::COLLECTION, doc).await?;
        // A lookup before the insert may have cached "not found".
        self.forget(&id).await;
        Ok(())
    }

    /// The entity with this id (from the cache when one is configured).
    pub async fn get(&self, id: &str) -> StoreResult<Option<T>> {
        let load = async {
            self.db
                .get(T::COLLECTION, id)
                .await?
                .map(from_document)
                .transpose()
        };
        match &self.cache {
            Some((cache, ttl)) => cache.cached(&Self::cache_key(id), *ttl, load).await,
            None => load.await,
        }
    }

    /// The first entity matching `filter`.
    pub async fn find_one(&self, filter: &Filter) -> StoreResult<Option<T>> {
        self.db
            .find_one(T::COLLECTION, filter)
            .await?
            .map(from_document)
            .transpose()
    }

    /// Entities matching `filter`, ordered and sliced by `options`.
    pub async fn find(&self, filter: &Filter, options: &FindOptions) -> StoreResult<Vec<T>> {
        self.db
            .find(T::COLLECTION, filter, options)
            .await?
            .into_iter()
            .map(from_document)
            .collect()
    }

    /// Applies `update` to entity `id` if it also matches `precondition`;
    /// the entity after the change, or `None` when the id is unknown or the
    /// precondition failed.
    pub async fn update(
        &self,
        id: &str,
        precondition: Filter,
        update: &Update,
    ) -> StoreResult<Option<T>> {
        let filter = precondition.eq(super::ID, id);
        let after: Option<T> = self
            .db
            .update_one(T::COLLECTION, &filter, update)
            .await?
            .map(from_document)
            .transpose()?;
        if let (Some((cache, ttl)), Some(entity)) = (&self.cache, &after) {
            cache.set(&Self::cache_key(id), &Some(entity), *ttl).await;
        }
        Ok(after)
    }

    /// Deletes entity `id`; whether it existed.
    pub async fn delete(&self, id: &str) -> StoreResult<bool> {
        let deleted = self.db.delete_one(T::COLLECTION, &Filter::id(id)).await?;
        self.forget(id).await;
        Ok(deleted)
    }

    /// How many entities match `filter`.
    pub async fn count(&self, filter: &Filter) -> StoreResult<u64> {
        self.db.count(T::COLLECTION, filter).await
    }

    /// One page of entities matching `filter`, listed by
    /// `(sort_field, _id)` in `direction`.
    pub async fn page(
        &self,
        filter: &Filter,
        sort_field: &str,
        direction: Direction,
        query: &PageQuery,
    ) -> StoreResult<Connection<T>> {
        paginate(
            &self.db,
            T::COLLECTION,
            filter,
            sort_field,
            direction,
            query,
        )
        .await?
        .try_map(from_document)
    }
}
