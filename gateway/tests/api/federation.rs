use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn nested_query_across_four_subgraphs() {
    let app = spawn_app().await;
    let body = app
        .query(
            "{ topProducts { upc name price inStock shippingEstimate reviews { body author { username name } } } }",
        )
        .await;
    assert_eq!(
        body,
        json!({"data": {"topProducts": [
            {"upc": "1", "name": "Table", "price": 899, "inStock": true, "shippingEstimate": 50,
             "reviews": [
                {"body": "Love it!", "author": {"username": "@ada", "name": "Ada Lovelace"}},
                {"body": "Prefer something else.", "author": {"username": "@complete", "name": "Alan Turing"}}]},
            {"upc": "2", "name": "Couch", "price": 1299, "inStock": false, "shippingEstimate": 0,
             "reviews": [{"body": "Too expensive.", "author": {"username": "@ada", "name": "Ada Lovelace"}}]},
            {"upc": "3", "name": "Chair", "price": 54, "inStock": true, "shippingEstimate": 25,
             "reviews": [{"body": "Could be better.", "author": {"username": "@complete", "name": "Alan Turing"}}]}
        ]}})
    );
}

#[tokio::test]
async fn a_query_of_one_subgraph_makes_one_fetch() {
    let app = spawn_app().await;
    let body = app.query("{ me { id name } }").await;
    assert_eq!(
        body,
        json!({"data": {"me": {"id": "1", "name": "Ada Lovelace"}}})
    );
    let received = app.subgraphs.log.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].subgraph, "accounts");
}

#[tokio::test]
async fn entity_fetches_are_batched_and_deduplicated_per_subgraph() {
    let app = spawn_app().await;
    let body = app
        .query("{ topProducts { name reviews { author { name } } } }")
        .await;
    assert_eq!(
        body["data"]["topProducts"][0],
        json!({"name": "Table", "reviews": [
            {"author": {"name": "Ada Lovelace"}},
            {"author": {"name": "Alan Turing"}}
        ]})
    );
    let received = app.subgraphs.log.received();
    let to = |name: &str| {
        received
            .iter()
            .filter(|r| r.subgraph == name)
            .cloned()
            .collect::<Vec<_>>()
    };
    // One `_entities` call to reviews for the three products, one to
    // accounts for the two distinct authors of the four reviews.
    assert_eq!(to("reviews").len(), 1);
    assert_eq!(to("reviews")[0].representations, 3);
    assert_eq!(to("accounts").len(), 1);
    assert_eq!(to("accounts")[0].representations, 2);
}

#[tokio::test]
async fn requires_sends_the_required_fields_to_the_subgraph() {
    let app = spawn_app().await;
    let body = app
        .query("{ topProducts(first: 2) { upc shippingEstimate } }")
        .await;
    assert_eq!(
        body,
        json!({"data": {"topProducts": [
            {"upc": "1", "shippingEstimate": 50},
            {"upc": "2", "shippingEstimate": 0}
        ]}})
    );
    let inventory: Vec<_> = app
        .subgraphs
        .log
        .received()
        .into_iter()
        .filter(|r| r.subgraph == "inventory")
        .collect();
    assert_eq!(inventory.len(), 1);
    assert_eq!(inventory[0].representations, 2);
}

#[tokio::test]
async fn provides_avoids_a_fetch_to_the_owning_subgraph() {
    let app = spawn_app().await;
    let body = app
        .query("{ topProducts(first: 1) { reviews { author { username } } } }")
        .await;
    assert_eq!(
        body,
        json!({"data": {"topProducts": [{"reviews": [
            {"author": {"username": "@ada"}},
            {"author": {"username": "@complete"}}
        ]}]}})
    );
    assert!(app
        .subgraphs
        .log
        .received()
        .iter()
        .all(|r| r.subgraph != "accounts"));
}

#[tokio::test]
async fn a_failed_non_null_field_nulls_its_parent_with_the_error_path() {
    let app = spawn_app().await;
    let body = app.query("{ topProducts { upc stockCode } }").await;
    assert_eq!(
        body["data"],
        json!({"topProducts": [{"upc": "1", "stockCode": "WH-1"}, null, {"upc": "3", "stockCode": "WH-3"}]})
    );
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["message"], "stock record unavailable");
    assert_eq!(
        errors[0]["path"],
        json!(["topProducts", 1, "stockCode"]),
        "{body}"
    );
}

#[tokio::test]
async fn a_subgraph_down_gives_partial_data_and_a_coded_error_then_recovers() {
    let app = spawn_app().await;
    app.subgraphs.log.set_down("inventory", true);
    let query = "{ topProducts(first: 1) { name inStock } }";
    let body = app.query(query).await;
    assert_eq!(
        body,
        json!({
            "errors": [{
                "message": "Subgraph inventory is unavailable",
                "extensions": {"code": "MSGatewaySubgraphUnavailable", "serviceName": "inventory"}
            }],
            "data": {"topProducts": [{"name": "Table", "inStock": null}]}
        })
    );
    app.subgraphs.log.set_down("inventory", false);
    let body = app.query(query).await;
    assert_eq!(
        body,
        json!({"data": {"topProducts": [{"name": "Table", "inStock": true}]}})
    );
}

