//! The database-backed layer of configuration (`service_configs`).
//!
//! Operators change settings at run time (`setConfig` through the gateway);
//! the values live in the service's database so every instance reads the
//! same ones. Environment variables still win over stored values, so an
//! emergency override at deploy time cannot be undone from the admin API.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::db::{from_document, to_document, Database, Filter, FindOptions, StoreResult};

/// The collection holding stored settings.
pub const COLLECTION: &str = "service_configs";

/// One stored setting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredSetting {
    /// `{service}:{key}`, so each setting has one document.
    #[serde(rename = "_id")]
    pub id: String,
    /// The service the setting belongs to.
    pub service: String,
    /// The key, as in the service's config spec.
    pub key: String,
    /// The value.
    pub value: Value,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
    /// Who changed it (a user id), for audit.
    pub updated_by: Option<String>,
}

/// Reads and writes stored settings.
#[derive(Clone)]
pub struct ConfigStore {
    db: Arc<Database>,
}

impl ConfigStore {
    /// A store over `db`.
    pub fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    /// Every stored setting of `service`, ordered by key.
    pub async fn load(&self, service: &str) -> StoreResult<Vec<StoredSetting>> {
        let docs = self
            .db
            .find(
                COLLECTION,
                &Filter::all().eq("service", service),
                &FindOptions::sorted("key", crate::db::Direction::Asc),
            )
            .await?;
        docs.into_iter().map(from_document).collect()
    }

    /// Stores `value` for `service`/`key`, replacing what was there. The
    /// caller checks the key against the service's spec first.
    pub async fn set(
        &self,
        service: &str,
        key: &str,
        value: Value,
        updated_by: Option<&str>,
    ) -> StoreResult<StoredSetting> {
        let setting = StoredSetting {
            id: format!("{service}:{key}"),
            service: service.to_owned(),
            key: key.to_owned(),
            value,
            updated_at: Utc::now(),
            updated_by: updated_by.map(str::to_owned),
        };
        let doc = to_document(&setting)?;
        let id = setting.id.clone();
        self.db
            .transaction(|tx| {
                let (doc, id) = (doc.clone(), id.clone());
                Box::pin(async move {
                    tx.delete_one(COLLECTION, &Filter::id(id)).await?;
                    tx.insert(COLLECTION, doc).await
                })
            })
            .await?;
        Ok(setting)
    }
}
