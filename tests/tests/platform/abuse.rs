//! Abuse through the gateway (`API.md`, "Limits", "Errors" and
//! "Transport"): hostile query shapes, introspection and suggestions in
//! production, cross-site request forms, forged tokens, other users' ids on
//! every id-taking field, and oversized strings on every mutation input.
//! Each refusal carries its coded error and changes no data, and the
//! platform keeps answering afterwards.

mod identities;
mod inputs;
mod production;
mod schema;
mod shapes;
mod tokens;
mod transport;

use e2e::{error_codes, Platform};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Posts `body` as `token` and asserts the refusal: `status`, no `data`
/// (or `data: null`), and `code` as the first error's code; the first error.
async fn refused(
    platform: &Platform,
    token: Option<&str>,
    body: &Value,
    status: StatusCode,
    code: &str,
) -> anyhow::Result<Value> {
    let answer = platform.post(token, body).await?;
    assert_eq!(answer.status, status, "{:?}", answer.body);
    assert_eq!(
        error_codes(&answer.body).first().map(String::as_str),
        Some(code),
        "{:?}",
        answer.body
    );
    assert!(
        answer.body.get("data").is_none_or(Value::is_null),
        "{:?}",
        answer.body
    );
    Ok(answer.body["errors"][0].clone())
}

/// The gateway still serves a plain query (after an abusive one).
async fn still_serves(platform: &Platform) -> anyhow::Result<()> {
    let data = platform.data(None, "{ errorCodes }", json!({})).await?;
    anyhow::ensure!(
        data["errorCodes"]
            .as_array()
            .is_some_and(|codes| !codes.is_empty()),
        "errorCodes came back empty: {data}"
    );
    Ok(())
}
