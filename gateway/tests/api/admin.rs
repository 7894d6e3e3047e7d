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

async fn as_admin_with(app: &crate::helpers::TestApp, query: &str, variables: Value) -> Value {
    let token = app.token("admin-1", &["admin"]);
    app.client
        .post(format!("{}/graphql", app.address))
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

const SET_CONFIG: &str = "mutation($service: String!, $key: String!, $value: JSON!) {
    setConfig(service: $service, key: $key, value: $value) {
        service key value sensitive updatedAt updatedBy origin
    }
}";

fn entry<'a>(entries: &'a Value, key: &str) -> &'a Value {
    entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == key)
        .unwrap_or_else(|| panic!("{key} missing from {entries}"))
}

#[tokio::test]
async fn configs_need_config_read_and_setconfig_needs_config_write() {
    let app = spawn_app().await;
    let body = app.query("{ configs { key } }").await;
    assert_eq!(body["data"], Value::Null);
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "MSCoreUnauthenticated"
    );

    let body = as_user(&app, &["support"], "{ configs { key } }").await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "MSCoreForbidden");
    assert_eq!(
        body["errors"][0]["extensions"]["permission"],
        "config:read:*"
    );

    let body = as_user(
        &app,
        &["support"],
        r#"mutation { setConfig(service: "gateway", key: "max_depth", value: 4) { key } }"#,
    )
    .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "MSCoreForbidden");
    assert_eq!(
        body["errors"][0]["extensions"]["permission"],
        "config:write:*"
    );
    let body = as_user(
        &app,
        &["admin"],
        r#"{ configs(service: "gateway") { key origin } }"#,
    )
    .await;
    assert_eq!(
        entry(&body["data"]["configs"], "max_depth")["origin"],
        "default"
    );
}

