//! GraphQL over HTTP at the gateway, as `API.md` ("Transport") states it:
//! content negotiation, the `application/graphql-response+json` status
//! rules, GET for queries only, `null` variables and extensions, request
//! ids and health.

use e2e::{first_code, Mode, Platform};
use reqwest::header::{ACCEPT, ALLOW, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::{json, Value};

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";
const JSON: &str = "application/json";

/// Posts `body` (raw bytes) with the given headers; status, content type and body.
async fn post_raw(
    platform: &Platform,
    accept: Option<&str>,
    content_type: &str,
    body: &str,
) -> anyhow::Result<(StatusCode, String, Value)> {
    let mut request = platform
        .client()
        .post(platform.graphql_url())
        .header(CONTENT_TYPE, content_type)
        .body(body.to_owned());
    if let Some(accept) = accept {
        request = request.header(ACCEPT, accept);
    }
    let response = request.send().await?;
    let status = response.status();
    let media = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.json().await.unwrap_or(Value::Null);
    Ok((status, media, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_over_http_follows_the_response_media_type_rules() -> anyhow::Result<()> {
    let platform = Platform::start(Mode::Embedded).await?;
    let query = r#"{"query":"{ me { id } }"}"#;

    // Content negotiation: the GraphQL response type when accepted, else JSON.
    for (accept, expected) in [
        (Some(GRAPHQL_RESPONSE), GRAPHQL_RESPONSE),
        (
            Some("application/graphql-response+json, application/json;q=0.9"),
            GRAPHQL_RESPONSE,
        ),
        (Some(JSON), JSON),
        (None, JSON),
    ] {
        let (status, media, body) = post_raw(&platform, accept, JSON, query).await?;
        assert_eq!(status, StatusCode::OK, "{accept:?}");
        assert!(media.starts_with(expected), "{accept:?} gave {media}");
        assert_eq!(body, json!({ "data": { "me": null } }));
    }

    // Parse and validation failures are 400 under the GraphQL response
    // type, 200 under plain JSON; both carry the coded error and no data.
    for (document, code) in [
        (r#"{"query":"{ me { "}"#, "MSGatewayParseFailed"),
        (
            r#"{"query":"{ nothingHere }"}"#,
            "MSGatewayValidationFailed",
        ),
    ] {
        let (status, _, body) = post_raw(&platform, Some(GRAPHQL_RESPONSE), JSON, document).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(first_code(&body).as_deref(), Some(code), "{body}");
        assert!(body.get("data").is_none(), "{body}");
        let (status, media, body) = post_raw(&platform, Some(JSON), JSON, document).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(media.starts_with(JSON), "{media}");
        assert_eq!(first_code(&body).as_deref(), Some(code), "{body}");
    }

    // An operation that executed is 200 even when a field failed.
    let (status, _, body) = post_raw(
        &platform,
        Some(GRAPHQL_RESPONSE),
        JSON,
        r#"{"query":"{ serviceHealth { name } }"}"#,
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        first_code(&body).as_deref(),
        Some("MSCoreUnauthenticated"),
        "{body}"
    );

    // `null` variables and extensions are the same as none.
    let (status, _, body) = post_raw(
        &platform,
        Some(GRAPHQL_RESPONSE),
        JSON,
        r#"{"query":"{ me { id } }","variables":null,"extensions":null,"operationName":null}"#,
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "data": { "me": null } }));

    // Operation selection by name, with variables.
    let document = json!({
        "query": "query A { me { id } } query B($t: ID!) { transfer(id: $t) { id } }",
        "operationName": "A",
    });
    let answer = platform.post(None, &document).await?;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body, json!({ "data": { "me": null } }));

    // Bodies that are not GraphQL requests.
    let (status, _, body) = post_raw(&platform, Some(GRAPHQL_RESPONSE), JSON, "{not json").await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        first_code(&body).as_deref(),
        Some("MSGatewayParseFailed"),
        "{body}"
    );
    let (status, _, body) = post_raw(&platform, Some(GRAPHQL_RESPONSE), JSON, "42").await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, _) = post_raw(
        &platform,
        Some(GRAPHQL_RESPONSE),
        "text/plain",
        "{ me { id } }",
    )
    .await?;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // GET serves queries, with variables in the query string...
    let response = platform
        .client()
        .get(platform.graphql_url())
        .header(ACCEPT, GRAPHQL_RESPONSE)
        .query(&[
            (
                "query",
                "query($skip: Boolean!) { errorCodes me @skip(if: $skip) { id } }",
            ),
            ("variables", r#"{"skip": true}"#),
        ])
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await?;
    assert!(body["data"]["errorCodes"].is_array(), "{body}");
    assert!(body["data"].get("me").is_none(), "{body}");

    // ...and refuses mutations, which change nothing.
    let email = format!("get-{}@example.com", uuid::Uuid::new_v4().simple());
    let mutation = format!(
        r#"mutation {{ register(input: {{email: "{email}", password: "Long-enough-password-1"}}) {{ accessToken }} }}"#
    );
    let response = platform
        .client()
        .get(platform.graphql_url())
        .header(ACCEPT, GRAPHQL_RESPONSE)
        .query(&[("query", mutation.as_str())])
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = response
        .headers()
        .get(ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(allow.contains("POST"), "Allow: {allow}");
    let login = platform.login(&email, "Long-enough-password-1").await?;
    assert_eq!(
        first_code(&login).as_deref(),
        Some("MSAuthInvalidCredentials"),
        "the GET mutation created the account: {login}"
    );

    // Every answer carries a request id: the caller's, or a fresh one.
    let response = platform
        .client()
        .post(platform.graphql_url())
        .header("x-request-id", "e2e-request-1")
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await?;
    assert_eq!(
        response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("e2e-request-1")
    );
    let response = platform
        .client()
        .post(platform.graphql_url())
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await?;
    assert!(response.headers().get("x-request-id").is_some());

    // Liveness, readiness (every subgraph named) and metrics.
    let live = platform
        .client()
        .get(format!("{}/health/live", platform.base_url()))
        .send()
        .await?;
    assert_eq!(live.status(), StatusCode::OK);
    let ready = platform
        .client()
        .get(format!("{}/health/ready", platform.base_url()))
        .send()
        .await?;
    assert_eq!(ready.status(), StatusCode::OK);
    let report = ready.text().await?;
    for name in ["auth", "payment", "bonus", "notification"] {
        assert!(report.contains(name), "{name} missing from {report}");
    }
    let metrics = platform
        .client()
        .get(format!("{}/metrics", platform.base_url()))
        .send()
        .await?;
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(metrics.text().await?.contains("gateway_operations_total"));

    platform.shutdown().await
}
