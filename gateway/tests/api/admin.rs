use serde_json::{json, Value};

use crate::helpers::spawn_app;

async fn as_user(app: &crate::helpers::TestApp, roles: &[&str], query: &str) -> Value {
    let token = app.token("admin-1", roles);
    app.client
        .post(format!("{}/graphql", app.address))
        .bearer_auth(token)
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn error_codes_lists_every_gateway_and_core_code_sorted() {
    let app = spawn_app().await;
    let body = app.query("{ errorCodes }").await;
    let codes: Vec<String> = serde_json::from_value(body["data"]["errorCodes"].clone()).unwrap();
    let mut sorted = codes.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(codes, sorted);
    for code in [
        "MSCoreInternal",
        "MSCoreRateLimited",
        "MSAuthInvalidToken",
        "MSGatewayBatchTooLarge",
        "MSGatewayParseFailed",
        "MSGatewayQueryTooComplex",
        "MSGatewayQueryTooDeep",
        "MSGatewaySubgraphUnavailable",
        "MSGatewayTooManyAliases",
        "MSGatewayValidationFailed",
    ] {
        assert!(
            codes.iter().any(|c| c == code),
            "{code} missing from {codes:?}"
        );
    }
}

#[tokio::test]
async fn service_health_needs_health_read() {
    let app = spawn_app().await;
    let body = app.query("{ serviceHealth { name healthy } }").await;
    assert_eq!(body["data"], Value::Null);
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "MSCoreUnauthenticated"
    );

    let body = as_user(&app, &["user"], "{ serviceHealth { name healthy } }").await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "MSCoreForbidden");

    let body = as_user(&app, &["support"], "{ serviceHealth { name healthy } }").await;
    assert_eq!(
        body,
        json!({"data": {"serviceHealth": [
            {"name": "accounts", "healthy": true},
            {"name": "inventory", "healthy": true},
            {"name": "products", "healthy": true},
            {"name": "reviews", "healthy": true}
        ]}})
    );
}

#[tokio::test]
async fn reload_supergraph_needs_config_write_and_keeps_serving() {
    let app = spawn_app().await;
    let body = as_user(&app, &["support"], "mutation { reloadSupergraph }").await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "MSCoreForbidden");

    let before = app.gateway.supergraph_sdl();
    let body = as_user(&app, &["admin"], "mutation { reloadSupergraph }").await;
    assert_eq!(body, json!({"data": {"reloadSupergraph": 5}}));
    assert_eq!(app.gateway.supergraph_sdl(), before);
    let body = app.query("{ me { name } }").await;
    assert_eq!(body, json!({"data": {"me": {"name": "Ada Lovelace"}}}));
}
