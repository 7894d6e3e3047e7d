use serde_json::{json, Value};
use service_core::config::CommonConfig;

/// `gateway dev` composes the platform's real subgraphs: the SDL they
/// serve, with `_errorCodes` stripped, must compose and plan.
#[tokio::test]
async fn the_dev_launcher_serves_the_real_subgraphs_through_the_gateway() {
    let data = tempfile::tempdir().unwrap();
    // This is the only test of the binary that reads these variables.
    for (name, value) in [
        ("AUTH_ADDR", "127.0.0.1:0"),
        ("PAYMENT_ADDR", "127.0.0.1:0"),
        ("BONUS_ADDR", "127.0.0.1:0"),
        ("NOTIFICATION_ADDR", "127.0.0.1:0"),
        ("GATEWAY_ADDR", "127.0.0.1:0"),
    ] {
        std::env::set_var(name, value);
    }
    std::env::set_var("DATA_DIR", data.path());
    let common = CommonConfig::from_env().unwrap();
    let platform = gateway::launcher::start_dev(common).await.unwrap();
    let client = reqwest::Client::new();
    let body: Value = client
        .post(&platform.gateway_url)
        .json(&json!({ "query": "{ errorCodes }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let codes = body["data"]["errorCodes"].as_array().unwrap();
    for code in [
        "MSAuthInvalidCredentials",
        "MSPaymentInsufficientBalance",
        "MSBonusAlreadyClaimed",
        "MSNotificationNotFound",
        "MSGatewayQueryTooDeep",
    ] {
        assert!(codes.contains(&json!(code)), "{code} missing: {body}");
    }
    let body: Value = client
        .post(&platform.gateway_url)
        .json(&json!({ "query": "{ __schema { queryType { fields { name } } } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fields = body["data"]["__schema"]["queryType"]["fields"]
        .as_array()
        .unwrap();
    assert!(!fields.contains(&json!({"name": "_errorCodes"})), "{body}");
    assert!(fields.contains(&json!({"name": "errorCodes"})), "{body}");
    platform.stop().await;
}
