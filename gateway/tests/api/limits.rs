use serde_json::{json, Value};
use service_core::config::AppEnv;

use crate::helpers::{spawn_app, spawn_with, Options};

async fn first_error(app: &crate::helpers::TestApp, query: &str) -> Value {
    let body = app.query(query).await;
    assert!(body.get("data").is_none(), "{body}");
    body["errors"][0].clone()
}

#[tokio::test]
async fn a_document_that_does_not_parse() {
    let app = spawn_app().await;
    let error = first_error(&app, "{ topProducts { name ").await;
    assert_eq!(error["extensions"], json!({"code": "MSGatewayParseFailed"}));
}

#[tokio::test]
async fn a_document_that_does_not_validate() {
    let app = spawn_app().await;
    let error = first_error(&app, "{ topProducts { nam } }").await;
    assert_eq!(
        error["extensions"],
        json!({"code": "MSGatewayValidationFailed"})
    );
    assert!(
        error["message"].as_str().unwrap().contains("nam"),
        "{error}"
    );
    assert!(error["locations"].is_array());
}

#[tokio::test]
async fn a_query_too_deep() {
    let app = spawn_app().await;
    let deep = "{ me { reviews { product { reviews { author { reviews { product { reviews { author { reviews { body } } } } } } } } } } }";
    let error = first_error(&app, deep).await;
    assert_eq!(
        error["extensions"],
        json!({"code": "MSGatewayQueryTooDeep", "depth": 11, "maxDepth": 10})
    );
}

#[tokio::test]
async fn a_query_too_complex_counts_first_or_ten_per_list() {
    let app = spawn_app().await;
    // topProducts(first: 100) = 1 + 100 × reviews; reviews = 1 + 10 × author;
    // author = 1 + inner reviews; inner reviews = 1 + 10 × body (1) = 11.
    // So author = 12, reviews = 121, total = 12101.
    let error = first_error(
        &app,
        "{ topProducts(first: 100) { reviews { author { reviews { body } } } } }",
    )
    .await;
    assert_eq!(
        error["extensions"],
        json!({"code": "MSGatewayQueryTooComplex", "complexity": 12101, "maxComplexity": 1000})
    );
}

#[tokio::test]
async fn too_many_aliases() {
    let app = spawn_app().await;
    let aliases: String = (0..31).map(|i| format!("a{i}: __typename ")).collect();
    let error = first_error(&app, &format!("{{ {aliases} }}")).await;
    assert_eq!(
        error["extensions"],
        json!({"code": "MSGatewayTooManyAliases", "aliases": 31, "maxAliases": 30})
    );
}

#[tokio::test]
async fn a_batch_too_large() {
    let app = spawn_app().await;
    let batch: Vec<Value> = (0..11)
        .map(|_| json!({"query": "{ __typename }"}))
        .collect();
    let response = app.post(Value::Array(batch)).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"],
        json!({"code": "MSGatewayBatchTooLarge", "batchSize": 11, "maxBatch": 10})
    );
}

#[tokio::test]
async fn a_batch_within_the_limit_answers_in_order() {
    let app = spawn_app().await;
    let response = app
        .post(json!([{"query": "{ me { name } }"}, {"query": "{ topProducts(first: 1) { upc } }"}]))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!([{"data": {"me": {"name": "Ada Lovelace"}}}, {"data": {"topProducts": [{"upc": "1"}]}}])
    );
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_413() {
    let app = spawn_app().await;
    let padding = " ".repeat(1024 * 1024 + 10);
    let response = app
        .post(json!({"query": format!("{{ __typename }}{padding}")}))
        .await;
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn absurd_nesting_is_refused_before_parsing() {
    let app = spawn_app().await;
    let query = format!("{}{}", "{ me ".repeat(5000), "}".repeat(5000));
    let error = first_error(&app, &query).await;
    assert_eq!(error["extensions"]["code"], "MSGatewayQueryTooDeep");
}

#[tokio::test]
async fn production_turns_off_introspection_and_suggestions() {
    let app = spawn_with(Options {
        app_env: AppEnv::Production,
        ..Options::default()
    })
    .await;
    let error = first_error(&app, "{ __schema { queryType { name } } }").await;
    assert_eq!(error["extensions"]["code"], "MSGatewayValidationFailed");
    let error = first_error(&app, "{ topProduct { upc } }").await;
    assert_eq!(error["extensions"]["code"], "MSGatewayValidationFailed");
    assert!(
        !error["message"].as_str().unwrap().contains("Did you mean"),
        "{error}"
    );
    // Development answers introspection.
    let dev = spawn_app().await;
    let body = dev.query("{ __schema { queryType { name } } }").await;
    assert_eq!(
        body,
        json!({"data": {"__schema": {"queryType": {"name": "Query"}}}})
    );
}

#[tokio::test]
async fn a_fragment_bomb_is_refused_as_too_complex() {
    let app = spawn_app().await;
    let mut query = String::from("{ ...F0 }");
    for i in 0..40 {
        query.push_str(&format!(
            " fragment F{i} on Query {{ ...F{n} ...F{n} }}",
            n = i + 1
        ));
    }
    query.push_str(" fragment F40 on Query { me { id } }");
    let error = first_error(&app, &query).await;
    assert_eq!(error["extensions"]["code"], "MSGatewayQueryTooComplex");
}
