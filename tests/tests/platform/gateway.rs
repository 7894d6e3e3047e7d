//! The gateway's own answers over the real supergraph: every limit error
//! (which does not depend on the stores, so it runs on embedded defaults
//! only), `errorCodes` and `serviceHealth` (in both modes).

use e2e::{first_code, text, Mode, Platform};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Every code `API.md` lists, by service.
const CONTRACT_CODES: &[&str] = &[
    "MSCoreValidation",
    "MSCoreUnauthenticated",
    "MSCoreForbidden",
    "MSCoreNotFound",
    "MSCoreRateLimited",
    "MSCoreUnavailable",
    "MSCoreInternal",
    "MSGatewayQueryTooComplex",
    "MSGatewayQueryTooDeep",
    "MSGatewayTooManyAliases",
    "MSGatewayBatchTooLarge",
    "MSGatewayParseFailed",
    "MSGatewayValidationFailed",
    "MSGatewaySubgraphUnavailable",
    "MSAuthInvalidCredentials",
    "MSAuthEmailTaken",
    "MSAuthWeakPassword",
    "MSAuthInvalidToken",
    "MSAuthTokenExpired",
    "MSAuthRefreshTokenReused",
    "MSAuthTooManyAttempts",
    "MSAuthUserNotFound",
    "MSAuthInvalidOtp",
    "MSPaymentInsufficientBalance",
    "MSPaymentWalletNotFound",
    "MSPaymentWalletExists",
    "MSPaymentInvalidAmount",
    "MSPaymentInvalidCurrency",
    "MSPaymentSelfTransfer",
    "MSPaymentIdempotencyConflict",
    "MSBonusTemplateNotFound",
    "MSBonusAlreadyClaimed",
    "MSBonusNotEligible",
    "MSNotificationNotFound",
];

