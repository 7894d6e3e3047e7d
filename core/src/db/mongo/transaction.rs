//! Transactions: one [`ClientSession`] each, owned so that a transaction
//! can move between tasks.
//!
//! MongoDB aborts a transaction as soon as one of its operations fails, so
//! the first failure is remembered and reported by everything after it;
//! and a commit whose outcome is unknown is re-sent rather than the work
//! re-run, since it may already have taken effect.

use std::sync::Arc;
use std::time::Duration;

use mongodb::ClientSession;

use super::{errors, find_plan, query, Shared};
use crate::db::{Document, Filter, FindOptions, StoreError, StoreResult, Update};

/// How often a commit whose outcome is unknown (the connection dropped
/// while it ran) is sent again before giving up. Re-sending a commit is
/// safe: the server answers for the transaction it already committed.
const COMMIT_ATTEMPTS: u32 = 4;

/// An open transaction. Owns its session, so it can move between tasks.
pub(crate) struct MongoTx {
    shared: Arc<Shared>,
    /// Boxed: a session is several hundred bytes, and transactions of
    /// either engine travel in the same enum.
    session: Box<ClientSession>,
    /// The first failure the server saw. MongoDB aborts a transaction when
    /// any of its operations fails, so everything after it would fail too.
    failed: Option<StoreError>,
}

/// What an operation on a transaction that already failed reports.
///
/// A conflict or an outage stays what it was, so the runner still retries
/// or reports it. Anything else means the caller went on after an error
/// (say, caught a duplicate and carried on), which MongoDB cannot do:
/// that is refused loudly instead of surfacing as a baffling conflict.
fn after_failure(first: &StoreError) -> StoreError {
    match first {
        StoreError::Conflict | StoreError::Unavailable(_) => first.clone(),
        other => StoreError::Invalid(format!(
            "the transaction was aborted by an earlier failure ({other}); on MongoDB a failed \
             operation ends its transaction, so return that error instead of carrying on"
        )),
    }
}

impl MongoTx {
    pub(super) fn new(shared: Arc<Shared>, session: ClientSession) -> Self {
        Self {
            shared,
            session: Box::new(session),
            failed: None,
        }
    }

    fn usable(&self) -> StoreResult<()> {
        self.failed
            .as_ref()
            .map_or(Ok(()), |first| Err(after_failure(first)))
    }

    /// Remembers a failure that reached the server. A refused request
    /// (`Invalid`) never left this process, so the transaction lives on.
    fn settle<T>(&mut self, result: StoreResult<T>) -> StoreResult<T> {
        if let Err(err) = &result {
            if !matches!(err, StoreError::Invalid(_)) && self.failed.is_none() {
                self.failed = Some(err.clone());
            }
        }
        result
    }

    /// Inserts a document; a taken id or unique value is a duplicate.
    pub(crate) async fn insert(&mut self, collection: &str, doc: Document) -> StoreResult<()> {
        self.usable()?;
        let result = self
            .shared
            .insert(Some(&mut self.session), collection, &doc)
            .await;
        self.settle(result)
    }

    /// The document with this id, as this transaction sees it.
    pub(crate) async fn get(
        &mut self,
        collection: &str,
        id: &str,
    ) -> StoreResult<Option<Document>> {
        self.usable()?;
        let result = self
            .shared
            .find_one(Some(&mut self.session), collection, query::by_id(id))
            .await;
        self.settle(result)
    }

    /// The first match in id order, as this transaction sees it.
    pub(crate) async fn find_one(
        &mut self,
        collection: &str,
        filter: &Filter,
    ) -> StoreResult<Option<Document>> {
        self.usable()?;
        let query = query::filter_document(filter)?;
        let result = self
            .shared
            .find_one(Some(&mut self.session), collection, query)
            .await;
        self.settle(result)
    }

    /// Matches in `(sort field, _id)` order, as this transaction sees them.
    pub(crate) async fn find(
        &mut self,
        collection: &str,
        filter: &Filter,
        options: &FindOptions,
    ) -> StoreResult<Vec<Document>> {
        self.usable()?;
        let Some(plan) = find_plan(filter, options)? else {
            return Ok(Vec::new());
        };
        let result = self
            .shared
            .find_in_session(&mut self.session, collection, plan)
            .await;
        self.settle(result)
    }

    /// Applies `update` to the first match in id order and returns the
    /// document after the change; `None` when nothing matched, including
    /// when an increment would overflow Int64.
    pub(crate) async fn update_one(
        &mut self,
        collection: &str,
        filter: &Filter,
        update: &Update,
    ) -> StoreResult<Option<Document>> {
        self.usable()?;
        let result = self
            .shared
            .update_one(Some(&mut self.session), collection, filter, update)
            .await;
        self.settle(result)
    }

    /// Deletes the first match in id order; whether there was one.
    pub(crate) async fn delete_one(
        &mut self,
        collection: &str,
        filter: &Filter,
    ) -> StoreResult<bool> {
        self.usable()?;
        let result = self
            .shared
            .delete_one(Some(&mut self.session), collection, filter)
            .await;
        self.settle(result)
    }

    /// Commits. A conflict found at commit is [`StoreError::Conflict`]
    /// (nothing was written, so re-running is safe). A commit whose outcome
    /// stays unknown after a few re-sends is [`StoreError::Unavailable`], not
    /// a conflict: it may have committed, and re-running the work could
    /// apply it twice.
    #[tracing::instrument(skip_all, err(level = "debug"))]
    pub(crate) async fn commit(mut self) -> StoreResult<()> {
        self.usable()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = {
                let _permit = self.shared.gate.enter().await?;
                self.session.commit_transaction().await
            };
            let Err(err) = outcome else {
                return Ok(());
            };
            if !errors::is_unknown_commit_result(&err) {
                return Err(errors::store_error("", &err));
            }
            if attempt >= COMMIT_ATTEMPTS {
                return Err(StoreError::Unavailable(format!(
                    "the outcome of a commit is unknown after {attempt} attempts: {}",
                    err.kind
                )));
            }
            tracing::debug!(attempt, error = %err.kind, "commit outcome unknown, sending it again");
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
        }
    }

    /// Rolls back. Errors are only logged: the server discards a
    /// transaction that is never committed once it times out.
    pub(crate) async fn abort(mut self) {
        if let Err(err) = self.session.abort_transaction().await {
            tracing::debug!(error = %err.kind, "aborting a transaction failed");
        }
    }
}