#[tokio::test]
async fn a_root_subgraph_down_nulls_only_its_fields() {
    let app = spawn_app().await;
    app.subgraphs.log.set_down("accounts", true);
    let body = app
        .query("{ me { name } topProducts(first: 1) { upc } }")
        .await;
    assert_eq!(
        body["data"],
        json!({"me": null, "topProducts": [{"upc": "1"}]})
    );
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "MSGatewaySubgraphUnavailable"
    );
}

#[tokio::test]
async fn aliases_variables_fragments_and_directives_shape_the_answer() {
    let app = spawn_app().await;
    let body = app
        .post(json!({
            "query": "query Q($n: Int!, $withPrice: Boolean!) { first: topProducts(first: $n) { ...P price @include(if: $withPrice) } } fragment P on Product { label: name __typename }",
            "variables": {"n": 1, "withPrice": false},
            "operationName": "Q",
            "extensions": null
        }))
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(
        body,
        json!({"data": {"first": [{"label": "Table", "__typename": "Product"}]}})
    );
}

#[tokio::test]
async fn introspection_answers_from_the_public_schema() {
    let app = spawn_app().await;
    let body = app
        .query("{ __type(name: \"Product\") { kind fields { name } } __typename }")
        .await;
    let fields: Vec<&str> = body["data"]["__type"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(body["data"]["__type"]["kind"], "OBJECT");
    assert_eq!(body["data"]["__typename"], "Query");
    for expected in [
        "upc",
        "name",
        "price",
        "inStock",
        "shippingEstimate",
        "reviews",
    ] {
        assert!(fields.contains(&expected), "{fields:?}");
    }
}

#[tokio::test]
async fn a_stopped_subgraph_is_reported_unavailable() {
    let mut app = spawn_app().await;
    // Warm the pool so the gateway holds a keep-alive connection.
    app.query("{ me { name } }").await;
    app.subgraphs.stop("accounts").await;
    let body = app
        .query("{ me { name } topProducts(first: 1) { upc } }")
        .await;
    assert_eq!(
        body,
        json!({
            "errors": [{
                "message": "Subgraph accounts is unavailable",
                "extensions": {"code": "MSGatewaySubgraphUnavailable", "serviceName": "accounts"}
            }],
            "data": {"me": null, "topProducts": [{"upc": "1"}]}
        })
    );
}

#[tokio::test]
async fn reloading_the_supergraph_under_traffic_fails_no_request() {
    let app = std::sync::Arc::new(spawn_app().await);
    let expected = json!({"data": {"topProducts": [{"name": "Table", "inStock": true}]}});
    let load = {
        let app = app.clone();
        let expected = expected.clone();
        tokio::spawn(async move {
            for _ in 0..60 {
                let body = app
                    .query("{ topProducts(first: 1) { name inStock } }")
                    .await;
                assert_eq!(body, expected);
            }
        })
    };
    for _ in 0..5 {
        assert_eq!(app.gateway.reload().await.unwrap(), 5);
    }
    load.await.unwrap();
}

#[tokio::test]
async fn an_aliased_key_field_still_joins_entities() {
    let app = spawn_app().await;
    let body = app
        .query("{ topProducts(first: 1) { code: upc stock: inStock } }")
        .await;
    assert_eq!(
        body,
        json!({"data": {"topProducts": [{"code": "1", "stock": true}]}})
    );
}

/// A gateway started from a supergraph file serves the same answers as
/// one that composed the subgraphs itself.
#[tokio::test]
async fn a_gateway_runs_from_a_supergraph_file() {
    let composed = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("supergraph.graphql");
    std::fs::write(&path, composed.gateway.supergraph_sdl()).unwrap();
    let mut options = crate::helpers::Options::default();
    options.settings.supergraph_path = Some(path);
    let from_file = crate::helpers::spawn_with(options).await;
    // The file names the first app's subgraphs; the second app's list
    // (GATEWAY_SUBGRAPHS) overrides their URLs by name, so its own answer.
    let query = "{ topProducts(first: 2) { name shippingEstimate reviews { author { name } } } }";
    let expected = composed.query(query).await;
    composed.subgraphs.log.clear();
    assert_eq!(from_file.query(query).await, expected);
    assert!(composed.subgraphs.log.received().is_empty());
    assert!(!from_file.subgraphs.log.received().is_empty());
    let codes = from_file.query("{ errorCodes }").await;
    assert!(codes["data"]["errorCodes"]
        .as_array()
        .unwrap()
        .contains(&json!("MSGatewayQueryTooDeep")));
}
