//! Hostile query shapes: each refused with its `API.md` code and status
//! before any subgraph works on it, and the gateway healthy afterwards.

use e2e::{Mode, Platform};
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{refused, still_serves};

/// The request body limit (`API.md`, "Limits").
const BODY_LIMIT: usize = 1024 * 1024;

/// `{ me { wallets { user { wallets … } } } }` nested `levels` joins deep.
fn nested_joins(levels: usize) -> String {
    let mut query = String::from("{ me { id ");
    for _ in 0..levels {
        query.push_str("wallets { user { ");
    }
    query.push_str("id");
    for _ in 0..levels {
        query.push_str(" } }");
    }
    query.push_str(" } }");
    query
}

/// A request whose JSON encoding is exactly `size` bytes: `{ errorCodes }`
/// padded with a comment.
fn padded_request(size: usize) -> Value {
    let base = json!({ "query": "{ errorCodes }\n#" }).to_string().len();
    json!({ "query": format!("{{ errorCodes }}\n#{}", "x".repeat(size - base)) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_query_shapes_get_their_codes_and_the_gateway_stays_up() -> anyhow::Result<()> {
    let platform = Platform::start(Mode::Embedded).await?;
    let bad = StatusCode::BAD_REQUEST;

    // Depth bomb: fifty joins, and brackets nested far past what the
    // parser may recurse into (also hidden behind a block string holding
    // a lone quote, which must not blind the bracket count).
    let error = refused(
        &platform,
        None,
        &json!({ "query": nested_joins(50) }),
        bad,
        "MSGatewayQueryTooDeep",
    )
    .await?;
    assert_eq!(error["extensions"]["maxDepth"], json!(10), "{error}");
    assert!(
        error["extensions"]["depth"].as_u64().unwrap_or(0) > 10,
        "{error}"
    );
    let brackets = format!("{}{}", "{ me ".repeat(20_000), "}".repeat(20_000));
    refused(
        &platform,
        None,
        &json!({ "query": brackets }),
        bad,
        "MSGatewayQueryTooDeep",
    )
    .await?;
    let hidden = format!(
        "{{ errorCodes(x: \"\"\" \" \"\"\") {}{} }}",
        "{ a ".repeat(20_000),
        "}".repeat(20_000)
    );
    refused(
        &platform,
        None,
        &json!({ "query": hidden }),
        bad,
        "MSGatewayQueryTooDeep",
    )
    .await?;
    still_serves(&platform).await?;

    // Alias bomb: a thousand aliases of one field.
    let aliases = (0..1000)
        .map(|i| format!("a{i}: errorCodes"))
        .collect::<Vec<_>>()
        .join(" ");
    let error = refused(
        &platform,
        None,
        &json!({ "query": format!("{{ {aliases} }}") }),
        bad,
        "MSGatewayTooManyAliases",
    )
    .await?;
    assert!(error["message"].is_string(), "{error}");
    still_serves(&platform).await?;

    // Fragment cycles, direct and through a third fragment.
    for cycle in [
        "{ me { ...A } } fragment A on User { id ...B } fragment B on User { email ...A }",
        "{ me { ...A } } fragment A on User { ...B } fragment B on User { ...C } fragment C on User { ...A }",
        "{ me { ...A } } fragment A on User { id ...A }",
    ] {
        refused(
            &platform,
            None,
            &json!({ "query": cycle }),
            bad,
            "MSGatewayValidationFailed",
        )
        .await?;
    }
    still_serves(&platform).await?;

    // Directive overload: a non-repeatable directive a thousand times, and
    // an unknown one a thousand times.
    for directive in ["@skip(if: false)", "@nope"] {
        let query = format!("{{ errorCodes {} }}", directive.repeat(1000));
        refused(
            &platform,
            None,
            &json!({ "query": query }),
            bad,
            "MSGatewayValidationFailed",
        )
        .await?;
    }
    still_serves(&platform).await?;

    // Batches over the limit, by one and by a thousand.
    for size in [11, 1000] {
        let error = refused(
            &platform,
            None,
            &Value::Array(vec![json!({ "query": "{ errorCodes }" }); size]),
            bad,
            "MSGatewayBatchTooLarge",
        )
        .await?;
        assert_eq!(error["extensions"]["maxBatch"], json!(10), "{error}");
    }
    still_serves(&platform).await?;

    // Many operations in one document: without `operationName` none runs;
    // naming one runs exactly that one.
    let document = (0..1000)
        .map(|i| format!("query Q{i} {{ errorCodes }}"))
        .collect::<Vec<_>>()
        .join("\n");
    refused(
        &platform,
        None,
        &json!({ "query": document }),
        bad,
        "MSGatewayValidationFailed",
    )
    .await?;
    let named = platform
        .post(None, &json!({ "query": document, "operationName": "Q999" }))
        .await?;
    assert_eq!(named.status, StatusCode::OK, "{:?}", named.body);
    assert!(
        named.body["data"]["errorCodes"].is_array(),
        "{:?}",
        named.body
    );

    // A body just under the limit is served; one byte over is 413.
    let answer = platform.post(None, &padded_request(BODY_LIMIT)).await?;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert!(answer.body["data"]["errorCodes"].is_array());
    let answer = platform.post(None, &padded_request(BODY_LIMIT + 1)).await?;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    still_serves(&platform).await?;

    // A huge variables object: under the limit it is only carried; over
    // it, 413.
    let variables = |count: usize| -> Value {
        Value::Object(
            (0..count)
                .map(|i| (format!("v{i}"), json!(i)))
                .collect::<serde_json::Map<_, _>>(),
        )
    };
    let small = json!({ "query": "{ errorCodes }", "variables": variables(50_000) });
    assert!(small.to_string().len() < BODY_LIMIT);
    let answer = platform.post(None, &small).await?;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert!(answer.body["data"]["errorCodes"].is_array());
    let large = json!({ "query": "{ errorCodes }", "variables": variables(100_000) });
    assert!(large.to_string().len() > BODY_LIMIT);
    let answer = platform.post(None, &large).await?;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);

    // Deeply nested variables JSON: past the JSON reader's recursion
    // bound it is not a request at all; within it, a value that does not
    // fit its declared type fails validation.
    let nested = |levels: usize| format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
    let body = format!(
        r#"{{"query":"query($x: String) {{ errorCodes }}","variables":{{"x":{}}}}}"#,
        nested(100_000)
    );
    let answer = platform
        .client()
        .post(platform.graphql_url())
        .header("content-type", "application/json")
        .header("accept", "application/graphql-response+json")
        .body(body)
        .send()
        .await?;
    assert_eq!(answer.status(), bad);
    let answer: Value = answer.json().await?;
    assert_eq!(
        e2e::first_code(&answer).as_deref(),
        Some("MSGatewayParseFailed"),
        "{answer}"
    );
    let within: Value = serde_json::from_str(&nested(100))?;
    refused(
        &platform,
        None,
        &json!({ "query": "query($x: String) { errorCodes }", "variables": { "x": within } }),
        bad,
        "MSGatewayValidationFailed",
    )
    .await?;
    still_serves(&platform).await?;

    platform.shutdown().await
}
