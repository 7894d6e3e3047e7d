//! How SQLite's failures become [`StoreError`]s.
//!
//! The distinctions callers act on: a busy or locked database is a
//! [`StoreError::Conflict`] (another process holds the write lock; the
//! transaction runner retries), a unique violation is a typed
//! [`StoreError::Duplicate`] naming the index as its spec does, a failed
//! `$inc` is the caller's [`StoreError::Invalid`] request, and I/O trouble
//! makes the store [`StoreError::Unavailable`].

use rusqlite::ffi;
use rusqlite::ErrorCode;

use super::sql;
use crate::db::{StoreError, ID};

/// Prefix of the errors raised by the `$inc` function, so they can be told
/// apart from SQLite's own.
pub(super) const INC_ERROR: &str = "store_inc:";

/// Maps a failure of an operation on `collection`.
pub(super) fn store_error(err: rusqlite::Error, collection: &str) -> StoreError {
    let rusqlite::Error::SqliteFailure(failure, message) = &err else {
        return StoreError::Backend(err.to_string());
    };
    let message = message.as_deref().unwrap_or_default();
    match failure.code {
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::Conflict,
        ErrorCode::ConstraintViolation
            if failure.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || failure.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE =>
        {
            StoreError::Duplicate {
                collection: collection.to_owned(),
                index: violated_index(collection, message).to_owned(),
            }
        }
        ErrorCode::CannotOpen
        | ErrorCode::DiskFull
        | ErrorCode::SystemIoFailure
        | ErrorCode::ReadOnly
        | ErrorCode::NotADatabase
        | ErrorCode::DatabaseCorrupt
        | ErrorCode::OutOfMemory => StoreError::Unavailable(err.to_string()),
        _ if message.starts_with(INC_ERROR) => StoreError::Invalid(message.to_owned()),
        _ => StoreError::Backend(err.to_string()),
    }
}

/// Maps a failure outside any one collection (opening, pragmas, commit).
pub(super) fn engine_error(err: rusqlite::Error) -> StoreError {
    store_error(err, "")
}

/// The spec name of the index a unique violation names. SQLite reports an
/// index over expressions as `index '<name>'` and the primary key by its
/// column (`c_wallets.id`).
fn violated_index<'m>(collection: &str, message: &'m str) -> &'m str {
    message
        .split_once("index '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .map_or(ID, |(name, _)| sql::spec_name(collection, name))
}

/// Whether `err` says the collection's table does not exist yet: the
/// collection is empty, not broken.
pub(super) fn is_missing_table(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(_, Some(message)) if message.starts_with("no such table"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_violations_name_the_spec() {
        assert_eq!(
            violated_index(
                "wallets",
                "UNIQUE constraint failed: index 'wallets__wallet_user_currency'"
            ),
            "wallet_user_currency"
        );
        assert_eq!(
            violated_index("wallets", "UNIQUE constraint failed: c_wallets.id"),
            ID
        );
    }
}