#[tokio::test]
async fn configs_list_every_service_and_redact_sensitive_values() {
    let app = spawn_app().await;
    let body = as_user(
        &app,
        &["admin"],
        "{ configs { service key value sensitive } }",
    )
    .await;
    let entries = body["data"]["configs"]
        .as_array()
        .unwrap_or_else(|| panic!("configs answered: {body}"));
    let services: std::collections::BTreeSet<&str> = entries
        .iter()
        .map(|e| e["service"].as_str().unwrap())
        .collect();
    assert_eq!(
        services.into_iter().collect::<Vec<_>>(),
        [
            "auth",
            "bonus",
            "common",
            "gateway",
            "notification",
            "payment",
            "storage"
        ]
    );
    for (service, key) in [
        ("auth", "jwt_private_key"),
        ("auth", "bootstrap_admin_password"),
        ("notification", "smtp_password"),
        ("payment", "payout_url"),
        ("storage", "mongodb_uri"),
    ] {
        let found = entries
            .iter()
            .find(|e| e["service"] == service && e["key"] == key)
            .unwrap_or_else(|| panic!("{service}/{key} missing"));
        assert_eq!(found["sensitive"], true, "{service}/{key}");
        // Set or not, never the value.
        assert_eq!(found["value"], "***", "{service}/{key}");
    }

    // A secret written through setConfig never comes back.
    let body = as_admin_with(
        &app,
        SET_CONFIG,
        json!({"service": "notification", "key": "smtp_password", "value": "hunter2-secret"}),
    )
    .await;
    let set = &body["data"]["setConfig"];
    assert_eq!(set["value"], "***");
    assert_eq!(set["sensitive"], true);
    // A URL carrying credentials is hidden even under a key not marked sensitive.
    let body = as_admin_with(
        &app,
        SET_CONFIG,
        json!({"service": "notification", "key": "sms_url", "value": "https://user:pa55@sms.example/send"}),
    )
    .await;
    assert_eq!(body["data"]["setConfig"]["value"], "***");
    assert_eq!(body["data"]["setConfig"]["sensitive"], true);

    let response = app
        .client
        .post(format!("{}/graphql", app.address))
        .bearer_auth(app.token("admin-1", &["admin"]))
        .json(&json!({ "query": r#"{ configs(service: "notification") { key value sensitive origin } }"# }))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!response.contains("hunter2"), "{response}");
    assert!(!response.contains("pa55"), "{response}");
    let body: Value = serde_json::from_str(&response).unwrap();
    let entries = &body["data"]["configs"];
    assert_eq!(
        entry(entries, "smtp_password"),
        &json!({"key": "smtp_password", "value": "***", "sensitive": true, "origin": "store"})
    );
    assert_eq!(
        entry(entries, "sms_url"),
        &json!({"key": "sms_url", "value": "***", "sensitive": true, "origin": "store"})
    );
}

#[tokio::test]
async fn set_config_is_visible_to_configs_at_once_with_who_and_when() {
    let app = spawn_app().await;
    let body = as_admin_with(
        &app,
        SET_CONFIG,
        json!({"service": "gateway", "key": "max_depth", "value": 4}),
    )
    .await;
    let set = &body["data"]["setConfig"];
    assert_eq!(set["service"], "gateway");
    assert_eq!(set["key"], "max_depth");
    assert_eq!(set["value"], 4);
    assert_eq!(set["sensitive"], false);
    assert_eq!(set["origin"], "store");
    assert_eq!(set["updatedBy"], "admin-1");
    assert!(
        set["updatedAt"].as_str().is_some_and(|t| !t.is_empty()),
        "{set}"
    );

    let body = as_user(
        &app,
        &["admin"],
        r#"{ configs(service: "gateway") { service key value updatedBy origin } }"#,
    )
    .await;
    let entries = &body["data"]["configs"];
    assert_eq!(
        entry(entries, "max_depth"),
        &json!({"service": "gateway", "key": "max_depth", "value": 4, "updatedBy": "admin-1", "origin": "store"})
    );
    // Only the gateway's keys were asked for.
    assert!(entries
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["service"] == "gateway"));

    // A second write replaces the first.
    as_admin_with(
        &app,
        SET_CONFIG,
        json!({"service": "gateway", "key": "max_depth", "value": 6}),
    )
    .await;
    let body = as_user(
        &app,
        &["admin"],
        r#"{ configs(service: "gateway") { key value } }"#,
    )
    .await;
    assert_eq!(entry(&body["data"]["configs"], "max_depth")["value"], 6);

    // Mutations are counted and timed under their own operation type.
    let metrics = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "gateway_operations_total{operation_type=\"mutation\"",
        "gateway_operation_duration_seconds_bucket{operation_type=\"mutation\"",
    ] {
        assert!(metrics.contains(series), "missing {series} in\n{metrics}");
    }
}

#[tokio::test]
async fn set_config_refuses_unknown_services_keys_and_bad_values_and_writes_nothing() {
    let app = spawn_app().await;
    for (variables, field) in [
        (
            json!({"service": "billing", "key": "max_depth", "value": 4}),
            "service",
        ),
        (
            json!({"service": "gateway", "key": "max_dept", "value": 4}),
            "key",
        ),
        (
            json!({"service": "gateway", "key": "max_depth", "value": "four"}),
            "value",
        ),
        (
            json!({"service": "gateway", "key": "max_depth", "value": -1}),
            "value",
        ),
        (
            json!({"service": "gateway", "key": "limits_preset", "value": "extreme"}),
            "value",
        ),
        (
            json!({"service": "storage", "key": "db_naming", "value": "per-planet"}),
            "value",
        ),
    ] {
        let body = as_admin_with(&app, SET_CONFIG, variables.clone()).await;
        assert_eq!(body["data"], Value::Null, "{variables}: {body}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "MSCoreValidation",
            "{variables}: {body}"
        );
        assert_eq!(
            body["errors"][0]["extensions"]["field"], field,
            "{variables}: {body}"
        );
    }

    let body = as_user(
        &app,
        &["admin"],
        "{ configs { service key origin updatedAt } }",
    )
    .await;
    let entries = body["data"]["configs"]
        .as_array()
        .expect("configs answered");
    assert!(
        entries
            .iter()
            .all(|e| e["origin"] != "store" && e["updatedAt"].is_null()),
        "something was written: {entries:?}"
    );

    let body = as_user(
        &app,
        &["admin"],
        r#"{ configs(service: "billing") { key } }"#,
    )
    .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "MSCoreValidation");
    assert_eq!(body["errors"][0]["extensions"]["field"], "service");
}

#[tokio::test]
async fn stored_gateway_settings_apply_at_the_next_start() {
    use gateway::{Gateway, GatewayDeps};

    let app = spawn_app().await;
    as_admin_with(
        &app,
        SET_CONFIG,
        json!({"service": "gateway", "key": "max_depth", "value": 3}),
    )
    .await;
    // The running gateway keeps its limits: the change is not live.
    assert_eq!(app.gateway.settings().limits.max_depth, 10);

    // A gateway started on the same database picks the stored value up.
    let mut settings = app.gateway.settings().clone();
    settings.database = Some(crate::helpers::database_config(&app.data_dir));
    let restarted = Gateway::build(
        settings,
        GatewayDeps {
            app_env: service_core::config::AppEnv::Development,
            verifier: None,
            access: std::sync::Arc::new(access_engine::default_policy()),
            redis: None,
        },
    )
    .await
    .expect("gateway builds");
    assert_eq!(restarted.settings().limits.max_depth, 3);
}

#[tokio::test]
async fn error_codes_carry_the_request_id_to_every_subgraph() {
    let app = spawn_app().await;
    app.subgraphs.log.clear();
    let response = app
        .client
        .post(format!("{}/graphql", app.address))
        .header("x-request-id", "codes-req-7")
        .json(&json!({ "query": "{ errorCodes }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "codes-req-7");
    let received = app.subgraphs.log.received();
    let mut subgraphs: Vec<&str> = received.iter().map(|r| r.subgraph.as_str()).collect();
    subgraphs.sort_unstable();
    assert_eq!(subgraphs, ["accounts", "inventory", "products", "reviews"]);
    assert!(received
        .iter()
        .all(|r| r.request_id.as_deref() == Some("codes-req-7")));
}
