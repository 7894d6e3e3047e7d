//! `@shareable` (a field and a root field two subgraphs resolve),
//! `@override` (a field moved from catalog to pricing) and `@inaccessible`
//! (composed, but neither queryable nor visible to introspection).

use serde_json::json;

use super::{assert_cases, case, FixtureApp, FixtureSubgraph, Mode};

fn data() -> Vec<FixtureSubgraph> {
    vec![
        FixtureSubgraph::new(
            "catalog",
            json!({"items": [
                {"__typename": "Item", "id": "i1", "name": "Pen", "stock": 0, "cost": 1},
                {"__typename": "Item", "id": "i2", "name": "Ink", "stock": 0, "cost": 2}
            ]}),
            json!([
                {"__typename": "Item", "id": "i1", "name": "Pen", "stock": 0, "cost": 1},
                {"__typename": "Item", "id": "i2", "name": "Ink", "stock": 0, "cost": 2}
            ]),
        ),
        // Catalog's `stock` is stale (0): only pricing's may be served.
        FixtureSubgraph::new(
            "pricing",
            json!({"bestSeller": {"__typename": "Item", "id": "i2", "name": "Ink", "stock": 40, "price": 9}}),
            json!([
                {"__typename": "Item", "id": "i1", "name": "Pen", "stock": 12, "price": 3},
                {"__typename": "Item", "id": "i2", "name": "Ink", "stock": 40, "price": 9}
            ]),
        ),
    ]
}

#[tokio::test]
async fn shareable_and_overridden_fields_come_from_the_right_subgraph() {
    assert_cases(
        "ownership",
        data,
        &[
            case(
                "{ items { id name stock price } }",
                json!({"data": {"items": [
                    {"id": "i1", "name": "Pen", "stock": 12, "price": 3},
                    {"id": "i2", "name": "Ink", "stock": 40, "price": 9}
                ]}}),
            ),
            case(
                "{ bestSeller { name stock price } }",
                json!({"data": {"bestSeller": {"name": "Ink", "stock": 40, "price": 9}}}),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn shareable_fields_are_read_where_the_entity_already_is() {
    for mode in [Mode::File, Mode::List] {
        let app = FixtureApp::start("ownership", mode, data(), Default::default()).await;
        let body = app
            .post(json!({"query": "{ bestSeller { id name } }"}))
            .await;
        assert_eq!(
            body,
            json!({"data": {"bestSeller": {"id": "i2", "name": "Ink"}}})
        );
        assert_eq!(
            app.subgraphs.called(),
            vec!["pricing".to_owned()],
            "{mode:?}"
        );
    }
}

#[tokio::test]
async fn inaccessible_fields_are_neither_queryable_nor_introspected() {
    for mode in [Mode::File, Mode::List] {
        let app = FixtureApp::start("ownership", mode, data(), Default::default()).await;
        let body = app.post(json!({"query": "{ items { cost } }"})).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"],
            json!("MSGatewayValidationFailed"),
            "{mode:?}: {body}"
        );
        assert!(body.get("data").is_none(), "{mode:?}: {body}");
        let body = app
            .post(json!({"query": "{ __type(name: \"Item\") { fields { name } } }"}))
            .await;
        assert_eq!(
            body,
            json!({"data": {"__type": {"fields": [
                {"name": "id"}, {"name": "name"}, {"name": "price"}, {"name": "stock"}
            ]}}}),
            "{mode:?}"
        );
        let schema = app
            .post(json!({"query": "{ __schema { types { name fields { name } } } }"}))
            .await
            .to_string();
        assert!(!schema.contains("\"cost\""), "{mode:?}");
        assert!(!schema.contains("Supplier"), "{mode:?}");
        let body = app
            .post(json!({"query": "{ __type(name: \"Supplier\") { name } }"}))
            .await;
        assert_eq!(body, json!({"data": {"__type": null}}), "{mode:?}");
        assert!(app.gateway.supergraph_sdl().contains("cost"), "{mode:?}");
        assert!(
            app.gateway.supergraph_sdl().contains("Supplier"),
            "{mode:?}"
        );
    }
}
