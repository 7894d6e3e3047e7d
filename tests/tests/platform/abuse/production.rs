//! What the schema gives away (`API.md`, "Limits"): introspection and
//! "did you mean" suggestions are on in development and off when
//! `APP_ENV=production`, where introspection is `MSGatewayValidationFailed`
//! and no validation message suggests a name.

use e2e::{first_code, Mode, Platform};
use reqwest::StatusCode;
use serde_json::json;

use super::{refused, still_serves};

/// Introspection in its usual spellings: the root fields, an alias, a
/// fragment, and nested under an ordinary field.
const INTROSPECTIONS: &[&str] = &[
    "{ __schema { queryType { name } } }",
    "{ __type(name: \"Wallet\") { fields { name } } }",
    "{ s: __schema { types { name } } }",
    "{ ...F } fragment F on Query { __schema { types { name } } }",
    "{ me { id } ... on Query { __type(name: \"User\") { name } } }",
];

/// A misspelled field the validator has a suggestion for.
const MISSPELLED: &str = "{ me { emial } }";

/// The message of the `MSGatewayValidationFailed` (400) that `query`
/// gets from `platform`.
async fn validation_message(platform: &Platform, query: &str) -> anyhow::Result<String> {
    let error = refused(
        platform,
        None,
        &json!({ "query": query }),
        StatusCode::BAD_REQUEST,
        "MSGatewayValidationFailed",
    )
    .await?;
    Ok(error["message"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_and_suggestions_are_off_in_production_only() -> anyhow::Result<()> {
    // Development: both work, so the production checks below can fail.
    let development = Platform::start(Mode::Embedded).await?;
    for query in INTROSPECTIONS {
        let answer = development.post(None, &json!({ "query": query })).await?;
        assert_eq!(answer.status, StatusCode::OK, "{query}: {:?}", answer.body);
        assert_eq!(first_code(&answer.body), None, "{query}: {:?}", answer.body);
        assert!(answer.body["data"].is_object(), "{:?}", answer.body);
    }
    // The validator names the unknown field; it has no suggestion engine,
    // so production's guarantee is checked on every message below.
    let message = validation_message(&development, MISSPELLED).await?;
    assert!(message.contains("emial"), "{message}");
    development.shutdown().await?;

    let production = Platform::start_with(Mode::Embedded, &[("APP_ENV", "production")]).await?;
    for query in INTROSPECTIONS {
        let message = validation_message(&production, query).await?;
        assert!(
            !message.contains("Wallet") && !message.contains("User"),
            "{message}"
        );
    }
    let message = validation_message(&production, MISSPELLED).await?;
    assert!(
        !message.contains("Did you mean") && !message.contains("email"),
        "{message}"
    );
    // Other validation messages with suggestions: an unknown argument, an
    // unknown type in a variable, an unknown enum value.
    for query in [
        "{ transfers(frist: 1) { totalCount } }",
        "query($w: Strin) { wallet(id: $w) { id } }",
        "{ myNotifications(first: 1, unreadOnyl: true) { totalCount } }",
    ] {
        let message = validation_message(&production, query).await?;
        assert!(!message.contains("Did you mean"), "{query}: {message}");
    }
    // `__typename` is not introspection of the schema and stays available.
    let data = production.data(None, "{ __typename }", json!({})).await?;
    assert_eq!(data["__typename"], json!("Query"));
    still_serves(&production).await?;
    production.shutdown().await
}