/// A refused request: 400 under `application/graphql-response+json`, no
/// `data`, and the one error with `code`.
async fn refused(platform: &Platform, body: Value, code: &str) -> anyhow::Result<Value> {
    let answer = platform.post(None, &body).await?;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{:?}", answer.body);
    let media = answer.content_type.as_deref().unwrap_or_default();
    assert!(
        media.starts_with("application/graphql-response+json"),
        "{media}"
    );
    assert_eq!(
        first_code(&answer.body).as_deref(),
        Some(code),
        "{:?}",
        answer.body
    );
    assert!(answer.body.get("data").is_none() || answer.body["data"].is_null());
    Ok(answer.body["errors"][0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_error_through_the_gateway() -> anyhow::Result<()> {
    let platform = Platform::start(Mode::Embedded).await?;

    // Depth: eleven levels through the payment/auth join.
    let deep = "{ me { wallets { user { wallets { user { wallets { user { wallets { user { wallets { id } } } } } } } } } } }";
    let error = refused(&platform, json!({ "query": deep }), "MSGatewayQueryTooDeep").await?;
    assert_eq!(error["extensions"]["depth"], json!(11), "{error}");
    assert_eq!(error["extensions"]["maxDepth"], json!(10), "{error}");

    // Complexity: lists multiply their children by `first`.
    let complex =
        "{ users(first: 100) { nodes { wallets { transactions(first: 100) { nodes { id } } } } } }";
    let error = refused(
        &platform,
        json!({ "query": complex }),
        "MSGatewayQueryTooComplex",
    )
    .await?;
    assert_eq!(error["extensions"]["maxComplexity"], json!(1000), "{error}");
    assert!(
        error["extensions"]["complexity"].as_u64().unwrap_or(0) > 1000,
        "{error}"
    );

    // Aliases: one more than the 30 allowed.
    let aliased = (0..31)
        .map(|i| format!("a{i}: errorCodes"))
        .collect::<Vec<_>>()
        .join(" ");
    refused(
        &platform,
        json!({ "query": format!("{{ {aliased} }}") }),
        "MSGatewayTooManyAliases",
    )
    .await?;

    // Batches: ten operations are served, eleven refused.
    let one = json!({ "query": "{ errorCodes }" });
    refused(
        &platform,
        Value::Array(vec![one.clone(); 11]),
        "MSGatewayBatchTooLarge",
    )
    .await?;
    let batch = platform.post(None, &Value::Array(vec![one; 2])).await?;
    assert_eq!(batch.status, StatusCode::OK);
    assert_eq!(
        batch.body.as_array().map(Vec::len),
        Some(2),
        "{:?}",
        batch.body
    );

    // Parse and validation failures.
    let error = refused(
        &platform,
        json!({ "query": "{ me { id " }),
        "MSGatewayParseFailed",
    )
    .await?;
    assert!(error["message"].is_string(), "{error}");
    refused(
        &platform,
        json!({ "query": "{ me { noSuchField } }" }),
        "MSGatewayValidationFailed",
    )
    .await?;
    refused(
        &platform,
        json!({ "query": "{ transfers(first: \"ten\") { totalCount } }" }),
        "MSGatewayValidationFailed",
    )
    .await?;

    // A body over 1 MiB never reaches GraphQL.
    let huge = json!({ "query": format!("{{ errorCodes }} #{}", "x".repeat(1024 * 1024)) });
    let answer = platform.post(None, &huge).await?;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);

    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_the_rate_budget_is_refused() -> anyhow::Result<()> {
    let platform = Platform::start_with(
        Mode::Embedded,
        &[
            ("GATEWAY_RATE_LIMIT_BURST", "3"),
            ("GATEWAY_RATE_LIMIT_PER_SECOND", "0.01"),
        ],
    )
    .await?;
    let query = json!({ "query": "{ errorCodes }" });
    for _ in 0..3 {
        let answer = platform.post(None, &query).await?;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    }
    let answer = platform.post(None, &query).await?;
    assert_eq!(
        answer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        answer.body
    );
    assert_eq!(
        first_code(&answer.body).as_deref(),
        Some("MSCoreRateLimited")
    );
    let retry = &answer.body["errors"][0]["extensions"]["retryAfterSeconds"];
    assert!(retry.as_u64().unwrap_or(0) >= 1, "{:?}", answer.body);
    platform.shutdown().await
}

async fn error_codes_and_service_health(mode: Mode) -> anyhow::Result<()> {
    let platform = Platform::start(mode).await?;

    // Every service's codes, sorted and unique, to anyone.
    let data = platform.data(None, "{ errorCodes }", json!({})).await?;
    let codes: Vec<String> = data["errorCodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(text)
        .collect::<anyhow::Result<_>>()?;
    let mut sorted = codes.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(codes, sorted, "errorCodes must be sorted and unique");
    for code in CONTRACT_CODES {
        assert!(
            codes.iter().any(|c| c == code),
            "{code} missing from {codes:?}"
        );
    }

    // `serviceHealth` needs `health:read:*`.
    let health = "{ serviceHealth { name healthy latencyMs details } }";
    let admin = platform.admin().await?;
    let data = platform
        .data(Some(&admin.access_token), health, json!({}))
        .await?;
    let services = data["serviceHealth"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for name in ["auth", "payment", "bonus", "notification"] {
        let entry = services
            .iter()
            .find(|s| s["name"] == json!(name))
            .unwrap_or_else(|| panic!("{name} missing from {data}"));
        assert_eq!(entry["healthy"], json!(true), "{entry}");
        assert!(entry["latencyMs"].is_i64(), "{entry}");
        assert!(!entry["details"].is_null(), "{entry}");
    }
    let user = platform.register("dave").await?;
    let forbidden = platform
        .gql(Some(&user.access_token), health, json!({}))
        .await?;
    assert_eq!(
        first_code(&forbidden).as_deref(),
        Some("MSCoreForbidden"),
        "{forbidden}"
    );
    let anonymous = platform.gql(None, health, json!({})).await?;
    assert_eq!(
        first_code(&anonymous).as_deref(),
        Some("MSCoreUnauthenticated"),
        "{anonymous}"
    );

    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_codes_and_service_health_on_embedded_defaults() -> anyhow::Result<()> {
    error_codes_and_service_health(Mode::Embedded).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_codes_and_service_health_on_redis_and_mongodb() -> anyhow::Result<()> {
    error_codes_and_service_health(Mode::RedisMongo).await
}
