//! Idempotency keys: per user and key, claimed in the same database
//! transaction as the movement they protect.
//!
//! The key's document is inserted by the transaction that moves the money,
//! together with the result. So a key is visible iff its movement committed:
//! a concurrent second request either runs after the first committed (and
//! finds the stored result), or collides on the key's unique `_id` (the
//! store reports a conflict or a duplicate) and runs again, finding it then.
//! A request that failed (insufficient balance, say) stored nothing: the
//! same key may be tried again.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use service_core::db::{StoreError, Transaction};
use service_core::ApiError;
use sha2::{Digest, Sha256};

use super::Failure;
use crate::codes;
use crate::store::IDEMPOTENCY_KEYS;

/// Longest key a client may send.
pub const MAX_KEY_LEN: usize = 200;

/// A client's key, bound to the caller and to the request's parameters.
#[derive(Clone, Debug)]
pub(crate) struct IdempotencyKey {
    /// Hash of (user, key): the document id.
    id: String,
    /// Hash of the operation and its parameters.
    params: String,
    user_id: String,
    operation: &'static str,
}

impl IdempotencyKey {
    /// `None` when the client sent no key. `params` must hold every
    /// parameter that changes what the request does.
    pub(crate) fn new(
        user_id: &str,
        key: Option<&str>,
        operation: &'static str,
        params: &[&str],
    ) -> Result<Option<Self>, ApiError> {
        let Some(key) = key else {
            return Ok(None);
        };
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(ApiError::validation(
                "idempotencyKey",
                format!("must be 1 to {MAX_KEY_LEN} characters"),
            ));
        }
        Ok(Some(Self {
            id: digest(&[user_id, key]),
            params: digest(&[&[operation][..], params].concat()),
            user_id: user_id.to_owned(),
            operation,
        }))
    }

    /// The stored result of an earlier request with this key and the same
    /// parameters; `MSPaymentIdempotencyConflict` when the parameters differ.
    /// An expired key is deleted and reported absent.
    pub(crate) async fn lookup(
        &self,
        tx: &mut Transaction<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<Value>, Failure> {
        let Some(doc) = tx.get(IDEMPOTENCY_KEYS, &self.id).await? else {
            return Ok(None);
        };
        let expires = doc.get("expiresAt").and_then(Value::as_i64).unwrap_or(0);
        if expires <= now.timestamp_millis() {
            tx.delete_one(IDEMPOTENCY_KEYS, &service_core::db::Filter::id(&self.id))
                .await?;
            return Ok(None);
        }
        if doc.get("paramsHash").and_then(Value::as_str) != Some(self.params.as_str()) {
            return Err(Failure::Api(ApiError::new(
                codes::IDEMPOTENCY_CONFLICT,
                "this idempotency key was used with other parameters",
            )));
        }
        Ok(Some(doc.get("result").cloned().unwrap_or(Value::Null)))
    }

    /// Claims the key with the request's result, in the movement's
    /// transaction. Losing a race for the key makes the whole request run
    /// again (and then find the winner's result).
    pub(crate) async fn record(
        &self,
        tx: &mut Transaction<'_>,
        result: Value,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<(), Failure> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let doc = json!({
            "_id": self.id,
            "userId": self.user_id,
            "operation": self.operation,
            "paramsHash": self.params,
            "result": result,
            "createdAt": now.timestamp_millis(),
            "expiresAt": now.timestamp_millis().saturating_add(ttl_ms),
        });
        let Value::Object(doc) = doc else {
            return Err(Failure::Api(ApiError::internal(
                "key document is not an object",
            )));
        };
        match tx.insert(IDEMPOTENCY_KEYS, doc).await {
            Ok(()) => Ok(()),
            Err(StoreError::Duplicate { .. }) => Err(Failure::Race),
            Err(err) => Err(err.into()),
        }
    }
}

/// Hex SHA-256 of the parts, each length-prefixed so no two lists collide.
fn digest(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_per_user_and_parameters_are_bound() {
        let a = IdempotencyKey::new("alice", Some("k"), "transfer", &["bob", "5"])
            .unwrap()
            .unwrap();
        let b = IdempotencyKey::new("bob", Some("k"), "transfer", &["bob", "5"])
            .unwrap()
            .unwrap();
        let c = IdempotencyKey::new("alice", Some("k"), "transfer", &["bob", "6"])
            .unwrap()
            .unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(a.id, c.id);
        assert_ne!(a.params, c.params);
        // Length prefixes: ("ab","c") and ("a","bc") differ.
        assert_ne!(digest(&["ab", "c"]), digest(&["a", "bc"]));
        assert!(IdempotencyKey::new("u", Some(""), "x", &[]).is_err());
        assert!(IdempotencyKey::new("u", None, "x", &[]).unwrap().is_none());
    }
}
