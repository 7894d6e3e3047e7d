//! The gateway's own answers over the real supergraph: every limit error
//! (which does not depend on the stores, so it runs on embedded defaults
//! only), `errorCodes`, `serviceHealth`, `configs` and `setConfig` (in
//! both modes).

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

const CONFIGS: &str = "query($service: String) { configs(service: $service) { service key value sensitive updatedAt } }";

const SET_CONFIG: &str = "mutation($service: String!, $key: String!, $value: JSON!) {
    setConfig(service: $service, key: $key, value: $value) { service key value sensitive updatedAt }
}";

/// The entry of `key` in a `configs` answer.
fn config_entry<'a>(entries: &'a Value, key: &str) -> &'a Value {
    entries
        .as_array()
        .and_then(|entries| entries.iter().find(|e| e["key"] == json!(key)))
        .unwrap_or_else(|| panic!("{key} missing from {entries}"))
}

async fn configs_and_set_config(mode: Mode) -> anyhow::Result<()> {
    let platform = Platform::start(mode).await?;
    let admin = platform.admin().await?;
    let token = Some(admin.access_token.as_str());
    let user = platform.register("frank").await?;

    // A MongoDB connection string with credentials, the real one in the
    // Redis + MongoDB mode. `configs` resolves the environment of the
    // gateway *process*, which the platform never changes, so the secret
    // reaches the gateway through the config store.
    let password = format!("pw{}", uuid::Uuid::new_v4().simple());
    let uri = match mode {
        Mode::Embedded => "mongodb://127.0.0.1:9/?replicaSet=rs".to_owned(),
        Mode::RedisMongo => std::env::var(e2e::MONGODB_VAR)?,
    };
    let secret_uri = uri.replacen("://", &format!("://e2e:{password}@"), 1);
    let set = platform
        .post(
            token,
            &json!({ "query": SET_CONFIG, "variables": {
                "service": "storage", "key": "mongodb_uri", "value": secret_uri,
            } }),
        )
        .await?
        .body;
    let written = set.to_string();
    assert!(!written.contains(&password), "{written}");
    assert_eq!(set["data"]["setConfig"]["value"], json!("***"), "{set}");
    assert_eq!(set["data"]["setConfig"]["sensitive"], json!(true), "{set}");

    // Every service's settings, the sensitive ones as "***".
    let all = platform
        .post(token, &json!({ "query": CONFIGS }))
        .await?
        .body;
    let raw = all.to_string();
    for secret in [password.as_str(), &secret_uri, &uri, &admin.password] {
        assert!(!raw.contains(secret), "a secret in {raw}");
    }
    let entries = all["data"]["configs"]
        .as_array()
        .unwrap_or_else(|| panic!("configs answered {all}"));
    for (service, key) in [
        ("auth", "jwt_private_key"),
        ("auth", "bootstrap_admin_password"),
        ("storage", "mongodb_uri"),
    ] {
        let entry = entries
            .iter()
            .find(|e| e["service"] == json!(service) && e["key"] == json!(key))
            .unwrap_or_else(|| panic!("{service}/{key} missing from {all}"));
        assert_eq!(entry["value"], json!("***"), "{entry}");
        assert_eq!(entry["sensitive"], json!(true), "{entry}");
    }
    let storage = platform
        .data(token, CONFIGS, json!({ "service": "storage" }))
        .await?;
    let raw = storage.to_string();
    assert!(!raw.contains(&password), "{raw}");
    let entries = &storage["configs"];
    assert!(
        entries
            .as_array()
            .is_some_and(|all| all.iter().all(|e| e["service"] == json!("storage"))),
        "{storage}"
    );
    let stored = config_entry(entries, "mongodb_uri");
    assert_eq!(stored["value"], json!("***"), "{stored}");
    assert!(stored["updatedAt"].is_string(), "{stored}");

    // A plain user may neither read nor write.
    for (query, variables) in [
        (CONFIGS, json!({})),
        (
            SET_CONFIG,
            json!({ "service": "gateway", "key": "max_depth", "value": 4 }),
        ),
    ] {
        let body = platform
            .gql(Some(&user.access_token), query, variables)
            .await?;
        assert_eq!(
            first_code(&body).as_deref(),
            Some("MSCoreForbidden"),
            "{body}"
        );
    }

    // A valid key is stored and shown at once.
    let data = platform
        .data(
            token,
            SET_CONFIG,
            json!({ "service": "gateway", "key": "max_depth", "value": 12 }),
        )
        .await?;
    let set = &data["setConfig"];
    assert_eq!(set["service"], json!("gateway"), "{set}");
    assert_eq!(set["key"], json!("max_depth"), "{set}");
    assert_eq!(set["value"], json!(12), "{set}");
    assert_eq!(set["sensitive"], json!(false), "{set}");
    assert!(set["updatedAt"].is_string(), "{set}");
    let data = platform
        .data(token, CONFIGS, json!({ "service": "gateway" }))
        .await?;
    assert_eq!(
        config_entry(&data["configs"], "max_depth")["value"],
        json!(12)
    );

    // An unknown key is refused and stores nothing.
    let body = platform
        .gql(
            token,
            SET_CONFIG,
            json!({ "service": "gateway", "key": "no_such_key", "value": 1 }),
        )
        .await?;
    assert_eq!(
        first_code(&body).as_deref(),
        Some("MSCoreValidation"),
        "{body}"
    );
    assert_eq!(
        body["errors"][0]["extensions"]["field"],
        json!("key"),
        "{body}"
    );
    let data = platform
        .data(token, CONFIGS, json!({ "service": "gateway" }))
        .await?;
    assert!(
        data["configs"]
            .as_array()
            .is_some_and(|all| all.iter().all(|e| e["key"] != json!("no_such_key"))),
        "{data}"
    );

    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_redact_secrets_and_set_config_writes_on_embedded_defaults() -> anyhow::Result<()> {
    configs_and_set_config(Mode::Embedded).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_redact_secrets_and_set_config_writes_on_redis_and_mongodb() -> anyhow::Result<()> {
    configs_and_set_config(Mode::RedisMongo).await
}
