use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use service_core::auth::{SigningKey, TokenIssuer, TokenSubject};

use crate::helpers::{jwt_settings, spawn_app, spawn_with, Options};

fn subject() -> TokenSubject {
    TokenSubject {
        user_id: "u1".to_owned(),
        tenant_id: "default".to_owned(),
        roles: vec!["user".to_owned()],
        permissions: Vec::new(),
        session_id: "s1".to_owned(),
    }
}

async fn with_token(app: &crate::helpers::TestApp, token: &str) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{}/graphql", app.address))
        .bearer_auth(token)
        .json(&json!({ "query": "{ me { name } }" }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_valid_token_is_forwarded_unchanged_to_subgraphs() {
    let app = spawn_app().await;
    let token = app.token("u1", &["user"]);
    let (status, body) = with_token(&app, &token).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"data": {"me": {"name": "Ada Lovelace"}}}));
    let received = app.subgraphs.log.received();
    assert_eq!(
        received[0].authorization.as_deref(),
        Some(format!("Bearer {token}").as_str())
    );
}

#[tokio::test]
async fn bad_tokens_are_refused_never_anonymous() {
    let app = spawn_app().await;
    let expired = app
        .issuer
        .issue_at(&subject(), chrono::Utc::now() - chrono::Duration::hours(2))
        .unwrap()
        .token;
    let (status, body) = with_token(&app, &expired).await;
    assert_eq!(status, 401);
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "MSAuthTokenExpired"
    );

    let other_key = SigningKey::generate("test-key").unwrap();
    let forged = TokenIssuer::new(other_key, jwt_settings())
        .issue(&subject())
        .unwrap()
        .token;
    let (status, body) = with_token(&app, &forged).await;
    assert_eq!(status, 401);
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "MSAuthInvalidToken"
    );

    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"test-key"}"#);
    let genuine = app.token("u1", &["admin"]);
    let claims = genuine.split('.').nth(1).unwrap();
    let (status, body) = with_token(&app, &format!("{header}.{claims}.")).await;
    assert_eq!(status, 401);
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "MSAuthInvalidToken"
    );

    let (status, body) = with_token(&app, "not-a-jwt").await;
    assert_eq!(status, 401);
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "MSAuthInvalidToken"
    );
    assert!(app.subgraphs.log.received().is_empty());
}

/// Two gateway instances sharing Redis share each client's budget.
#[tokio::test]
async fn rate_budgets_are_shared_through_redis() {
    let url = std::env::var("TEST_REDIS_URL").expect("TEST_REDIS_URL (set by scripts/test.sh)");
    let brand = format!("gwtest{}", uuid::Uuid::new_v4().simple());
    let prefix = service_core::redis::KeyPrefix::new(brand, "gateway").unwrap();
    let mut apps = Vec::new();
    for _ in 0..2 {
        let redis = service_core::redis::RedisAccessor::connect(&url, prefix.clone())
            .await
            .expect("connect to TEST_REDIS_URL");
        let mut options = Options::default();
        options.settings.rate_limit_burst = 2;
        options.settings.rate_limit_per_second = 0.01;
        options.redis = Some(redis);
        apps.push(spawn_with(options).await);
    }
    for app in &apps {
        let response = app.post(json!({ "query": "{ __typename }" })).await;
        assert_eq!(response.status(), 200);
    }
    let response = apps[0].post(json!({ "query": "{ __typename }" })).await;
    assert_eq!(response.status(), 429);
    // Readiness includes Redis when one is configured.
    let ready: Value = apps[1]
        .client
        .get(format!("{}/health/ready", apps[1].address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["redis"]["healthy"], true, "{ready}");
}

#[tokio::test]
async fn rate_limits_answer_with_retry_after() {
    let mut options = Options::default();
    options.settings.rate_limit_burst = 2;
    options.settings.rate_limit_per_second = 0.01;
    let app = spawn_with(options).await;
    for _ in 0..2 {
        let body = app.query("{ __typename }").await;
        assert_eq!(body, json!({"data": {"__typename": "Query"}}));
    }
    let response = app.post(json!({ "query": "{ __typename }" })).await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "MSCoreRateLimited");
    assert!(
        body["errors"][0]["extensions"]["retryAfterSeconds"]
            .as_u64()
            .unwrap()
            >= 1
    );
    // A signed-in user has a budget of their own.
    let token = app.token("u9", &["user"]);
    let (status, _) = with_token(&app, &token).await;
    assert_eq!(status, 200);
}
