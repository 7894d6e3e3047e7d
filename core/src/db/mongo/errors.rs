//! Driver errors as [`StoreError`]s, and connection strings made safe to show.
//!
//! Callers act on the error kind: a conflict re-runs the transaction, a
//! duplicate becomes a domain error ("email taken"), unavailability a 503.
//! So the mapping looks at what the server said (codes, labels) rather
//! than at message text, except for the index name, which MongoDB reports
//! only inside the duplicate-key message.

use mongodb::error::{
    Error, ErrorKind, WriteFailure, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT,
};

use crate::db::{StoreError, ID};

/// E11000: a unique index already holds the value.
const DUPLICATE_KEY: i32 = 11000;
/// A concurrent transaction changed the document first.
const WRITE_CONFLICT: i32 = 112;

/// The collection does not exist.
const NAMESPACE_NOT_FOUND: i32 = 26;
/// The collection has no index of that name.
const INDEX_NOT_FOUND: i32 = 27;

/// Whether `err` says there was nothing to drop.
pub(super) fn is_missing_index(err: &Error) -> bool {
    matches!(code(err), Some(NAMESPACE_NOT_FOUND | INDEX_NOT_FOUND))
}

/// The server's error code, wherever in the error it sits.
fn code(err: &Error) -> Option<i32> {
    let own = match err.kind.as_ref() {
        ErrorKind::Command(e) => Some(e.code),
        ErrorKind::Write(WriteFailure::WriteError(e)) => Some(e.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(e)) => Some(e.code),
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .and_then(|errors| errors.first())
            .map(|e| e.code)
            .or_else(|| e.write_concern_error.as_ref().map(|e| e.code)),
        _ => None,
    };
    own.or_else(|| {
        std::error::Error::source(err)
            .and_then(|source| source.downcast_ref::<Error>())
            .and_then(code)
    })
}

/// The server's message, for the duplicate-key index name.
fn message(err: &Error) -> Option<&str> {
    match err.kind.as_ref() {
        ErrorKind::Command(e) => Some(&e.message),
        ErrorKind::Write(WriteFailure::WriteError(e)) => Some(&e.message),
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .and_then(|errors| errors.first())
            .map(|e| e.message.as_str()),
        _ => None,
    }
}

/// Whether the server (or the driver on its behalf) could not be reached.
fn is_unreachable(err: &Error) -> bool {
    matches!(
        err.kind.as_ref(),
        ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::ServerSelection { .. }
            | ErrorKind::DnsResolve { .. }
            | ErrorKind::Shutdown
    )
}

/// Whether a commit failed without telling whether it took effect.
pub(super) fn is_unknown_commit_result(err: &Error) -> bool {
    err.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
}

/// The index name in an E11000 message
/// (`... index: wallet_user_currency dup key: { ... }`); MongoDB's name for
/// the id index, `_id_`, is reported as `_id`.
pub(super) fn duplicate_index(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("index: ")?;
    let name = rest.split_whitespace().next()?;
    Some(if name == "_id_" {
        ID.to_owned()
    } else {
        name.to_owned()
    })
}

/// Maps a driver error from an operation on `collection`.
///
/// Unreachability is checked before the transient label: inside a
/// transaction the driver labels network errors transient, and re-running
/// the transaction against a server that is down only multiplies the wait.
pub(super) fn store_error(collection: &str, err: &Error) -> StoreError {
    if is_unreachable(err) {
        return StoreError::Unavailable(err.kind.to_string());
    }
    let code = code(err);
    if code == Some(DUPLICATE_KEY) {
        let index = message(err)
            .and_then(duplicate_index)
            .unwrap_or_else(|| "unknown".to_owned());
        return StoreError::Duplicate {
            collection: collection.to_owned(),
            index,
        };
    }
    if code == Some(WRITE_CONFLICT) || err.contains_label(TRANSIENT_TRANSACTION_ERROR) {
        return StoreError::Conflict;
    }
    StoreError::Backend(err.kind.to_string())
}

