//! Requests a hostile page can make a visitor's browser send: a mutation
//! over GET, and POST bodies in the media types that need no CORS
//! preflight. Each is refused before it executes and changes nothing.

use e2e::{first_code, Mode, Platform};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::{json, Value};

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

/// A `register` mutation for `email` as a GraphQL request body.
fn register(email: &str) -> Value {
    json!({
        "query": format!(
            r#"mutation {{ register(input: {{ email: "{email}", password: "Long-enough-password-1" }}) {{ accessToken }} }}"#
        ),
    })
}

/// Whether `email` has an account: signing in with the password the
/// refused mutations used succeeds only if one of them ran.
async fn registered(platform: &Platform, email: &str) -> anyhow::Result<bool> {
    let login = platform.login(email, "Long-enough-password-1").await?;
    match first_code(&login).as_deref() {
        Some("MSAuthInvalidCredentials") => Ok(false),
        None => Ok(true),
        Some(other) => anyhow::bail!("unexpected answer to login: {other}: {login}"),
    }
}

/// Posts `body` as raw bytes under `content_type` (none when `None`).
async fn post_as(
    platform: &Platform,
    content_type: Option<&str>,
    body: String,
) -> anyhow::Result<(StatusCode, Value)> {
    let mut request = platform
        .client()
        .post(platform.graphql_url())
        .header(ACCEPT, GRAPHQL_RESPONSE)
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    let response = request.send().await?;
    let status = response.status();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_request_forms_are_refused_and_change_nothing() -> anyhow::Result<()> {
    let platform = Platform::start(Mode::Embedded).await?;
    let alice = platform.register("alice").await?;

    // The same mutation as JSON registers: the refusals below are about
    // the transport, not the mutation.
    let control = format!("control-{}@example.com", uuid::Uuid::new_v4().simple());
    let (status, body) = post_as(
        &platform,
        Some("application/json"),
        register(&control).to_string(),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(registered(&platform, &control).await?);

    // Bodies a cross-site form or a no-preflight `fetch` can carry.
    let email = format!("csrf-{}@example.com", uuid::Uuid::new_v4().simple());
    let json_body = register(&email).to_string();
    let query = register(&email)["query"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let form = format!("query={}", urlencode(&query));
    let multipart = format!(
        "--b\r\nContent-Disposition: form-data; name=\"query\"\r\n\r\n{query}\r\n--b--\r\n"
    );
    let attempts = [
        (Some("application/x-www-form-urlencoded"), form.clone()),
        (Some("application/x-www-form-urlencoded"), json_body.clone()),
        (
            Some("application/x-www-form-urlencoded; a=application/json"),
            json_body.clone(),
        ),
        (Some("text/plain"), json_body.clone()),
        (Some("text/plain; charset=json"), json_body.clone()),
        (Some("text/plain"), query.clone()),
        (Some("multipart/form-data; boundary=b"), multipart),
        (None, json_body.clone()),
    ];
    for (content_type, body) in attempts {
        let (status, answer) = post_as(&platform, content_type, body).await?;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}: {answer}"
        );
        assert_eq!(
            first_code(&answer).as_deref(),
            Some("MSGatewayParseFailed"),
            "{content_type:?}: {answer}"
        );
        assert!(answer.get("data").is_none(), "{answer}");
    }
    assert!(
        !registered(&platform, &email).await?,
        "a refused request created the account"
    );

    // A mutation over GET, signed in and with the mutation picked by name
    // out of a document that also holds a query: 405, no wallet opened.
    let document =
        "query Q { myWallets { id } } mutation M { createWallet(currency: \"EUR\") { id } }";
    for operation in [None, Some("M")] {
        let mut params = vec![("query", document)];
        if let Some(name) = operation {
            params.push(("operationName", name));
        } else {
            params[0] = (
                "query",
                "mutation { createWallet(currency: \"EUR\") { id } }",
            );
        }
        let response = platform
            .client()
            .get(platform.graphql_url())
            .header(ACCEPT, GRAPHQL_RESPONSE)
            .bearer_auth(&alice.access_token)
            .query(&params)
            .send()
            .await?;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        let answer: Value = response.json().await?;
        assert_eq!(
            first_code(&answer).as_deref(),
            Some("MSGatewayValidationFailed"),
            "{answer}"
        );
    }
    let wallets = platform
        .data(Some(&alice.access_token), "{ myWallets { id } }", json!({}))
        .await?;
    assert_eq!(
        wallets["myWallets"],
        json!([]),
        "a GET mutation opened a wallet"
    );

    platform.shutdown().await
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                (byte as char).to_string()
            }
            b' ' => "+".to_owned(),
            other => format!("%{other:02X}"),
        })
        .collect()
}
