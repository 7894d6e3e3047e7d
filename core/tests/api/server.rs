use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::helpers::spawn_app;

#[tokio::test]
async fn liveness_is_200_while_running() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn readiness_follows_its_dependencies() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["database"]["healthy"], true);

    app.dependency.healthy.store(false, Ordering::SeqCst);
    let response = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["database"]["healthy"], false);
    assert_eq!(body["checks"]["database"]["error"], "connection refused");
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let app = spawn_app().await;
    app.graphql(json!({ "query": "{ fail }" })).await;
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.contains("http_requests_total{"), "{text}");
    assert!(
        text.contains(r#"graphql_errors_total{code="MSCoreNotFound",service="test"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = spawn_app().await;
    let echoed = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "client-id-42")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "client-id-42");

    let generated = app
        .client
        .get(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "a uuid: {id}");

    // An id that is unsafe to log or forward is replaced, not echoed.
    let unsafe_id = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "a b")
        .send()
        .await
        .unwrap();
    assert_ne!(unsafe_id.headers()["x-request-id"], "a b");
}

#[tokio::test]
async fn resolver_errors_carry_their_code() {
    let app = spawn_app().await;
    let body: Value = app
        .graphql(json!({ "query": "{ fail }" }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "MSCoreNotFound");
    assert_eq!(body["errors"][0]["message"], "widget not found");
}

#[tokio::test]
async fn engine_errors_are_validation_errors() {
    let app = spawn_app().await;
    for query in ["{ nope }", "{ fail", "query($n: Int!) { fail }"] {
        let body: Value = app
            .graphql(json!({ "query": query }))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "MSCoreValidation",
            "{query}: {body}"
        );
    }
}

#[tokio::test]
async fn malformed_bodies_get_a_coded_400() {
    let app = spawn_app().await;
    for body in ["{not json", "[1, 2]", "{\"query\": 5}", ""] {
        let response = app
            .client
            .post(app.url("/graphql"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let json: Value = response.json().await.unwrap();
        assert_eq!(json["errors"][0]["extensions"]["code"], "MSCoreValidation");
    }
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let app = spawn_app().await;
    let huge = "x".repeat(65 * 1024);
    let response = app.graphql(json!({ "query": huge })).await;
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn batches_run_each_operation_up_to_the_limit() {
    let app = spawn_app().await;
    let ok: Value = app
        .graphql(json!([{ "query": "{ whoami }" }, { "query": "{ fail }" }]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ok.as_array().unwrap().len(), 2);
    assert_eq!(ok[1]["errors"][0]["extensions"]["code"], "MSCoreNotFound");

    let too_many = app
        .graphql(json!([{ "query": "{ whoami }" }, { "query": "{ whoami }" }, { "query": "{ whoami }" }, { "query": "{ whoami }" }]))
        .await;
    assert_eq!(too_many.status(), 400);
}

#[tokio::test]
async fn get_serves_queries_but_refuses_mutations() {
    let app = spawn_app().await;
    let query = app
        .client
        .get(app.url("/graphql"))
        .query(&[("query", "{ whoami }")])
        .send()
        .await
        .unwrap();
    assert_eq!(query.status(), 200);
    let body: Value = query.json().await.unwrap();
    assert_eq!(body["data"]["whoami"], Value::Null);

    let mutation = app
        .client
        .get(app.url("/graphql"))
        .query(&[("query", "mutation { touch }")])
        .send()
        .await
        .unwrap();
    assert_eq!(mutation.status(), 405);
}

#[tokio::test]
async fn tokens_identify_the_caller_and_bad_ones_are_refused() {
    let app = spawn_app().await;
    let token = app.token_for("alice");
    let body: Value = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(&token)
        .json(&json!({ "query": "{ whoami }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"]["whoami"], "alice");

    let mut tampered = token.clone();
    tampered.insert(tampered.len() - 2, 'A');
    for bad in ["garbage", tampered.as_str(), ""] {
        let response = app
            .client
            .post(app.url("/graphql"))
            .header("authorization", format!("Bearer {bad}"))
            .json(&json!({ "query": "{ whoami }" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["errors"][0]["extensions"]["code"],
            "MSAuthInvalidToken"
        );
        assert!(body.get("data").is_none());
    }
}

#[tokio::test]
async fn panics_become_coded_500s_without_details() {
    let app = spawn_app().await;
    let response = app
        .graphql(json!({ "query": "{ explode(really: true) }" }))
        .await;
    assert_eq!(response.status(), 500);
    let text = response.text().await.unwrap();
    assert!(text.contains("MSCoreInternal"), "{text}");
    assert!(!text.contains("secret detail"), "{text}");
}