/// A connection string with its credentials and secret options replaced by
/// `***`, for logs and error messages. Anything that does not parse as a
/// URI is hidden entirely rather than guessed at.
pub(super) fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return "***".to_owned();
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    // Hosts and the database name never contain `@`, so the last one ends
    // the user info even when an unescaped password contains `@` or `/`.
    let location = match before_query.rfind('@') {
        Some(at) => format!("***@{}", &before_query[at + 1..]),
        None => before_query.to_owned(),
    };
    let mut out = format!("{scheme}://{location}");
    if let Some(query) = query {
        let options: Vec<String> = query
            .split('&')
            .map(|option| match option.split_once('=') {
                Some((key, _)) if is_secret_option(key) => format!("{key}=***"),
                _ => option.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&options.join("&"));
    }
    out
}

fn is_secret_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password") || key == "authmechanismproperties"
}

/// The password in `uri`, as written and percent-decoded, so that messages
/// that might quote it can be scrubbed.
fn passwords(uri: &str) -> Vec<String> {
    let Some((_, rest)) = uri.split_once("://") else {
        return Vec::new();
    };
    let before_query = rest.split_once('?').map_or(rest, |(before, _)| before);
    let Some(at) = before_query.rfind('@') else {
        return Vec::new();
    };
    let Some((_, password)) = before_query[..at].split_once(':') else {
        return Vec::new();
    };
    let mut found = vec![password.to_owned()];
    let decoded = percent_decode(password);
    if decoded != password {
        found.push(decoded);
    }
    found.retain(|p| !p.is_empty());
    found
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |i: usize| bytes.get(i).and_then(|b| (*b as char).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let (b'%', Some(high), Some(low)) = (bytes[i], hex(i + 1), hex(i + 2)) {
            // Two hex digits make at most 255.
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `message` with `uri` and its password replaced, for errors raised while
/// connecting (the driver's URI parser may quote parts of its input).
pub(super) fn scrub(message: &str, uri: &str) -> String {
    let mut out = message.replace(uri, &redact_uri(uri));
    for password in passwords(uri) {
        out = out.replace(&password, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_secret_options_are_redacted() {
        for (uri, shown) in [
            (
                "mongodb://app:s3cret@db1:27017,db2/payments?replicaSet=rs0",
                "mongodb://***@db1:27017,db2/payments?replicaSet=rs0",
            ),
            (
                "mongodb+srv://app:p%40ss@cluster.example.net/?retryWrites=true",
                "mongodb+srv://***@cluster.example.net/?retryWrites=true",
            ),
            // An unescaped `@` or `/` in the password still hides all of it.
            ("mongodb://app:a@b/c@db1/x", "mongodb://***@db1/x"),
            (
                "mongodb://db1/?tls=true&tlsCertificateKeyFilePassword=hunter2",
                "mongodb://db1/?tls=true&tlsCertificateKeyFilePassword=***",
            ),
            (
                "mongodb://db1/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:t",
                "mongodb://db1/?authMechanism=MONGODB-AWS&authMechanismProperties=***",
            ),
            ("mongodb://127.0.0.1:27017", "mongodb://127.0.0.1:27017"),
            ("not a uri with password", "***"),
        ] {
            assert_eq!(redact_uri(uri), shown, "{uri}");
        }
    }

    #[test]
    fn messages_lose_the_uri_and_the_password_in_either_spelling() {
        let uri = "mongodb://app:p%40ss@db1/x";
        let message = format!("cannot parse {uri}: bad password p@ss or p%40ss");
        let scrubbed = scrub(&message, uri);
        assert!(
            !scrubbed.contains("p@ss") && !scrubbed.contains("p%40ss"),
            "{scrubbed}"
        );
        assert!(scrubbed.contains("mongodb://***@db1/x"), "{scrubbed}");
    }

    #[test]
    fn duplicate_key_messages_name_the_index() {
        assert_eq!(
            duplicate_index(
                "E11000 duplicate key error collection: t.wallets index: wallet_user_currency \
                 dup key: { user_id: \"w1\", currency: \"EUR\" }"
            )
            .as_deref(),
            Some("wallet_user_currency")
        );
        assert_eq!(
            duplicate_index("E11000 duplicate key error collection: t.k index: _id_ dup key: { }")
                .as_deref(),
            Some("_id")
        );
        assert_eq!(duplicate_index("E11000 duplicate key error"), None);
    }
}
