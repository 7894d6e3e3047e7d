use serde_json::{json, Value};

use crate::helpers::spawn_app;

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

#[tokio::test]
async fn graphql_response_json_uses_400_for_request_errors_and_200_for_results() {
    let app = spawn_app().await;
    let send = |query: &'static str, accept: &'static str| {
        app.client
            .post(format!("{}/graphql", app.address))
            .header("accept", accept)
            .json(&json!({ "query": query }))
            .send()
    };
    let parse = send("{ me {", GRAPHQL_RESPONSE).await.unwrap();
    assert_eq!(parse.status(), 400);
    assert_eq!(parse.headers()["content-type"], GRAPHQL_RESPONSE);
    let invalid = send("{ nope }", GRAPHQL_RESPONSE).await.unwrap();
    assert_eq!(invalid.status(), 400);
    let ok = send("{ me { id } }", GRAPHQL_RESPONSE).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["content-type"], GRAPHQL_RESPONSE);
    // Legacy clients get application/json and 200 for GraphQL errors.
    let legacy = send("{ nope }", "application/json").await.unwrap();
    assert_eq!(legacy.status(), 200);
    assert_eq!(legacy.headers()["content-type"], "application/json");
    let body: Value = legacy.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "MSGatewayValidationFailed"
    );
}

#[tokio::test]
async fn a_body_that_is_not_a_graphql_request_is_400() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(format!("{}/graphql", app.address))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "MSGatewayParseFailed"
    );
    let wrong_type = app
        .client
        .post(format!("{}/graphql", app.address))
        .header("content-type", "text/plain")
        .body("{ me { id } }")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);
}

#[tokio::test]
async fn get_serves_queries_with_variables() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/graphql", app.address))
        .query(&[
            ("query", "query($n: Int) { topProducts(first: $n) { upc } }"),
            ("variables", "{\"n\": 2}"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"data": {"topProducts": [{"upc": "1"}, {"upc": "2"}]}})
    );
}

#[tokio::test]
async fn a_mutation_over_get_is_405() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/graphql", app.address))
        .query(&[("query", "mutation { reloadSupergraph }")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
}

#[tokio::test]
async fn request_ids_are_echoed_and_forwarded_to_every_subgraph() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(format!("{}/graphql", app.address))
        .header("x-request-id", "test-req-42")
        .json(&json!({ "query": "{ topProducts { reviews { author { name } } } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "test-req-42");
    let received = app.subgraphs.log.received();
    assert_eq!(received.len(), 3);
    assert!(received
        .iter()
        .all(|r| r.request_id.as_deref() == Some("test-req-42")));
    // Without one, the gateway makes one and uses it everywhere.
    app.subgraphs.log.clear();
    let response = app.post(json!({ "query": "{ me { name } }" })).await;
    let generated = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!generated.is_empty());
    assert_eq!(
        app.subgraphs.log.received()[0].request_id.as_deref(),
        Some(generated.as_str())
    );
}

#[tokio::test]
async fn health_and_metrics() {
    let app = spawn_app().await;
    let live = app
        .client
        .get(format!("{}/health/live", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let ready = app
        .client
        .get(format!("{}/health/ready", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["reviews"]["healthy"], true);
    assert_eq!(body["checks"]["database"]["healthy"], true);

    app.subgraphs.log.set_down("reviews", true);
    let ready = app
        .client
        .get(format!("{}/health/ready", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["down"], json!(["reviews"]));
    app.subgraphs.log.set_down("reviews", false);

    // The same operation twice: a plan-cache miss, then a hit.
    app.query("{ topProducts { name reviews { body } } }").await;
    app.query("{ topProducts { name reviews { body } } }").await;
    app.query("{ nope }").await;
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
        "gateway_operations_total{operation_type=\"query\"",
        "gateway_operation_duration_seconds_bucket{operation_type=\"query\"",
        "gateway_subgraph_fetch_duration_seconds_bucket{subgraph=\"reviews\"",
        "gateway_limit_rejections_total{code=\"MSGatewayValidationFailed\"",
        "circuit_breaker_state{breaker=\"subgraph:reviews\"",
        "gateway_plan_cache_requests_total{result=\"hit\"",
        "gateway_plan_cache_requests_total{result=\"miss\"",
        "http_requests_total",
    ] {
        assert!(metrics.contains(series), "missing {series} in\n{metrics}");
    }
}
